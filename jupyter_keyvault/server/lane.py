"""The loopback lane: the provider proxy served by aiohttp on 127.0.0.1, for this server's own kernels.

tornado parses HTTP in Python, which costs a relay up to half a millisecond to the first chunk over
an aiohttp hop, and keeps more per open stream. Kernels on this host reach the same
proxy through this lane instead (their `KEYVAULT_PROXY_URL`); the Jupyter URL keeps serving it for
everyone else (tokens held outside, the Realtime websocket, OAuth APIs).

Nothing is decided here: a request goes through `plan_provider_call` (the same checks, in the same
order, as the tornado handler) and `relay` (the one relay), and errors have the same provider-shaped
bodies. The lane adds what a listener of its own needs: it binds 127.0.0.1 only, answers only
requests addressed to that address (a page that rebinds a DNS name to 127.0.0.1 is refused), and
caps the request body as `c.KeyVault.proxy_max_body_size` says. Its socket is bound when the server
starts, so kernels are told the URL at once; aiohttp is imported when the first connection arrives.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from tornado import httputil
from tornado import web as tornado_web

from ..lazy import LazyModule
from ..web.errors import TooManyRequests, provider_error_body
from ..web.paths import upstream_url
from ..web.relay import RelayMixin, body_too_large, relay
from .base import CallerMixin
from .proxy import plan_provider_call, proxy_access_log

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.web_request import BaseRequest
    from aiohttp.web_response import Response, StreamResponse
    from aiohttp.web_server import Server

    from .manager import KeyVaultManager
else:
    aiohttp = LazyModule("aiohttp")  # imported with aiohttp.web by the first connection (_serve)

BODY_CAP_SETTING = RelayMixin.body_cap_setting
DRAIN_OTHERWISE = 1024 * 1024


class LoopbackLane:
    def __init__(self, manager: KeyVaultManager, base_url: str, port: int = 0):
        self.manager = manager
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self._route = re.compile(rf"^{re.escape(self.base_url)}keyvault/proxy/(?P<provider_id>[a-z_]+)(?:/.*)?$")
        self._socket = socket.create_server(("127.0.0.1", port), backlog=1024)
        self._socket.setblocking(False)
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{self.base_url}"
        self.port_host = f"127.0.0.1:{self.port}"
        self._hosts = {self.port_host, f"localhost:{self.port}"}
        self._server: Server | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._starting: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def listen(self) -> None:
        """Serve from the first connection on (call on the server's loop)."""
        self._loop = asyncio.get_event_loop()
        self._loop.add_reader(self._socket.fileno(), self._first_connection)

    def _first_connection(self) -> None:
        self._loop.remove_reader(self._socket.fileno())  # type: ignore[union-attr]
        self._starting = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        # aiohttp's low-level server: no application, router or runner (a megabyte of modules less).
        from aiohttp.web_server import Server

        # A client that leaves cancels its handler, and with it the upstream request. A body left unread
        # after the answer is not read on (lingering): `CappedBody.drained` decides what is read first.
        self._server = Server(self.handle, handler_cancellation=True, access_log=None, lingering_time=0)
        self._listener = await asyncio.get_running_loop().create_server(self._server, sock=self._socket)

    async def close(self) -> None:
        if self._starting is not None:
            await asyncio.shield(self._starting)
        elif self._loop is not None:
            self._loop.remove_reader(self._socket.fileno())
        if self._listener is not None:
            self._listener.close()
        if self._server is not None:
            await self._server.shutdown(1.0)
        self._socket.close()

    async def handle(self, request: BaseRequest) -> StreamResponse:
        from aiohttp.web_response import StreamResponse  # imported by _serve already

        started = time.perf_counter()
        response = StreamResponse()
        sink = AiohttpSink(request, response)
        body = CappedBody(request, self.manager.proxy_max_body_size)
        try:
            await self._proxy(request, sink, body)
            error = None
        except tornado_web.HTTPError as exc:
            error = exc
        except Exception:  # noqa: BLE001 - a bug of ours: logged (scrubbed) by the server's log, answered as the proxy's 500
            proxy_access_log().exception("the loopback proxy failed on %s %s", request.method, request.path)
            error = tornado_web.HTTPError(500, "the proxy failed; see the Jupyter server's log")
        if error is not None and not sink.headers_sent:
            response = error_response(
                tornado_web.HTTPError(413, body_too_large(body.cap, BODY_CAP_SETTING)) if body.over_cap else error)
            if not await body.drained():
                response.force_close()
        elif error is not None and not sink.finished:  # the answer had begun: cut it off, never end it as if complete
            sink.abort()
        self._log(request, response.status, started)
        return response

    async def _proxy(self, request: BaseRequest, sink: AiohttpSink, body: CappedBody) -> None:
        if request.host not in self._hosts:
            raise tornado_web.HTTPError(403, f"the loopback proxy answers only requests with Host {self.port_host}")
        raw_path = request.raw_path.partition("?")[0]
        match = self._route.match(raw_path)
        if match is None:
            raise tornado_web.HTTPError(404, "the loopback proxy serves only /keyvault/proxy/<provider>/")
        if request.headers.get("Upgrade"):
            raise tornado_web.HTTPError(400, "websockets go through the Jupyter server's URL, not the loopback proxy")
        call = LaneCall(self.manager, request, self.base_url)
        base, rest, headers, injected = await plan_provider_call(
            call, match.group("provider_id"), raw_path, request.headers.items())
        url = upstream_url(base, rest, request.rel_url.raw_query_string)
        data = body.payload()
        if data is not None and request.content_length is not None:
            headers = {**headers, "Content-Length": str(request.content_length)}
        try:
            await relay(sink, request.method, await self.manager.http_session(), url, headers, data, injected,
                        self.manager.scrubber.scrub, None)
        except BodyOverCap:
            pass
        if body.over_cap:
            raise tornado_web.HTTPError(413, body_too_large(body.cap, BODY_CAP_SETTING))

    @staticmethod
    def _log(request: BaseRequest, status: int, started: float) -> None:
        log = proxy_access_log()
        level = logging.WARNING if status >= 400 else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "%d %s %s (loopback %s) %.2fms", status, request.method, request.path,
                    request.remote, (time.perf_counter() - started) * 1e3)


