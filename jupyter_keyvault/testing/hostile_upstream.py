"""An upstream that tries to hand back the key the proxy injected, by every channel a client
would decode: a JSON body, a header, an SSE event split across chunks, a body partly written as
JSON \\u escapes, a gzip body sent although identity was asked for, and an error body. Tests
point a provider's base URL here and check that the client never receives the key."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading

import tornado.httpserver
import tornado.netutil
import tornado.web


def escaped(key: str) -> str:
    """The key with every other character as a JSON \\u escape (a JSON decoder gives the key back)."""
    return "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(key))


class _Echo(tornado.web.RequestHandler):
    def initialize(self, seen: list, raw: list):
        self.seen = seen
        self.raw = raw

    def key(self) -> str:
        value = self.request.headers.get("Authorization", "").partition(" ")[2] or \
            self.request.headers.get("x-api-key", "")
        self.seen.append(value)
        return value

    async def get(self, channel: str):
        # Everything this upstream was sent, as bytes: the request line, every header, the body.
        lines = [f"{self.request.method} {self.request.uri} {self.request.version}"]
        lines += [f"{name}: {value}" for name, value in self.request.headers.get_all()]
        self.raw.append("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (self.request.body or b""))
        key = self.key()
        if channel == "request":
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"ok": True}))
        elif channel == "body":
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"object": "list", "data": [], "you_sent": key}))
        elif channel == "header":
            self.set_header("X-Echo", f"key={key}")
            self.finish(json.dumps({"ok": True}))
        elif channel == "sse":
            self.set_header("Content-Type", "text/event-stream")
            half = len(key) // 2
            self.write('data: {"delta": "' + key[:half])
            await self.flush()
            await asyncio.sleep(0.05)
            self.write(key[half:] + '"}\n\n')
            await self.flush()
            self.finish("data: [DONE]\n\n")
        elif channel == "cut":  # breaks off mid-answer: one event, then the connection drops, unterminated
            self.set_header("Content-Type", "text/event-stream")
            self.write('data: {"delta": "half an answer"}\n\n')
            await self.flush()
            await asyncio.sleep(0.05)
            self.request.connection.stream.close()  # type: ignore[union-attr]
        elif channel == "escaped":
            self.set_header("Content-Type", "application/json")
            self.finish('{"you_sent": "' + escaped(key) + '"}')
        elif channel == "gzip":
            self.set_header("Content-Type", "application/json")
            self.set_header("Content-Encoding", "gzip")
            self.finish(gzip.compress(json.dumps({"you_sent": key}).encode()))
        elif channel == "cors":  # as real provider APIs do for their browser SDKs
            self.set_header("Content-Type", "application/json")
            self.set_header("Access-Control-Allow-Origin", "*")
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Access-Control-Expose-Headers", "X-Request-Id")
            self.finish(json.dumps({"ok": True}))
        elif channel == "error":
            self.set_status(400)
            self.set_header("Content-Type", "application/json")
            self.finish('{"error": {"message": "bad key ' + escaped(key) + '"}}')
        else:
            self.send_error(404)

    post = put = patch = delete = get


class HostileUpstream:
    """`base_url` ends in /v1; GET {base_url}/echo/{body,header,sse,escaped,gzip,error}, and
    {base_url}/echo/request, which only records. `raw` holds every request as the bytes it arrived as."""

    CHANNELS = ("body", "header", "sse", "escaped", "gzip", "error")

    def __init__(self):
        self.seen: list[str] = []  # the keys it was sent
        self.raw: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    def start(self) -> HostileUpstream:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            app = tornado.web.Application([(r"/v1/echo/(\w+)", _Echo, {"seen": self.seen, "raw": self.raw})])
            server = tornado.httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            self._ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
