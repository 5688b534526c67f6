"""Administration of shared keys: values in, grants, limits, usage and audit out (admins only)."""

from __future__ import annotations

import json
import re

from tornado import web

from ...web.errors import http_errors
from ..common import SHARED_OWNER
from ..db import LIMIT_FIELDS, Limits
from .base import ServiceBase, shared_json
from .credentials import int_argument

_SUBJECT = re.compile(r"[^\x00-\x1f\x7f/]{1,256}")


def grant_subject(raw: str) -> str:
    if not _SUBJECT.fullmatch(raw):
        raise web.HTTPError(422, "group or user name must be 1-256 printable characters without '/'")
    return raw


def parse_limits(body: dict) -> Limits:
    unknown = set(body) - set(LIMIT_FIELDS)
    if unknown:
        raise web.HTTPError(422, f"unknown field(s): {', '.join(sorted(unknown))}; known: {', '.join(LIMIT_FIELDS)}")
    values = {}
    for field in LIMIT_FIELDS:
        v = body.get(field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v > 10**12):
            raise web.HTTPError(422, f"{field} must be a non-negative number or null")
        if v is not None and field != "rate_per_minute":
            if int(v) != v:
                raise web.HTTPError(422, f"{field} must be a whole number")
            v = int(v)
        values[field] = v or None
    return Limits(**values)


class SharedListHandler(ServiceBase):
    async def get(self):
        await self.require_admin()
        items = [shared_json(i) for i in await self.off_loop(self.kv.vault.list, SHARED_OWNER, include_env=False)]
        grants = await self.off_loop(self.kv.store.grants_of)
        for item in items:
            item["grants"] = [g for g in grants if g["shared"] == item["name"]]
            lim = await self.off_loop(self.kv.store.get_limits, "shared", item["name"])
            item["limits"] = (lim or Limits()).to_json()
        self.write_json({"shared": items})


class SharedHandler(ServiceBase):
    async def put(self, raw_name: str):
        await self.require_admin()
        name = self.name_from_path(raw_name)
        write = self.credential_write(name)
        if write.session:
            raise web.HTTPError(422, "shared keys cannot be session-only; give them an expiry instead")
        with http_errors():
            expires_at = self.kv.shared_expiry(write.expires_at)
        info, created = await self.off_loop(self.kv.vault.set, SHARED_OWNER, name, write.value,
                                            provider=write.provider, type=write.type, metadata=write.metadata,
                                            actor=self.username, expires_at=expires_at)
        await self.kv.changed(SHARED_OWNER, name)
        if created:
            self.set_header("Location", f"{self.kv.service_prefix}api/admin/shared/{name}")
            return self.write_json(shared_json(info), status=201)
        self.set_status(204)
        self.finish()

    async def delete(self, raw_name: str):
        await self.require_admin()
        name = self.name_from_path(raw_name)
        await self.off_loop(self.kv.vault.delete, SHARED_OWNER, name, actor=self.username)
        await self.off_loop(self.kv.store.revoke_all, name)
        await self.kv.changed(SHARED_OWNER, name)
        self.set_status(204)
        self.finish()


class SharedTestHandler(ServiceBase):
    async def post(self, raw_name: str):
        await self.require_admin()
        self.write_json(await self.test_credential(SHARED_OWNER, self.name_from_path(raw_name)))


class GrantHandler(ServiceBase):
    async def put(self, raw_name: str, kind: str, subject: str):
        await self.require_admin()
        name, subject = self.name_from_path(raw_name), grant_subject(subject)
        await self.off_loop(self.kv.vault.info, SHARED_OWNER, name)  # 404 for an unknown shared key
        created = await self.off_loop(self.kv.store.grant, name, kind, subject, self.username)
        self.kv.policy_changed()
        await self.off_loop(self.kv.audit, SHARED_OWNER, "grant", name, "ok", actor=self.username,
                            detail=f"{kind}={subject}")
        if created:
            self.set_header("Location", self.request.path)
            return self.write_json({"shared": name, "kind": kind, "subject": subject}, status=201)
        self.set_status(204)
        self.finish()

    async def delete(self, raw_name: str, kind: str, subject: str):
        await self.require_admin()
        name, subject = self.name_from_path(raw_name), grant_subject(subject)
        revoked = await self.off_loop(self.kv.store.revoke, name, kind, subject)
        self.kv.policy_changed()
        if not revoked:
            raise web.HTTPError(404, f"{name} is not granted to {kind} {subject}")
        await self.off_loop(self.kv.audit, SHARED_OWNER, "revoke", name, "ok", actor=self.username,
                            detail=f"{kind}={subject}")
        self.set_status(204)
        self.finish()


class LimitsHandler(ServiceBase):
    async def get(self, kind: str | None = None, subject: str | None = None):
        await self.require_admin()
        self.write_json({"limits": await self.off_loop(self.kv.store.all_limits),
                         "defaults": {"rate_per_minute": self.kv.user_rate_per_minute or None,
                                      "requests_per_day": self.kv.user_requests_per_day or None,
                                      "tokens_per_day": self.kv.user_tokens_per_day or None}})

    async def put(self, kind: str, subject: str):
        await self.require_admin()
        subject = grant_subject(subject)
        if kind == "shared":
            subject = self.name_from_path(subject)
            await self.off_loop(self.kv.vault.info, SHARED_OWNER, subject)
        limits = parse_limits(self.json_body())
        await self.off_loop(self.kv.store.set_limits, kind, subject, limits)
        self.kv.policy_changed()
        await self.off_loop(self.kv.audit, SHARED_OWNER, "limits", subject if kind == "shared" else None, "ok",
                            actor=self.username, detail=f"{kind}={subject} {json.dumps(limits.to_json())}")
        self.write_json({"kind": kind, "subject": subject, **limits.to_json()})


class AdminUsageHandler(ServiceBase):
    async def get(self):
        await self.require_admin()
        await self.kv.flush()
        self.write_json({"usage": await self.off_loop(self.kv.store.usage_rows, self.get_argument("user", None))})


class AdminAuditHandler(ServiceBase):
    async def get(self):
        await self.require_admin()
        limit = int_argument(self, "limit", 100, 1, 1000)
        await self.kv.flush()
        events = await self.off_loop(self.kv.vault.audit_events, None, limit, None)
        self.write_json({"events": [e.to_json() for e in events]})
