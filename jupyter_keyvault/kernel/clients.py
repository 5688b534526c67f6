"""Ready, authenticated SDK clients: `keyvault.openai()`, `keyvault.anthropic()`, `keyvault.client()`.

Proxy mode (the default, in a kernel started by a keyvault-enabled server): the client's
base URL is the server's proxy, its api_key a harmless placeholder, and every request is
signed as this kernel; the server injects the real key upstream, so it never enters the
kernel. Direct mode, and local mode (no server), build a normal client with the value.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .. import providers
from ..store import InvalidInput
from .errors import InvalidRequest, NoCredentialError, UnknownProvider
from .mode import current_backend, valid_name

MODES = ("proxy", "direct")
PLACEHOLDER_KEY = "keyvault-proxy"  # what the SDK believes its key is in proxy mode; never a secret
NO_KEY = "no-key-needed"  # for providers that take no key (a local Ollama)

_SDK_CLASSES = {
    ("openai", False): "OpenAI",
    ("openai", True): "AsyncOpenAI",
    ("anthropic", False): "Anthropic",
    ("anthropic", True): "AsyncAnthropic",
    ("azure", False): "AzureOpenAI",
    ("azure", True): "AsyncAzureOpenAI",
}
_SDK_MODULES = {"openai": "openai", "azure": "openai", "anthropic": "anthropic"}
# Credential arguments keyvault owns: passing one would bypass (or leak around) the vault.
_OWN_KWARGS = ("api_key", "auth_token")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be 'proxy' or 'direct', not {mode!r}")
    return mode


def get_provider(provider_id: str) -> providers.Provider:
    if isinstance(provider_id, str) and provider_id in providers.PROVIDERS:
        return providers.PROVIDERS[provider_id]
    raise UnknownProvider(f"unknown provider {provider_id!r}; known: {', '.join(providers.PROVIDERS)}")


def import_sdk(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"the {module} package is not installed in this kernel: pip install {module} "
            f"(or pip install 'jupyter-keyvault[{module}]')"
        ) from None


def make_client(provider_id: str, name: str | None = None, mode: str = "proxy", *, asynchronous: bool = False,
                **kw: Any):
    """Build the SDK client for a provider; see `keyvault.client`."""
    check_mode(mode)
    provider = get_provider(provider_id)
    for arg in _OWN_KWARGS:
        if arg in kw:
            raise TypeError(f"keyvault supplies the credential: do not pass {arg}=; choose a stored one with name=")
    if name is not None:
        name = valid_name(name)
    sdk = import_sdk(_SDK_MODULES[provider.sdk])
    cls = getattr(sdk, _SDK_CLASSES[(provider.sdk, asynchronous)])
    backend = current_backend()
    if backend.mode == "server" and mode == "proxy":
        return _proxy_client(backend, provider, name, sdk, cls, asynchronous, kw)
    return _direct_client(backend, provider, name, cls, kw)


def _proxy_client(backend, provider, name, sdk, cls, asynchronous: bool, kw: dict):
    if kw.get("base_url") is not None:
        raise ValueError(
            "base_url cannot be set in proxy mode (requests go through the Jupyter server's proxy); "
            "ask for the upstream URL to be configured on the server (c.KeyVault.provider_base_urls) "
            "or use mode='direct'"
        )
    kw.pop("base_url", None)
    credential = name or provider.env_var
    if credential and (provider.needs_key or name):
        _ensure_present(backend, credential, provider)
    auth = backend.auth(name)  # X-KeyVault-Credential only when a name was chosen
    http_client = kw.pop("http_client", None)
    if http_client is None:
        http_client = _proxy_http_client(sdk, auth, asynchronous, backend.transport(asynchronous))
    else:
        http_client.auth = auth  # the caller's client, signed as this kernel
    if provider.sdk == "azure":  # AzureOpenAI adds /openai (and /deployments/{model}) to its endpoint itself
        kw.setdefault("api_version", _azure_api_version())
        return cls(api_key=PLACEHOLDER_KEY, azure_endpoint=backend.proxy_root(provider), http_client=http_client, **kw)
    if provider.sdk == "openai":
        cls = _signed(cls)
        kw.setdefault("websocket_base_url", backend.proxy_url(provider, websocket=True))
    return cls(api_key=PLACEHOLDER_KEY, base_url=backend.proxy_url(provider), http_client=http_client, **kw)


AZURE_API_VERSION = "2024-10-21"  # a GA version; pass api_version= (or set OPENAI_API_VERSION) for another


def _azure_api_version() -> str:
    return os.environ.get("OPENAI_API_VERSION") or AZURE_API_VERSION


_SIGNED_CLASSES: dict[type, type] = {}


def _signed(cls: type) -> type:
    """The SDK client class whose own auth headers are a fresh kernel credential each time they are read:
    the openai SDK uses them (not its http_client) for the Realtime websocket."""
    signed = _SIGNED_CLASSES.get(cls)
    if signed is None:
        def auth_headers(self) -> dict[str, str]:
            auth: Any = getattr(getattr(self, "_client", None), "auth", None)
            if hasattr(auth, "headers"):
                return auth.headers()
            return super(signed, self).auth_headers  # type: ignore[arg-type]

        signed = _SIGNED_CLASSES[cls] = type(cls.__name__, (cls,), {"auth_headers": property(auth_headers),
                                                                    "__module__": cls.__module__})
    return signed


def _ensure_present(backend, credential: str, provider=None) -> None:
    """Fail now, clearly, rather than with an HTTP error on the first API call."""
    for item in backend.list():
        if item.get("name") == credential and item.get("present", True):
            return
        # On a JupyterHub, a shared key granted to the user serves the provider's default name.
        if (item.get("source") == "shared" and provider is not None and credential == provider.env_var
                and item.get("provider") == provider.id):
            return
    raise NoCredentialError(
        f"No API key configured for {credential}: add it in the Key Vault panel, with "
        f"`%keyvault set {credential}`, or with `jupyter keyvault set {credential}` in a terminal"
    )


def _direct_client(backend, provider, name, cls, kw: dict):
    credential = name or provider.env_var
    found: dict = {}
    if credential and (provider.needs_key or name):
        found = backend.reveal(credential)
        key = found["value"]
    else:
        key = NO_KEY
    base_url = kw.pop("base_url", None) or _server_base_url(found) or _base_url(backend, provider)
    if provider.sdk == "azure":
        kw.setdefault("api_version", _azure_api_version())
        return cls(api_key=key, azure_endpoint=base_url, **kw)
    return cls(api_key=key, base_url=base_url, **kw)


def _server_base_url(found: dict) -> str | None:
    """The server may say where it sends this provider (c.KeyVault.provider_base_urls)."""
    url = found.get("base_url")
    if not url:
        return None
    try:
        return providers.validate_base_url(url)
    except InvalidInput as exc:
        raise InvalidRequest(f"the server's base URL for this credential is unusable: {exc}") from None


def _base_url(backend, provider) -> str:
    if backend.mode == "local":
        return backend.base_url(provider)
    try:
        return providers.effective_base_url(provider, None, os.environ)
    except InvalidInput as exc:
        raise InvalidRequest(f"{exc}; or pass base_url=") from None


_FORCED_AUTH_CLASSES: dict[type, type] = {}


def _proxy_http_client(sdk, auth, asynchronous: bool, transport=None):
    """The SDK's default httpx2 client, signed by `auth` on every request, ignoring env proxies.

    `send()` drops any per-request `auth=` the SDK might pass, so nothing can replace ours.
    """
    base = sdk.DefaultAsyncHttpxClient if asynchronous else sdk.DefaultHttpxClient
    cls = _FORCED_AUTH_CLASSES.get(base)
    if cls is None:
        if asynchronous:
            class _Client(base):  # type: ignore[valid-type,misc]
                async def send(self, request, **kwargs):
                    kwargs.pop("auth", None)
                    return await super().send(request, **kwargs)
        else:
            class _Client(base):  # type: ignore[valid-type,misc,no-redef]
                def send(self, request, **kwargs):
                    kwargs.pop("auth", None)
                    return super().send(request, **kwargs)
        _Client.__name__ = _Client.__qualname__ = f"KeyVaultProxy{base.__name__.lstrip('_')}"
        cls = _FORCED_AUTH_CLASSES[base] = _Client
    kwargs: dict[str, Any] = {"auth": auth, "trust_env": False}
    if transport is not None:
        kwargs["transport"] = transport
    return cls(**kwargs)


# -- the public factories


def client(provider: str, name: str | None = None, mode: str = "proxy", **kw: Any):
    """A ready client for any provider: OpenAI-compatible ones through the `openai` SDK,
    Anthropic through `anthropic`. `name` picks the stored credential (default: the
    provider's env-var name); `mode` is "proxy" (the key stays on the server) or "direct"."""
    return make_client(provider, name, mode, **kw)


def async_client(provider: str, name: str | None = None, mode: str = "proxy", **kw: Any):
    """Like `client`, but the SDK's async client."""
    return make_client(provider, name, mode, asynchronous=True, **kw)


def openai(name: str | None = None, mode: str = "proxy", **kw: Any):
    """`openai.OpenAI` authenticated from the vault (credential `name`, default OPENAI_API_KEY)."""
    return make_client("openai", name, mode, **kw)


def async_openai(name: str | None = None, mode: str = "proxy", **kw: Any):
    """`openai.AsyncOpenAI` authenticated from the vault."""
    return make_client("openai", name, mode, asynchronous=True, **kw)


def anthropic(name: str | None = None, mode: str = "proxy", **kw: Any):
    """`anthropic.Anthropic` authenticated from the vault (credential `name`, default ANTHROPIC_API_KEY)."""
    return make_client("anthropic", name, mode, **kw)


def async_anthropic(name: str | None = None, mode: str = "proxy", **kw: Any):
    """`anthropic.AsyncAnthropic` authenticated from the vault."""
    return make_client("anthropic", name, mode, asynchronous=True, **kw)
