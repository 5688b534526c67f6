"""HTTP API of the hub service. Every route authenticates with JupyterHub (tokens for the API,
OAuth cookie + XSRF for the admin page) and acts only on the caller's own credentials,
or, for admins, on shared keys. No handler ever writes a stored value, except
`/api/credentials/{name}/value`, which returns a user's OWN personal value to that user.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from typing import TYPE_CHECKING, Any

import aiohttp
from jupyterhub.services.auth import HubAuthenticated, HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web
from tornado.iostream import StreamClosedError

from .. import __version__, providers
from ..handlers import ascii_header_value, store_errors_as_http
from ..proxy import DROP_RESPONSE_HEADERS, FORWARD_HEADERS, FORWARD_PREFIXES, MAX_ERROR_BODY, proxied_url
from ..ratelimit import RateLimiter
from ..store import InvalidInput, NoCredential, NotFound, VaultError
from ..store.model import validate_name
from .db import LIMIT_FIELDS, Limits
from .service import SHARED_OWNER, QuotaExceeded, personal_owner
from .usage import UsageMeter

if TYPE_CHECKING:
    from .service import KeyVaultHubService

_NAME = r"(?P<raw_name>[^/]+)"
GRANT_KINDS = ("group", "user")
LIMIT_KINDS = ("user", "shared")
_SUBJECT = re.compile(r"[^\x00-\x1f\x7f/]{1,256}")


class ServiceBase(HubAuthenticated, web.RequestHandler):
    """JSON API authenticated by a JupyterHub token (header only: no cookie, so no CSRF)."""

    username: str = ""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @property
    def kv(self) -> "KeyVaultHubService":
        return self.settings["keyvault"]

    def check_xsrf_cookie(self):
        """Cookies authenticate nothing on the API (HubAuth reads the Authorization header only)."""

    def compute_etag(self):
        return None

    async def prepare(self):
        try:
            model = await self.hub_auth.get_user(self, sync=False)
            model = self.check_hub_user(model) if model else None
        except UserNotAllowed:
            raise web.HTTPError(403, f"this token may not use the {self.kv.service_name} service") from None
        if not model:
            raise web.HTTPError(401, "a JupyterHub token is required (Authorization: token ...)")
        if model.get("kind", "user") != "user":
            raise web.HTTPError(403, "only JupyterHub users (and their servers) use this service")
        self._hub_auth_user_cache = model
        self.username = model["name"]

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
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        if status_code == 429 and getattr(self, "_retry_after", None):
            self.set_header("Retry-After", self._retry_after)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "reason": self._reason, "status": status_code}))

    def json_body(self) -> dict[str, Any]:
        if len(self.request.body or b"") > 64 * 1024:
            raise web.HTTPError(413, "request body is larger than 65536 bytes")
        try:
            body = json.loads(self.request.body or b"")
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "request body must be a JSON object")
        return body

    def name_from_path(self, raw: str) -> str:
        try:
            return validate_name(raw)
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None

    async def off_loop(self, fn, *args, **kwargs):
        with store_errors_as_http():
            return await asyncio.to_thread(fn, *args, **kwargs)

    def parse_value_body(self, name: str, allowed_extra: set[str] = frozenset()) -> tuple[str, str | None, str, dict]:
        body = self.json_body()
        unknown = set(body) - {"value", "provider", "type", "metadata"} - set(allowed_extra)
        if unknown:
            raise web.HTTPError(422, f"unknown field(s): {', '.join(sorted(unknown))}")
        value = body.get("value")
        if not isinstance(value, str):
            raise web.HTTPError(422, "field 'value' is required and must be a string")
        if len(value.encode("utf-8", "surrogatepass")) > self.kv.max_value_bytes:
            raise web.HTTPError(413, f"value is larger than {self.kv.max_value_bytes} bytes")
        provider = body.get("provider")
        if provider is None:
            guess = providers.provider_for_env_var(name)
            provider = guess.id if guess else providers.detect_provider(value.strip())
        elif not isinstance(provider, str) or provider not in providers.PROVIDERS:
            raise web.HTTPError(422, f"unknown provider; known: {', '.join(providers.PROVIDERS)}")
        kind = body.get("type", "api_key")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or len(json.dumps(metadata)) > 4096:
            raise web.HTTPError(422, "field 'metadata' must be a JSON object under 4 KiB")
        try:
            warnings = providers.check_key_format(provider, value) if kind == "api_key" else []
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None
        for warning in warnings:
            self.add_header("X-KeyVault-Warning", ascii_header_value(warning))
        return value, provider, kind, {k: v for k, v in metadata.items() if k != "hint"}

    async def shared_items(self, granted_only_for: str | None = None) -> list[dict]:
        items = await self.off_loop(self.kv.vault.list, SHARED_OWNER, include_env=False)
        if granted_only_for is not None:
            ident = await self.identity()
            granted = set(await self.off_loop(self.kv.store.granted_to, self.username, ident["groups"]))
            items = [i for i in items if i.name in granted]
        out = []
        for info in items:
            item = info.to_json()
            item["source"] = "shared"
            item["metadata"] = {k: v for k, v in item["metadata"].items() if k != "hint"}
            out.append(item)
        return out


# -- a user's own credentials
class CredentialsHandler(ServiceBase):
    async def get(self):
        """Personal credentials, then (read-only, presence only) the shared keys granted to the caller."""
        ident = await self.identity()

        def listing() -> str:
            personal = [i.to_json() for i in self.kv.vault.list(personal_owner(self.username), include_env=False)]
            granted = set(self.kv.granted(self.username, ident["groups"]))
            shared = [shared_json(i) for name, i in sorted(self.kv.shared_keys().items()) if name in granted]
            return json.dumps({"credentials": personal, "shared": shared})

        with store_errors_as_http():
            body = await asyncio.to_thread(listing)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


def shared_json(info) -> dict:
    item = info.to_json()
    item["source"] = "shared"
    item["metadata"] = {k: v for k, v in item["metadata"].items() if k != "hint"}
    return item


class CredentialHandler(ServiceBase):
    async def get(self, raw_name: str):
        name = self.name_from_path(raw_name)
        info = await self.off_loop(self.kv.vault.info, personal_owner(self.username), name)
        self.write_json(info.to_json())

    async def put(self, raw_name: str):
        name = self.name_from_path(raw_name)
        value, provider, kind, metadata = self.parse_value_body(name)
        owner = personal_owner(self.username)
        info, created = await self.off_loop(self.kv.vault.set, owner, name, value, provider=provider, type=kind,
                                            metadata=metadata, actor=self.username)
        self.kv.invalidate(owner, name)
        if created:
            self.set_header("Location", f"{self.kv.service_prefix}api/credentials/{name}")
            return self.write_json(info.to_json(), status=201)
        self.set_status(204)
        self.finish()

    async def delete(self, raw_name: str):
        name = self.name_from_path(raw_name)
        owner = personal_owner(self.username)
        await self.off_loop(self.kv.vault.delete, owner, name, actor=self.username)
        self.kv.invalidate(owner, name)
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


async def run_test(kv, owner: str, name: str, actor: str) -> dict:
    resolved = await asyncio.to_thread(kv.vault.resolve, owner, name, actor=actor, purpose="test")
    pid = resolved.provider or getattr(providers.provider_for_env_var(name), "id", None)
    if pid is None:
        raise InvalidInput(f"{name} has no provider; set it again with a provider to test it")
    provider = providers.get_provider(pid)
    value = resolved.value
    if value and not (value.isascii() and value.isprintable()):
        result = providers.TestResult(False, error=f"{name} contains characters that cannot be sent in a header")
    else:
        result = await asyncio.to_thread(providers.run_key_test, provider, value, kv.base_url_for(provider),
                                         timeout=kv.test_timeout)
    await asyncio.to_thread(kv.audit, owner, "test", name, "ok" if result.ok else "failed", actor=actor)
    return json.loads(kv.scrubber.scrub(json.dumps(result.to_json()).replace(value, "[REDACTED]")))


class CredentialTestHandler(ServiceBase):
    async def post(self, raw_name: str):
        name = self.name_from_path(raw_name)
        with store_errors_as_http():
            payload = await run_test(self.kv, personal_owner(self.username), name, self.username)
        self.write_json(payload)


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
        limit = _int_arg(self, "limit", 50, 1, 1000)
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


# -- administration
class SharedListHandler(ServiceBase):
    async def get(self):
        await self.require_admin()
        items = await self.shared_items()
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
        value, provider, kind, metadata = self.parse_value_body(name)
        info, created = await self.off_loop(self.kv.vault.set, SHARED_OWNER, name, value, provider=provider,
                                            type=kind, metadata=metadata, actor=self.username)
        self.kv.invalidate(SHARED_OWNER, name)
        if created:
            self.set_header("Location", f"{self.kv.service_prefix}api/admin/shared/{name}")
            item = info.to_json()
            item["source"] = "shared"
            return self.write_json(item, status=201)
        self.set_status(204)
        self.finish()

    async def delete(self, raw_name: str):
        await self.require_admin()
        name = self.name_from_path(raw_name)
        await self.off_loop(self.kv.vault.delete, SHARED_OWNER, name, actor=self.username)
        await self.off_loop(self.kv.store.revoke_all, name)
        self.kv.policy_changed()
        self.kv.invalidate(SHARED_OWNER, name)
        self.set_status(204)
        self.finish()


class SharedTestHandler(ServiceBase):
    async def post(self, raw_name: str):
        await self.require_admin()
        name = self.name_from_path(raw_name)
        with store_errors_as_http():
            payload = await run_test(self.kv, SHARED_OWNER, name, self.username)
        self.write_json(payload)


def _subject(raw: str) -> str:
    if not _SUBJECT.fullmatch(raw):
        raise web.HTTPError(422, "group or user name must be 1-256 printable characters without '/'")
    return raw


class GrantHandler(ServiceBase):
    async def put(self, raw_name: str, kind: str, subject: str):
        await self.require_admin()
        name, subject = self.name_from_path(raw_name), _subject(subject)
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
        name, subject = self.name_from_path(raw_name), _subject(subject)
        revoked = await self.off_loop(self.kv.store.revoke, name, kind, subject)
        self.kv.policy_changed()
        if not revoked:
            raise web.HTTPError(404, f"{name} is not granted to {kind} {subject}")
        await self.off_loop(self.kv.audit, SHARED_OWNER, "revoke", name, "ok", actor=self.username,
                            detail=f"{kind}={subject}")
        self.set_status(204)
        self.finish()


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


class LimitsHandler(ServiceBase):
    async def get(self, kind: str | None = None, subject: str | None = None):
        await self.require_admin()
        self.write_json({"limits": await self.off_loop(self.kv.store.all_limits),
                         "defaults": {"rate_per_minute": self.kv.user_rate_per_minute or None,
                                      "requests_per_day": self.kv.user_requests_per_day or None,
                                      "tokens_per_day": self.kv.user_tokens_per_day or None}})

    async def put(self, kind: str, subject: str):
        await self.require_admin()
        subject = _subject(subject)
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
        user = self.get_argument("user", None)
        await self.kv.flush()
        self.write_json({"usage": await self.off_loop(self.kv.store.usage_rows, user)})


class AdminAuditHandler(ServiceBase):
    async def get(self):
        await self.require_admin()
        limit = _int_arg(self, "limit", 100, 1, 1000)
        await self.kv.flush()
        events = await self.off_loop(self.kv.vault.audit_events, None, limit, None)
        self.write_json({"events": [e.to_json() for e in events]})


def _int_arg(handler, name, default, lo, hi) -> int:
    try:
        value = int(handler.get_argument(name, str(default)))
    except ValueError:
        raise web.HTTPError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise web.HTTPError(400, f"{name} must be between {lo} and {hi}")
    return value


# -- the proxy
class ProxyHandler(ServiceBase):
    """`{prefix}proxy/{provider}/…`: a user's server forwards its kernels' requests here; the key is injected
    here, usage counted, limits enforced."""

    def write_error(self, status_code: int, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        if status_code == 429 and getattr(self, "_retry_after", None):
            self.set_header("Retry-After", self._retry_after)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": {"message": message, "type": "keyvault_error", "code": status_code}}))

    def upstream_url(self, provider: providers.Provider, base_url: str) -> str:
        prefix = f"{self.kv.service_prefix.rstrip('/')}/proxy/{provider.id}/"
        return proxied_url(self.request.path, self.request.query, prefix, provider, base_url)

    async def _handle(self, provider_id: str):
        try:
            provider = providers.get_provider(provider_id)
        except InvalidInput as exc:
            raise web.HTTPError(404, str(exc)) from None
        try:
            base_url = self.kv.base_url_for(provider)
        except InvalidInput as exc:
            raise web.HTTPError(502, str(exc)) from None
        url = self.upstream_url(provider, base_url)
        name = (self.request.headers.get("X-KeyVault-Credential") or provider.env_var or "").strip()
        key = None
        source, credential = "none", provider.id
        if provider.needs_key:
            try:
                name = validate_name(name)
            except InvalidInput as exc:
                raise web.HTTPError(422, str(exc)) from None
            ident = await self.identity()
            try:
                choice, resolved = await asyncio.to_thread(self.kv.admit, self.username, ident["groups"], provider,
                                                           name)
            except QuotaExceeded as exc:
                if exc.retry_after:
                    self._retry_after = RateLimiter.retry_after_header(exc.retry_after)
                raise web.HTTPError(429, str(exc)) from None
            except (NoCredential, NotFound) as exc:
                raise web.HTTPError(401, str(exc)) from None
            except VaultError as exc:  # e.g. a damaged record: one opaque message, no value
                raise web.HTTPError(503, str(exc)) from None
            if choice is None:
                raise web.HTTPError(401, f"No API key configured for {name}: you have no personal key of that name and "
                                         f"no shared {provider.label} key is granted to you")
            source, _, credential = choice
            key = resolved.value
        body = self._body_with_usage_requested(provider)
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() in FORWARD_HEADERS or k.lower().startswith(FORWARD_PREFIXES)}
        headers["Accept-Encoding"] = "identity"
        headers.update(provider.auth_headers(key))
        tokens = await self._relay(url, headers, body, key)
        if provider.needs_key and tokens:
            self.kv.ledger.add(self.username, source, credential, tokens=tokens)

    def _body_with_usage_requested(self, provider) -> bytes | None:
        """Ask OpenAI-compatible streams to report usage in their final chunk, so quotas count streamed tokens."""
        body = self.request.body if self.request.method not in ("GET", "HEAD") else None
        if not body or provider.sdk != "openai" or b'"stream"' not in body:
            return body
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return body
        if isinstance(data, dict) and data.get("stream") is True and self.request.path.endswith("/chat/completions"):
            options = data.get("stream_options") if isinstance(data.get("stream_options"), dict) else {}
            data["stream_options"] = {**options, "include_usage": True}
            return json.dumps(data).encode()
        return body

    async def _relay(self, url: str, headers: dict, body: bytes | None, key: str | None) -> int:
        session = await self.kv.http_session()
        try:
            async with session.request(self.request.method, url, data=body, headers=headers,
                                       allow_redirects=False) as upstream:
                self.set_status(upstream.status, upstream.reason or None)
                for hname, value in upstream.headers.items():
                    if hname.lower() not in DROP_RESPONSE_HEADERS:
                        self.add_header(hname, value)
                if upstream.status >= 400:
                    text = (await upstream.content.read(MAX_ERROR_BODY)).decode("utf-8", "replace")
                    self.finish(self.kv.scrubber.scrub(text.replace(key, "[REDACTED]") if key else text).encode())
                    return 0
                meter = UsageMeter(upstream.headers.get("Content-Type", ""))
                self.request.connection.stream.set_nodelay(True)
                async for chunk in upstream.content.iter_any():
                    meter.feed(chunk)
                    self.write(chunk)
                    await self.flush()
                self.finish()
                return meter.finish()
        except StreamClosedError:
            return 0
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            if self._headers_written:
                return 0
            raise web.HTTPError(502, f"upstream unreachable: {exc.__class__.__name__}") from None

    async def get(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)

    async def post(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)

    async def put(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)

    async def delete(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)

    async def patch(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)


# -- the admin page (browser: JupyterHub OAuth cookie, JupyterHub's XSRF check on every POST)
class AdminPageHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def hub_auth(self):
        return self.settings["hub_oauth"]

    @property
    def kv(self) -> "KeyVaultHubService":
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
        with store_errors_as_http():
            if op == "set":
                provider = self.get_body_argument("provider", "")
                if provider not in providers.PROVIDERS:
                    raise web.HTTPError(422, "unknown provider")
                await asyncio.to_thread(self.kv.vault.set, SHARED_OWNER, name, self.get_body_argument("value", ""),
                                        provider=provider, actor=actor)
                self.kv.invalidate(SHARED_OWNER, name)
            elif op in ("grant", "revoke"):
                kind = self.get_body_argument("kind", "")
                if kind not in GRANT_KINDS:
                    raise web.HTTPError(422, "kind must be group or user")
                subject = _subject(self.get_body_argument("subject", ""))
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


def make_handlers(prefix: str) -> list:
    p = prefix.rstrip("/")
    kinds = "|".join(GRANT_KINDS)
    return [
        (rf"{p}/api/credentials/?", CredentialsHandler),
        (rf"{p}/api/credentials/{_NAME}/test/?", CredentialTestHandler),
        (rf"{p}/api/credentials/{_NAME}/value/?", CredentialValueHandler),
        (rf"{p}/api/credentials/{_NAME}/?", CredentialHandler),
        (rf"{p}/api/usage/?", UsageHandler),
        (rf"{p}/api/audit/?", AuditHandler),
        (rf"{p}/api/status/?", StatusHandler),
        (rf"{p}/api/admin/shared/?", SharedListHandler),
        (rf"{p}/api/admin/shared/{_NAME}/test/?", SharedTestHandler),
        (rf"{p}/api/admin/shared/{_NAME}/grants/(?P<kind>{kinds})/(?P<subject>[^/]+)/?", GrantHandler),
        (rf"{p}/api/admin/shared/{_NAME}/?", SharedHandler),
        (rf"{p}/api/admin/limits/?", LimitsHandler),
        (rf"{p}/api/admin/limits/(?P<kind>user|shared)/(?P<subject>[^/]+)/?", LimitsHandler),
        (rf"{p}/api/admin/usage/?", AdminUsageHandler),
        (rf"{p}/api/admin/audit/?", AdminAuditHandler),
        (rf"{p}/proxy/(?P<provider_id>[a-z_]+)(?P<path>/.*)?", ProxyHandler),
        (rf"{p}/admin/?", AdminPageHandler),
        (rf"{p}/oauth_callback", OAuthCallbackHandler),
    ]
