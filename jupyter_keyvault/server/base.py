"""Handler bases: REST (browser: token/cookie + XSRF, `@authenticated` then `@authorized`) and
kernel callers (per-request HMAC or a vault access token, see `CallerMixin`)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from jupyter_server.base.call_context import CallContext
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..store import InvalidInput
from ..store.model import validate_name
from ..store.tokens import looks_like_token
from ..web.bodies import BoundedBodyMixin, json_object
from ..web.errors import RetryAfterMixin, TooManyRequests, http_errors

if TYPE_CHECKING:
    from .manager import KeyVaultManager

AUTH_RESOURCE = "keyvault"
CREDENTIAL_HEADER = "X-KeyVault-Credential"  # which stored credential a proxy request uses


class ManagerMixin:
    """Handlers depend on the manager, never on the app."""

    @property
    def kv(self) -> KeyVaultManager:
        return self.settings["keyvault_manager"]  # type: ignore[attr-defined]

    def on_finish(self) -> None:
        super().on_finish()  # type: ignore[misc]
        release_call_context(self)

    def on_connection_close(self) -> None:
        super().on_connection_close()  # type: ignore[misc]
        release_call_context(self)


def release_call_context(handler: object) -> None:
    """Drop a finished request's handler from jupyter_server's CallContext.

    Everything created while a request runs keeps the context it was created in: a pooled upstream
    connection's socket callbacks, its timers. That context holds CallContext's map, and the map the
    handler, so each idle pooled connection kept a finished request whole (handler, request, streams,
    relay task: about 10 KiB) until the connection closed, 60 s or more later. The map is the one this
    request set (CallContext.set copies it), shared only with what the request started."""
    context_map = getattr(CallContext, "_name_value_map", None)  # private: a jupyter_server without it costs memory only
    names = context_map.get(None) if context_map is not None else None
    if names is not None and names.get(CallContext.JUPYTER_HANDLER) is handler:
        del names[CallContext.JUPYTER_HANDLER]


class JSONMixin(BoundedBodyMixin):
    @property
    def max_body_bytes(self) -> int:
        return self.kv.max_request_bytes  # type: ignore[attr-defined]

    async def off_loop(self, fn, *args: Any, **kwargs: Any) -> Any:
        """Blocking vault work on a thread; store errors become their HTTP status."""
        with http_errors():
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def off_loop_async(self, awaitable) -> Any:
        with http_errors():
            return await awaitable

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.set_header("Cache-Control", "no-store")  # type: ignore[attr-defined]
        self.finish(json.dumps(data))  # type: ignore[attr-defined]

    def name_from_path(self, raw: str) -> str:
        try:
            return validate_name(raw)
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None


@web.stream_request_body
class RestHandler(ManagerMixin, JSONMixin, RetryAfterMixin, APIHandler):
    """Base of /keyvault/api/*: every method is @web.authenticated then @authorized."""

    auth_resource = AUTH_RESOURCE

    @property
    def owner(self) -> str:
        return self.kv.owner

    @property
    def actor(self) -> str:
        """Who acted, for the audit log. Token logins get a random anonymous user per request,
        which would make the log meaningless: those are the server's owner."""
        username = getattr(self.current_user, "username", None)
        if not username or str(getattr(self.current_user, "name", "")).startswith("Anonymous"):
            return self.owner
        return username

    async def prepare(self):
        self.refuse_declared_oversize()
        await self.checks_answered_after_body(super().prepare())

    def json_body(self) -> dict[str, Any]:
        return json_object(self.body_bytes, max_bytes=self.max_body_bytes,
                           content_type=self.request.headers.get("Content-Type"))

    def limit(self, limiter, action: str) -> None:
        # Keyed by the vault owner, not the actor: token requests without a cookie get a fresh
        # anonymous user each time, which would give every request its own bucket.
        wait = limiter.take((self.owner, action))
        if wait:
            raise TooManyRequests(f"too many {action} requests", wait)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:  # RFC 9110: a 405 lists the methods the resource supports
            self.set_header("Allow", ", ".join(
                m.upper() for m in ("get", "put", "patch", "post", "delete", "options")
                if getattr(type(self), m) is not getattr(web.RequestHandler, m)))
        super().write_error(status_code, **kwargs)

    def public_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """A listed credential as the browser may see it: the masked hint only when configured."""
        if not self.kv.show_masked_hint and "hint" in item.get("metadata", {}):
            item["metadata"] = {k: v for k, v in item["metadata"].items() if k != "hint"}
        item["stale"] = self.kv.is_stale(item)
        return item


class CallerMixin(ManagerMixin):
    """A caller of the kernel API or the proxy: a kernel of this server (kvk1 HMAC per request),
    or, where allowed, the holder of a vault access token (kvt1).

    These routes are public to jupyter_server's own auth (@allow_unauthenticated): they
    authenticate every request themselves, accept no cookie as a credential, and so need no
    XSRF token (a browser cannot compute a kernel's HMAC)."""

    kernel_id: str | None = None
    token_id: str | None = None

    def check_xsrf_cookie(self) -> None:
        """Header-authenticated per request; cookies grant nothing here."""

    @property
    def caller(self) -> str:
        return f"token:{self.token_id}" if self.token_id else f"kernel:{self.kernel_id}"

    @property
    def client_address(self) -> str | None:
        return self.request.remote_ip  # type: ignore[attr-defined]

    def authenticate_kernel(self) -> None:
        from ..kernel_auth import KernelAuthError

        try:
            credential = self.kv.kernel_auth.credential_from_headers(self.request.headers)  # type: ignore[attr-defined]
            self.kernel_id = self.kv.kernel_auth.verify(credential)
        except KernelAuthError as exc:
            raise web.HTTPError(401, str(exc)) from None

    async def authenticate_caller(self, credential: str) -> str:
        """A kernel, or a vault access token allowed to use `credential`. Returns the credential to use:
        `credential`, except for a kernel-bound token (`keyvault.env`) sent without X-KeyVault-Credential,
        which serves the one credential it was issued for; its kernel's notebook rules then apply."""
        from ..store.errors import RateLimited
        from ..store.tokens import TokenRefused, TokenScopeError

        token = access_token_from_headers(self.request.headers)  # type: ignore[attr-defined]
        if token is None:
            self.authenticate_kernel()
            return credential
        client = self.client_address or "-"
        named = bool(self.request.headers.get(CREDENTIAL_HEADER, "").strip())  # type: ignore[attr-defined]
        try:
            info = await self.kv.verify_token(token, credential, client, default_scope=not named)
        except TokenScopeError as exc:
            raise web.HTTPError(403, str(exc)) from None
        except TokenRefused as exc:
            raise web.HTTPError(401, str(exc)) from None
        except RateLimited as exc:
            raise TooManyRequests(str(exc), exc.retry_after) from None
        self.token_id = info.id
        if info.kernel_id:
            self.kernel_id = info.kernel_id
            return info.credentials[0]
        return credential

    async def check_notebook_access(self, name: str) -> None:
        with http_errors():
            await self.kv.check_notebook_access(self.kernel_id, name, actor=self.caller)


def access_token_from_headers(headers) -> str | None:
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and looks_like_token(value.strip()):
        return value.strip()
    for header in ("x-api-key", "api-key"):  # the anthropic SDK's header, Azure OpenAI's
        api_key = headers.get(header, "").strip()
        if looks_like_token(api_key):
            return api_key
    return None
