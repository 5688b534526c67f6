"""`KernelAuth`: an httpx2 auth flow that signs every request afresh as this kernel.

Used by the proxied SDK clients and by the REST calls to the server. It replaces any
`Authorization` header and drops any `x-api-key` the SDK set, so the SDK's placeholder
key (or a stray key from the environment) never leaves the kernel.
"""

from __future__ import annotations

import time
from typing import Callable, Generator

import httpx2

from .identity import CREDENTIAL_HEADER, KernelIdentity, make_credential

# Headers an SDK uses to carry an upstream credential; none of them may reach the proxy.
_SDK_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")


class KernelAuth(httpx2.Auth):
    """Per-request `Authorization: Bearer kvk1.…` (+ `X-KeyVault-Credential` when a name is chosen)."""

    def __init__(self, identity: KernelIdentity, credential_name: str | None = None, *,
                 clock: Callable[[], float] = time.time):
        self._identity = identity
        self.credential_name = credential_name
        self._clock = clock

    def __repr__(self) -> str:
        return f"KernelAuth(kernel_id={self._identity.kernel_id!r}, credential={self.credential_name!r})"

    def headers(self) -> dict[str, str]:
        """A fresh credential as headers (for connections that bypass httpx2: the Realtime websocket)."""
        headers = {"Authorization": f"Bearer {make_credential(self._identity, clock=self._clock)}"}
        if self.credential_name:
            headers[CREDENTIAL_HEADER] = self.credential_name
        return headers

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        # Pure computation (no I/O, no locks): httpx2 runs it for sync and async clients alike.
        for header in _SDK_AUTH_HEADERS:
            if header in request.headers:
                del request.headers[header]
        request.headers.update(self.headers())
        yield request

    def __reduce__(self):
        raise TypeError("KernelAuth holds the kernel's session key and cannot be pickled")
