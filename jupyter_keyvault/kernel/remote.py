"""Server mode: the kernel's REST calls to the Jupyter server that started it.

Every call is signed afresh (`KernelAuth`), goes straight to the server (no env proxies)
with short timeouts, and turns error answers into `KeyVaultError`s with clear messages.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..scrub import default_scrubber
from .errors import (
    AccessDenied,
    DirectAccessDisabled,
    InvalidRequest,
    KernelNotRecognised,
    KeyVaultError,
    NoCredentialError,
    ServerUnreachable,
)
from .identity import KernelIdentity

API = "keyvault/kernel"
PROXY = "keyvault/proxy"
TIMEOUT = 10.0
TEST_TIMEOUT = 30.0  # the server runs the provider's test request within its own timeout


def _httpx2():
    try:
        import httpx2
    except ImportError:
        raise KeyVaultError("jupyter-keyvault needs the httpx2 package in the kernel: pip install httpx2") from None
    return httpx2


class RemoteBackend:
    """Talks to `<server>/keyvault/kernel/…` as this kernel."""

    mode = "server"

    def __init__(self, identity: KernelIdentity, *, transport=None, async_transport=None):
        self.identity = identity
        self._transport = transport  # tests inject an httpx2.MockTransport
        self._async_transport = async_transport

    def __repr__(self) -> str:
        return f"RemoteBackend(server_url={self.identity.server_url!r}, kernel_id={self.identity.kernel_id!r})"

    # -- URLs and auth for the SDK clients
    def proxy_url(self, provider, *, websocket: bool = False) -> str:
        """Where an SDK sends a provider's API calls (the loopback proxy, when the server has one); the
        Realtime websocket (`websocket=True`: a ws:// URL) always goes to the server's URL."""
        if websocket:
            url = self.identity.url(PROXY, provider.id, *provider.proxy_prefix.split("/"))
            return "ws" + url[len("http"):]  # http -> ws, https -> wss
        return self.identity.proxy_url(PROXY, provider.id, *provider.proxy_prefix.split("/"))

    def proxy_root(self, provider) -> str:
        """The proxy URL without the provider's path prefix (Azure's SDK adds `/openai` itself)."""
        return self.identity.proxy_url(PROXY, provider.id)

    def auth(self, credential_name: str | None = None):
        from .auth import KernelAuth

        return KernelAuth(self.identity, credential_name)

    def transport(self, asynchronous: bool):
        if asynchronous:
            return self._async_transport if self._async_transport is not None else self._transport
        return self._transport

    def history_fingerprints(self) -> dict:
        return self._request("GET", ("history-fingerprints",))

    # -- REST
    def _request(self, method: str, path: tuple[str, ...], *, body: dict | None = None, timeout: float = TIMEOUT,
                 name: str | None = None) -> Any:
        httpx2 = _httpx2()
        url = self.identity.url(API, *path)
        kwargs: dict[str, Any] = {"trust_env": False, "timeout": httpx2.Timeout(timeout, connect=5.0),
                                  "follow_redirects": False, "auth": self.auth()}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        try:
            with httpx2.Client(**kwargs) as client:
                response = client.request(method, url, headers=headers, content=content)
                response.read()
        except httpx2.TimeoutException:
            raise ServerUnreachable(
                f"the Jupyter server at {self.identity.server_url} did not answer within {timeout:g} s"
            ) from None
        except httpx2.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the Jupyter server at {self.identity.server_url} ({_reason(exc)}); "
                "is it still running? Restart the kernel from a running server."
            ) from None
        if response.status_code >= 400:
            raise self._error(response, path, name)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise KeyVaultError(
                f"the Jupyter server at {self.identity.server_url} answered {response.status_code} without JSON; "
                "is jupyter-keyvault enabled on it?", status=response.status_code
            ) from None

    def _error(self, response, path: tuple[str, ...], name: str | None) -> KeyVaultError:
        status = response.status_code
        message, reason = _error_message(response)
        where = f"the Jupyter server at {self.identity.server_url}"
        if status == 401:
            return KernelNotRecognised(
                f"{where} did not recognise this kernel ({message or 'HTTP 401'}). Restart the kernel; if that "
                "does not help, this kernel was not started by that server.", status=status)
        if status == 403:
            text = message or "access denied"
            if reason == "direct_access_disabled" or "direct access" in text.lower():
                return DirectAccessDisabled(f"{text}", status=status)
            return AccessDenied(text, status=status)
        if status == 404:
            if message is None:  # not our JSON: the route does not exist there
                return KeyVaultError(f"{where} has no jupyter-keyvault kernel endpoints (is the extension enabled "
                                     "and up to date?)", status=status)
            if name is not None:
                return NoCredentialError(message, status=status)
        if status in (400, 409, 413, 422):
            return InvalidRequest(message or f"the request was rejected (HTTP {status})", status=status)
        if status == 429:
            return KeyVaultError(message or "too many requests; retry in a moment", status=status)
        return KeyVaultError(f"{where} failed (HTTP {status}): {message or response.reason_phrase}", status=status)

    def list(self) -> list[dict]:
        data = self._request("GET", ("credentials",))
        return list((data or {}).get("credentials", []))

    def reveal(self, name: str) -> dict:
        data = self._request("GET", ("credentials", name), name=name) or {}
        value = data.get("value")
        if not isinstance(value, str):
            raise KeyVaultError(f"the Jupyter server returned no value for {name}")
        default_scrubber.add_known(value, name)
        return data

    def put(self, name: str, value: str, provider: str | None = None, *, session: bool = False,
            expires: str | None = None) -> dict:
        default_scrubber.add_known(value, name)
        body: dict[str, Any] = {"value": value}
        if provider:
            body["provider"] = provider
        if session:
            body["session"] = True
        if expires:  # the server parses it: a duration goes as expires_in, anything else as expires_at
            body["expires_in" if re.fullmatch(r"\s*\d+\s*[smhdw]\s*", expires) else "expires_at"] = expires
        return self._request("PUT", ("credentials", name), body=body, name=name) or {}

    def delete(self, name: str) -> None:
        self._request("DELETE", ("credentials", name), name=name)

    def test(self, name: str) -> dict:
        return self._request("POST", ("credentials", name, "test"), name=name, timeout=TEST_TIMEOUT) or {}

    # -- kernel-bound tokens (keyvault.env in proxy mode)
    def issue_env_token(self, name: str) -> dict:
        """A short-lived token the proxy accepts in place of `name`'s key, valid only for this kernel."""
        data = self._request("POST", ("env-tokens",), body={"name": name}, name=name) or {}
        if not isinstance(data.get("token"), str) or not isinstance(data.get("id"), str):
            raise KeyVaultError("the Jupyter server issued no kernel token (is jupyter-keyvault up to date?)")
        return data

    def renew_env_token(self, token_id: str) -> None:
        self._request("POST", ("env-tokens", token_id))

    def revoke_env_token(self, token_id: str) -> None:
        self._request("DELETE", ("env-tokens", token_id))

    def status(self) -> dict:
        base = {"mode": "server", "server_url": self.identity.server_url, "kernel_id": self.identity.kernel_id,
                "proxy_url": self.identity.proxy_base_url or self.identity.server_url}
        try:
            data = self._request("GET", ("status",)) or {}
        except KeyVaultError as exc:
            return {**base, "reachable": not isinstance(exc, ServerUnreachable), "ok": False, "error": str(exc),
                    "error_type": type(exc).__name__}
        return {**data, **base, "reachable": True, "ok": True}


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return default_scrubber.scrub(text)[:200]


def _error_message(response) -> tuple[str | None, str | None]:
    """The server's {"message": …} (scrubbed, as defence in depth), and its machine reason if any."""
    try:
        data = response.json()
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    message = data.get("message")
    reason = data.get("reason")
    message = default_scrubber.scrub(message)[:500] if isinstance(message, str) and message else None
    return message, reason if isinstance(reason, str) else None
