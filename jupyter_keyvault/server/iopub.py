"""Server-side output filter: every message a kernel sends to a browser is scrubbed
with the server's engine, which knows every stored value. So even a kernel that never
loaded the helper cannot show a stored value in the browser.

A secret split across stream messages is caught by a stream scrubber per (cell, stream),
flushed just before the kernel reports idle for that cell. Messages the engine leaves
unchanged are passed on as they came (no re-serialisation), which keeps the cost low.
"""

from __future__ import annotations

from typing import Any, Callable

from jupyter_client.session import DELIM

from ..nbscrub import scrub_output, scrub_value
from ..scrub import Scrubber, StreamScrubber

OUTPUT_TYPES = {"display_data", "update_display_data", "execute_result", "error"}


class IOPubScrubber:
    """Scrubs deserialized messages; keeps stream state per parent message."""

    def __init__(self, scrubber: Scrubber):
        self.scrubber = scrubber
        self._streams: dict[tuple[str, str], StreamScrubber] = {}

    def has_pending(self, parent_id: str) -> bool:
        return any(k[0] == parent_id and s.pending for k, s in self._streams.items())

    def process(self, channel: str, msg_type: str, parent_id: str, content: dict) -> tuple[list[tuple[str, dict]], bool]:
        """(messages to send instead, whether anything differs from the original)."""
        if channel != "iopub":  # shell/control/stdin: tracebacks in execute_reply, reprs in inspect_reply
            new, changed = scrub_value(content, self.scrubber)
            return [(msg_type, new)], bool(changed)
        out: list[tuple[str, dict]] = []
        if msg_type == "status" and content.get("execution_state") == "idle":
            out += self.flush(parent_id)
        elif msg_type in OUTPUT_TYPES:
            out += self.flush(parent_id)  # keep order: pending stream text comes first
        if msg_type == "stream":
            key = (parent_id, content.get("name", "stdout"))
            stream = self._streams.setdefault(key, self.scrubber.stream())
            original = content.get("text", "")
            text = stream.feed(original)
            if text:
                out.append(("stream", {**content, "text": text}))
            return out, text != original or len(out) != 1
        changed = bool(out)
        if msg_type in OUTPUT_TYPES:
            changed |= bool(scrub_output(content, self.scrubber))
        elif msg_type in ("comm_msg", "comm_open", "execute_input"):
            content, n = scrub_value(content, self.scrubber)
            changed |= bool(n)
        out.append((msg_type, content))
        return out, changed

    def flush(self, parent_id: str) -> list[tuple[str, dict]]:
        out = []
        for key in [k for k in self._streams if k[0] == parent_id]:
            text = self._streams.pop(key).flush()
            if text:
                out.append(("stream", {"name": key[1], "text": text}))
        return out


PASS_THROUGH = {"status", "clear_output", "comm_close", "shutdown_reply", "kernel_info_reply", "interrupt_reply",
                "debug_event", "is_complete_reply"}


def scrubbing_connection_class(base: type, get_scrubber: Callable[[], Scrubber]) -> type:
    """A subclass of the server's kernel websocket connection that scrubs outgoing messages."""

    class ScrubbingKernelConnection(base):
        def handle_outgoing_message(self, stream: Any, outgoing_msg: list) -> None:
            channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
            filt = getattr(self, "_keyvault_filter", None)
            if filt is None:
                filt = self._keyvault_filter = IOPubScrubber(get_scrubber())
            idents, fed = self.session.feed_identities(outgoing_msg)
            header = self.session.unpack(bytes(fed[1]))
            msg_type = header.get("msg_type")
            if msg_type in PASS_THROUGH:
                parent_id = self.session.unpack(bytes(fed[2])).get("msg_id", "")
                if not (msg_type == "status" and filt.has_pending(parent_id)):
                    return super().handle_outgoing_message(stream, outgoing_msg)
            msg = self.session.deserialize(fed, content=True, copy=True)
            # The base class deserializes (and replay-checks) again what we pass on.
            self.session.digest_history.discard(fed[0])
            parent_id = (msg.get("parent_header") or {}).get("msg_id", "")
            replacements, changed = filt.process(channel, msg_type, parent_id, msg["content"])
            if not changed:
                return super().handle_outgoing_message(stream, outgoing_msg)
            for new_type, content in replacements:
                new_header = dict(msg["header"])
                if new_type != msg_type:  # a flushed stream before idle/display
                    new_header = self.session.msg_header(new_type)
                    new_header["session"] = msg["header"].get("session", new_header["session"])
                elif len(replacements) > 1:
                    new_header["msg_id"] = self.session.msg_header(new_type)["msg_id"]
                parts = [self.session.pack(new_header), self.session.pack(msg["parent_header"]),
                         self.session.pack(msg["metadata"]), self.session.pack(content)]
                rebuilt = [*idents, DELIM, self.session.sign(parts), *parts, *msg.get("buffers", [])]
                super().handle_outgoing_message(stream, rebuilt)

    return ScrubbingKernelConnection
