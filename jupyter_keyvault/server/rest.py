"""REST handlers under /keyvault/api: values go in; only presence comes out."""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join
from tornado import web

from .. import providers
from .._version import __version__
from ..store import NotFound
from ..store.pages import BadPage, next_cursor, page_request
from ..web.bodies import parse_credential_patch, parse_credential_write
from ..web.headers import ascii_header_value
from .base import RestHandler

MAX_EVENT_ID = 2**63 - 1


class CredentialsHandler(RestHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self):
        try:
            page = page_request(self.get_query_argument("limit", None), self.get_query_argument("cursor", None))
        except BadPage as exc:
            raise web.HTTPError(400, str(exc)) from None

        def listing() -> str:
            if page is None:  # the whole listing, as before pages existed
                infos, more = self.kv.vault.list(self.owner), False
            else:
                infos, more = self.kv.vault.list_page(self.owner, limit=page[0], after=page[1])
            items = [self.public_item(info.to_json()) for info in infos]
            return json.dumps({"credentials": items, "next": next_cursor(infos, more)})

        body = await self.off_loop(listing)  # serialising 1,000 items is work too: keep it off the loop
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class CredentialHandler(RestHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self, raw_name: str):
        name = self.name_from_path(raw_name)
        for info in await self.off_loop(self.kv.vault.list, self.owner):
            if info.name == name:
                return self.write_json(self.public_item(info.to_json()))
        raise web.HTTPError(404, f"no credential named {name}")

    @web.authenticated
    @authorized(action="write")
    async def put(self, raw_name: str):
        name = self.name_from_path(raw_name)
        write = parse_credential_write(name, self.json_body(), max_value_bytes=self.kv.max_value_bytes)
        if self.kv.show_masked_hint and len(write.value) >= 12:
            write.metadata["hint"] = "…" + write.value[-4:]
        # Header values must be latin-1 without CR/LF (tornado raises otherwise): make them safe *before*
        # the write, so a warning can never turn a stored value into a 500. The body carries them verbatim.
        for warning in write.warnings:
            self.add_header("X-KeyVault-Warning", ascii_header_value(warning))
        self.limit(self.kv.write_limiter, "write")
        info, created = await self.off_loop(
            self.kv.vault.set, self.owner, name, write.value, provider=write.provider, type=write.type,
            metadata=write.metadata, actor=self.actor, session=write.session, expires_at=write.expires_at,
        )
        self.kv.invalidate(name)
        if created:
            self.set_header("Location", url_path_join(self.base_url, "keyvault/api/credentials", name))
            return self.write_json({**self.public_item(info.to_json()), "warnings": write.warnings}, status=201)
        self.set_status(204)
        self.finish()

    @web.authenticated
    @authorized(action="write")
    async def patch(self, raw_name: str):
        """Metadata (e.g. the per-notebook access list) and/or the expiry; the value is untouched."""
        name = self.name_from_path(raw_name)
        patch = parse_credential_patch(self.json_body())
        self.limit(self.kv.write_limiter, "write")

        def update():
            current = next((i for i in self.kv.vault.list(self.owner) if i.name == name), None)
            if current is None:
                raise NotFound(f"no credential named {name} in the vault")
            info = current
            if patch.metadata is not None:
                kept = dict(patch.metadata)
                if "hint" in current.metadata:  # server-made; the client can neither set nor drop it
                    kept["hint"] = current.metadata["hint"]
                info = self.kv.vault.update_metadata(self.owner, name, kept, actor=self.actor)
            if patch.expiry_given:
                info = self.kv.vault.set_expiry(self.owner, name, patch.expires_at, actor=self.actor)
            return info

        info = await self.off_loop(update)
        self.kv.invalidate(name)
        self.write_json(self.public_item(info.to_json()))

    @web.authenticated
    @authorized(action="write")
    async def delete(self, raw_name: str):
        name = self.name_from_path(raw_name)
        self.limit(self.kv.write_limiter, "write")
        revocation = await self.off_loop_async(self.kv.delete_credential(name, actor=self.actor))
        if revocation is not None:  # an OAuth credential: say whether the provider revoked its tokens
            return self.write_json({"deleted": True, "revocation": revocation})
        self.set_status(204)
        self.finish()


