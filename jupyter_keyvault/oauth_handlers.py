"""HTTP side of OAuth2 credentials and vault access tokens.

- `/keyvault/oauth/{provider}/start` and `/keyvault/oauth/callback`: the browser flow.
- `/keyvault/api/tokens[/{id}]`: mint, list and delete vault access tokens (REST).
- `/keyvault/proxy/oauth/{name}/…`: the provider's API with a fresh access token injected.
- `/keyvault/kernel/oauth/{name}/token`: direct mode, a fresh access token for a kernel.
- `AccessTokenMixin`: lets the proxies accept `Authorization: Bearer kvt1_…` besides kernels.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import time
from typing import TYPE_CHECKING

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .handlers import AUTH_RESOURCE, KeyVaultHandler
from .kernel_handlers import KernelAPIHandler
from .oauth import NeedsReauth, OAuthError, safe_next
from .proxy import FORWARD_HEADERS, ProxyHandler, proxied_url
from .store import InvalidInput, NoCredential, NotFound, VaultError
from .store.tokens import TokenRefused, TokenScopeError, looks_like_token

if TYPE_CHECKING:
    from .app import KeyVaultApp

STATE_COOKIE = "keyvault-oauth-state"


# -- vault access tokens as proxy credentials
def access_token_from_headers(headers) -> str | None:
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and looks_like_token(value.strip()):
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()  # the anthropic SDK's header
    return api_key if looks_like_token(api_key) else None


class AccessTokenMixin:
    """A proxy caller is a kernel (kvk1 HMAC) or a holder of a vault access token (kvt1)."""

    token_id: str | None = None
    _caller_checked = False

    def authenticate_kernel(self) -> str:
        if self._caller_checked:  # authenticate_caller ran (as a kernel or a token holder)
            return self.kernel_id
        return super().authenticate_kernel()

    def caller(self) -> str:
        return f"token:{self.token_id}" if self.token_id else f"kernel:{self.kernel_id}"

    async def authenticate_caller(self, credential: str) -> None:
        token = access_token_from_headers(self.request.headers)
        if token is None:
            self.authenticate_kernel()
            self._caller_checked = True
            return
        kv: KeyVaultApp = self.settings["keyvault"]
        ip = self.request.remote_ip or "-"
        blocked = kv.token_blocked_until.get(ip, 0.0)
        if blocked > time.monotonic():
            self._token_refusal(429, f"too many failed token attempts; retry in {int(blocked - time.monotonic()) + 1} s")
        try:
            info = await asyncio.to_thread(kv.tokens.verify, kv.owner, token, credential)
        except TokenScopeError as exc:
            await asyncio.to_thread(kv.vault.audit, kv.owner, "token_auth", credential, "denied",
                                    actor="token", detail="out of scope")
            raise web.HTTPError(403, str(exc)) from None
        except (TokenRefused, VaultError) as exc:
            await asyncio.to_thread(kv.vault.audit, kv.owner, "token_auth", credential, "refused",
                                    actor="token", detail=f"from {ip}")
            wait = kv.token_failure_limiter.take(ip)
            if wait:
                kv.token_blocked_until[ip] = time.monotonic() + wait
                self._token_refusal(429, f"too many failed token attempts; retry in {int(wait) + 1} s")
            message = str(exc) if isinstance(exc, TokenRefused) else "vault access token refused"
            raise web.HTTPError(401, message) from None
        self.token_id = info.id
        self._caller_checked = True

    def _token_refusal(self, status: int, message: str):
        self._retry_after = message.rsplit(" ", 2)[-2]
        raise web.HTTPError(status, message)


class TokenProxyHandler(AccessTokenMixin, ProxyHandler):
    """The provider proxy of proxy.py, also open to vault access tokens."""

    async def _handle(self, provider_id: str):
        from . import providers

        pid = provider_id if provider_id in providers.PROVIDERS else None
        name = (self.request.headers.get("X-KeyVault-Credential")
                or (providers.PROVIDERS[pid].env_var if pid else "") or "").strip()
        await self.authenticate_caller(name)
        await super()._handle(provider_id)

    def write_error(self, status_code: int, **kwargs):
        if status_code == 429 and getattr(self, "_retry_after", None):
            self.set_header("Retry-After", self._retry_after)
        super().write_error(status_code, **kwargs)


class OAuthProxyHandler(TokenProxyHandler):
    """`/keyvault/proxy/oauth/{name}/…` → the provider's api_base_url, Bearer access token injected."""

    async def _handle(self, name: str):
        await self.authenticate_caller(name)
        kv: KeyVaultApp = self.settings["keyvault"]
        metadata = await kv.credential_metadata(name)
        await self.check_notebook_access(name, metadata)
        prefix = f"{self.base_url.rstrip('/')}/keyvault/proxy/oauth/{name}/"
        path = self.request.path if self.request.path != prefix.rstrip("/") else prefix
        oauth_meta = metadata.get("oauth")
        if not isinstance(oauth_meta, dict):
            raise web.HTTPError(404, f"no OAuth credential named {name}")
        try:
            configured = kv.oauth.provider(str(oauth_meta.get("provider", "")))
        except OAuthError as exc:
            raise web.HTTPError(502, str(exc)) from None
        # The path is checked before any token is read, as the provider proxy does.
        url = proxied_url(path, self.request.query, prefix, None, configured.api_base_url)
        try:
            access, provider = await kv.oauth.access_token(name, actor=self.caller())
        except NeedsReauth as exc:
            raise web.HTTPError(401, str(exc)) from None
        except (NotFound, NoCredential) as exc:
            raise web.HTTPError(404, str(exc)) from None
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None
        except OAuthError as exc:
            raise web.HTTPError(502, str(exc)) from None
        except VaultError as exc:
            raise web.HTTPError(503, str(exc)) from None
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() in FORWARD_HEADERS}
        headers["Accept-Encoding"] = "identity"
        headers["Authorization"] = f"Bearer {access}"
        self._relay = asyncio.ensure_future(self._relay_upstream(url, headers, access))
        try:
            await self._relay
        except asyncio.CancelledError:
            if not self._client_gone:
                raise

    @allow_unauthenticated
    async def get(self, name: str, path: str = ""):
        await self._handle(name)

    @allow_unauthenticated
    async def post(self, name: str, path: str = ""):
        await self._handle(name)

    @allow_unauthenticated
    async def put(self, name: str, path: str = ""):
        await self._handle(name)

    @allow_unauthenticated
    async def delete(self, name: str, path: str = ""):
        await self._handle(name)

    @allow_unauthenticated
    async def patch(self, name: str, path: str = ""):
        await self._handle(name)


