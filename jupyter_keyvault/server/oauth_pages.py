"""The OAuth2 browser flow: `/keyvault/oauth/{provider}/start` and `/keyvault/oauth/callback`.
Pages, not JSON: failures show a page, store nothing, and are audited."""

from __future__ import annotations

import asyncio
import hmac
import html
import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..oauth import OAuthError, safe_next
from ..store import InvalidInput
from .base import AUTH_RESOURCE, ManagerMixin

STATE_COOKIE = "keyvault-oauth-state"


def _page(title: str, message: str, next_path: str | None = None) -> str:
    link = f'<p><a href="{html.escape(next_path)}">Back to Jupyter</a></p>' if next_path else ""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Key Vault: "
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(message)}</p><p>Nothing was stored.</p>{link}</body></html>")


class OAuthPageHandler(ManagerMixin, JupyterHandler):
    auth_resource = AUTH_RESOURCE

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


handlers = [
    (r"/keyvault/oauth/callback", OAuthCallbackHandler),
    (r"/keyvault/oauth/(?P<provider_id>[a-z_][a-z0-9_]*)/start", OAuthStartHandler),
]
