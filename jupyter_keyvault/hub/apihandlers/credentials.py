"""A hub user's own credentials, their usage, audit and status. Shared keys appear only as
presence; no handler returns a shared value."""

from __future__ import annotations

import asyncio
import json

from tornado import web

from ..._version import __version__
from ...store.pages import BadPage, encode_cursor, page_request
from ...web.bodies import parse_credential_patch
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
        try:
            page = page_request(self.get_query_argument("limit", None), self.get_query_argument("cursor", None))
        except BadPage as exc:
            raise web.HTTPError(400, str(exc)) from None

        def listing() -> str:
            owner = personal_owner(self.username)
            granted = set(self.kv.granted(self.username, ident["groups"]))
            shared = {name: i for name, i in self.kv.shared_keys().items() if name in granted}
            if page is None:  # the whole listing, as before pages existed
                personal = self.kv.vault.list(owner, include_env=False)
                return json.dumps({"credentials": [i.to_json() for i in personal],
                                   "shared": [shared_json(shared[n]) for n in sorted(shared)], "next": None})
            limit, after = page
            personal, more = self.kv.vault.list_page(owner, limit=limit, after=after, include_env=False)
            # One page over personal and shared names together (a name in both counts once, as personal).
            bound = personal[-1].name if more else None
            own = {i.name for i in personal}  # every personal name up to `bound` is in this page
            shared_names = [n for n in sorted(shared) if n not in own and (after is None or n > after)
                            and (bound is None or n <= bound)]
            names = sorted(own | set(shared_names))
            more = more or len(names) > limit
            last = names[limit - 1] if len(names) >= limit else (names[-1] if names else None)
            body = {"credentials": [i.to_json() for i in personal if last is not None and i.name <= last],
                    "shared": [shared_json(shared[n]) for n in shared_names if last is not None and n <= last],
                    "next": encode_cursor(last) if more and last is not None else None}
            return json.dumps(body)

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
                                            type=write.type, metadata=write.metadata, actor=self.username,
                                            session=write.session, expires_at=write.expires_at)
        if write.session:  # held while the user's server beats (or until it says it stopped)
            self.kv.heartbeat(self.username)
        await self.kv.changed(owner, name)
        if created:
            self.set_header("Location", f"{self.kv.service_prefix}api/credentials/{name}")
            return self.write_json(info.to_json(), status=201)
        self.set_status(204)
        self.finish()

    async def patch(self, raw_name: str):
        """Metadata (e.g. the per-notebook access list a user's server keeps here) and/or the expiry."""
        name = self.name_from_path(raw_name)
        patch = parse_credential_patch(self.json_body())
        owner = personal_owner(self.username)
        info = None
        if patch.metadata is not None:
            info = await self.off_loop(self.kv.vault.update_metadata, owner, name, patch.metadata, actor=self.username)
        if patch.expiry_given:
            info = await self.off_loop(self.kv.vault.set_expiry, owner, name, patch.expires_at, actor=self.username)
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


class SessionHandler(ServiceBase):
    """The user's server says it runs (POST, a heartbeat) or stopped (DELETE): session-only credentials
    live while heartbeats come, and end at once on DELETE."""

    async def post(self):
        self.kv.heartbeat(self.username)
        self.set_status(204)
        self.finish()

    async def delete(self):
        ended = await self.off_loop(self.kv.end_session, self.username, "the server stopped")
        self.write_json({"ended": ended})


class UsageHandler(ServiceBase):
    async def get(self):
        ident = await self.identity()
        await self.kv.flush()
        rows = await self.off_loop(self.kv.store.usage_rows, self.username)
        requests, tokens = await self.off_loop(self.kv.store.user_totals, self.username)
        limits = await self.off_loop(self.kv.user_limits, self.username)  # a cache miss reads the database
        self.write_json({"user": self.username, "usage": rows, "today": {"requests": requests, "tokens": tokens},
                         "limits": limits.to_json(), "groups": ident["groups"]})


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
