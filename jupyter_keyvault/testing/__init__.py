"""Test helpers for jupyter-keyvault (fake upstream providers, etc.)."""
