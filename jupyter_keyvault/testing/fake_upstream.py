"""A fake, local OpenAI- and Anthropic-compatible upstream for tests and benchmarks.

The server runs on its own asyncio/tornado loop in a daemon thread, so plain
synchronous tests (and the real ``openai`` / ``anthropic`` SDKs) can talk to it::

    with FakeUpstream(valid_keys={"sk-test-1"}, chunk_interval=0.05) as fake:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test-1")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        assert fake.received_keys() == ["sk-test-1"]

It records every request and counts accepted TCP connections so tests can
check exactly what a proxy forwarded and whether it pools upstream connections.

Run it standalone with::

    python -m jupyter_keyvault.testing.fake_upstream --port 0 --key sk-test-1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import signal
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

__all__ = [
    "DEFAULT_KEY",
    "REPLY_TEXT",
    "EMBEDDING",
    "FakeUpstream",
    "RecordedRequest",
    "main",
]

DEFAULT_KEY = "sk-test-fake-upstream-0000000000000000"
REPLY_TEXT = "Hello from fake upstream"
EMBEDDING = (0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8)
HOST = "127.0.0.1"

OPENAI_MODELS = [
    {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
    {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
    {"id": "text-embedding-3-small", "object": "model", "created": 1705948997, "owned_by": "system"},
]
ANTHROPIC_MODELS = [
    {
        "type": "model",
        "id": "claude-sonnet-4-6",
        "display_name": "Claude Sonnet 4.6",
        "created_at": "2026-02-17T00:00:00Z",
        "lifecycle": "active",
    },
    {
        "type": "model",
        "id": "claude-haiku-4-5",
        "display_name": "Claude Haiku 4.5",
        "created_at": "2025-10-01T00:00:00Z",
        "lifecycle": "active",
    },
]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake upstream received it."""

    method: str
    path: str  # without the query string
    query: str
    headers: dict  # lower-case header name -> value (repeated headers joined by ", ")
    body: bytes
    received_at: float  # time.monotonic()

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def api_keys(self) -> list[str]:
        """API keys presented in this request, in a fixed header order."""
        keys = []
        bearer = _bearer_token(self.headers.get("authorization"))
        if bearer:
            keys.append(bearer)
        for name in ("x-api-key", "x-goog-api-key"):
            if self.headers.get(name):
                keys.append(self.headers[name])
        return keys


