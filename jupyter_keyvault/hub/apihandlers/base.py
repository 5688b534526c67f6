"""Base of the hub service's API handlers: JupyterHub token auth, JSON in and out."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from jupyterhub.services.auth import HubAuthenticated, UserNotAllowed
from tornado import web

from ...store import InvalidInput
from ...store.model import validate_name
from ...web.bodies import CredentialWrite, json_object, parse_credential_write
from ...web.errors import error_message, http_errors, set_retry_after
from ...web.headers import ascii_header_value

if TYPE_CHECKING:
    from ..service import KeyVaultHubService

MAX_BODY_BYTES = 64 * 1024


class ServiceBase(HubAuthenticated, web.RequestHandler):
    """JSON API authenticated by a JupyterHub token (header only: no cookie, so no CSRF)."""

    username: str = ""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @property
    def kv(self) -> KeyVaultHubService:
        return self.settings["keyvault"]

    def check_xsrf_cookie(self):
        """Cookies authenticate nothing on the API (HubAuth reads the Authorization header only)."""

    def compute_etag(self):
        return None

    async def prepare(self):
        self.kv.in_flight.enter(self)  # graceful shutdown waits for this request (503 once draining)
        try:
            model = await self.hub_auth.get_user(self, sync=False)
            model = self.check_hub_user(model) if model else None
        except UserNotAllowed:
            raise web.HTTPError(403, f"this token may not use the {self.kv.service_name} service") from None
        except web.HTTPError as exc:
            if exc.status_code < 500:
                raise
            # HubAuth reports a hub that did not answer as 500: it is an outage, and retrying helps.
            raise web.HTTPError(503, "JupyterHub's API did not answer the token check; retry shortly") from None
        if not model:
            raise web.HTTPError(401, "a JupyterHub token is required (Authorization: token ...)")
        if model.get("kind", "user") != "user":
            raise web.HTTPError(403, "only JupyterHub users (and their servers) use this service")
        self._hub_auth_user_cache = model
        self.username = model["name"]

    def on_finish(self):
        self.kv.in_flight.leave(self)

    def on_connection_close(self):
        self.kv.in_flight.leave(self)
        super().on_connection_close()

    def get_current_user(self):
        return getattr(self, "_hub_auth_user_cache", None)

    async def identity(self) -> dict:
        return await self.kv.identity(self.hub_auth, self.username)

    async def require_admin(self) -> dict:
        ident = await self.identity()
        if not ident["is_keyvault_admin"]:
            raise web.HTTPError(403, "keyvault administration needs a JupyterHub admin "
                                     "(or a member of KeyVaultHubService.admin_groups)")
        return ident

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs) -> None:
        set_retry_after(self, kwargs)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": error_message(self, kwargs), "reason": self._reason,
                                "status": status_code}))

    def json_body(self) -> dict[str, Any]:
        return json_object(self.request.body, max_bytes=MAX_BODY_BYTES, content_type=self.request.headers.get("Content-Type"))

    def name_from_path(self, raw: str) -> str:
        try:
            return validate_name(raw)
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None

    async def off_loop(self, fn, *args, **kwargs):
        with http_errors():
            return await asyncio.to_thread(fn, *args, **kwargs)

    def credential_write(self, name: str) -> CredentialWrite:
        write = parse_credential_write(name, self.json_body(), max_value_bytes=self.kv.max_value_bytes)
        for warning in write.warnings:
            self.add_header("X-KeyVault-Warning", ascii_header_value(warning))
        return write

    async def test_credential(self, owner: str, name: str) -> dict:
        payload = await self.off_loop(self.kv.vault.test, owner, name, actor=self.username)
        return json.loads(self.kv.scrubber.scrub(json.dumps(payload)))


def shared_json(info) -> dict:
    """A shared key as anyone but the service may see it: presence and metadata, no hint."""
    item = info.to_json()
    item["source"] = "shared"
    item["metadata"] = {k: v for k, v in item["metadata"].items() if k != "hint"}
    return item
