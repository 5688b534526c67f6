"""`keyvault.auth(name)` and `keyvault.httpx_client(name)`: plain HTTP code through the vault.

    auth = keyvault.auth("OPENAI_API_KEY")
    requests.post(f"{auth.base_url}/chat/completions", json=..., auth=auth)   # requests
    httpx.post(f"{auth.base_url}/embeddings", json=..., auth=auth)            # httpx (and httpx2)
    with keyvault.httpx_client("OPENAI_API_KEY") as http:                     # base URL preset
        http.get("models")

`auth` is a callable that sets the request's credentials, which is what requests (`AuthBase`) and
httpx (a callable `auth=`) both take. Proxy mode (a kernel of a keyvault-enabled server): every
request is signed afresh as this kernel for the proxy, which injects the key; `base_url` is the
proxy. Direct and local mode: the provider's own header with the value, `base_url` the provider's.
"""

from __future__ import annotations

from typing import Any

from .. import providers
from .clients import check_mode
from .errors import InvalidRequest
from .identity import authorization_header
from .mode import current_backend, valid_name

# Headers that carry an upstream credential: whatever a caller put there is replaced, never sent on.
_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")


def provider_of(backend, name: str) -> providers.Provider | None:
    """The provider a credential is stored for, else the one whose conventional name it is."""
    for item in backend.list():
        if item.get("name") == name and item.get("provider") in providers.PROVIDERS:
            return providers.PROVIDERS[item["provider"]]
    return providers.provider_for_env_var(name)


class KeyVaultAuth:
    """Credentials for one stored credential, for `requests` and `httpx` alike; see the module doc."""

    def __init__(self, name: str, mode: str = "proxy"):
        check_mode(mode)
        self.name = valid_name(name)
        backend = current_backend()
        provider = provider_of(backend, self.name)
        if provider is None:
            raise InvalidRequest(f"{self.name} has no provider, so there is no API to authenticate to; "
                                 "use keyvault.env or keyvault.get for it")
        self.provider = provider.id
        self.mode = "proxy" if backend.mode == "server" and mode == "proxy" else "direct"
        if self.mode == "proxy":
            self._identity = backend.identity
            self._headers: dict[str, str] = {}
            self.base_url = (backend.proxy_root(provider) if provider.sdk == "azure"
                             else backend.proxy_url(provider)).rstrip("/")
        else:
            found = backend.reveal(self.name)
            self._identity = None
            self._headers = provider.auth_headers(found["value"])
            self.base_url = (found.get("base_url") or (backend.base_url(provider) if backend.mode == "local" else None)
                             or provider.base_url or "").rstrip("/")

    def __repr__(self) -> str:
        return f"KeyVaultAuth(name={self.name!r}, provider={self.provider!r}, mode={self.mode!r})"

    def __reduce__(self):
        raise TypeError("KeyVaultAuth holds credentials and cannot be pickled")

    def headers(self) -> dict[str, str]:
        """The headers for one request: computed afresh each time (a kernel signature is single-use)."""
        if self._identity is not None:
            return authorization_header(self._identity, self.name)
        return dict(self._headers)

    def __call__(self, request: Any) -> Any:
        """requests calls `auth(prepared_request)`; httpx wraps a callable in its FunctionAuth."""
        for header in _AUTH_HEADERS:
            if header in request.headers:
                del request.headers[header]
        for header, value in self.headers().items():
            if header.lower() in _AUTH_HEADERS or header not in request.headers:  # a caller's own version header wins
                request.headers[header] = value
        return request


def auth(name: str, mode: str = "proxy") -> KeyVaultAuth:
    """An `auth=` object for requests and httpx that authenticates as credential `name` (see module doc)."""
    return KeyVaultAuth(name, mode)


def httpx_client(name: str, mode: str = "proxy", *, asynchronous: bool = False, **kw: Any):
    """An `httpx.Client` (or `AsyncClient`) whose base URL is the provider's (the proxy in proxy mode)
    and whose every request is authenticated as credential `name`. `kw` go to httpx."""
    try:
        import httpx
    except ImportError:
        raise ImportError("keyvault.httpx_client needs httpx: pip install httpx") from None
    credentials = KeyVaultAuth(name, mode)
    if "auth" in kw:
        raise TypeError("keyvault supplies the credentials: do not pass auth=")
    kw.setdefault("base_url", credentials.base_url + "/")
    if credentials.mode == "proxy":
        kw.setdefault("trust_env", False)  # the kernel's signature goes to the server, never to an env proxy
    cls = httpx.AsyncClient if asynchronous else httpx.Client
    return cls(auth=credentials, **kw)


def async_httpx_client(name: str, mode: str = "proxy", **kw: Any):
    """Like `httpx_client`, an `httpx.AsyncClient`."""
    return httpx_client(name, mode, asynchronous=True, **kw)