class LaneCall(CallerMixin):
    """One lane request as the caller checks see it (they read `request.headers`, `kv`, `base_url`)."""

    def __init__(self, manager: KeyVaultManager, request: BaseRequest, base_url: str):
        self.settings = {"keyvault_manager": manager}
        self.request = request
        self.base_url = base_url

    @property
    def client_address(self) -> str | None:
        return self.request.remote


class AiohttpSink:
    """`relay`'s sink for an aiohttp response; headers leave with the first bytes."""

    def __init__(self, request: BaseRequest, response: StreamResponse):
        self._request = request
        self._response = response
        self.finished = False

    @property
    def headers_sent(self) -> bool:
        return self._response.prepared

    def set_status(self, status: int, reason: str | None) -> None:
        self._response.set_status(status, reason)

    def add_header(self, name: str, value: str) -> None:
        self._response.headers.add(name, value)

    async def send(self, chunk: bytes) -> None:
        if not self._response.prepared:
            await self._response.prepare(self._request)
        await self._response.write(chunk)

    async def finish(self, chunk: bytes | None) -> None:
        if not self._response.prepared:
            self._response.content_length = len(chunk or b"")
            await self._response.prepare(self._request)
        if chunk:
            await self._response.write(chunk)
        await self._response.write_eof()
        self.finished = True

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()


class CappedBody:
    """The request body on its way upstream as it arrives, never held whole; past `cap` bytes the
    upload is broken off (the upstream sees an incomplete request, never a cut one that looks whole)."""

    def __init__(self, request: BaseRequest, cap: int):
        self._request = request
        self.cap = cap
        self.over_cap = False
        self._received = 0

    async def drained(self) -> bool:
        """Before an error answer, read and drop the rest of the body: HTTP clients read the answer only once
        they have sent their body, and a close with unread bytes resets the connection, answer and all.
        Over the cap, up to DRAIN_FACTOR times the cap (the 413 must be seen, as in RelayMixin); else up to
        DRAIN_OTHERWISE (a refused request is not read whole). False: too much to read, close after."""
        request = self._request
        limit = max(self.cap, 1) * RelayMixin.DRAIN_FACTOR if self.over_cap else DRAIN_OTHERWISE
        if request.content.at_eof():
            return True
        if request.content_length is not None and request.content_length > limit:
            return False
        while self._received <= limit:
            chunk = await request.content.readany()
            if not chunk:
                return True
            self._received += len(chunk)
        return False

    def payload(self) -> Any:
        request = self._request
        if request.method in ("GET", "HEAD") or not request.body_exists:
            return None
        if request.content_length is not None and request.content_length > self.cap:
            self.over_cap = True
            raise tornado_web.HTTPError(413, body_too_large(self.cap, BODY_CAP_SETTING))
        return aiohttp.payload.AsyncIterablePayload(self._chunks())

    async def _chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._request.content.iter_any():
            self._received += len(chunk)
            if self._received > self.cap:
                self.over_cap = True
                raise BodyOverCap()
            yield chunk


class BodyOverCap(Exception):
    """Raised inside the upload so aiohttp aborts it."""


def error_response(exc: tornado_web.HTTPError) -> Response:
    from aiohttp.web_response import Response

    message = exc.log_message or httputil.responses.get(exc.status_code, "error")
    response = Response(status=exc.status_code, text=provider_error_body(exc.status_code, message),
                        content_type="application/json")
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = exc.retry_after
    return response
