"""Shared test set-up: every test runs with a private HOME and Jupyter dirs, no keyring."""

from __future__ import annotations

import os
import tempfile

import pytest

# Isolate before anything imports jupyter_core (paths are read at import time in places).
_ISOLATED = tempfile.mkdtemp(prefix="keyvault-tests-")
for _var, _sub in {
    "HOME": "home",
    "JUPYTER_DATA_DIR": "data",
    "JUPYTER_CONFIG_DIR": "config",
    "JUPYTER_RUNTIME_DIR": "runtime",
    "IPYTHONDIR": "ipython",
}.items():
    os.environ[_var] = os.path.join(_ISOLATED, _sub)
    os.makedirs(os.environ[_var], exist_ok=True)
os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
for _var in ("KEYVAULT_MASTER_KEY", "KEYVAULT_PASSPHRASE", "KEYVAULT_NEW_MASTER_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(_var, None)

pytest_plugins = [
    "pytest_jupyter.jupyter_server",
    "jupyter_keyvault.testing.pytest_plugin",
    "jupyter_keyvault.testing.postgres",
]


@pytest.fixture
def canary() -> str:
    """A unique, provider-shaped secret to search for wherever it must not appear."""
    import secrets

    return "sk-proj-CANARY" + secrets.token_hex(20)
