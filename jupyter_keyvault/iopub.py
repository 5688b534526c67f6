"""Server-side output filter: every message a kernel sends to a browser is scrubbed
with the server's engine, which knows every stored value. So even a kernel that never
loaded the helper cannot show a stored value in the browser.

A secret split across stream messages is caught by a stream scrubber per (cell, stream),
flushed just before the kernel reports idle for that cell.
"""

from __future__ import annotations

from typing import Any, Callable

from jupyter_client.session import DELIM

from .nbscrub import scrub_output, scrub_value
from .scrub import Scrubber, StreamScrubber

SCRUBBED_TYPES = {"stream", "display_data", "update_display_data", "execute_result", "error", "comm_msg",
                  "comm_open", "execute_input"}


class IOPubScrubber:
    """Scrubs deserialized iopub messages; keeps stream state per parent message."""

    def __init__(self, scrubber: Scrubber):
        self.scrubber = scrubber
        self._streams: dict[tuple[str, str], StreamScrubber] = {}

    def process(self, msg_type: str, parent_id: str, content: dict) -> list[tuple[str, dict]]:
        """Return the (msg_type, content) pairs to send instead of this message."""
        out: list[tuple[str, dict]] = []
        if msg_type == "status" and content.get("execution_state") == "idle":
            out += self.flush(parent_id)
        if msg_type == "stream":
            key = (parent_id, content.get("name", "stdout"))
            stream = self._streams.setdefault(key, self.scrubber.stream())
            text = stream.feed(content.get("text", ""))
            if text:
                out.append(("stream", {**content, "text": text}))
            return out
        if msg_type in ("display_data", "update_display_data", "execute_result", "error"):
            out += self.flush(parent_id)  # keep order: pending stream text comes first
            scrub_output(content, self.scrubber)
        elif msg_type in ("comm_msg", "comm_open", "execute_input"):
            content, _ = scrub_value(content, self.scrubber)
        out.append((msg_type, content))
        return out

    def flush(self, parent_id: str) -> list[tuple[str, dict]]:
        out = []
        for key in [k for k in self._streams if k[0] == parent_id]:
            text = self._streams.pop(key).flush()
            if text:
                out.append(("stream", {"name": key[1], "text": text}))
        return out


def scrubbing_connection_class(base: type, get_scrubber: Callable[[], Scrubber]) -> type:
    """A subclass of the server's kernel websocket connection that scrubs outgoing iopub messages."""

    class ScrubbingKernelConnection(base):
        def handle_outgoing_message(self, stream: Any, outgoing_msg: list) -> None:
            channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
            filt = getattr(self, "_keyvault_filter", None)
            if filt is None:
                filt = self._keyvault_filter = IOPubScrubber(get_scrubber())
            idents, fed = self.session.feed_identities(outgoing_msg)
            msg = self.session.deserialize(fed, content=True, copy=True)
            # The base class deserializes (and replay-checks) again what we pass on.
            self.session.digest_history.discard(fed[0])
            parent_id = (msg.get("parent_header") or {}).get("msg_id", "")
            if channel == "iopub":
                replacements = filt.process(msg["header"]["msg_type"], parent_id, msg["content"])
            else:  # shell/control/stdin replies too: tracebacks in execute_reply, reprs in inspect_reply
                replacements = [(msg["header"]["msg_type"], scrub_value(msg["content"], filt.scrubber)[0])]
            for msg_type, content in replacements:
                header = dict(msg["header"])
                if msg_type != header["msg_type"]:  # a flushed stream before idle/display
                    header = self.session.msg_header(msg_type)
                    header["session"] = msg["header"].get("session", header["session"])
                parts = [self.session.pack(header), self.session.pack(msg["parent_header"]),
                         self.session.pack(msg["metadata"]), self.session.pack(content)]
                rebuilt = [*idents, DELIM, self.session.sign(parts), *parts, *msg.get("buffers", [])]
                super().handle_outgoing_message(stream, rebuilt)

    return ScrubbingKernelConnection
