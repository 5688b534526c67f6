"""OAuth2 credentials: provider config, the authorization-code flow with PKCE, refresh on use.

Nothing here imports tornado: the handlers (oauth_handlers.py) call `OAuthManager`. The
protocol work (authorization URL with S256 challenge, code exchange, refresh) is authlib's
client; this module adds state binding, storage and single-flight refresh.

A connected credential is a vault record of type `oauth2`: its sealed value is JSON
{access_token, refresh_token, token_type, expires_at, scope}; its metadata["oauth"] holds
only non-secret facts (provider, scopes, expires_at, needs_reauth) for listings.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from . import providers
from .store import InvalidInput, NotFound, VaultError
from .store.errors import StaleValue
from .store.model import validate_name

CLIENT_SECRET_TYPE = "oauth_client_secret"  # noqa: S105 - a name, not a secret
OAUTH_TYPE = "oauth2"
STATE_TTL_SECONDS = 600
_AUTH_METHODS = ("client_secret_post", "client_secret_basic", "none")
_PROVIDER_KEYS = {"display_name", "authorize_url", "token_url", "scopes", "client_id", "api_base_url",
                  "revoke_url", "revocation_endpoint", "extra_authorize_params", "client_secret_credential",
                  "token_endpoint_auth_method"}

GOOGLE_EXAMPLE = {
    "display_name": "Google",
    "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
    "token_url": "https://oauth2.googleapis.com/token",
    "revoke_url": "https://oauth2.googleapis.com/revoke",
    "api_base_url": "https://www.googleapis.com",
    "scopes": ["openid", "email", "https://www.googleapis.com/auth/drive.readonly"],
    "client_id": "1234-example.apps.googleusercontent.com",
    "extra_authorize_params": {"access_type": "offline", "prompt": "consent"},
}


class OAuthError(VaultError):
    """A clear, value-free failure of an OAuth step."""


class NeedsReauth(OAuthError):
    """The refresh token was refused (revoked or expired): the user must connect again."""


@dataclass(frozen=True)
class OAuthProvider:
    id: str
    display_name: str
    authorize_url: str
    token_url: str
    client_id: str
    api_base_url: str
    scopes: tuple[str, ...] = ()
    revoke_url: str | None = None
    extra_authorize_params: dict[str, str] = field(default_factory=dict)
    client_secret_credential: str = ""
    token_endpoint_auth_method: str = "client_secret_post"  # noqa: S105 - an auth method name

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "display_name": self.display_name}


def default_secret_name(provider_id: str) -> str:
    return f"OAUTH_{provider_id.upper()}_CLIENT_SECRET"


def _url(pid: str, key: str, value: Any) -> str:
    try:
        return providers.validate_base_url(value)
    except (InvalidInput, ValueError) as exc:
        raise ValueError(f"oauth_providers[{pid!r}].{key}: {exc}") from None


def validate_providers(value: Any) -> dict[str, dict[str, Any]]:
    """Normalise `c.KeyVault.oauth_providers`; raise ValueError with one clear sentence."""
    if not isinstance(value, dict):
        raise ValueError("oauth_providers must be a dict of provider id -> settings")
    out: dict[str, dict[str, Any]] = {}
    for pid, conf in value.items():
        if not isinstance(pid, str) or not pid.isidentifier() or not pid.islower() or len(pid) > 32:
            raise ValueError(f"oauth_providers: id {pid!r} must be a short lower-case identifier (e.g. 'google')")
        if not isinstance(conf, dict):
            raise ValueError(f"oauth_providers[{pid!r}] must be a dict")
        if "client_secret" in conf:
            raise ValueError(f"oauth_providers[{pid!r}]: never put the client secret in config")
        if "revocation_endpoint" in conf:  # RFC 8414's name for it; revoke_url is the older spelling
            if conf.get("revoke_url") and conf["revoke_url"] != conf["revocation_endpoint"]:
                raise ValueError(f"oauth_providers[{pid!r}]: revoke_url and revocation_endpoint disagree; give one")
            conf = {**{k: v for k, v in conf.items() if k != "revocation_endpoint"},
                    "revoke_url": conf["revocation_endpoint"]}
        unknown = set(conf) - _PROVIDER_KEYS
        if unknown:
            raise ValueError(f"oauth_providers[{pid!r}]: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("authorize_url", "token_url", "client_id", "api_base_url"):
            if not isinstance(conf.get(key), str) or not conf[key].strip():
                raise ValueError(f"oauth_providers[{pid!r}].{key} is required")
        scopes = conf.get("scopes", [])
        if isinstance(scopes, str):
            scopes = scopes.split()
        if not isinstance(scopes, (list, tuple)) or not all(isinstance(s, str) and s and " " not in s for s in scopes):
            raise ValueError(f"oauth_providers[{pid!r}].scopes must be a list of scope strings")
        extra = conf.get("extra_authorize_params", {})
        if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise ValueError(f"oauth_providers[{pid!r}].extra_authorize_params must map strings to strings")
        reserved = {"state", "code_challenge", "code_challenge_method", "redirect_uri", "client_id", "response_type"}
        if reserved & set(extra):
            raise ValueError(f"oauth_providers[{pid!r}].extra_authorize_params may not set "
                             f"{', '.join(sorted(reserved & set(extra)))}")
        method = conf.get("token_endpoint_auth_method", "client_secret_post")
        if method not in _AUTH_METHODS:
            raise ValueError(f"oauth_providers[{pid!r}].token_endpoint_auth_method must be one of "
                             f"{', '.join(_AUTH_METHODS)}")
        secret_name = conf.get("client_secret_credential") or default_secret_name(pid)
        try:
            secret_name = validate_name(secret_name)
        except InvalidInput as exc:
            raise ValueError(f"oauth_providers[{pid!r}].client_secret_credential: {exc}") from None
        out[pid] = {
            "display_name": str(conf.get("display_name") or pid.capitalize()),
            "authorize_url": _url(pid, "authorize_url", conf["authorize_url"]),
            "token_url": _url(pid, "token_url", conf["token_url"]),
            "api_base_url": _url(pid, "api_base_url", conf["api_base_url"]),
            "revoke_url": _url(pid, "revoke_url", conf["revoke_url"]) if conf.get("revoke_url") else None,
            "client_id": conf["client_id"].strip(),
            "scopes": list(scopes),
            "extra_authorize_params": dict(extra),
            "client_secret_credential": secret_name,
            "token_endpoint_auth_method": method,
        }
    return out


def build_providers(config: dict[str, dict[str, Any]]) -> dict[str, OAuthProvider]:
    return {pid: OAuthProvider(id=pid, **{**conf, "scopes": tuple(conf["scopes"])}) for pid, conf in config.items()}


def safe_next(next_path: str | None, base_url: str) -> str:
    """Only a path on this server: no scheme, no host, no `//` or `\\` tricks (no open redirect)."""
    default = base_url.rstrip("/") + "/lab" if base_url.rstrip("/") else "/lab"
    if not next_path:
        return default
    parts = urlsplit(next_path)
    if (parts.scheme or parts.netloc or not next_path.startswith("/") or next_path.startswith("//")
            or "\\" in next_path or any(ord(c) < 0x21 or ord(c) == 0x7f for c in next_path)
            or not next_path.startswith(base_url.rstrip("/") + "/")):
        raise OAuthError("refused: 'next' must be a path on this Jupyter server")
    return next_path


@dataclass
class PendingFlow:
    state: str
    user: str
    provider: str
    name: str
    next_path: str
    verifier: str
    redirect_uri: str
    expires: float


def token_payload(token: dict[str, Any], now: float, previous_refresh: str | None = None) -> dict[str, Any]:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuthError("the provider's token response has no access_token")
    expires_in = token.get("expires_in")
    expires_at = token.get("expires_at")
    if isinstance(expires_in, (int, float)) and expires_in > 0:
        expires_at = now + float(expires_in)
    elif not isinstance(expires_at, (int, float)):
        expires_at = None
    return {
        "access_token": access,
        # Providers that do not rotate refresh tokens omit it on refresh: keep the old one.
        "refresh_token": token.get("refresh_token") or previous_refresh,
        "token_type": token.get("token_type") or "Bearer",
        "expires_at": expires_at,
        "scope": token.get("scope"),
    }


class OAuthManager:
    """Server-side OAuth state for one vault owner: pending flows and single-flight refresh."""

    def __init__(self, vault, owner: str, providers_: dict[str, OAuthProvider], *, refresh_skew: float = 60.0,
                 timeout: float = 15.0, clock: Callable[[], float] = time.time):
        self.vault = vault
        self.owner = owner
        self.providers = providers_
        self.refresh_skew = refresh_skew
        self.timeout = timeout
        self._clock = clock
        self._pending: dict[str, PendingFlow] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def provider(self, pid: str) -> OAuthProvider:
        if pid not in self.providers:
            raise OAuthError(f"no OAuth provider {pid!r} is configured on this server")
        return self.providers[pid]

    def _client(self, provider: OAuthProvider, client_secret: str | None, redirect_uri: str | None = None):
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        return AsyncOAuth2Client(
            provider.client_id, client_secret, scope=" ".join(provider.scopes), redirect_uri=redirect_uri,
            code_challenge_method="S256", token_endpoint_auth_method=provider.token_endpoint_auth_method,
            timeout=self.timeout, trust_env=False, follow_redirects=False,
        )

    def _client_secret(self, provider: OAuthProvider) -> str | None:
        if provider.token_endpoint_auth_method == "none":  # noqa: S105 - an auth method name
            return None
        try:
            return self.vault.get_value(self.owner, provider.client_secret_credential, purpose="oauth_client",
                                        touch=False)
        except NotFound:
            raise OAuthError(
                f"the client secret of {provider.display_name} is not in the vault: store it with "
                f"`jupyter keyvault set {provider.client_secret_credential} --type {CLIENT_SECRET_TYPE}`"
            ) from None

    # -- the authorization-code flow
    def begin(self, pid: str, user: str, name: str, next_path: str, redirect_uri: str) -> tuple[str, str]:
        """Returns (state, authorization URL). The PKCE verifier stays in this process."""
        provider = self.provider(pid)
        name = validate_name(name)
        self._prune()
        state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        client = self._client(provider, None, redirect_uri)
        url, _ = client.create_authorization_url(provider.authorize_url, state=state, code_verifier=verifier,
                                                 **provider.extra_authorize_params)
        self._pending[state] = PendingFlow(state, user, pid, name, next_path, verifier, redirect_uri,
                                           self._clock() + STATE_TTL_SECONDS)
        return state, url

    def take(self, state: str) -> PendingFlow | None:
        """Remove and return a pending flow: a state works once (replay finds nothing)."""
        self._prune()
        return self._pending.pop(state, None) if isinstance(state, str) else None

    def _prune(self) -> None:
        now = self._clock()
        for key in [k for k, f in self._pending.items() if f.expires < now]:
            del self._pending[key]

    async def complete(self, flow: PendingFlow, code: str, *, actor: str) -> None:
        provider = self.provider(flow.provider)
        secret = await asyncio.to_thread(self._client_secret, provider)
        from authlib.integrations.base_client.errors import OAuthError as AuthlibError

        async with self._client(provider, secret, flow.redirect_uri) as client:
            try:
                token = await client.fetch_token(provider.token_url, code=code, code_verifier=flow.verifier)
            except AuthlibError as exc:
                raise OAuthError(f"{provider.display_name} refused the code exchange: {exc.error}") from None
            except Exception as exc:  # noqa: BLE001 - httpx transport errors: a clear, value-free line
                raise OAuthError(f"{provider.display_name} token endpoint failed: {type(exc).__name__}") from None
        payload = token_payload(dict(token), self._clock())
        scopes = (payload["scope"] or " ".join(provider.scopes)).split()
        meta = {"oauth": {"provider": provider.id, "scopes": scopes, "expires_at": payload["expires_at"],
                          "needs_reauth": False}}
        await asyncio.to_thread(self.vault.set, self.owner, flow.name, json.dumps(payload), provider=None,
                                type=OAUTH_TYPE, metadata=meta, actor=actor, action="oauth_connect")

    # -- revocation (RFC 7009)
    async def revoke(self, name: str, metadata: dict[str, Any], *, actor: str) -> dict[str, Any]:
        """Revoke a credential's tokens at its provider: the refresh token (which ends the grant at most
        providers), then the access token. Never raises: the outcome is returned and audited, so the
        caller deletes locally whatever the provider says."""
        oauth_meta = metadata.get("oauth") or {}
        provider = self.providers.get(oauth_meta.get("provider") or "")
        if provider is None or not provider.revoke_url:
            outcome = {"ok": False, "attempted": False,
                       "detail": "no revocation endpoint is configured for this provider: its tokens stay valid "
                                 "there until they expire"}
        else:
            outcome = await self._revoke_at(name, provider)
        await asyncio.to_thread(self.vault.audit, self.owner, "revoke", name, "ok" if outcome["ok"] else "failed",
                                actor=actor, detail=outcome["detail"])
        return outcome

    async def _revoke_at(self, name: str, provider: OAuthProvider) -> dict[str, Any]:
        try:
            raw = await asyncio.to_thread(self.vault.get_value, self.owner, name, purpose="revoke", touch=False)
            payload = json.loads(raw)
            secret = await asyncio.to_thread(self._client_secret, provider)
        except (VaultError, ValueError) as exc:
            return {"ok": False, "attempted": False, "detail": f"not revoked: {exc}"}
        tokens = [(payload.get(kind), kind) for kind in ("refresh_token", "access_token") if payload.get(kind)]
        revoked = []
        async with self._client(provider, secret) as client:
            for token, hint in tokens:
                try:
                    resp = await client.revoke_token(provider.revoke_url, token=token, token_type_hint=hint)
                except Exception as exc:  # noqa: BLE001 - httpx transport errors: a clear, value-free line
                    return {"ok": False, "attempted": True,
                            "detail": f"{provider.display_name} revocation endpoint unreachable ({type(exc).__name__})"}
                if resp.status_code != 200:
                    return {"ok": False, "attempted": True,
                            "detail": f"{provider.display_name} refused to revoke the {hint.replace('_', ' ')} "
                                      f"(HTTP {resp.status_code})"}
                revoked.append(hint.replace("_", " "))
        return {"ok": True, "attempted": True,
                "detail": f"{provider.display_name} revoked the {' and the '.join(revoked) or 'grant'}"}

    # -- use
    def _read(self, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        info = self.vault.info(self.owner, name)
        if info.type != OAUTH_TYPE:
            raise InvalidInput(f"{name} is not an OAuth2 credential")
        raw = self.vault.get_value(self.owner, name, purpose="use", touch=True)
        return raw, json.loads(raw), dict(info.metadata)

    async def access_token(self, name: str, *, actor: str) -> tuple[str, OAuthProvider]:
        """A fresh access token, refreshing once for all concurrent callers when needed."""
        name = validate_name(name)
        raw, payload, meta = await asyncio.to_thread(self._read, name)
        provider = self.provider((meta.get("oauth") or {}).get("provider", ""))
        if not self._stale(payload):
            return payload["access_token"], provider
        lock = self._locks.setdefault((self.owner, name), asyncio.Lock())
        async with lock:
            raw, payload, meta = await asyncio.to_thread(self._read, name)  # another caller may have refreshed
            if self._stale(payload):
                payload = await self._refresh(name, provider, raw, payload, meta, actor=actor)
        return payload["access_token"], provider

    def _stale(self, payload: dict[str, Any]) -> bool:
        expires_at = payload.get("expires_at")
        return expires_at is not None and expires_at - self.refresh_skew <= self._clock()

    async def _refresh(self, name, provider, raw, payload, meta, *, actor: str) -> dict[str, Any]:
        oauth_meta = dict(meta.get("oauth") or {})
        if oauth_meta.get("needs_reauth") or not payload.get("refresh_token"):
            raise NeedsReauth(f"{name} needs to be connected again ({provider.display_name} session ended)")
        secret = await asyncio.to_thread(self._client_secret, provider)
        from authlib.integrations.base_client.errors import OAuthError as AuthlibError

        async with self._client(provider, secret) as client:
            try:
                token = await client.refresh_token(provider.token_url, refresh_token=payload["refresh_token"])
            except AuthlibError as exc:
                if exc.error in ("invalid_grant", "unauthorized_client", "invalid_client"):
                    oauth_meta["needs_reauth"] = True
                    await asyncio.to_thread(self.vault.update_metadata, self.owner, name, {**meta, "oauth": oauth_meta},
                                            actor=actor, audit_action="refresh_failed")
                    raise NeedsReauth(f"{name} needs to be connected again: {provider.display_name} refused the "
                                      f"refresh token ({exc.error})") from None
                raise OAuthError(f"refreshing {name} failed: {exc.error}") from None
            except Exception as exc:  # noqa: BLE001 - httpx transport errors: a clear, value-free line
                raise OAuthError(f"refreshing {name} failed: {provider.display_name} token endpoint "
                                 f"unreachable ({type(exc).__name__})") from None
        new = token_payload(dict(token), self._clock(), payload.get("refresh_token"))
        oauth_meta.update(expires_at=new["expires_at"], needs_reauth=False)
        if new["scope"]:
            oauth_meta["scopes"] = new["scope"].split()
        try:
            await asyncio.to_thread(self.vault.replace_value, self.owner, name, raw, json.dumps(new),
                                    {**meta, "oauth": oauth_meta}, actor=actor, action="refresh")
        except StaleValue:
            # Another process refreshed first: use what it stored.
            _, stored, _ = await asyncio.to_thread(self._read, name)
            return stored
        return new