class CredentialTestHandler(RestHandler):
    @web.authenticated
    @authorized(action="execute")
    async def post(self, raw_name: str):
        name = self.name_from_path(raw_name)
        self.limit(self.kv.test_limiter, "test")
        payload = await self.off_loop_async(self.kv.test_credential(name, actor=self.actor))
        self.write_json(payload)


class StatusHandler(RestHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self):
        status = await self.off_loop(self.kv.vault.status)
        status.pop("location", None)  # the browser needs no server paths
        lifetimes = await self.off_loop(self.kv.lifetime_report)
        status["warnings"] = [*status.get("warnings", []), *lifetimes.pop("warnings")]
        self.write_json({
            **status,
            "version": __version__,
            "owner": self.owner,
            "providers": [p.to_json() for p in providers.PROVIDERS.values()],
            "notebook_warnings": list(self.kv.notebook_warnings),
            "oauth_providers": [p.to_json() for p in self.kv.oauth.providers.values()],
            "isolation": self.kv.isolation_status(),
            "allow_direct_access": self.kv.allow_direct_access,
            "lifetimes": lifetimes,
        })


class AuditHandler(RestHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self):
        try:
            limit = int(self.get_argument("limit", "50"))
            before = self.get_argument("before", None)
            before_id = int(before) if before is not None else None
        except ValueError:
            raise web.HTTPError(400, "limit and before must be integers") from None
        if not 1 <= limit <= 1000:
            raise web.HTTPError(400, "limit must be between 1 and 1000")
        if before_id is not None and not 0 <= before_id <= MAX_EVENT_ID:  # SQLite ints are 64-bit (500 above)
            raise web.HTTPError(400, f"before must be between 0 and {MAX_EVENT_ID}")
        await self.kv.uses.flush()  # the last second's uses and refusals are listed too
        events = await self.off_loop(self.kv.vault.audit_events, self.owner, limit, before_id)
        next_before = events[-1].id if len(events) == limit else None
        self.write_json({"events": [e.to_json() for e in events], "next_before": next_before})


class OpenAPIHandler(RestHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self):
        from importlib.resources import files

        self.set_header("Content-Type", "application/json")
        self.finish(files("jupyter_keyvault").joinpath("openapi.json").read_text("utf-8"))


class TokensHandler(RestHandler):
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
        if isinstance(days, float) and days.is_integer():  # JSON has one number type: 30.0 is the integer 30
            days = int(days)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
            raise web.HTTPError(422, "field 'expires_in_days' must be an integer from 1 to 3650")
        self.limit(self.kv.write_limiter, "write")
        token, info = await self.off_loop(self.kv.tokens.create, self.owner, body.get("name"), credentials,
                                          days * 86400, actor=self.actor)
        self.set_header("Location", url_path_join(self.base_url, "keyvault/api/tokens", info.id))
        self.write_json({"token": token, **info.to_json()}, status=201)


class TokenHandler(RestHandler):
    @web.authenticated
    @authorized(action="write")
    async def delete(self, token_id: str):
        self.limit(self.kv.write_limiter, "write")
        await self.off_loop(self.kv.tokens.delete, self.owner, token_id, actor=self.actor)
        self.kv.forget_tokens()  # revoked for the very next request, not after the verification cache expires
        self.set_status(204)
        self.finish()


_NAME = r"(?P<raw_name>[^/]+)"
handlers = [
    (r"/keyvault/api/credentials/?", CredentialsHandler),
    (rf"/keyvault/api/credentials/{_NAME}/test/?", CredentialTestHandler),
    (rf"/keyvault/api/credentials/{_NAME}/?", CredentialHandler),
    (r"/keyvault/api/status/?", StatusHandler),
    (r"/keyvault/api/audit/?", AuditHandler),
    (r"/keyvault/api/openapi.json", OpenAPIHandler),
    (r"/keyvault/api/tokens/?", TokensHandler),
    (r"/keyvault/api/tokens/(?P<token_id>[^/]+)/?", TokenHandler),
]
