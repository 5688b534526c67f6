"""One reader for JSON request bodies and one parser for a credential write (REST PUT on the
server, the hub service's personal and shared PUT, a kernel's `%keyvault set`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Iterable

from tornado import web

from .. import providers
from ..store import InvalidInput
from ..store.model import SERVER_METADATA_KEYS, parse_expiry

MAX_METADATA_BYTES = 4096
MAX_DEPTH = 16  # credential bodies are two levels deep; metadata a few more
CREDENTIAL_FIELDS = frozenset({"value", "provider", "type", "metadata", "session", "expires_at", "expires_in"})


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def json_object(raw: bytes | None, *, max_bytes: int, content_type: str | None,
                empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object, or a 400/413/415 that says what is wrong. Strict: a body must be
    labelled application/json (a form or text/plain post is what a cross-site page can send without
    asking), and NaN, Infinity (which Python would accept) and nesting deeper than MAX_DEPTH are refused."""
    raw = raw or b""
    if len(raw) > max_bytes:
        raise web.HTTPError(413, f"request body is larger than {max_bytes} bytes")
    if not raw.strip():
        if empty_ok:
            return {}
        raise web.HTTPError(400, "request body is empty; send a JSON object")
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise web.HTTPError(415, f"send the body as JSON with Content-Type: application/json "
                                 f"(got {media_type or 'no Content-Type'})")
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise web.HTTPError(400, "request body is not valid JSON (NaN and Infinity are not JSON)") from None
    if not isinstance(body, dict):
        raise web.HTTPError(400, "request body must be a JSON object")
    if _depth(body) > MAX_DEPTH:
        raise web.HTTPError(400, f"request body is nested more than {MAX_DEPTH} levels deep")
    return body


def close_if_body_unread(handler: Any) -> None:
    """For an answer sent before the request body was read: tornado closes the connection after it,
    so say so. A reverse proxy that reuses its connections (JupyterHub's) otherwise sends the next
    request, anyone's, into the closed one and answers it with a 503."""
    body_read = getattr(handler.request, "_body_future", None)
    if body_read is not None and not body_read.done():
        handler.set_header("Connection", "close")


class BoundedBodyMixin:
    """For a `@web.stream_request_body` handler with a small JSON body: a body over the cap is never
    kept, and is refused with 413 once it has been read and dropped, so the client (which reads the
    answer only after sending) and any proxy in front see that answer. A body past DRAIN_FACTOR
    times the cap is not read at all: refused from its Content-Length (call
    `refuse_declared_oversize` in prepare) or as soon as it passes that limit, and the connection is
    closed. `body_bytes` is the body once the method runs."""

    DRAIN_FACTOR = 2
    max_body_bytes: int
    _body: bytearray | None = None
    _received = 0
    _oversize = False

    def _too_large(self) -> web.HTTPError:
        return web.HTTPError(413, f"request body is larger than {self.max_body_bytes} bytes")

    def refuse_declared_oversize(self) -> None:
        declared = self.request.headers.get("Content-Length", "").strip()  # type: ignore[attr-defined]
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            if int(declared) > self.max_body_bytes * self.DRAIN_FACTOR:
                raise self._too_large()
            self._oversize = True
            self._answer_after_body(self._too_large())

    def _answer_after_body(self, error: web.HTTPError) -> None:
        async def answer(*_args: Any, **_kwargs: Any) -> None:
            raise error

        # tornado calls the method named by the request once the body is in: it raises instead.
        setattr(self, self.request.method.lower(), answer)  # type: ignore[attr-defined]

    async def checks_answered_after_body(self, checks: Awaitable[Any] | None) -> None:
        """Await `checks` (auth, XSRF). A refusal is answered once the (capped) body has been read:
        tornado closes the connection after a reply sent before the body, and a reverse proxy that
        reuses it (JupyterHub's) turns the next request into a 503 page."""
        try:
            if checks is not None:
                await checks
        except web.HTTPError as refusal:
            if not self._oversize:
                self._answer_after_body(refusal)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        close_if_body_unread(self)  # a body far over the cap, a 405 for an unknown method
        super().write_error(status_code, **kwargs)  # type: ignore[misc]

    def data_received(self, chunk: bytes) -> None:
        if self._finished:  # type: ignore[attr-defined]
            return  # refused already; tornado closes the connection after the reply
        self._received += len(chunk)
        if self._received > self.max_body_bytes and not self._oversize:
            self._oversize = True  # dropped from here on, and answered with 413 once read
            self._answer_after_body(self._too_large())
        if self._oversize:
            self._body = None
            if self._received > self.max_body_bytes * self.DRAIN_FACTOR:
                self.send_error(413, exc_info=(web.HTTPError, self._too_large(), None))  # type: ignore[attr-defined]
            return
        body = self._body if self._body is not None else bytearray()
        body += chunk
        self._body = body

    @property
    def body_bytes(self) -> bytes:
        return bytes(self._body or b"")


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()], default=level)
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value], default=level)
    return level


