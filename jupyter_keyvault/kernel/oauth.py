"""`keyvault.http(name)` and `keyvault.token(name)` for OAuth2 credentials.

`http(name)` is an httpx2 client whose base URL is the server's OAuth proxy for that
credential: the server refreshes the access token when needed and injects it, so no token
enters the kernel. `token(name)` (direct mode) returns a fresh access token as a `Secret`.
"""

from __future__ import annotations

from typing import Any

from ..scrub import default_scrubber
from .errors import KeyVaultError
from .mode import current_backend, valid_name
from .remote import PROXY
from .secret import Secret


def _server_backend(what: str):
    backend = current_backend()
    if backend.mode != "server":
        raise KeyVaultError(f"keyvault.{what}() needs a kernel started by a Jupyter server with jupyter-keyvault "
                            "(OAuth2 credentials are refreshed by the server)")
    return backend


def http(name: str, *, asynchronous: bool = False, **kw: Any):
    """An `httpx2.Client` for the provider API of OAuth2 credential `name`, through the server.

    Relative URLs are resolved against the provider's configured API base URL, e.g.
    `keyvault.http("GOOGLE").get("drive/v3/files")`.
    """
    import httpx2

    name = valid_name(name)
    backend = _server_backend("http")
    for arg in ("auth", "base_url"):
        if arg in kw:
            raise TypeError(f"keyvault.http supplies {arg}; do not pass it")
    base_url = backend.identity.url(PROXY, "oauth", name) + "/"
    cls = httpx2.AsyncClient if asynchronous else httpx2.Client
    transport = backend.transport(asynchronous)
    if transport is not None:
        kw.setdefault("transport", transport)
    kw.setdefault("timeout", httpx2.Timeout(60.0, connect=5.0))
    return cls(base_url=base_url, auth=backend.auth(), trust_env=False, **kw)


def token(name: str) -> Secret:
    """A fresh access token of OAuth2 credential `name` (direct mode; `.reveal()` gives it)."""
    name = valid_name(name)
    backend = _server_backend("token")
    data = backend._request("GET", ("oauth", name, "token"), name=name) or {}
    value = data.get("value")
    if not isinstance(value, str):
        raise KeyVaultError(f"the Jupyter server returned no access token for {name}")
    default_scrubber.add_known(value, name)
    return Secret(name, value)
