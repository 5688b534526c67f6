"""The kernel side of jupyter-keyvault: client factories, `get`/`env`, magics.

Imports neither tornado nor jupyter_server. The public names are re-exported by the
`keyvault` module (`import keyvault`, `%load_ext keyvault`).
"""

from .api import delete_credential, env, get, list_credentials, set_credential, status, test_credential
from .clients import MODES, PLACEHOLDER_KEY, anthropic, async_anthropic, async_client, async_openai, client, openai
from .errors import (
    AccessDenied,
    DirectAccessDisabled,
    InvalidRequest,
    KernelNotRecognised,
    KeyVaultError,
    NoCredentialError,
    ServerUnreachable,
    UnknownProvider,
)
from .httpauth import KeyVaultAuth, async_httpx_client, auth, httpx_client
from .identity import KernelIdentity, authorization_header, detect_identity, make_credential
from .magics import keyvault_magic, load_ipython_extension, unload_ipython_extension
from .mode import current_backend, reset, use_backend
from .oauth import http, token
from .secret import Secret


def panel():
    """The ipywidgets Key Vault panel (see `jupyter_keyvault.kernel.widgets`); needs ipywidgets 8."""
    from .widgets import panel as build_panel

    return build_panel()


__all__ = [
    "MODES",
    "PLACEHOLDER_KEY",
    "AccessDenied",
    "DirectAccessDisabled",
    "InvalidRequest",
    "KernelIdentity",
    "KeyVaultAuth",
    "KernelNotRecognised",
    "KeyVaultError",
    "NoCredentialError",
    "Secret",
    "ServerUnreachable",
    "UnknownProvider",
    "anthropic",
    "async_anthropic",
    "async_client",
    "async_httpx_client",
    "auth",
    "async_openai",
    "authorization_header",
    "client",
    "current_backend",
    "delete_credential",
    "detect_identity",
    "env",
    "get",
    "http",
    "httpx_client",
    "keyvault_magic",
    "list_credentials",
    "load_ipython_extension",
    "make_credential",
    "openai",
    "panel",
    "reset",
    "set_credential",
    "status",
    "test_credential",
    "token",
    "unload_ipython_extension",
    "use_backend",
]
