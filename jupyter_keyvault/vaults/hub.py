"""The single-user server's side of `c.KeyVault.backend = "hub"`: a vault that lives in the service.

`HubVaultClient` implements `ServerVault`, each method a blocking HTTP call to the service
(callers run vault work off the event loop), authenticated with the server's own JupyterHub
token. It holds no master key and decrypts nothing; the proxy forwards to the service's
proxy instead (see `upstream`).
"""

from __future__ import annotations

import builtins
import json
import time
import urllib.error
import urllib.request
from typing import Any, Mapping
from urllib.parse import quote

from ..providers import Provider, secret_safe_opener
from ..store import DecryptionError, InvalidInput, NoCredential, NotFound, VaultError
from ..store.errors import NotAvailable
from ..store.model import AuditEvent, CredentialInfo
from ..store.pages import encode_cursor
from ..store.vault import ResolvedCredential
from . import RefusingTokens, Upstream

TOKENS_NOT_AVAILABLE = ("vault access tokens are not available when this server uses the JupyterHub keyvault "
                        "service (c.KeyVault.backend = 'hub'); use a JupyterHub API token with the service instead")


def _ts(iso: str | None) -> float | None:
    if not iso:
        return None
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso_of(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def info_from_json(owner: str, item: dict) -> CredentialInfo:
    return CredentialInfo(
        id=item.get("name", ""), owner=owner, name=item["name"], type=item.get("type", "api_key"),
        provider=item.get("provider"), created_at=_ts(item.get("created_at")) or 0.0,
        updated_at=_ts(item.get("updated_at")) or 0.0, last_used_at=_ts(item.get("last_used_at")),
        metadata=dict(item.get("metadata") or {}), source=item.get("source", "vault"),
        lifetime=_lifetime_from_json(item))


def _lifetime_from_json(item: dict) -> dict:
    """The service's listing fields back into the lifetime facts a CredentialInfo holds."""
    lifetime: dict[str, Any] = {}
    if item.get("lifetime") == "session":
        lifetime["session"] = True
    for key, field_name in (("expires_at", "expires_at"), ("value_set_at", "value_created_at")):
        ts = _ts(item.get(field_name))
        if ts is not None:
            lifetime[key] = ts
    return lifetime


class HubServiceError(VaultError):
    pass


class HubVaultClient:
    """The `ServerVault` of a single-user server whose credentials live in the keyvault hub service."""

    kind = "hub"

    def __init__(self, service_url: str, api_token: str, username: str, *, timeout: float = 30.0):
        if not service_url:
            raise VaultError("c.KeyVault.backend = 'hub' needs the service URL (c.KeyVault.hub_url or "
                             "$KEYVAULT_HUB_URL), e.g. http://127.0.0.1:10101/services/keyvault/")
        if not api_token:
            raise VaultError("c.KeyVault.backend = 'hub' needs this server's JupyterHub token ($JUPYTERHUB_API_TOKEN)")
        self.service_url = service_url.rstrip("/") + "/"
        self._token = api_token
        self.username = username
        self.timeout = timeout
        self.env_credential_names: set[str] = set()

    # -- transport
    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.service_url + path, data=data, method=method, headers={  # noqa: S310 - http(s) URLs only, checked by validate_base_url / the service URL
            "Authorization": f"token {self._token}", "Content-Type": "application/json"})
        try:
            # The server's hub token rides on every call: never via env proxies or a redirect.
            with secret_safe_opener().open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("message") or exc.reason
            except (ValueError, AttributeError):
                message = str(exc.reason)
            if exc.code == 404:
                raise NotFound(message) from None
            if exc.code in (400, 413, 422):
                raise InvalidInput(message) from None
            if exc.code == 409:
                raise DecryptionError(message) from None
            if exc.code == 403:
                raise NotAvailable(message) from None
            raise HubServiceError(f"keyvault service: {exc.code} {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise HubServiceError(f"keyvault service unreachable at {self.service_url}: "
                                  f"{getattr(exc, 'reason', exc)}") from None

    def _credential_path(self, name: str, suffix: str = "") -> str:
        return f"api/credentials/{quote(name, safe='')}{suffix}"

    # -- the Vault interface the extension uses
    def list(self, owner: str, *, include_env: bool = True) -> list[CredentialInfo]:
        _, body = self._call("GET", "api/credentials")
        return self._listed(owner, body)

    def list_page(self, owner: str, *, limit: int, after: str | None = None,
                  include_env: bool = True) -> tuple[builtins.list[CredentialInfo], bool]:
        """One page from the service (which pages personal and shared names together). A service older
        than pages answers with everything and no `next`: one page holding all, which is still right."""
        query = f"?limit={int(limit)}" + (f"&cursor={quote(encode_cursor(after), safe='')}" if after else "")
        _, body = self._call("GET", "api/credentials" + query)
        return self._listed(owner, body), body.get("next") is not None

    @staticmethod
    def _listed(owner: str, body: dict) -> builtins.list[CredentialInfo]:
        items = [info_from_json(owner, i) for i in body["credentials"]]
        personal = {i.name for i in items}
        # Shared keys granted to the user: presence only, usable through the proxy, never readable.
        items += [info_from_json(owner, {**i, "source": "shared"}) for i in body.get("shared", [])
                  if i["name"] not in personal]
        return sorted(items, key=lambda i: (i.name, i.source))

    def info(self, owner: str, name: str) -> CredentialInfo:
        _, body = self._call("GET", self._credential_path(name))
        return info_from_json(owner, body)

    def set(self, owner: str, name: str, value: str, *, provider: str | None = None, type: str = "api_key",
            metadata: Mapping[str, Any] | None = None, actor: str | None = None, action: str = "set",
            session: bool = False, expires_at: float | None = None):
        """`session`: the service holds the value in its memory for as long as this server runs."""
        body: dict[str, Any] = {"value": value, "type": type, "metadata": dict(metadata or {})}
        if provider is not None:
            body["provider"] = provider
        if session:
            body["session"] = True
        if expires_at is not None:
            body["expires_at"] = _iso_of(expires_at)
        status, _ = self._call("PUT", self._credential_path(name), body)
        return self.info(owner, name), status == 201

    def update_metadata(self, owner: str, name: str, metadata: Mapping[str, Any], *,
                        actor: str | None = None) -> CredentialInfo:
        _, body = self._call("PATCH", self._credential_path(name), {"metadata": dict(metadata)})
        return info_from_json(owner, body)

    def set_expiry(self, owner: str, name: str, expires_at: float | None, *,
                   actor: str | None = None) -> CredentialInfo:
        body = {"expires_at": _iso_of(expires_at) if expires_at is not None else None}
        _, reply = self._call("PATCH", self._credential_path(name), body)
        return info_from_json(owner, reply)

    def purge_expired(self, owner: str | None = None) -> builtins.list[tuple[str, str]]:
        """The service purges its own expired values (and refuses them until then)."""
        return []

    def end_session(self, owner: str, *, actor: str | None = None, reason: str = "session ended") -> builtins.list[str]:
        """This server stops: the service forgets its owner's session-only values now."""
        _, body = self._call("DELETE", "api/session")
        return list((body or {}).get("ended", []))

    def session_heartbeat(self, owner: str) -> None:
        """The service keeps session-only values while heartbeats come (see its session_timeout)."""
        self._call("POST", "api/session")

    def replace_value(self, owner: str, name: str, expected: str, value: str, metadata: Mapping[str, Any], *,
                      actor: str | None = None, action: str = "refresh") -> CredentialInfo:
        raise NotAvailable("OAuth2 token refresh is not available when this server uses the JupyterHub keyvault "
                           "service (c.KeyVault.backend = 'hub')")

    def delete(self, owner: str, name: str, *, actor: str | None = None) -> None:
        self._call("DELETE", self._credential_path(name))

    def resolve(self, owner: str, name: str, *, actor: str | None = None, how_to_add: str | None = None,
                purpose: str = "use") -> ResolvedCredential:
        """Direct mode only: the user's OWN personal value (the service never returns a shared one)."""
        try:
            _, body = self._call("GET", self._credential_path(name, "/value"))
        except NotFound:
            raise NoCredential(f"No personal API key configured for {name}: add one with the Key Vault panel "
                               "(shared keys are usable through the proxy only)") from None
        return ResolvedCredential(name, body["value"], "vault", body.get("provider"), body.get("type", "api_key"),
                                  body.get("metadata") or {})

    def get_value(self, owner: str, name: str, **_: Any) -> str:
        return self.resolve(owner, name).value

    def test(self, owner: str, name: str, *, actor: str) -> dict:
        """The service tests it: this server never decrypts."""
        _, body = self._call("POST", self._credential_path(name, "/test"))
        return body

    def learn_values(self, owner: str) -> None:
        """Values stay in the service; provider patterns still scrub here."""

    def upstream(self, owner: str, provider: Provider, name: str, *, actor: str) -> Upstream:
        """The service's proxy injects the key (personal or shared) and counts usage."""
        base = self.service_url + "proxy/" + provider.id + ("/" + provider.proxy_prefix if provider.proxy_prefix else "")
        return Upstream(base, {"X-KeyVault-Credential": name, "Authorization": f"token {self._token}"}, None)

    def access_tokens(self) -> RefusingTokens:
        return RefusingTokens(lambda: NotAvailable(TOKENS_NOT_AVAILABLE))

    def record_uses(self, owner: str, uses: Mapping[tuple[str, str], int]) -> None:
        """The service's proxy injects the keys and records their uses."""

    def audit(self, owner: str, action: str, target: str | None, outcome: str = "ok", **_: Any) -> None:
        """The service audits every use itself; local events (e.g. notebook denials) go to the server log."""

    def audit_events(self, owner: str | None, limit: int = 100, before_id: int | None = None) -> builtins.list[AuditEvent]:
        _, body = self._call("GET", f"api/audit?limit={int(limit)}")
        events = []
        for e in body["events"]:
            events.append(AuditEvent(e.get("id"), _ts(e.get("at")) or time.time(), owner or self.username,
                                     e.get("actor") or "", e.get("action") or "", e.get("target"),
                                     e.get("outcome") or "", e.get("detail")))
        return events

    def status(self, **_options: Any) -> dict[str, Any]:  # check= and with_paths= are local-vault options
        try:
            _, body = self._call("GET", "api/status")
        except HubServiceError as exc:
            # Reported, not raised: the server (and its extension) must start even while the service is down.
            return {"protection": {"source": "hub", "strong": None, "detail": "keyvault service unreachable"},
                    "backend": "hub", "location": self.service_url, "credentials": None, "warnings": [str(exc)]}
        return {"protection": body["protection"], "backend": "hub", "location": self.service_url,
                "credentials": None, "warnings": body.get("warnings", []), "hub": {
                    "service": body.get("service"), "user": body.get("user"),
                    "allow_direct_access": body.get("allow_direct_access")}}

    def usage(self) -> dict:
        return self._call("GET", "api/usage")[1]

    def count(self, owner: str | None = None) -> int:
        return len(self.list(owner or self.username))

    def close(self) -> None:
        pass

