"""The one relay: send a request upstream and stream the response back, chunk by chunk.

Used by the server's provider proxy (local and hub backends), its OAuth proxy, and the hub
service's proxy. Bodies stream both ways without buffering; only error bodies (small) are
read whole, so the injected value and anything key-shaped can be redacted from them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AsyncIterator, Callable, Protocol

from tornado import web
from tornado.iostream import StreamClosedError

from ..lazy import LazyModule
from .errors import provider_error_body
from .headers import relayed_response_headers
from .redact import InjectedValueRedactor, decoder_for

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = LazyModule("aiohttp")  # imported by the first relay: a server that never proxies never loads it

MAX_ERROR_BODY = 256 * 1024


class UsageMeter(Protocol):
    def feed(self, chunk: bytes) -> None: ...
    def finish(self) -> int: ...


def upstream_session(read_timeout: float, max_connections: int = 0) -> aiohttp.ClientSession:
    """One pooled keep-alive client for every upstream (create it on the loop that uses it)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=read_timeout),
        auto_decompress=False,
        trust_env=False,  # never env proxies: they would see the injected key
        cookie_jar=aiohttp.DummyCookieJar(),  # one session serves every caller: an upstream's cookie is no one's
    )


class BodyStream:
    """A request body on its way from tornado (`data_received`) to aiohttp, a few chunks at a time:
    `put` waits while the upstream is slower than the client, so tornado stops reading the socket
    (backpressure) and the body is never held whole."""

    def __init__(self, max_chunks: int = 8):
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(max_chunks)
        self.closed = False

    async def put(self, chunk: bytes | None) -> None:
        if not self.closed:
            await self._queue.put(chunk)

    def close(self) -> None:
        """Nobody reads any more (the upstream answered or failed): drop what is queued, never block `put`."""
        self.closed = True
        while not self._queue.empty():
            self._queue.get_nowait()

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk


