"""The admin page (browser: JupyterHub OAuth cookie, JupyterHub's XSRF check on every POST)."""

from __future__ import annotations

import asyncio
import html

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web

from ... import providers
from ...store import InvalidInput
from ...store.model import validate_name
from ...web.errors import http_errors
from ..common import GRANT_KINDS, SHARED_OWNER
from .admin import grant_subject


class AdminPageHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def hub_auth(self):
        return self.settings["hub_oauth"]

    @property
    def kv(self):
        return self.settings["keyvault"]

    async def _admin(self):
        user = self.current_user
        ident = await self.kv.identity(self.hub_auth, user["name"])
        if not ident["is_keyvault_admin"]:
            raise web.HTTPError(403, "keyvault administration needs a JupyterHub admin")
        return user["name"]

    @web.authenticated
    async def get(self):
        await self._admin()
        shared = await asyncio.to_thread(self.kv.vault.list, SHARED_OWNER, include_env=False)
        grants = await asyncio.to_thread(self.kv.store.grants_of)
        usage = await asyncio.to_thread(self.kv.store.usage_rows, None, None)
        esc = html.escape
        xsrf = esc(self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token)
        rows = "".join(
            f"<tr><td>{esc(i.name)}</td><td>{esc(i.provider or '')}</td><td>"
            + ", ".join(f"{esc(g['kind'])}:{esc(g['subject'])}" for g in grants if g["shared"] == i.name)
            + "</td></tr>" for i in shared)
        usage_rows = "".join(f"<tr><td>{esc(u['day'])}</td><td>{esc(u['user'])}</td><td>{esc(u['source'])}</td>"
                             f"<td>{esc(u['credential'])}</td><td>{u['requests']}</td><td>{u['tokens']}</td></tr>"
                             for u in usage[:200])
        action = esc(self.kv.service_prefix + "admin")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
        self.set_header("X-Frame-Options", "DENY")
        self.finish(f"""<!doctype html><html><head><meta charset="utf-8"><title>Key Vault admin</title></head><body>
<h1>Key Vault: shared keys</h1>
<p>Values are never shown; a shared key is only usable through this service's proxy.</p>
<table border="1"><tr><th>Name</th><th>Provider</th><th>Granted to</th></tr>{rows}</table>
<h2>Add or replace a shared key</h2>
<form method="post" action="{action}" autocomplete="off"><input type="hidden" name="_xsrf" value="{xsrf}">
<input type="hidden" name="op" value="set">
<label>Name <input name="name" required pattern="[A-Za-z_][A-Za-z0-9_]{{0,63}}"></label>
<label>Provider <select name="provider">{''.join(f'<option>{esc(p)}</option>' for p in providers.PROVIDERS)}</select></label>
<label>Value <input type="password" name="value" required></label> <button>Save</button></form>
<h2>Grant or revoke</h2>
<form method="post" action="{action}"><input type="hidden" name="_xsrf" value="{xsrf}">
<label>Shared key <input name="name" required></label>
<label><select name="kind"><option>group</option><option>user</option></select></label>
<label>Name <input name="subject" required></label>
<button name="op" value="grant">Grant</button> <button name="op" value="revoke">Revoke</button></form>
<h2>Usage</h2><table border="1"><tr><th>Day</th><th>User</th><th>Source</th><th>Credential</th><th>Requests</th>
<th>Tokens</th></tr>{usage_rows}</table></body></html>""")

    @web.authenticated
    async def post(self):
        actor = await self._admin()  # the XSRF check ran in prepare (HubOAuth.check_xsrf_cookie)
        op = self.get_body_argument("op", "")
        try:
            name = validate_name(self.get_body_argument("name", ""))
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None
        with http_errors():
            if op == "set":
                provider = self.get_body_argument("provider", "")
                if provider not in providers.PROVIDERS:
                    raise web.HTTPError(422, "unknown provider")
                await asyncio.to_thread(self.kv.vault.set, SHARED_OWNER, name, self.get_body_argument("value", ""),
                                        provider=provider, actor=actor)
                await self.kv.changed(SHARED_OWNER, name)
            elif op in ("grant", "revoke"):
                kind = self.get_body_argument("kind", "")
                if kind not in GRANT_KINDS:
                    raise web.HTTPError(422, "kind must be group or user")
                subject = grant_subject(self.get_body_argument("subject", ""))
                await asyncio.to_thread(self.kv.vault.info, SHARED_OWNER, name)
                if op == "grant":
                    await asyncio.to_thread(self.kv.store.grant, name, kind, subject, actor)
                else:
                    await asyncio.to_thread(self.kv.store.revoke, name, kind, subject)
                self.kv.policy_changed()
                await asyncio.to_thread(self.kv.audit, SHARED_OWNER, op, name, "ok", actor=actor,
                                        detail=f"{kind}={subject}")
            else:
                raise web.HTTPError(400, "unknown operation")
        self.redirect(self.kv.service_prefix + "admin")


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    @property
    def hub_auth(self):
        return self.settings["hub_oauth"]


