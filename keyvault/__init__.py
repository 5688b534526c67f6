"""The public notebook module of jupyter-keyvault (`import keyvault`, `%load_ext keyvault`).

    client = keyvault.openai()            # proxy mode: the key never enters the kernel
    client = keyvault.anthropic()
    client = keyvault.client("groq")      # any provider in the table
    keyvault.get("OPENAI_API_KEY")        # Secret('OPENAI_API_KEY', '********'); .reveal() -> value
    with keyvault.env("HF_TOKEN"): ...    # exported only inside the block
    keyvault.list(); keyvault.status()
    keyvault.panel()                      # ipywidgets panel: list, add/replace, test, delete

The implementation lives in `jupyter_keyvault.kernel`; this module only re-exports it.
"""

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
    async_openai,
    client,
    env,
    get,
    load_ipython_extension,
    openai,
    panel,
    status,
    unload_ipython_extension,
)
from jupyter_keyvault.kernel import delete_credential as delete
from jupyter_keyvault.kernel import list_credentials as list  # noqa: A004 - the documented public name
from jupyter_keyvault.kernel import set_credential as set  # noqa: A004
from jupyter_keyvault.kernel import test_credential as test

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
    "async_openai",
    "client",
    "delete",
    "env",
    "get",
    "list",
    "load_ipython_extension",
    "openai",
    "panel",
    "set",
    "status",
    "test",
    "unload_ipython_extension",
]