class RelayMixin:
    """For a tornado RequestHandler that relays (decorate the handler with `@web.stream_request_body`):
    a client that leaves cancels the upstream read; the request body streams upstream as it arrives.

    In `prepare()`, after every check: `accept_body(cap)`, then `start_relay(...)` to stream the body
    (or `buffer=True` to collect a small body the handler rewrites); the method awaits `relayed()`.

    A body over the cap never goes (further) upstream and is answered 413. HTTP clients read the answer
    only once they have sent their body, and an answer followed by a close while they still send is
    often lost to a TCP reset, so a body up to DRAIN_FACTOR times the cap is read and dropped first;
    a larger one is answered at once (when Content-Length says so, before any of it is read)."""

    DRAIN_FACTOR = 2
    body_cap_setting = "c.KeyVault.proxy_max_body_size"  # named in the 413, so an admin knows what to raise
    _relay_task: asyncio.Future | None = None
    _client_gone = False
    _body_cap = 0
    _received = 0
    over_cap = False
    _body_stream: BodyStream | None = None
    _body_buffer: bytearray | None = None

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._body_stream is not None:
            self._body_stream.close()
        if self._relay_task is not None:
            self._relay_task.cancel()
        super().on_connection_close()  # type: ignore[misc]

    def accept_body(self, cap: int, *, buffer: bool = False) -> None:
        """Up to `cap` bytes of body; over it, 413 (see the class doc), decided on Content-Length before
        any byte is read, else on the bytes counted as they arrive."""
        handler: web.RequestHandler = self  # type: ignore[assignment]
        self._body_cap = cap
        length = handler.request.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > cap:
            if int(length) > self._drain_limit:
                raise web.HTTPError(413, body_too_large(cap, self.body_cap_setting))
            self.over_cap = True
        # Our own count enforces the cap (with a clear 413); tornado's limit would answer a bare 400.
        handler.request.connection.set_max_body_size(2 * self._drain_limit)  # type: ignore[union-attr]
        if buffer:
            self._body_buffer = bytearray()

    @property
    def _drain_limit(self) -> int:
        return max(self._body_cap, 1) * self.DRAIN_FACTOR

    async def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if not self.over_cap and self._received > self._body_cap:
            self.over_cap = True
            self._stop_upstream()
        if self.over_cap:
            if self._received > self._drain_limit:
                self._refuse_now()
        elif self._body_stream is not None:
            await self._body_stream.put(chunk)
        elif self._body_buffer is not None:
            self._body_buffer += chunk

    def _stop_upstream(self) -> None:
        """The body ran over the cap: what went upstream is cut off there, nothing more is kept."""
        if self._body_stream is not None:
            self._body_stream.close()
            self._body_stream = None
        self._body_buffer = None
        if self._relay_task is not None:
            self._relay_task.cancel()

    def _refuse_now(self) -> None:
        handler: web.RequestHandler = self  # type: ignore[assignment]
        if not handler._headers_written and not handler._finished:
            error = web.HTTPError(413, body_too_large(self._body_cap, self.body_cap_setting))
            handler.send_error(413, exc_info=(web.HTTPError, error, None))
        elif not handler._finished:
            handler.request.connection.close()  # type: ignore[union-attr]

    @property
    def buffered_body(self) -> bytes:
        return bytes(self._body_buffer or b"")

    def start_relay(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str], *,
                    injected: str | None, scrub: Callable[[str], str],
                    meter: Callable[[str], UsageMeter] | None = None, body: bytes | None = None) -> None:
        """Send this request to `url` now; its body streams as it arrives (or `body` instead of it)."""
        handler: web.RequestHandler = self  # type: ignore[assignment]
        if self.over_cap:  # declared over the cap: nothing goes upstream, relayed() answers 413
            return
        data: bytes | aiohttp.payload.Payload | None = body
        if handler.request.method in ("GET", "HEAD"):
            data = None
        elif body is None and self._body_buffer is None:
            self._body_stream = BodyStream()
            # A payload object, not the bare iterator: aiohttp would otherwise look its type up in a
            # registry of isinstance checks on every request (a tenth of the proxy's CPU per request).
            data = aiohttp.payload.AsyncIterablePayload(self._body_stream.chunks())
            length = handler.request.headers.get("Content-Length")
            if length is not None:  # the body goes as it came: upstreams may need its length
                headers = {**headers, "Content-Length": length}
        self._relay_task = asyncio.ensure_future(
            relay(TornadoSink(handler), handler.request.method, session, url, headers, data, injected, scrub, meter))
        self._relay_task.add_done_callback(self._relay_done)

    def _relay_done(self, _task: asyncio.Future) -> None:
        if self._body_stream is not None:  # the upstream answered (or failed) before the body ended
            self._body_stream.close()

    async def relayed(self) -> int:
        """Once tornado has read the whole body: end it, wait for the relay; the tokens the meter counted."""
        handler: web.RequestHandler = self  # type: ignore[assignment]
        if self.over_cap and not handler._finished:
            raise web.HTTPError(413, body_too_large(self._body_cap, self.body_cap_setting))
        if self._body_stream is not None:
            await self._body_stream.put(None)
        if self._relay_task is None:
            return 0
        try:
            return await self._relay_task
        except asyncio.CancelledError:
            if not (self._client_gone or handler._finished):
                raise
            return 0


def body_too_large(cap: int, setting: str) -> str:
    return f"request body is larger than this server's proxy limit of {cap} bytes ({setting})"


class ResponseSink(Protocol):
    """Where a relayed response goes: a tornado handler (TornadoSink) or an aiohttp response (the
    loopback lane). The status and headers are set first; nothing is sent before the first write."""

    @property
    def headers_sent(self) -> bool: ...
    def set_status(self, status: int, reason: str | None) -> None: ...
    def add_header(self, name: str, value: str) -> None: ...
    async def send(self, chunk: bytes) -> None: ...
    async def finish(self, chunk: bytes | None) -> None: ...
    def abort(self) -> None:
        """Drop the client's connection: an answer broken off upstream must not end as if complete."""