def _bearer_token(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _approx_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _content_text(content: Any) -> str:
    """Plain text of a message's content (string or list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def _split_text(text: str, n: int) -> list[str]:
    """Split ``text`` into ``n`` consecutive slices of near-equal length.

    Joined, the slices are always ``text``; if n > len(text) some are empty.
    """
    size, extra = divmod(len(text), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


class _CountingHTTPServer(tornado.httpserver.HTTPServer):
    """HTTPServer that reports every accepted TCP connection."""

    def initialize(self, *args: Any, on_connect: Any = None, **kwargs: Any) -> None:
        self._on_connect = on_connect
        super().initialize(*args, **kwargs)

    def handle_stream(self, stream: Any, address: Any) -> None:
        if self._on_connect is not None:
            self._on_connect()
        super().handle_stream(stream, address)


class _BaseHandler(tornado.web.RequestHandler):
    upstream: FakeUpstream

    def initialize(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self._client_gone = False

    async def prepare(self) -> None:
        # Record before the delay so tests can see requests still "in flight".
        self.upstream._record(self.request)
        with self.upstream._lock:
            status = self.upstream.fail_next.pop(0) if self.upstream.fail_next else None
        if status is not None:  # what a client's retries are tested against
            self.set_header("Retry-After", "0")
            self.send_json({"error": {"message": f"fake failure {status}", "type": "server_error", "code": None}},
                           status)
            return
        await self.pause(self.upstream.delay)

    async def pause(self, seconds: float) -> bool:
        """Sleep without blocking the loop; False if the server is stopping meanwhile.

        Waking early on shutdown lets streaming handlers end on their own
        instead of being cancelled halfway through a response.
        """
        stopping = self.upstream._stopping
        if seconds > 0 and stopping is not None:
            try:
                await asyncio.wait_for(stopping.wait(), timeout=seconds)
            except asyncio.TimeoutError:
                pass
        if stopping is not None and stopping.is_set():
            # Drop the connection so clients see a cut-off, not a short reply.
            self.request.connection.stream.close()
            self._client_gone = True
            return False
        return True

    def on_connection_close(self) -> None:
        self._client_gone = True
        if not self._finished:  # the client (or a proxy) hung up mid-response
            self.upstream.client_disconnects += 1

    def send_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Errors raised by tornado itself (405, 500, ...) should also be JSON.
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": {"message": self._reason, "type": "server_error", "code": status_code}}))

    def json_body(self) -> dict | None:
        """The parsed JSON object body, or None after sending a 400 response."""
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.bad_request("Request body must be a JSON object.")
            return None
        return body

    def bad_request(self, message: str, param: str | None = None) -> None:
        self.send_json(
            {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}, 400
        )

    async def send_event(self, data: str, event: str | None = None) -> bool:
        """Write one SSE event and flush it; False once the client has gone."""
        if self._client_gone:
            return False
        prefix = f"event: {event}\n" if event else ""
        self.write(f"{prefix}data: {data}\n\n")
        try:
            await self.flush()
        except StreamClosedError:
            self._client_gone = True
            return False
        return True

    def start_event_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        # Nagle + delayed ACKs would hold small SSE writes back ~40ms and skew
        # chunk timing; tornado resets this after each request.
        self.request.connection.stream.set_nodelay(True)


class _OpenAIHandler(_BaseHandler):
    def check_openai_key(self) -> bool:
        """Send OpenAI's 401 unless a valid bearer key was presented."""
        key = _bearer_token(self.request.headers.get("Authorization"))
        if key is not None and key in self.upstream.valid_keys:
            return True
        if key is None:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            code = None
        else:
            # Echo the whole key on purpose: the proxy under test must never
            # relay this body verbatim (real OpenAI echoes at least part of it).
            message = (
                f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            code = "invalid_api_key"
        self.send_json(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}, 401
        )
        return False


class _AnthropicHandler(_BaseHandler):
    def check_anthropic_key(self) -> bool:
        """Send Anthropic's 401 unless a valid x-api-key (or bearer) was presented."""
        headers = self.request.headers
        key = headers.get("x-api-key") or _bearer_token(headers.get("Authorization"))
        if key and key in self.upstream.valid_keys:
            return True
        message = f"invalid x-api-key {key}" if key else "x-api-key header is required"
        self.send_json({"type": "error", "error": {"type": "authentication_error", "message": message}}, 401)
        return False


class _ModelsHandler(_OpenAIHandler, _AnthropicHandler):
    def _is_anthropic(self) -> bool:
        headers = self.request.headers
        return "anthropic-version" in headers or ("x-api-key" in headers and "Authorization" not in headers)

    def get(self) -> None:
        if self._is_anthropic():
            if self.check_anthropic_key():
                self.send_json(
                    {
                        "data": ANTHROPIC_MODELS,
                        "has_more": False,
                        "first_id": ANTHROPIC_MODELS[0]["id"],
                        "last_id": ANTHROPIC_MODELS[-1]["id"],
                    }
                )
        elif self.check_openai_key():
            self.send_json({"object": "list", "data": OPENAI_MODELS})


class _ChatCompletionsHandler(_OpenAIHandler):
    async def post(self) -> None:
        if not self.check_openai_key():
            return
        body = self.json_body()
        if body is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.bad_request("'messages' must be a non-empty array.", "messages")
        model = body.get("model") or OPENAI_MODELS[0]["id"]
        prompt = " ".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))
        usage = {"prompt_tokens": _approx_tokens(prompt), "completion_tokens": _approx_tokens(REPLY_TEXT)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        completion_id = f"chatcmpl-fake{uuid.uuid4().hex[:20]}"
        created = int(time.time())

        if not body.get("stream"):
            return self.send_json(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": REPLY_TEXT, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "system_fingerprint": "fp_fake",
                }
            )

        def chunk(choices: list, **extra: Any) -> str:
            return json.dumps(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": choices,
                    **extra,
                }
            )

        self.start_event_stream()
        # Exactly n_chunks content chunks: the first also carries the role and
        # the last the finish_reason, so clients can count them 1:1.
        pieces = _split_text(REPLY_TEXT, max(1, int(self.upstream.n_chunks)))
        for i, piece in enumerate(pieces):
            if i and not await self.pause(self.upstream.chunk_interval):
                return
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            last = i == len(pieces) - 1
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if last else None}
            if not await self.send_event(chunk([choice])):
                return
        if (body.get("stream_options") or {}).get("include_usage"):
            if not await self.send_event(chunk([], usage=usage)):
                return
        if await self.send_event("[DONE]"):
            self.finish()


