"""Remove the one value the proxy injected from everything it relays back.

An upstream can echo the key it was sent: in a header, a 2xx body, an SSE event split across
chunks, a JSON string with some characters written as \\uXXXX (which the client's JSON decoder
turns back into the key), or a gzip body. `InjectedValueRedactor` finds the value in the bytes as
they stream, with JSON \\u escapes decoded for matching, and replaces each occurrence. It holds
back only a tail that could be the start of the value (usually nothing), so streams keep their
timing.
"""

from __future__ import annotations

import re
import zlib

REDACTED = b"[REDACTED]"
_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")
_PARTIAL_ESCAPE = re.compile(rb"\\(u[0-9a-fA-F]{0,3})?$")


class InjectedValueRedactor:
    def __init__(self, value: str):
        self.value = value.encode("utf-8")
        self._tail = b""
        self.redactions = 0

    # -- streams
    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk
        out, keep = self._redact(data, final=False)
        self._tail = data[keep:] if keep < len(data) else b""
        return out

    def flush(self) -> bytes:
        out, _ = self._redact(self._tail, final=True)
        self._tail = b""
        return out

    # -- whole strings (headers, reason phrases)
    def text(self, text: str) -> str:
        out, _ = self._redact(text.encode("utf-8", "surrogateescape"), final=True)
        return out.decode("utf-8", "surrogateescape")

    def _redact(self, data: bytes, *, final: bool) -> tuple[bytes, int]:
        """(redacted bytes up to the split, the offset in `data` where the held-back tail starts)."""
        value = self.value
        if not value or not data:
            return data, len(data)
        if b"\\" not in data:  # fast path: no escapes, the bytes are what a client decodes
            parts = data.split(value)
            self.redactions += len(parts) - 1
            joined = REDACTED.join(parts)
            hold = 0 if final else _prefix_overlap(joined, value)
            return joined[:len(joined) - hold], len(data) - hold
        shadow, offsets = _decode_escapes(data)
        spans = []
        at = shadow.find(value)
        while at >= 0:
            spans.append((offsets[at], offsets[at + len(value)]))
            at = shadow.find(value, at + len(value))
        split = len(data)
        if not final:
            partial = _PARTIAL_ESCAPE.search(data)
            if partial:
                split = partial.start()  # an escape cut in two: decode it with the next chunk
            # What comes before the cut may begin the value, which the next chunk could finish.
            before = offsets.index(split) if split < len(data) else len(shadow)
            overlap = _prefix_overlap(shadow[:before], value)
            if overlap:
                split = offsets[before - overlap]
        out, pos = bytearray(), 0
        for start, end in spans:
            if start < pos or end > split:
                continue
            out += data[pos:start] + REDACTED
            pos = end
            self.redactions += 1
        out += data[pos:split]
        return bytes(out), split


def _prefix_overlap(data: bytes, value: bytes) -> int:
    """Length of the longest end of `data` that begins `value` (a match the next chunk may finish)."""
    first = value[:1]
    start = max(0, len(data) - len(value) + 1)
    at = data.find(first, start)
    while at >= 0:
        if value.startswith(data[at:]):
            return len(data) - at
        at = data.find(first, at + 1)
    return 0


def _decode_escapes(data: bytes) -> tuple[bytes, list[int]]:
    """`data` with JSON \\uXXXX escapes decoded, and for each decoded byte its offset in `data`
    (plus one final entry, len(data))."""
    shadow, pos = bytearray(), 0
    offsets: list[int] = []
    for m in _ESCAPE.finditer(data):
        shadow += data[pos:m.start()]
        offsets.extend(range(pos, m.start()))
        char = chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass")
        shadow += char
        offsets.extend([m.start()] * len(char))
        pos = m.end()
    shadow += data[pos:]
    offsets.extend(range(pos, len(data)))
    offsets.append(len(data))
    return bytes(shadow), offsets


def decoder_for(content_encoding: str | None):
    """A streaming decoder for an upstream that compressed although asked for identity, else None."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as HTTP's "deflate" means
    return None