class TornadoSink:
    def __init__(self, handler: web.RequestHandler):
        self._handler = handler

    @property
    def headers_sent(self) -> bool:
        return self._handler._headers_written

    def set_status(self, status: int, reason: str | None) -> None:
        self._handler.set_status(status, reason)

    def add_header(self, name: str, value: str) -> None:
        self._handler.add_header(name, value)

    async def send(self, chunk: bytes) -> None:
        handler = self._handler
        if not handler._headers_written:  # small SSE writes must leave at once, not wait for Nagle's algorithm
            handler.request.connection.stream.set_nodelay(True)  # type: ignore[union-attr]
        handler.write(chunk)
        await handler.flush()

    async def finish(self, chunk: bytes | None) -> None:
        self._handler.finish(chunk)

    def abort(self) -> None:
        self._handler.request.connection.close()  # type: ignore[union-attr]


async def relay(sink: ResponseSink, method: str, session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                body: bytes | aiohttp.payload.Payload | None, injected: str | None, scrub: Callable[[str], str],
                meter_for: Callable[[str], UsageMeter] | None) -> int:
    """Send the request upstream and the answer to `sink`; the tokens the meter counted.
    Raises web.HTTPError(502) when the upstream cannot be reached before anything was sent."""
    # The value injected upstream never comes back: not in the status line, a header or the body.
    redactor = InjectedValueRedactor(injected) if injected else None
    event_stream = False
    try:
        async with session.request(method, url, data=body, headers=headers, allow_redirects=False) as upstream:
            reason = upstream.reason or None
            sink.set_status(upstream.status, redactor.text(reason) if redactor and reason else reason)
            for name, value in relayed_response_headers(upstream.headers.items()):
                sink.add_header(name, redactor.text(value) if redactor else value)
            # Asked for identity, an upstream may compress anyway: relay decoded bytes (Content-Encoding is
            # not relayed), which the redactor can also read.
            decoder = decoder_for(upstream.headers.get("Content-Encoding"))
            if upstream.status >= 400:
                # Error bodies are small: read, redact anything key-like (some providers echo it), send.
                raw = await upstream.content.read(MAX_ERROR_BODY)
                raw = decoder.decompress(raw, MAX_ERROR_BODY) if decoder else raw
                if redactor:
                    raw = redactor.feed(raw) + redactor.flush()
                await sink.finish(scrub(raw.decode("utf-8", "replace")).encode("utf-8"))
                return 0
            meter = meter_for(upstream.headers.get("Content-Type", "")) if meter_for else None
            event_stream = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
            chunk = b""
            async for chunk in upstream.content.iter_any():
                if decoder:
                    chunk = decoder.decompress(chunk)
                if meter is not None:
                    meter.feed(chunk)
                if redactor:
                    chunk = redactor.feed(chunk)
                if chunk:
                    if upstream.content.at_eof():  # the last chunk leaves with the end: one write
                        break
                    await sink.send(chunk)
                    chunk = b""
            rest = decoder.flush() if decoder else b""
            if redactor:
                rest = redactor.feed(rest) + redactor.flush()
            await sink.finish(chunk + rest if chunk else rest or None)
            return meter.finish() if meter is not None else 0
    except StreamClosedError:
        return 0
    except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
        if sink.headers_sent:  # broken off upstream (or the client left): the answer ends broken, not complete
            await _end_broken(sink, event_stream)
            return 0
        raise web.HTTPError(502, f"upstream unreachable: {exc.__class__.__name__}") from None


BROKEN_STREAM_EVENT = ("\n\nevent: error\ndata: " + provider_error_body(
    502, "the upstream broke off its answer; what came before this event is incomplete") + "\n\n").encode()


async def _end_broken(sink: ResponseSink, event_stream: bool) -> None:
    """An answer broken off after its headers went out: the connection is dropped, never ended as if
    complete. An event stream gets a provider-shaped error event first, which the SDKs raise on, since
    configurable-http-proxy (JupyterHub) does not pass a dropped connection on to its client."""
    if event_stream:
        try:
            await sink.send(BROKEN_STREAM_EVENT)
        except (OSError, StreamClosedError):
            pass  # the client is gone too
    sink.abort()


