"""`{prefix}proxy/{provider}/…`: a user's server forwards its kernels' requests here; the key
(personal or shared) is injected here, usage counted and limits enforced."""

from __future__ import annotations

import asyncio
import json

from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ... import providers
from ...store import InvalidInput
from ...store.model import validate_name
from ...web.bodies import close_if_body_unread
from ...web.errors import error_message, http_errors, provider_error_body, set_retry_after
from ...web.headers import upstream_request_headers
from ...web.paths import proxied_url, upstream_url
from ...web.relay import RelayMixin, WebSocketRelayMixin
from ..usage import UsageMeter, realtime_tokens
from .base import ServiceBase


@web.stream_request_body
class ProxyHandler(RelayMixin, ServiceBase):
    """Every check (hub user, path, key choice, limits) in `prepare()`, before the body is read or any
    upstream connection made; the body then streams upstream as it arrives (see web/relay.py)."""

    body_cap_setting = "c.KeyVaultHubService.proxy_max_body_size"
    url = ""
    key: str | None = None
    source = "none"
    credential = ""
    provider: providers.Provider
    headers_upstream: dict[str, str]

    def write_error(self, status_code: int, **kwargs):
        set_retry_after(self, kwargs)
        close_if_body_unread(self)  # a refusal comes before the body is read
        self.set_header("Content-Type", "application/json")
        self.finish(provider_error_body(status_code, error_message(self, kwargs)))

    async def prepare(self):
        await super().prepare()
        if not self._finished:
            await self.check_and_start(**self.path_kwargs)

    async def check_and_start(self, provider_id: str, path: str | None = None) -> None:
        provider = providers.PROVIDERS.get(provider_id)
        if provider is None:
            raise web.HTTPError(404, f"unknown provider {provider_id!r}; known: {', '.join(providers.PROVIDERS)}")
        try:
            base_url = self.kv.base_url_for(provider)
        except InvalidInput as exc:
            raise web.HTTPError(502, str(exc)) from None
        prefix = f"{self.kv.service_prefix.rstrip('/')}/proxy/{provider.id}/"
        self.url = proxied_url(self.request.path, self.request.query, prefix, provider, base_url)
        name = (self.request.headers.get("X-KeyVault-Credential") or provider.env_var or "").strip()
        self.key, self.source, self.credential = None, "none", provider.id
        if provider.needs_key:
            try:
                name = validate_name(name)
            except InvalidInput as exc:
                raise web.HTTPError(422, str(exc)) from None
            ident = await self.identity()
            with http_errors(missing=401):
                choice, resolved = await asyncio.to_thread(self.kv.admit, self.username, ident["groups"], provider,
                                                           name)
            if choice is None:
                raise web.HTTPError(401, f"No API key configured for {name}: you have no personal key of that name and "
                                         f"no shared {provider.label} key is granted to you")
            self.source, _, self.credential = choice
            self.key = resolved.value
        self.provider = provider
        self.headers_upstream = upstream_request_headers(self.request.headers.get_all(),
                                                         injected=provider.auth_headers(self.key),
                                                         defaults=provider.default_headers)
        # A streamed chat completion is rewritten to report its usage (quotas count streamed tokens):
        # that small JSON body is collected; every other body streams upstream as it arrives.
        rewrite = provider.sdk == "openai" and self.request.path.endswith("/chat/completions")
        self.accept_body(self.kv.proxy_max_body_size, buffer=rewrite)
        if not rewrite:
            await self._start(None)

    async def _start(self, body: bytes | None) -> None:
        self.start_relay(await self.kv.http_session(), self.url, self.headers_upstream, injected=self.key,
                         scrub=self.kv.scrubber.scrub, meter=UsageMeter, body=body)

    async def get(self, provider_id: str, path: str | None = None):
        if self._body_buffer is not None and not self.over_cap:
            await self._start(_with_usage_requested(self.buffered_body))
        tokens = await self.relayed()
        if self.provider.needs_key and tokens:
            self.kv.ledger.add(self.username, self.source, self.credential, tokens=tokens)

    post = put = delete = patch = get


