"""Count the tokens a provider reports in its `usage` fields: JSON, streamed (SSE), or Realtime events."""

from __future__ import annotations

import json

MAX_JSON_BODY = 4 * 1024 * 1024


class UsageMeter:
    """Fed the upstream response body chunk by chunk; `tokens` is the total it reported.

    OpenAI-compatible: `usage.total_tokens` (streams carry it in the final chunk when
    `stream_options.include_usage` is set). Anthropic: `input_tokens` in `message_start`,
    the running `output_tokens` in `message_delta`.
    """

    def __init__(self, content_type: str):
        self.streaming = "text/event-stream" in (content_type or "")
        self._buffer = bytearray()
        self._total: int | None = None
        self._input = 0
        self._output = 0

    def feed(self, chunk: bytes) -> None:
        if self.streaming:
            self._buffer += chunk
            while b"\n" in self._buffer:
                line, _, rest = bytes(self._buffer).partition(b"\n")
                self._buffer = bytearray(rest)
                self._line(line.strip())
        elif len(self._buffer) + len(chunk) <= MAX_JSON_BODY:
            self._buffer += chunk

    def finish(self) -> int:
        if self.streaming:
            if self._buffer:
                self._line(bytes(self._buffer).strip())
        else:
            try:
                self._event(json.loads(self._buffer))
            except (ValueError, UnicodeDecodeError):
                pass
        self._buffer.clear()
        return self.tokens

    @property
    def tokens(self) -> int:
        return self._total if self._total is not None else self._input + self._output

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if not data or data == b"[DONE]" or b"usage" not in data:
            return
        try:
            self._event(json.loads(data))
        except (ValueError, UnicodeDecodeError):
            return

    def _event(self, event) -> None:
        if not isinstance(event, dict):
            return
        for usage in (event.get("usage"), (event.get("message") or {}).get("usage")
                      if isinstance(event.get("message"), dict) else None):
            if not isinstance(usage, dict):
                continue
            if isinstance(usage.get("total_tokens"), int):
                self._total = max(self._total or 0, usage["total_tokens"])
            if isinstance(usage.get("input_tokens"), int):
                self._input = max(self._input, usage["input_tokens"])
            if isinstance(usage.get("output_tokens"), int):
                self._output = max(self._output, usage["output_tokens"])


def realtime_tokens(text: str) -> int:
    """Tokens a Realtime API event reports: `response.done` carries its response's `usage`; 0 otherwise."""
    if '"response.done"' not in text or '"usage"' not in text:
        return 0
    try:
        event = json.loads(text)
    except ValueError:
        return 0
    response = event.get("response") if isinstance(event, dict) and event.get("type") == "response.done" else None
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool) and total > 0:
        return total
    parts = [usage.get(k) for k in ("input_tokens", "output_tokens")]
    return sum(p for p in parts if isinstance(p, int) and not isinstance(p, bool) and p > 0)