class KernelOAuthTokenHandler(KernelAPIHandler):
    """Direct mode: a fresh access token for the kernel (`keyvault.token(name)`)."""

    @allow_unauthenticated
    async def get(self, raw_name: str):
        name = self.name_from_path(raw_name)
        if not self.kv.allow_direct_access:
            raise web.HTTPError(403, "direct access is disabled on this server "
                                     "(c.KeyVault.allow_direct_access = False); use keyvault.http(name)")
        await self.check_notebook_access(name, await self.kv.credential_metadata(name))
        try:
            access, provider = await self.kv.oauth.access_token(name, actor=f"kernel:{self.kernel_id}")
        except NeedsReauth as exc:
            raise web.HTTPError(401, str(exc)) from None
        except OAuthError as exc:
            raise web.HTTPError(502, str(exc)) from None
        except NotFound as exc:
            raise web.HTTPError(404, str(exc)) from None
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None
        except VaultError as exc:
            raise web.HTTPError(503, str(exc)) from None
        await self.off_loop(self.kv.vault.audit, self.kv.owner, "reveal", name, "ok", actor=f"kernel:{self.kernel_id}")
        self.write_json({"name": name, "provider": provider.id, "value": access, "api_base_url": provider.api_base_url})


# -- the browser flow
def _page(title: str, message: str, next_path: str | None = None) -> str:
    link = f'<p><a href="{html.escape(next_path)}">Back to Jupyter</a></p>' if next_path else ""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Key Vault: "
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(message)}</p><p>Nothing was stored.</p>{link}</body></html>")