def _with_usage_requested(body: bytes) -> bytes:
    """Ask an OpenAI-compatible stream to report usage in its final chunk, so quotas count streamed tokens."""
    if not body or b'"stream"' not in body:
        return body
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if isinstance(data, dict) and data.get("stream") is True:
        options = data.get("stream_options") if isinstance(data.get("stream_options"), dict) else {}
        data["stream_options"] = {**options, "include_usage": True}
        return json.dumps(data).encode()
    return body


class RealtimeProxyHandler(WebSocketRelayMixin, WebSocketHandler, ServiceBase):
    """`{prefix}proxy/openai/v1/realtime`: the Realtime API websocket, the key chosen, limits enforced and
    the use counted in the handshake (as for an HTTP request), before the upgrade. Then the tokens each
    `response.done` reports count as they come, and a session that uses up a daily token quota is
    closed (1008, after a Realtime `error` event): one session cannot spend past it."""

    usage_key: tuple[str, str, str] = ("", "", "")  # (user, source, credential)
    _quota_check: asyncio.Future | None = None
    _over_quota = False  # set once the session may send nothing more upstream

    def check_origin(self, origin: str) -> bool:
        return False  # single-user servers and SDKs send no Origin; a browser page has no business here

    async def get(self, *args, **kwargs):
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPError(400, "the Realtime API is a websocket: connect with Upgrade: websocket")
        if self.request.headers.get("Origin") is not None:
            raise web.HTTPError(403, "cross-origin websocket refused")
        provider = providers.PROVIDERS["openai"]
        try:
            base_url = self.kv.base_url_for(provider)
        except InvalidInput as exc:
            raise web.HTTPError(502, str(exc)) from None
        name = (self.request.headers.get("X-KeyVault-Credential") or provider.env_var or "").strip()
        try:
            name = validate_name(name)
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None
        ident = await self.identity()
        with http_errors(missing=401):
            choice, resolved = await asyncio.to_thread(self.kv.admit, self.username, ident["groups"], provider, name)
        if choice is None:
            raise web.HTTPError(401, f"No API key configured for {name}: you have no personal key of that name and "
                                     f"no shared {provider.label} key is granted to you")
        source, _, credential = choice
        self.usage_key = (self.username, source, credential)
        headers = upstream_request_headers(self.request.headers.get_all(), injected=provider.auth_headers(resolved.value),
                                           defaults=provider.default_headers)
        url = upstream_url(base_url, "realtime", self.request.query)
        await self.connect_upstream(await self.kv.http_session(), url, headers, injected=resolved.value,
                                    scrub=self.kv.scrubber.scrub)
        await self.upgrade(*args, **kwargs)

    def upstream_event(self, text: str) -> None:
        tokens = realtime_tokens(text)
        if tokens:
            previous = self._quota_check
            self._quota_check = asyncio.ensure_future(self._spend(tokens, previous))

    async def on_message(self, message: str | bytes) -> None:
        # tornado reads the next message once this returns: while the tokens of a finished response are
        # being checked, nothing the client sends after it goes upstream, and nothing once over the quota.
        if self._quota_check is not None and not self._quota_check.done():
            await asyncio.wait([self._quota_check])
        if not self._over_quota:
            await super().on_message(message)

    async def _spend(self, tokens: int, previous: asyncio.Future | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # in the order reported
        try:
            refusal = await asyncio.to_thread(self.kv.spend_session_tokens, *self.usage_key, tokens)
        except Exception as exc:  # noqa: BLE001 - the database is unreachable: closed, as an HTTP admission would be (503)
            self.kv.log.warning("realtime session of %s closed: its usage could not be checked (%s)", self.usage_key[0],
                                type(exc).__name__)  # the class only: a driver's message can quote its statement
            await self._end("usage_unavailable", "the usage database cannot be reached; connect again later",
                            1011, "usage could not be checked")
            return
        if refusal is not None:
            await self._end("rate_limit_exceeded", str(refusal), 1008, "daily token quota reached")

    async def _end(self, code: str, message: str, close_code: int, reason: str) -> None:
        """No more of this session goes upstream; the client gets a Realtime `error` event, then the close."""
        self._over_quota = True
        if self.ws_connection is None:
            return
        try:
            await self.write_message(json.dumps({"type": "error", "event_id": "event_keyvault_quota", "error": {
                "type": code, "code": code, "message": message}}))
        except WebSocketClosedError:
            return
        self.close(close_code, reason)