class WebSocketRelayMixin:
    """For a tornado WebSocketHandler that relays to an upstream websocket (the OpenAI Realtime API).

    The handler checks everything in `get()` before the upgrade, then `await self.connect_upstream(...)`
    (so an upstream that refuses is an HTTP error at the client's handshake, not an open-then-close),
    then lets the handshake complete. Frames go both ways as they come, text and binary, each side's
    close code passed on; frames from upstream have the injected value and stored values scrubbed."""

    upstream_ws: aiohttp.ClientWebSocketResponse[bool] | None = None
    _pump: asyncio.Future | None = None
    _redactor: InjectedValueRedactor | None = None

    async def connect_upstream(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str], *,
                               injected: str | None, scrub: Callable[[str], str]) -> None:
        self._scrub = scrub
        self._redactor = InjectedValueRedactor(injected) if injected else None
        try:
            self.upstream_ws = await session.ws_connect(url, headers=headers, autoping=True, max_msg_size=0,
                                                        compress=0)
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status if 400 <= exc.status < 500 and exc.status != 407 else 502
            raise web.HTTPError(status, f"the upstream refused the websocket (HTTP {exc.status})") from None
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise web.HTTPError(502, f"upstream unreachable: {exc.__class__.__name__}") from None

    async def upgrade(self, *args, **kwargs) -> None:
        """Complete the client's handshake (tornado's WebSocketHandler.get); an upstream connected for a
        client that is gone before its websocket opened is closed, not left open."""
        from tornado.websocket import WebSocketHandler

        try:
            await WebSocketHandler.get(self, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            if self._pump is None and self.upstream_ws is not None:
                await self.upstream_ws.close()

    def open(self, *args, **kwargs):
        self._pump = asyncio.ensure_future(self._from_upstream())
        return super().open(*args, **kwargs)

    async def on_message(self, message: str | bytes) -> None:
        upstream = self.upstream_ws
        if upstream is None or upstream.closed:
            return
        try:
            if isinstance(message, bytes):
                await upstream.send_bytes(message)
            else:
                await upstream.send_str(message)
        except (ConnectionError, aiohttp.ClientError):
            pass  # the upstream is going: _from_upstream closes the client with its code

    async def _from_upstream(self) -> None:
        from tornado.websocket import WebSocketClosedError

        handler = self  # a tornado WebSocketHandler
        upstream = self.upstream_ws
        if upstream is None:
            return
        code, reason = 1011, "upstream failed"
        try:
            while True:
                msg = await upstream.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.upstream_event(msg.data)  # first: what was spent upstream counts even if the client is gone
                    text = self._redactor.text(msg.data) if self._redactor else msg.data
                    await handler.write_message(self._scrub(text))  # type: ignore[attr-defined]
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    data = self._redactor.feed(msg.data) + self._redactor.flush() if self._redactor else msg.data
                    await handler.write_message(data, binary=True)  # type: ignore[attr-defined]
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    code, reason = msg.data, msg.extra or ""
                    break
                elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    code, reason = upstream.close_code or 1000, ""
                    break
                else:  # ERROR
                    break
        except WebSocketClosedError:
            return  # the client left first: on_close closes the upstream
        reason = self._scrub(self._redactor.text(reason) if self._redactor else reason)
        handler.close(_sendable_close_code(code),  # type: ignore[attr-defined]
                      reason.encode()[:120].decode("utf-8", "ignore"))

    def upstream_event(self, text: str) -> None:
        """A text frame from upstream, as it arrives (before it goes to the client): for a handler that meters use."""

    def on_close(self) -> None:
        upstream = self.upstream_ws
        if upstream is not None and not upstream.closed:
            code = _sendable_close_code(getattr(self, "close_code", None))
            reason = (getattr(self, "close_reason", None) or "").encode()[:120]
            asyncio.ensure_future(upstream.close(code=code, message=reason))
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()


def _sendable_close_code(code: int | None) -> int:
    """A close code one may send on (1005/1006/1015 only describe how a connection ended)."""
    if code is None or code == 1005:
        return 1000
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1011
