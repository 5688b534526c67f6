"""The public notebook module of jupyter-keyvault (`import keyvault`, `%load_ext keyvault`)."""

from jupyter_keyvault._version import __version__

__all__ = ["__version__"]
