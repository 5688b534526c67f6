"""A hub user's own credentials, their usage, audit and status. Shared keys appear only as
presence; no handler returns a shared value."""

from __future__ import annotations

import asyncio
import json

from tornado import web

from ..._version import __version__
from ...web.bodies import metadata_object
from ...web.errors import http_errors
from ..common import personal_owner
from .base import ServiceBase, shared_json


def int_argument(handler: web.RequestHandler, name: str, default: int, lo: int, hi: int) -> int:
    try:
        value = int(handler.get_argument(name, str(default)))
    except ValueError:
        raise web.HTTPError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise web.HTTPError(400, f"{name} must be between {lo} and {hi}")
    return value


class CredentialsHandler(ServiceBase):
    async def get(self):
        """Personal credentials, then (read-only, presence only) the shared keys granted to the caller."""
        ident = await self.identity()

        def listing() -> str:
            personal = [i.to_json() for i in self.kv.vault.list(personal_owner(self.username), include_env=False)]
            granted = set(self.kv.granted(self.username, ident["groups"]))
            shared = [shared_json(i) for name, i in sorted(self.kv.shared_keys().items()) if name in granted]
            return json.dumps({"credentials": personal, "shared": shared})

        with http_errors():
            body = await asyncio.to_thread(listing)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class CredentialHandler(ServiceBase):
    async def get(self, raw_name: str):
        name = self.name_from_path(raw_name)
        info = await self.off_loop(self.kv.vault.info, personal_owner(self.username), name)
        self.write_json(info.to_json())

    async def put(self, raw_name: str):
        name = self.name_from_path(raw_name)
        write = self.credential_write(name)
        owner = personal_owner(self.username)
        info, created = await self.off_loop(self.kv.vault.set, owner, name, write.value, provider=write.provider,
                                            type=write.type, metadata=write.metadata, actor=self.username)
        await self.kv.changed(owner, name)
        if created:
            self.set_header("Location", f"{self.kv.service_prefix}api/credentials/{name}")
            return self.write_json(info.to_json(), status=201)
        self.set_status(204)
        self.finish()

    async def patch(self, raw_name: str):
        """Metadata only (e.g. the per-notebook access list a user's server keeps here)."""
        name = self.name_from_path(raw_name)
        body = self.json_body()
        if set(body) != {"metadata"} or not isinstance(body["metadata"], dict):
            raise web.HTTPError(422, "send exactly one field, 'metadata' (a JSON object)")
        owner = personal_owner(self.username)
        info = await self.off_loop(self.kv.vault.update_metadata, owner, name, metadata_object(body["metadata"]),
                                   actor=self.username)
        await self.kv.changed(owner, name)
        self.write_json(info.to_json())

    async def delete(self, raw_name: str):
        name = self.name_from_path(raw_name)
        owner = personal_owner(self.username)
        await self.off_loop(self.kv.vault.delete, owner, name, actor=self.username)
        await self.kv.changed(owner, name)
        self.set_status(204)
        self.finish()


class CredentialValueHandler(ServiceBase):
    async def get(self, raw_name: str):
        """Direct mode for the user's own server: only the caller's OWN personal value, never a shared one."""
        name = self.name_from_path(raw_name)
        if not self.kv.allow_direct_access:
            raise web.HTTPError(403, "direct access is disabled by the keyvault service; use proxy mode")
        owner = personal_owner(self.username)
        resolved = await self.off_loop(self.kv.vault.resolve, owner, name, actor=self.username, purpose="reveal")
        await self.off_loop(self.kv.audit, owner, "reveal", name, "ok", actor=self.username)
        self.write_json({"name": name, "value": resolved.value, "provider": resolved.provider, "type": resolved.type,
                         "metadata": dict(resolved.metadata)})


class CredentialTestHandler(ServiceBase):
    async def post(self, raw_name: str):
        name = self.name_from_path(raw_name)
        self.write_json(await self.test_credential(personal_owner(self.username), name))


class UsageHandler(ServiceBase):
    async def get(self):
        ident = await self.identity()
        await self.kv.flush()
        rows = await self.off_loop(self.kv.store.usage_rows, self.username)
        requests, tokens = await self.off_loop(self.kv.store.user_totals, self.username)
        self.write_json({"user": self.username, "usage": rows, "today": {"requests": requests, "tokens": tokens},
                         "limits": self.kv.user_limits(self.username).to_json(), "groups": ident["groups"]})


class AuditHandler(ServiceBase):
    async def get(self):
        limit = int_argument(self, "limit", 50, 1, 1000)
        await self.kv.flush()
        events = await self.off_loop(self.kv.vault.audit_events, personal_owner(self.username), limit, None)
        self.write_json({"events": [e.to_json() for e in events]})


class StatusHandler(ServiceBase):
    async def get(self):
        ident = await self.identity()
        status = await self.off_loop(self.kv.vault.status)
        self.write_json({"version": __version__, "service": self.kv.service_name, "user": self.username,
                         "admin": ident["is_keyvault_admin"], "protection": status["protection"],
                         "backend": status["backend"], "warnings": status["warnings"],
                         "allow_direct_access": self.kv.allow_direct_access})
