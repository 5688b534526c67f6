"""The public notebook module of jupyter-keyvault (`import keyvault`, `%load_ext keyvault`).

    client = keyvault.openai()            # proxy mode: the key never enters the kernel
    client = keyvault.anthropic()
    client = keyvault.client("groq")      # any provider in the table
    keyvault.get("OPENAI_API_KEY")        # Secret('OPENAI_API_KEY', '********'); .reveal() -> value
    with keyvault.env("OPENAI_API_KEY"): ...   # proxy mode: OPENAI_BASE_URL = the proxy, the key var a
                                          # short-lived kernel-bound token; LangChain, LiteLLM... work unchanged
    keyvault.auth("OPENAI_API_KEY")       # auth= for requests / httpx; .base_url is where to send
    keyvault.httpx_client("OPENAI_API_KEY")   # httpx.Client with that base URL and auth
    keyvault.list(); keyvault.status()
    keyvault.http("GOOGLE").get("drive/v3/files")   # OAuth2: the server injects a fresh token
    keyvault.token("GOOGLE")              # OAuth2 access token (direct mode), a Secret
    keyvault.panel()                      # ipywidgets panel: list, add/replace, test, delete

The implementation lives in `jupyter_keyvault.kernel`; this module only re-exports it.
"""

import sys

from jupyter_keyvault._version import __version__
from jupyter_keyvault.kernel import (
    AccessDenied,
    DirectAccessDisabled,
    InvalidRequest,
    KernelNotRecognised,
    KeyVaultError,
    NoCredentialError,
    Secret,
    ServerUnreachable,
    UnknownProvider,
    anthropic,
    async_anthropic,
    async_client,
    async_httpx_client,
    async_openai,
    auth,
    client,
    env,
    get,
    http,
    httpx_client,
    openai,
    panel,
    status,
    token,
)
from jupyter_keyvault.kernel import delete_credential as delete
from jupyter_keyvault.kernel import list_credentials as list  # noqa: A004 - the documented public name
from jupyter_keyvault.kernel import set_credential as set  # noqa: A004
from jupyter_keyvault.kernel import test_credential as test
from jupyter_keyvault.kernel.magics import load_ipython_extension as _load
from jupyter_keyvault.kernel.magics import unload_ipython_extension as _unload


def load_ipython_extension(ip) -> None:
    """`%load_ext keyvault`: the magic, the output and history scrubbers, and `keyvault` in the namespace."""
    _load(ip, sys.modules[__name__])


def unload_ipython_extension(ip) -> None:
    _unload(ip, sys.modules[__name__])


__all__ = [
    "AccessDenied",
    "DirectAccessDisabled",
    "InvalidRequest",
    "KernelNotRecognised",
    "KeyVaultError",
    "NoCredentialError",
    "Secret",
    "ServerUnreachable",
    "UnknownProvider",
    "__version__",
    "anthropic",
    "async_anthropic",
    "async_client",
    "async_httpx_client",
    "async_openai",
    "auth",
    "client",
    "delete",
    "env",
    "get",
    "http",
    "httpx_client",
    "list",
    "load_ipython_extension",
    "openai",
    "panel",
    "set",
    "status",
    "test",
    "token",
    "unload_ipython_extension",
]
