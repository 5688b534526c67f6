"""The one relay: send a request upstream and stream the response back, chunk by chunk.

Used by the server's provider proxy (local and hub backends), its OAuth proxy, and the hub
service's proxy. Bodies stream both ways without buffering; only error bodies (small) are
read whole, so the injected value and anything key-shaped can be redacted from them.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Protocol

import aiohttp
from tornado import web
from tornado.iostream import StreamClosedError

from .headers import relayed_response_headers
from .redact import InjectedValueRedactor, decoder_for

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


class RelayMixin:
    """For a tornado RequestHandler that relays: a client that leaves cancels the upstream read."""

    _relay_task: asyncio.Future | None = None
    _client_gone = False

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._relay_task is not None:
            self._relay_task.cancel()
        super().on_connection_close()  # type: ignore[misc]

    async def relay(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str], *,
                    injected: str | None, scrub: Callable[[str], str],
                    meter: Callable[[str], UsageMeter] | None = None, body: bytes | None = None) -> int:
        """Relay this request (or `body` instead of its body) to `url`; returns the tokens the
        meter counted (0 without one)."""
        handler: web.RequestHandler = self  # type: ignore[assignment]
        if handler.request.method in ("GET", "HEAD"):
            body = None
        elif body is None:
            body = handler.request.body
        self._relay_task = asyncio.ensure_future(
            _relay(handler, session, url, headers, body, injected, scrub, meter))
        try:
            return await self._relay_task
        except asyncio.CancelledError:
            if not self._client_gone:
                raise
            return 0


async def _relay(handler: web.RequestHandler, session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                 body: bytes | None, injected: str | None, scrub: Callable[[str], str],
                 meter_for: Callable[[str], UsageMeter] | None) -> int:
    # The value injected upstream never comes back: not in the status line, a header or the body.
    redactor = InjectedValueRedactor(injected) if injected else None
    try:
        async with session.request(handler.request.method, url, data=body, headers=headers,
                                   allow_redirects=False) as upstream:
            reason = upstream.reason or None
            handler.set_status(upstream.status, redactor.text(reason) if redactor and reason else reason)
            for name, value in relayed_response_headers(upstream.headers.items()):
                handler.add_header(name, redactor.text(value) if redactor else value)
            # Asked for identity, an upstream may compress anyway: relay decoded bytes (Content-Encoding is
            # not relayed), which the redactor can also read.
            decoder = decoder_for(upstream.headers.get("Content-Encoding"))
            if upstream.status >= 400:
                # Error bodies are small: read, redact anything key-like (some providers echo it), send.
                raw = await upstream.content.read(MAX_ERROR_BODY)
                raw = decoder.decompress(raw, MAX_ERROR_BODY) if decoder else raw
                if redactor:
                    raw = redactor.feed(raw) + redactor.flush()
                handler.finish(scrub(raw.decode("utf-8", "replace")).encode("utf-8"))
                return 0
            meter = meter_for(upstream.headers.get("Content-Type", "")) if meter_for else None
            # Small SSE writes must leave at once, not wait for Nagle's algorithm.
            handler.request.connection.stream.set_nodelay(True)  # type: ignore[union-attr]
            async for chunk in upstream.content.iter_any():
                if decoder:
                    chunk = decoder.decompress(chunk)
                if meter is not None:
                    meter.feed(chunk)
                if redactor:
                    chunk = redactor.feed(chunk)
                if chunk:
                    handler.write(chunk)
                    if not upstream.content.at_eof():  # the last chunk leaves with finish(): one write
                        await handler.flush()
            rest = decoder.flush() if decoder else b""
            if redactor:
                rest = redactor.feed(rest) + redactor.flush()
            handler.finish(rest or None)
            return meter.finish() if meter is not None else 0
    except StreamClosedError:
        return 0
    except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
        if handler._headers_written:
            return 0
        raise web.HTTPError(502, f"upstream unreachable: {exc.__class__.__name__}") from None