class _EmbeddingsHandler(_OpenAIHandler):
    def post(self) -> None:
        if not self.check_openai_key():
            return
        body = self.json_body()
        if body is None:
            return
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]  # a single string or a single token array
        if not isinstance(inputs, list) or not inputs:
            return self.bad_request("'input' must be a string or a non-empty array.", "input")
        if body.get("encoding_format") == "base64":
            # The openai SDK asks for base64 by default: little-endian float32s.
            vector: Any = base64.b64encode(struct.pack(f"<{len(EMBEDDING)}f", *EMBEDDING)).decode()
        else:
            vector = list(EMBEDDING)
        tokens = sum(_approx_tokens(x) if isinstance(x, str) else max(1, len(x)) for x in inputs)
        self.send_json(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(inputs))],
                "model": body.get("model") or "text-embedding-3-small",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


class _MessagesHandler(_AnthropicHandler):
    def bad_request(self, message: str, param: str | None = None) -> None:
        self.send_json({"type": "error", "error": {"type": "invalid_request_error", "message": message}}, 400)

    async def post(self) -> None:
        if not self.check_anthropic_key():
            return
        body = self.json_body()
        if body is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.bad_request("messages: must be a non-empty list")
        model = body.get("model") or ANTHROPIC_MODELS[0]["id"]
        prompt = " ".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))
        input_tokens = _approx_tokens(_content_text(body.get("system")) + " " + prompt)
        output_tokens = _approx_tokens(REPLY_TEXT)
        message = {
            "id": f"msg_fake{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": REPLY_TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
        if not body.get("stream"):
            return self.send_json(message)

        self.start_event_stream()
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        events = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
        ]
        for name, data in events:
            if not await self.send_event(json.dumps(data), event=name):
                return
        for i, piece in enumerate(_split_text(REPLY_TEXT, max(1, int(self.upstream.n_chunks)))):
            if i and not await self.pause(self.upstream.chunk_interval):
                return
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            if not await self.send_event(json.dumps(delta), event="content_block_delta"):
                return
        events = [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        for name, data in events:
            if not await self.send_event(json.dumps(data), event=name):
                return
        self.finish()


class _RealtimeHandler(tornado.websocket.WebSocketHandler):
    """`wss://…/v1/realtime`, the OpenAI Realtime API's websocket, enough of it for a client:

    - the handshake needs a valid bearer key (else 401, as OpenAI answers);
    - on open: `session.created`; `response.create` → REPLY_TEXT as `response.output_text.delta`
      events, then `response.done` with its `usage` (`realtime_usage`);
    - `keyvault.test.echo_key` → the key it was sent, back in a text frame (plain and as JSON \\u
      escapes) and in a binary frame: what a hostile upstream could do;
    - `keyvault.test.close` → closes with the event's `code` and `reason`;
    - a binary frame is echoed back as it came.
    Every handshake (its headers) and message is recorded in `FakeUpstream.realtime`."""

    def initialize(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream

    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.session = RealtimeSession(headers=_lower_headers(self.request.headers), query=self.request.query)
        self.upstream.realtime.append(self.session)
        self.key = _bearer_token(self.request.headers.get("Authorization")) or ""
        if self.key not in self.upstream.valid_keys:
            self.set_status(401)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                              "code": "invalid_api_key"}}))
            return
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.write_message(json.dumps({"type": "session.created", "event_id": "event_1", "session": {
            "id": "sess_fake", "object": "realtime.session", "type": "realtime", "model": "gpt-realtime"}}))

    async def on_message(self, message: str | bytes) -> None:
        self.session.messages.append(message)
        if isinstance(message, bytes):
            await self.write_message(message, binary=True)
            return
        try:
            event = json.loads(message)
        except ValueError:
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "response.create":
            for i, piece in enumerate(_split_text(REPLY_TEXT, max(1, int(self.upstream.n_chunks)))):
                await self.write_message(json.dumps({"type": "response.output_text.delta", "event_id": f"event_d{i}",
                                                     "response_id": "resp_1", "item_id": "item_1", "output_index": 0,
                                                     "content_index": 0, "delta": piece}))
            await self.write_message(json.dumps({"type": "response.done", "event_id": "event_done", "response": {
                "id": "resp_1", "object": "realtime.response", "status": "completed", "output": [],
                "usage": realtime_usage(self.session.messages)}}))
        elif kind == "keyvault.test.echo_key":
            await self.write_message(json.dumps({"type": "error", "event_id": "event_e", "error": {
                "type": "invalid_request_error", "message": f"key {self.key} is not allowed"}}))
            escaped = "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(self.key))
            await self.write_message('{"type": "error", "event_id": "event_f", "error": {"type": "x", "message": "'
                                     + escaped + '"}}')
            await self.write_message(b"binary:" + self.key.encode(), binary=True)
        elif kind == "keyvault.test.close":
            self.close(int(event.get("code", 1000)), str(event.get("reason", "")))

    def on_close(self) -> None:
        self.session.close_code = self.close_code


