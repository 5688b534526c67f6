"""Who this kernel is, and the per-request credential that proves it to the server.

A kernel started by a Jupyter server with jupyter-keyvault finds the server's URL in
`KEYVAULT_SERVER_URL`, its own id in the name of its connection file
(`kernel-<id>.json`) and its Jupyter session key in the running kernel. Every request
to the server carries `Authorization: Bearer kvk1.<kernel_id>.<ts>.<nonce>.<sig>`,
computed afresh for that request; the session key itself never leaves the kernel.

Outside such a kernel (no env var, no IPython kernel) the helper works in local mode.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote, urlsplit

from .. import kernel_auth

SCHEME = kernel_auth.SCHEME
SERVER_URL_ENV = "KEYVAULT_SERVER_URL"
PROXY_URL_ENV = "KEYVAULT_PROXY_URL"  # the server's loopback proxy, when it has one (server/lane.py)
CREDENTIAL_HEADER = "X-KeyVault-Credential"
_KERNEL_FILE = re.compile(r"^kernel-(?P<id>[A-Za-z0-9_-]+)\.json$")


@dataclass(frozen=True)
class KernelIdentity:
    """The server to talk to and the kernel's proof of identity. The key never shows in repr."""

    server_url: str
    kernel_id: str
    session_key: bytes = field(repr=False)
    proxy_base_url: str = ""  # where provider proxy requests go, when not to server_url

    def __post_init__(self):
        if not _KERNEL_FILE.match(f"kernel-{self.kernel_id}.json"):
            raise ValueError("kernel id must be letters, digits, '-' or '_'")
        object.__setattr__(self, "server_url", normalise_server_url(self.server_url))
        if self.proxy_base_url:
            object.__setattr__(self, "proxy_base_url", normalise_server_url(self.proxy_base_url, PROXY_URL_ENV))

    def url(self, path: str, *segments: str) -> str:
        """`<server>/<path>/<segments…>`: `path` is a fixed path of ours, each segment is percent-encoded."""
        return join_url(self.server_url, path, *segments)

    def proxy_url(self, path: str, *segments: str) -> str:
        """As `url`, on the loopback proxy when the server has one."""
        return join_url(self.proxy_base_url or self.server_url, path, *segments)

    def __reduce__(self):
        raise TypeError("a kernel identity holds the session key and cannot be pickled")


def normalise_server_url(url: str, variable: str = SERVER_URL_ENV) -> str:
    """Keep the URL as given (percent-encoding included); make sure it ends with one '/'."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{variable} is not an http(s) URL: {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{variable} must not contain credentials, a query or a fragment")
    return url.rstrip("/") + "/"


def join_url(base: str, path: str, *segments: str) -> str:
    """Join under `base` without touching the encoding `base` already has.

    `path` is a fixed path of ours ("keyvault/proxy"); every segment (a provider id, a
    credential name) is percent-encoded as one segment, so none can climb out of `path`.
    Empty segments are skipped (Anthropic's proxy prefix is "").
    """
    out = base.rstrip("/") + "/" + path.strip("/")
    for segment in segments:
        if not segment:
            continue
        if segment in (".", ".."):
            raise ValueError(f"not a valid URL path segment: {segment!r}")
        out += "/" + quote(segment, safe="")
    return out


def make_credential(identity: KernelIdentity, *, clock: Callable[[], float] = time.time, nonce: str | None = None) -> str:
    """A fresh `kvk1.<kernel_id>.<ts>.<nonce>.<sig>`: new timestamp and nonce on every call."""
    ts = int(clock())
    nonce = nonce or secrets.token_hex(16)
    # One definition of the wire format, shared with the server's verifier.
    return kernel_auth.make_credential(identity.kernel_id, identity.session_key, ts, nonce)


def authorization_header(identity: KernelIdentity, credential_name: str | None = None) -> dict[str, str]:
    """Headers for one direct request (urllib, httpx2): compute them per request, never reuse."""
    headers = {"Authorization": f"Bearer {make_credential(identity)}"}
    if credential_name:
        headers[CREDENTIAL_HEADER] = credential_name
    return headers


# -- finding out who we are


def _running_kernel_app():
    if "ipykernel" not in sys.modules:
        return None  # not in a kernel; importing ipykernel here would not make us one
    try:
        from ipykernel.kernelapp import IPKernelApp
    except ImportError:
        return None
    if not IPKernelApp.initialized():
        return None
    return IPKernelApp.instance()


def _session_key(app) -> bytes | None:
    try:
        from IPython import get_ipython

        ip = get_ipython()
    except ImportError:
        ip = None
    for holder in (getattr(getattr(ip, "kernel", None), "session", None), getattr(app, "session", None)):
        key = getattr(holder, "key", None)
        if key:
            return key if isinstance(key, bytes) else str(key).encode()
    return None


def _from_connection_file(path: str) -> bytes | None:
    try:
        with open(path, encoding="utf-8") as fh:
            key = json.load(fh).get("key")
    except (OSError, ValueError, AttributeError):
        return None
    return key.encode() if isinstance(key, str) and key else None


def detect_identity(environ=None) -> tuple[KernelIdentity | None, str]:
    """(identity, "") in a kernel started by a keyvault-enabled server; else (None, why not)."""
    environ = os.environ if environ is None else environ
    url = (environ.get(SERVER_URL_ENV) or "").strip()
    if not url:
        return None, f"{SERVER_URL_ENV} is not set (not a kernel started by a Jupyter server with jupyter-keyvault)"
    app = _running_kernel_app()
    if app is None:
        return None, "not running inside an IPython kernel, so there is no kernel identity to present to the server"
    try:
        from ipykernel.connect import get_connection_file

        connection_file = get_connection_file(app)
    except Exception:  # noqa: BLE001 - any failure means: no usable identity
        connection_file = getattr(app, "connection_file", "") or ""
    match = _KERNEL_FILE.match(os.path.basename(connection_file or ""))
    if not match:
        return None, "this kernel's connection file is not named kernel-<id>.json, so the server cannot know it"
    key = _session_key(app) or _from_connection_file(connection_file)
    if not key:
        return None, "this kernel has no session key (started without message signing)"
    try:
        return KernelIdentity(url, match.group("id"), key, (environ.get(PROXY_URL_ENV) or "").strip()), ""
    except ValueError as exc:
        return None, str(exc)