class OAuthPageHandler(JupyterHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def kv(self) -> "KeyVaultApp":
        return self.settings["keyvault"]

    def user_key(self) -> str:
        user = self.current_user
        return str(getattr(user, "username", None) or user)

    def cookie_path(self) -> str:
        return url_path_join(self.base_url, "keyvault/oauth/")

    def fail(self, status: int, title: str, message: str, next_path: str | None = None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(_page(title, message, next_path))


class OAuthStartHandler(OAuthPageHandler):
    @web.authenticated
    @authorized(action="write")
    async def get(self, provider_id: str):
        try:
            next_path = safe_next(self.get_argument("next", None), self.base_url)
            provider = self.kv.oauth.provider(provider_id)
            redirect_uri = f"{self.request.protocol}://{self.request.host}" + url_path_join(
                self.base_url, "keyvault/oauth/callback")
            state, url = self.kv.oauth.begin(provider.id, self.user_key(), self.get_argument("name", ""),
                                             next_path, redirect_uri)
        except (OAuthError, InvalidInput) as exc:
            await asyncio.to_thread(self.kv.vault.audit, self.kv.owner, "oauth_start", provider_id, "refused",
                                    detail=str(exc)[:200])
            return self.fail(400, "Cannot connect", str(exc))
        cookie = json.dumps({"s": state, "u": self.user_key()})
        self.set_secure_cookie(STATE_COOKIE, cookie, expires_days=None, path=self.cookie_path(), httponly=True,
                               samesite="Lax", secure=self.request.protocol == "https")
        self.redirect(url)


class OAuthCallbackHandler(OAuthPageHandler):
    @web.authenticated
    @authorized(action="write")
    async def get(self):
        raw_cookie = self.get_secure_cookie(STATE_COOKIE, max_age_days=1)
        self.clear_cookie(STATE_COOKIE, path=self.cookie_path())
        state = self.get_argument("state", "")
        try:
            bound = json.loads(raw_cookie) if raw_cookie else {}
        except ValueError:
            bound = {}
        cookie_state = bound.get("s", "") if isinstance(bound, dict) else ""
        same = hmac.compare_digest(str(cookie_state).encode(), state.encode()) and bool(state)
        flow = self.kv.oauth.take(state) if same else None  # a state is used at most once
        if flow is None or flow.user != self.user_key() or bound.get("u") != flow.user:
            await self._audit("refused", "state missing, wrong, expired or replayed")
            return self.fail(400, "Connection refused",
                             "This sign-in link is invalid, expired or was already used. Start again from Jupyter.")
        error = self.get_argument("error", None)
        if error:
            await self._audit("denied", f"provider error {error[:64]}", flow.name)
            reason = "you declined access" if error == "access_denied" else f"the provider reported: {error[:64]}"
            return self.fail(400, "Not connected", f"{flow.name} was not connected: {reason}.", flow.next_path)
        code = self.get_argument("code", "")
        if not code:
            await self._audit("error", "no code", flow.name)
            return self.fail(400, "Not connected", "The provider sent no authorization code.", flow.next_path)
        try:
            await self.kv.oauth.complete(flow, code, actor=self.user_key())
        except (OAuthError, InvalidInput) as exc:
            await self._audit("error", str(exc)[:200], flow.name)
            return self.fail(502, "Not connected", str(exc), flow.next_path)
        self.kv.invalidate(flow.name)
        self.redirect(flow.next_path)

    async def _audit(self, outcome: str, detail: str, name: str | None = None) -> None:
        await asyncio.to_thread(self.kv.vault.audit, self.kv.owner, "oauth_connect", name, outcome,
                                actor=self.user_key(), detail=detail)


# -- REST for vault access tokens
class TokensHandler(KeyVaultHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self):
        items = await self.off_loop(self.kv.tokens.list, self.owner)
        self.write_json({"tokens": [t.to_json() for t in items]})

    @web.authenticated
    @authorized(action="write")
    async def post(self):
        body = self.json_body()
        unknown = set(body) - {"name", "credentials", "expires_in_days"}
        if unknown:
            raise web.HTTPError(422, f"unknown field(s): {', '.join(sorted(unknown))}")
        credentials = body.get("credentials")
        if not isinstance(credentials, list) or not all(isinstance(c, str) for c in credentials):
            raise web.HTTPError(422, "field 'credentials' must be a list of credential names")
        days = body.get("expires_in_days", 30)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
            raise web.HTTPError(422, "field 'expires_in_days' must be an integer from 1 to 3650")
        self.limit(self.kv.write_limiter, "write")
        token, info = await self.off_loop(self.kv.tokens.create, self.owner, body.get("name"), credentials,
                                          days * 86400, actor=self.actor)
        self.set_header("Location", url_path_join(self.base_url, "keyvault/api/tokens", info.id))
        self.write_json({"token": token, **info.to_json()}, status=201)


class TokenHandler(KeyVaultHandler):
    @web.authenticated
    @authorized(action="write")
    async def delete(self, token_id: str):
        self.limit(self.kv.write_limiter, "write")
        await self.off_loop(self.kv.tokens.delete, self.owner, token_id, actor=self.actor)
        self.set_status(204)
        self.finish()


_NAME = r"(?P<name>[A-Za-z_][A-Za-z0-9_]{0,63})"
handlers = [
    (r"/keyvault/api/tokens/?", TokensHandler),
    (r"/keyvault/api/tokens/(?P<token_id>[^/]+)/?", TokenHandler),
    (r"/keyvault/oauth/callback", OAuthCallbackHandler),
    (r"/keyvault/oauth/(?P<provider_id>[a-z_][a-z0-9_]*)/start", OAuthStartHandler),
    (r"/keyvault/kernel/oauth/(?P<raw_name>[^/]+)/token", KernelOAuthTokenHandler),
    (rf"/keyvault/proxy/oauth/{_NAME}(?P<path>/.*)?", OAuthProxyHandler),
    (r"/keyvault/proxy/(?P<provider_id>[a-z_]+)(?P<path>/.*)?", TokenProxyHandler),
]