def realtime_usage(messages: list) -> dict:
    """What OpenAI's `response.done` reports: the session's text so far as input, REPLY_TEXT as output."""
    input_tokens = sum(_approx_tokens(m) for m in messages if isinstance(m, str))
    output_tokens = _approx_tokens(REPLY_TEXT)
    return {"total_tokens": input_tokens + output_tokens, "input_tokens": input_tokens, "output_tokens": output_tokens}


@dataclass
class RealtimeSession:
    """One websocket the fake Realtime API accepted (or refused): handshake headers, messages received."""

    headers: dict
    query: str
    messages: list = field(default_factory=list)
    close_code: int | None = None  # the code the client closed with


SMALL_UPLOAD_BYTES = 8 << 20  # /v1/files keeps a body this small to parse it; larger ones are only counted


@tornado.web.stream_request_body
class _FilesHandler(_OpenAIHandler):
    """POST /v1/files, read as it arrives and never kept: records when the first and last bytes came
    (so tests see whether a proxy relayed an upload chunk by chunk) and how many there were."""

    async def prepare(self) -> None:
        await super().prepare()
        self.request.connection.set_max_body_size(1 << 40)
        self.upload = Upload(headers=_lower_headers(self.request.headers))
        self._digest = hashlib.sha256()
        self._small_body: bytearray | None = bytearray()  # kept while small, to answer with the file's own size
        self.upstream.uploads.append(self.upload)

    def data_received(self, chunk: bytes) -> None:
        now = time.monotonic()
        if self.upload.first_byte_at is None:
            self.upload.first_byte_at = now
        self.upload.last_byte_at = now
        self.upload.bytes += len(chunk)
        self.upload.chunks += 1
        self._digest.update(chunk)
        if self._small_body is not None:
            self._small_body += chunk
            if len(self._small_body) > SMALL_UPLOAD_BYTES:
                self._small_body = None

    def post(self) -> None:
        self.upload.sha256 = self._digest.hexdigest()
        if not self.check_openai_key():  # after reading the body: an answer before it is often lost to a reset
            return
        size, filename, purpose = self.upload.bytes, "upload", "assistants"
        multipart = self.request.headers.get("Content-Type", "").startswith("multipart/form-data")
        if multipart and self._small_body is not None:  # a small form: the file part's own size, name and purpose
            arguments: dict[str, list[bytes]] = {}
            files: dict[str, list[tornado.httputil.HTTPFile]] = {}
            tornado.httputil.parse_body_arguments(self.request.headers.get("Content-Type", ""), bytes(self._small_body),
                                                  arguments, files)
            if not files.get("file"):
                return self.bad_request("'file' is required (multipart/form-data).", "file")
            size, filename = len(files["file"][0].body), files["file"][0].filename
            purpose = (arguments.get("purpose") or [b"user_data"])[0].decode()
        self.send_json({"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": size,
                        "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                        "status": "processed"})


@dataclass
class Upload:
    """One request body received by /v1/files (its bytes counted, not kept)."""

    headers: dict
    bytes: int = 0
    chunks: int = 0
    first_byte_at: float | None = None  # time.monotonic(), comparable across processes on Linux
    last_byte_at: float | None = None
    sha256: str = ""  # of the bytes received, once the request is over


class _AzureChatCompletionsHandler(_ChatCompletionsHandler):
    """Azure OpenAI: the key in `api-key`, an `api-version` query, the deployment in the path."""

    def check_openai_key(self) -> bool:
        key = self.request.headers.get("api-key")
        if not self.get_query_argument("api-version", ""):
            self.bad_request("Missing required query parameter: api-version", "api-version")
            return False
        if key and key in self.upstream.valid_keys:
            return True
        self.send_json({"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}, 401)
        return False


class _ResponsesHandler(_OpenAIHandler):
    """The Responses API: one output message, or its SSE events when streaming."""

    async def post(self) -> None:
        if not self.check_openai_key():
            return
        body = self.json_body()
        if body is None:
            return
        if not body.get("input"):
            return self.bad_request("'input' is required.", "input")
        created = int(time.time())
        message_id = f"msg_fake{uuid.uuid4().hex[:20]}"
        usage = {"input_tokens": _approx_tokens(_content_text(body.get("input"))),
                 "output_tokens": _approx_tokens(REPLY_TEXT), "output_tokens_details": {"reasoning_tokens": 0},
                 "input_tokens_details": {"cached_tokens": 0}}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        text = {"type": "output_text", "text": REPLY_TEXT, "annotations": []}
        response = {"id": f"resp_fake{uuid.uuid4().hex[:20]}", "object": "response", "created_at": created,
                    "model": body.get("model") or "gpt-4o-mini", "status": "completed", "parallel_tool_calls": True,
                    "tool_choice": "auto", "tools": [], "usage": usage,
                    "output": [{"type": "message", "id": message_id, "status": "completed", "role": "assistant",
                                "content": [text]}]}
        if not body.get("stream"):
            return self.send_json(response)
        self.start_event_stream()
        sequence = 0

        async def event(kind: str, **data: Any) -> bool:
            nonlocal sequence
            sequence += 1
            return await self.send_event(json.dumps({"type": kind, "sequence_number": sequence, **data}), event=kind)

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        if not await event("response.created", response=started):
            return
        for i, piece in enumerate(_split_text(REPLY_TEXT, max(1, int(self.upstream.n_chunks)))):
            if i and not await self.pause(self.upstream.chunk_interval):
                return
            if not await event("response.output_text.delta", item_id=message_id, output_index=0, content_index=0,
                               delta=piece, logprobs=[]):
                return
        if await event("response.completed", response=response):
            self.finish()


class _SpeechHandler(_OpenAIHandler):
    def post(self) -> None:
        if not self.check_openai_key():
            return
        body = self.json_body()
        if body is None:
            return
        self.set_header("Content-Type", "audio/mpeg")
        self.finish(b"ID3fake-audio:" + str(body.get("input", "")).encode())


class _TranscriptionsHandler(_OpenAIHandler):
    def post(self) -> None:
        if not self.check_openai_key():
            return
        uploads = self.request.files.get("file") or []
        if not uploads:
            return self.bad_request("'file' is required (multipart/form-data).", "file")
        self.send_json({"text": f"{REPLY_TEXT} ({len(uploads[0].body)} bytes heard)"})


class _ImagesHandler(_OpenAIHandler):
    PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake-image").decode()

    def post(self) -> None:
        if not self.check_openai_key():
            return
        body = self.json_body()
        if body is None:
            return
        count = int(body.get("n") or 1)
        self.send_json({"created": int(time.time()), "data": [{"b64_json": self.PNG} for _ in range(count)]})


class _EchoHeadersHandler(_BaseHandler):
    """Returns the received headers (lower-case names), without any auth check."""

    def _echo(self) -> None:
        self.send_json(_lower_headers(self.request.headers))

    get = post = put = patch = delete = _echo  # type: ignore[assignment]


class _StatsHandler(tornado.web.RequestHandler):
    """Counters for benchmarks that run the fake in another process (not recorded as a request)."""

    def initialize(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"connections_opened": self.upstream.connections_opened,
                                "requests": len(self.upstream.requests),
                                "uploads": [vars(u) for u in self.upstream.uploads]}))


class _NotFoundHandler(_BaseHandler):
    async def prepare(self) -> None:
        await super().prepare()
        # Finishing in prepare() stops tornado from dispatching to a method.
        self.send_json(
            {
                "error": {
                    "message": f"Unknown route: {self.request.method} {self.request.path}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "not_found",
                }
            },
            404,
        )


def _lower_headers(headers: Any) -> dict:
    out: dict = {}
    for name, value in headers.get_all():
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class _AlwaysGzip(tornado.web.GZipContentEncoding):
    """Compress every JSON or text response (SSE streams flushed chunk by chunk), whatever the
    request's Accept-Encoding said: an upstream (or a gateway in front of it) that gzips anyway."""

    MIN_LENGTH = 0

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        self._gzipping = True


class FakeUpstream:
    """Fake OpenAI/Anthropic upstream served from a background thread.

    ``valid_keys``, ``delay``, ``chunk_interval`` and ``n_chunks`` may be changed
    while the server runs; each request reads them when it needs them.
    """

    def __init__(
        self,
        valid_keys: Iterable[str] = (DEFAULT_KEY,),
        *,
        chunk_interval: float = 0.0,
        n_chunks: int = 5,
        delay: float = 0.0,
        port: int = 0,
        gzip: bool = False,
    ) -> None:
        self.valid_keys = set(valid_keys)
        self.chunk_interval = chunk_interval
        self.n_chunks = n_chunks
        self.delay = delay
        self.gzip = gzip  # compress every response, even when asked for identity (fixed at start)
        self.fail_next: list[int] = []  # statuses answered (with Retry-After: 0) before serving normally
        self.connections_opened = 0
        self.client_disconnects = 0  # responses cut off by the client
        self.uploads: list[Upload] = []  # bodies POSTed to /v1/files, as they arrived
        self.realtime: list[RealtimeSession] = []  # websockets opened to /v1/realtime
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Start serving in a daemon thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already running")
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, args=(ready,), name="FakeUpstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10) or self._startup_error is not None:
            error = self._startup_error
            self.stop()
            raise RuntimeError("FakeUpstream failed to start") from error
        return self

    def stop(self) -> None:
        """Stop serving and close all connections (idempotent)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass  # the loop already finished
        thread.join(timeout=10)
        self._thread = self._loop = self._stopping = None
        self._port = None

    def __enter__(self) -> FakeUpstream:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:
            if not ready.is_set():
                self._startup_error = exc
                ready.set()
            else:
                raise

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(self._requested_port, address=HOST)
        server = _CountingHTTPServer(self._make_app(), on_connect=self._count_connection)
        server.add_sockets(sockets)
        self._port = sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.stop()
            try:
                await asyncio.wait_for(server.close_all_connections(), timeout=2)
            except asyncio.TimeoutError:
                pass  # asyncio.run() cancels whatever handlers are left

    def _make_app(self) -> tornado.web.Application:
        kwargs = {"upstream": self}
        return tornado.web.Application(
            [
                (r"/v1/models", _ModelsHandler, kwargs),
                (r"/v1/chat/completions", _ChatCompletionsHandler, kwargs),
                (r"/v1/embeddings", _EmbeddingsHandler, kwargs),
                (r"/v1/messages", _MessagesHandler, kwargs),
                (r"/v1/files", _FilesHandler, kwargs),
                (r"/v1/realtime", _RealtimeHandler, kwargs),
                (r"/v1/responses", _ResponsesHandler, kwargs),
                (r"/v1/audio/speech", _SpeechHandler, kwargs),
                (r"/v1/audio/transcriptions", _TranscriptionsHandler, kwargs),
                (r"/v1/images/generations", _ImagesHandler, kwargs),
                (r"/openai/deployments/[A-Za-z0-9_.-]+/chat/completions", _AzureChatCompletionsHandler, kwargs),
                (r"/echo-headers", _EchoHeadersHandler, kwargs),
                (r"/_stats", _StatsHandler, kwargs),
            ],
            default_handler_class=_NotFoundHandler,
            transforms=[_AlwaysGzip] if self.gzip else None,
            default_handler_args=kwargs,
            # 4xx answers are expected in tests; keep tornado's access log quiet.
            log_function=lambda handler: None,
        )

    # -- addresses ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    # -- records -----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def received_keys(self) -> list[str]:
        """Every API key presented (bearer, x-api-key, x-goog-api-key), in order."""
        return [key for request in self.requests for key in request.api_keys]

    def reset(self) -> None:
        """Forget recorded requests and zero the connection counter."""
        with self._lock:
            self._requests.clear()
            self.connections_opened = 0
            self.client_disconnects = 0
            self.uploads.clear()
            self.realtime.clear()

    def _record(self, request: Any) -> None:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=_lower_headers(request.headers),
            body=bytes(request.body or b""),
            received_at=time.monotonic(),
        )
        with self._lock:
            self._requests.append(record)

    def _count_connection(self) -> None:
        with self._lock:
            self.connections_opened += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic-compatible upstream (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = random)")
    parser.add_argument("--key", action="append", dest="keys", help="accepted API key (repeatable)")
    parser.add_argument("--chunk-interval", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--n-chunks", type=int, default=5, help="content chunks per streamed reply")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering")
    parser.add_argument("--gzip", action="store_true", help="gzip every response, whatever was asked for")
    args = parser.parse_args(argv)

    fake = FakeUpstream(
        args.keys or (DEFAULT_KEY,),
        chunk_interval=args.chunk_interval,
        n_chunks=args.n_chunks,
        delay=args.delay,
        port=args.port,
        gzip=args.gzip,
    )
    # Turn SIGTERM into a normal exit so the server shuts down cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with fake:
        print(fake.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
