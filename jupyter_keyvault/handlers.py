"""REST handlers under /keyvault/api. Values go in; only presence comes out."""

from __future__ import annotations

import asyncio
import json
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from . import __version__, providers
from .store import DecryptionError, InvalidInput, NoCredential, NotFound, VaultError
from .store.model import validate_name

if TYPE_CHECKING:
    from .app import KeyVaultApp

AUTH_RESOURCE = "keyvault"
MAX_EVENT_ID = 2**63 - 1


def ascii_header_value(text: str) -> str:
    text = text.replace("…", "...")
    return "".join(c if " " <= c <= "~" else "?" for c in text)


@contextmanager
def store_errors_as_http():
    """Map the store's deliberate errors to HTTP statuses; their messages never hold a value."""
    try:
        yield
    except (NotFound, NoCredential) as exc:
        raise web.HTTPError(404, str(exc)) from None
    except InvalidInput as exc:
        raise web.HTTPError(422, str(exc)) from None
    except DecryptionError as exc:
        raise web.HTTPError(409, str(exc)) from None
    except VaultError as exc:
        raise web.HTTPError(503, str(exc)) from None


class VaultCallsMixin:
    """Shared by the REST and kernel handlers: blocking vault work off the loop, JSON out."""

    async def off_loop(self, fn, *args, **kwargs):
        with store_errors_as_http():
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def off_loop_async(self, awaitable):
        with store_errors_as_http():
            return await awaitable

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

    def name_from_path(self, raw: str) -> str:
        try:
            return validate_name(raw)
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None


class KeyVaultHandler(VaultCallsMixin, APIHandler):
    """Base: every method is @web.authenticated then @authorized(resource='keyvault')."""

    auth_resource = AUTH_RESOURCE

    @property
    def kv(self) -> "KeyVaultApp":
        return self.settings["keyvault"]

    @property
    def owner(self) -> str:
        return self.kv.owner

    @property
    def actor(self) -> str:
        """Who acted, for the audit log. Token logins get a random anonymous user per request,
        which would make the log meaningless: those are the server's owner."""
        user = self.current_user
        username = getattr(user, "username", None)
        if not username or str(getattr(user, "name", "")).startswith("Anonymous"):
            return self.owner
        return username

    def prepare(self):
        # Size check before any body parsing, so an oversized body changes nothing.
        if len(self.request.body or b"") > self.kv.max_request_bytes:
            raise web.HTTPError(413, f"request body is larger than {self.kv.max_request_bytes} bytes")
        return super().prepare()

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            raise web.HTTPError(400, "request body is empty; send a JSON object")
        try:
            body = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "request body must be a JSON object")
        return body

    def limit(self, limiter, action: str) -> None:
        # Keyed by the vault owner, not the actor: token requests without a cookie get a fresh
        # anonymous user each time, which would give every request its own bucket.
        wait = limiter.take((self.owner, action))
        if wait:
            # send_error() clears headers set before the raise; write_error() sets it again.
            self._retry_after = limiter.retry_after_header(wait)
            raise web.HTTPError(429, f"too many {action} requests; retry in {limiter.retry_after_header(wait)} s")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:  # RFC 9110: a 405 lists the methods the resource supports
            self.set_header("Allow", ", ".join(
                m.upper() for m in ("get", "put", "patch", "post", "delete", "options")
                if getattr(type(self), m) is not getattr(web.RequestHandler, m)))
        if status_code == 429 and getattr(self, "_retry_after", None):
            self.set_header("Retry-After", self._retry_after)
        super().write_error(status_code, **kwargs)