def metadata_object(metadata: Any) -> dict[str, Any]:
    """Client metadata: a JSON object under 4 KiB; server-made keys (`hint`, lifetimes) are dropped."""
    if metadata is None:  # absent or null: none (`or {}` would let [], "", 0 and false through)
        return {}
    if not isinstance(metadata, dict) or len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise web.HTTPError(422, "field 'metadata' must be a JSON object under 4 KiB")
    if "notebooks" in metadata:  # the access list: absent means every notebook; null is not a list
        globs = metadata["notebooks"]
        if not (isinstance(globs, list) and all(isinstance(g, str) and g for g in globs)):
            raise web.HTTPError(422, "metadata.notebooks must be a list of non-empty glob strings")
    return {k: v for k, v in metadata.items() if k not in SERVER_METADATA_KEYS}


def expiry_fields(body: dict[str, Any], now: float | None = None) -> tuple[bool, float | None]:
    """(given, epoch seconds or None) from `expires_at` (ISO 8601 date or time, or null to clear)
    or `expires_in` (a duration: 90m, 8h, 7d, 2w); both at once is a 422."""
    now = time.time() if now is None else now
    if "expires_at" in body and "expires_in" in body:
        raise web.HTTPError(422, "send either 'expires_at' or 'expires_in', not both")
    field_name = "expires_at" if "expires_at" in body else "expires_in" if "expires_in" in body else None
    if field_name is None:
        return False, None
    raw = body[field_name]
    if raw is None and field_name == "expires_at":
        return True, None
    if not isinstance(raw, str) or len(raw) > 64:
        raise web.HTTPError(422, f"field '{field_name}' must be a string: an ISO 8601 date or time (expires_at) "
                                 "or a duration like 8h or 7d (expires_in)")
    try:
        return True, parse_expiry(raw, now)
    except InvalidInput as exc:
        raise web.HTTPError(422, f"field '{field_name}': {exc}") from None


@dataclass
class CredentialPatch:
    metadata: dict[str, Any] | None  # None: left as it is
    expiry_given: bool
    expires_at: float | None  # None with expiry_given: the expiry is cleared


def parse_credential_patch(body: dict[str, Any]) -> CredentialPatch:
    """A PATCH body: `metadata` (checked like a PUT's) and/or `expires_at` / `expires_in`."""
    if not body or set(body) - {"metadata", "expires_at", "expires_in"}:
        raise web.HTTPError(422, "send 'metadata' (a JSON object) and/or 'expires_at' / 'expires_in'")
    if "metadata" in body and not isinstance(body["metadata"], dict):
        raise web.HTTPError(422, "field 'metadata' must be a JSON object under 4 KiB")
    expiry_given, expires_at = expiry_fields(body)
    metadata = metadata_object(body["metadata"]) if "metadata" in body else None
    return CredentialPatch(metadata, expiry_given, expires_at)


@dataclass
class CredentialWrite:
    value: str
    provider: str | None
    type: str
    metadata: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    session: bool = False  # memory only: never written to the vault file
    expires_at: float | None = None


def parse_credential_write(name: str, body: dict[str, Any], *, max_value_bytes: int,
                           allowed: Iterable[str] = CREDENTIAL_FIELDS) -> CredentialWrite:
    """Validate a credential write; raise 413/422 with a clear message, never store half of it."""
    unknown = set(body) - frozenset(allowed)
    if unknown:
        raise web.HTTPError(422, f"unknown field(s): {', '.join(sorted(unknown))}")
    value = body.get("value")
    if not isinstance(value, str):
        raise web.HTTPError(422, "field 'value' is required and must be a string")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_value_bytes:
        raise web.HTTPError(413, f"value is {size} bytes; the limit is {max_value_bytes} bytes")
    kind = body.get("type", "api_key")
    if not isinstance(kind, str):
        raise web.HTTPError(422, "field 'type' must be a string")
    provider = body.get("provider")
    if provider is None:
        guess = providers.provider_for_env_var(name)
        provider = guess.id if guess else providers.detect_provider(value.strip())
    elif not isinstance(provider, str) or provider not in providers.PROVIDERS:
        raise web.HTTPError(422, f"unknown provider; known: {', '.join(providers.PROVIDERS)}")
    metadata = metadata_object(body.get("metadata"))
    session = body.get("session", False)
    if not isinstance(session, bool):
        raise web.HTTPError(422, "field 'session' must be true or false")
    _, expires_at = expiry_fields(body)
    try:
        warnings = providers.check_key_format(provider, value) if kind == "api_key" else []
    except InvalidInput as exc:
        raise web.HTTPError(422, str(exc)) from None
    return CredentialWrite(value, provider, kind, metadata, warnings, session, expires_at)