class CredentialsHandler(KeyVaultHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self):
        def listing() -> str:
            out = []
            for info in self.kv.vault.list(self.owner):
                item = info.to_json()
                if not self.kv.show_masked_hint and "hint" in item["metadata"]:
                    item["metadata"] = {k: v for k, v in item["metadata"].items() if k != "hint"}
                out.append(item)
            return json.dumps({"credentials": out})

        body = await self.off_loop(listing)  # serialising 1,000 items is work too: keep it off the loop
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class CredentialHandler(KeyVaultHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self, raw_name: str):
        name = self.name_from_path(raw_name)
        for info in await self.off_loop(self.kv.vault.list, self.owner):
            if info.name == name:
                item = info.to_json()
                item["metadata"] = {k: v for k, v in item["metadata"].items()
                                    if k != "hint" or self.kv.show_masked_hint}
                return self.write_json(item)
        raise web.HTTPError(404, f"no credential named {name}")

    @web.authenticated
    @authorized(action="write")
    async def put(self, raw_name: str):
        name = self.name_from_path(raw_name)
        body = self.json_body()
        unknown = set(body) - {"value", "provider", "type", "metadata"}
        if unknown:
            raise web.HTTPError(422, f"unknown field(s): {', '.join(sorted(unknown))}")
        value = body.get("value")
        if not isinstance(value, str):
            raise web.HTTPError(422, "field 'value' is required and must be a string")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > self.kv.max_value_bytes:
            raise web.HTTPError(413, f"value is {size} bytes; the limit is {self.kv.max_value_bytes} bytes")
        kind = body.get("type", "api_key")
        provider = body.get("provider")
        if provider is None:
            guess = providers.provider_for_env_var(name)
            provider = guess.id if guess else providers.detect_provider(value.strip())
        elif not isinstance(provider, str) or provider not in providers.PROVIDERS:
            raise web.HTTPError(422, f"unknown provider; known: {', '.join(providers.PROVIDERS)}")
        metadata = body.get("metadata")
        if metadata is None:  # absent or null: no metadata (`or {}` let [], "", 0 and false through)
            metadata = {}
        if not isinstance(metadata, dict) or len(json.dumps(metadata)) > 4096:
            raise web.HTTPError(422, "field 'metadata' must be a JSON object under 4 KiB")
        metadata = {k: v for k, v in metadata.items() if k != "hint"}
        try:
            warnings = providers.check_key_format(provider, value) if kind == "api_key" else []
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None
        if self.kv.show_masked_hint and len(value) >= 12:
            metadata["hint"] = "…" + value[-4:]
        # Header values must be latin-1 without CR/LF (tornado raises otherwise): make them safe *before*
        # the write, so a warning can never turn a stored value into a 500. The body carries them verbatim.
        for warning in warnings:
            self.add_header("X-KeyVault-Warning", ascii_header_value(warning))
        self.limit(self.kv.write_limiter, "write")
        info, created = await self.off_loop(
            self.kv.vault.set, self.owner, name, value, provider=provider, type=kind, metadata=metadata,
            actor=self.actor,
        )
        self.kv.invalidate(name)
        if created:
            self.set_header("Location", url_path_join(self.base_url, "keyvault/api/credentials", name))
            item = info.to_json()
            item["metadata"] = {k: v for k, v in item["metadata"].items() if k != "hint" or self.kv.show_masked_hint}
            return self.write_json({**item, "warnings": warnings}, status=201)
        self.set_status(204)
        self.finish()

    @web.authenticated
    @authorized(action="write")
    async def delete(self, raw_name: str):
        name = self.name_from_path(raw_name)
        self.limit(self.kv.write_limiter, "write")
        await self.off_loop(self.kv.vault.delete, self.owner, name, actor=self.actor)
        self.kv.invalidate(name)
        self.set_status(204)
        self.finish()


    @web.authenticated
    @authorized(action="write")
    async def patch(self, raw_name: str):
        """Metadata-only update (e.g. the per-notebook access list); the value is untouched."""
        name = self.name_from_path(raw_name)
        body = self.json_body()
        if set(body) != {"metadata"}:
            raise web.HTTPError(422, "send exactly one field, 'metadata' (a JSON object)")
        metadata = body["metadata"]
        if not isinstance(metadata, dict) or len(json.dumps(metadata)) > 4096:
            raise web.HTTPError(422, "field 'metadata' must be a JSON object under 4 KiB")
        globs = metadata.get("notebooks")
        if globs is not None and not (isinstance(globs, list) and all(isinstance(g, str) and g for g in globs)):
            raise web.HTTPError(422, "metadata.notebooks must be a list of non-empty glob strings")
        self.limit(self.kv.write_limiter, "write")

        def update():
            current = next((i for i in self.kv.vault.list(self.owner) if i.name == name), None)
            if current is None:
                raise NotFound(f"no credential named {name} in the vault")
            kept = {k: v for k, v in metadata.items() if k != "hint"}
            if "hint" in current.metadata:  # server-made; the client can neither set nor drop it
                kept["hint"] = current.metadata["hint"]
            return self.kv.vault.update_metadata(self.owner, name, kept, actor=self.actor)

        info = await self.off_loop(update)
        self.kv.invalidate(name)
        item = info.to_json()
        item["metadata"] = {k: v for k, v in item["metadata"].items() if k != "hint" or self.kv.show_masked_hint}
        self.write_json(item)


class CredentialTestHandler(KeyVaultHandler):
    @web.authenticated
    @authorized(action="execute")
    async def post(self, raw_name: str):
        name = self.name_from_path(raw_name)
        self.limit(self.kv.test_limiter, "test")
        payload = await self.off_loop_async(self.kv.test_credential(name, actor=self.actor))
        self.write_json(payload)


class StatusHandler(KeyVaultHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self):
        status = await self.off_loop(self.kv.vault.status)
        status.pop("location", None)  # the browser needs no server paths
        self.write_json({
            **status,
            "version": __version__,
            "owner": self.owner,
            "providers": [p.to_json() for p in providers.PROVIDERS.values()],
            "notebook_warnings": list(self.kv.notebook_warnings),
            "oauth_providers": [p.to_json() for p in self.kv.oauth.providers.values()],
        })


class AuditHandler(KeyVaultHandler):
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
        events = await self.off_loop(self.kv.vault.audit_events, self.owner, limit, before_id)
        next_before = events[-1].id if len(events) == limit else None
        self.write_json({"events": [e.to_json() for e in events], "next_before": next_before})


class OpenAPIHandler(KeyVaultHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self):
        from importlib.resources import files

        self.set_header("Content-Type", "application/json")
        self.finish(files("jupyter_keyvault").joinpath("openapi.json").read_text("utf-8"))


_NAME = r"(?P<raw_name>[^/]+)"
handlers = [
    (r"/keyvault/api/credentials/?", CredentialsHandler),
    (rf"/keyvault/api/credentials/{_NAME}/test/?", CredentialTestHandler),
    (rf"/keyvault/api/credentials/{_NAME}/?", CredentialHandler),
    (r"/keyvault/api/status/?", StatusHandler),
    (r"/keyvault/api/audit/?", AuditHandler),
    (r"/keyvault/api/openapi.json", OpenAPIHandler),
]
