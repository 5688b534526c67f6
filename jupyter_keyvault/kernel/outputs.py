"""Kernel-side output scrubbing: one choke point, the kernel session's `send`.

Every message an ipykernel sends leaves through `kernel.session.send`: `stream` (ipykernel's
OutStream, which also carries what subprocesses, `!cmd` and `os.write(1, …)` write to the
captured file descriptors 1 and 2), `display_data` / `update_display_data` / `clear_output`
(the display publisher), `execute_result` (the display hook), `error` (the shell's traceback),
`comm_open` / `comm_msg` (ipywidgets, whose Output widget state carries outputs), the shell
replies (`execute_reply` with its error fields and payloads such as `k?` pages,
`inspect_reply`, `history_reply`, …), `input_request` and `debug_event`. `install(ip)` wraps
that one method (as an instance attribute of the kernel's `Session`), so whatever code path
produced a message, its content is scrubbed before it is serialized.

- `stream` text goes through a `StreamScrubber` per (parent msg_id, stream name), so a secret
  split across writes or flushes is still redacted. Only what the engine holds back is
  delayed; it is sent as a final stream message just before the next non-stream message of
  the same parent (so the order of outputs is kept; `status: idle` is one of them) and
  before the `status: busy` of another request.
- Every other message has its content walked: strings (and dict keys) are scrubbed, except
  the base64 payloads of binary mimetypes (`image/png`, `audio/*`, `application/pdf`, …),
  which are never touched. Binary `buffers` are never touched.
- The walk copies only what it changes; a message without secrets is sent as it was.

If scrubbing itself fails, an output message is replaced by a notice rather than sent in
clear (fail closed); protocol replies are sent as they were so the kernel keeps working.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import Any

from .. import scrub as _scrub

__all__ = ["install", "installed", "scrub_content", "uninstall"]

WITHHELD = "[keyvault: output withheld because it could not be scrubbed]"

# Output messages: on a scrubbing failure their content is withheld, not sent in clear.
_OUTPUT_TYPES = frozenset({"stream", "display_data", "update_display_data", "execute_result", "error",
                           "comm_open", "comm_msg", "execute_input", "debug_event"})
# Messages that carry no user text at all.
_PASS_TYPES = frozenset({"status"})

# Mimetypes whose values are base64 (or other binary) payloads: never scrubbed.
_BINARY_MAJOR = frozenset({"image", "audio", "video", "font"})
_BINARY_APPLICATION = frozenset({
    "application/pdf", "application/octet-stream", "application/zip", "application/gzip",
    "application/x-tar", "application/x-bzip2", "application/x-7z-compressed", "application/wasm",
    "application/vnd.apache.parquet", "application/x-hdf5", "application/x-parquet",
})
_mime_cache: dict[str, bool] = {}


def _is_binary_mimetype(key: str) -> bool:
    """True for `image/png` and friends; False for anything text-like (text/*, *+json, *+xml,
    application/json, application/javascript, image/svg+xml, …) and for unknown types."""
    binary = _mime_cache.get(key)
    if binary is None:
        lowered = key.lower().split(";", 1)[0].strip()
        major, _, minor = lowered.partition("/")
        if not minor or lowered.endswith(("+json", "+xml")) or major == "text":
            binary = False
        else:
            binary = major in _BINARY_MAJOR or lowered in _BINARY_APPLICATION
        if len(_mime_cache) < 4096:
            _mime_cache[key] = binary
    return binary


def _walk(obj: Any, scrub) -> Any:
    """obj with every string scrubbed; the same object when nothing changed (copy on write)."""
    kind = type(obj)
    if kind is str:
        return scrub(obj)
    if kind is dict or isinstance(obj, dict):
        new = None
        for key, value in obj.items():
            new_key = key
            if type(key) is str:
                if type(value) is str and "/" in key and _is_binary_mimetype(key):
                    continue  # base64 image/audio/pdf payloads are never touched
                new_key = scrub(key)
            new_value = _walk(value, scrub)
            if new_value is not value or new_key is not key:
                if new is None:
                    new = dict(obj)
                if new_key is not key:
                    new.pop(key, None)
                new[new_key] = new_value
        return obj if new is None else new
    if kind is list or kind is tuple or isinstance(obj, (list, tuple)):
        new_items = None
        for i, value in enumerate(obj):
            vkind = type(value)
            if vkind is int or vkind is float or vkind is bool or value is None:
                continue
            new_value = _walk(value, scrub)
            if new_value is not value:
                if new_items is None:
                    new_items = list(obj)
                new_items[i] = new_value
        if new_items is None:
            return obj
        return tuple(new_items) if kind is tuple else new_items
    return obj


def scrub_content(content: Any, scrubber: _scrub.Scrubber | None = None) -> Any:
    """A message content (or any JSON-like value) with every secret redacted; binary payloads kept."""
    scrubber = scrubber or _scrub.default_scrubber
    return _walk(content, scrubber.scrub)


def _parent_id(parent: Any) -> Any:
    if not parent:
        return None
    header = parent.get("header", parent) if isinstance(parent, dict) else None
    return header.get("msg_id") if isinstance(header, dict) else None


class _StreamState:
    __slots__ = ("ident", "name", "parent_header", "scrubber", "socket")

    def __init__(self, scrubber: _scrub.StreamScrubber, socket: Any, ident: Any, parent_header: dict, name: str):
        self.scrubber, self.socket, self.ident, self.parent_header, self.name = scrubber, socket, ident, parent_header, name


class _Hook:
    """The wrapper installed as `session.send`, with its per-stream state."""

    def __init__(self, session: Any, scrubber: _scrub.Scrubber, log: Any = None):
        self.session = session
        self.scrubber = scrubber
        self.original = session.send  # the bound method (or a wrapper installed before us)
        self.log = log
        self.enabled = True
        self.lock = threading.RLock()
        self.streams: dict[tuple[Any, str], _StreamState] = {}
        self.done: dict[Any, None] = {}  # recent requests that reported idle, oldest first
        self._warned = False
        _live_hooks.add(self)

    # -- the wrapper
    def send(self, stream, msg_or_type, content=None, parent=None, ident=None, buffers=None, track=False,
             header=None, metadata=None):
        if not self.enabled:
            return self.original(stream, msg_or_type, content, parent, ident, buffers, track, header, metadata)
        if isinstance(msg_or_type, dict):
            msg = msg_or_type
            msg_type = (msg.get("header") or {}).get("msg_type") or msg.get("msg_type")
            pid = (msg.get("parent_header") or {}).get("msg_id")
            if msg_type == "stream":
                return self._send_stream(stream, msg, pid, ident, buffers, track)
            body = msg.get("content")
        else:
            msg = None
            msg_type = msg_or_type if isinstance(msg_or_type, str) else (header or {}).get("msg_type")
            pid = _parent_id(parent)
            body = content
            if msg_type == "stream":  # not ipykernel's way, but scrub it the same way
                built = self.session.msg("stream", content=content, parent=parent, header=header, metadata=metadata)
                return self._send_stream(stream, built, built["parent_header"].get("msg_id"), ident, buffers, track)

        if msg_type == "status":
            state = (body or {}).get("execution_state")
            if state == "idle":
                self._finished(pid)
                if self.streams:
                    self._flush(lambda key: key[0] == pid)  # the request's last text goes before its idle
            elif state == "busy" and self.streams:
                # Another request starts: text still held for requests that already finished
                # (a background thread wrote after its cell's idle) goes out now. Requests still
                # running (a long cell while a control request is served, subshells) keep theirs.
                self._flush(lambda key: key[0] != pid and (key[0] is None or key[0] in self.done))
        elif self.streams:
            self._flush(lambda key: key[0] == pid)  # keep order: held stream text goes first
        if msg_type not in _PASS_TYPES and body is not None:
            try:
                scrubbed = _walk(body, self.scrubber.scrub)
            except Exception as exc:  # noqa: BLE001 - never send in clear, never kill the kernel
                self._warn(exc)
                scrubbed = self._withheld(msg_type, body)
            if scrubbed is not body:
                if msg is not None:
                    msg["content"] = scrubbed
                else:
                    content = scrubbed
        return self.original(stream, msg_or_type, content, parent, ident, buffers, track, header, metadata)

    def _send_stream(self, stream, msg, pid, ident, buffers, track):
        content = msg.get("content") or {}
        name = content.get("name") or "stdout"
        text = content.get("text") or ""
        with self.lock:
            key = (pid, name)
            state = self.streams.get(key)
            if state is None:
                state = self.streams[key] = _StreamState(self.scrubber.stream(), stream, ident,
                                                         msg.get("parent_header") or {}, name)
            try:
                out = state.scrubber.feed(text)
            except Exception as exc:  # noqa: BLE001
                self._warn(exc)
                self.streams.pop(key, None)
                out = WITHHELD + "\n"
            msg["content"] = {**content, "text": out}
            if not out:
                return msg  # everything held back (a possible secret prefix): nothing to send yet
            return self.original(stream, msg, ident=ident, buffers=buffers, track=track)

    def _flush(self, select) -> None:
        """Send the held-back text of the selected streams, as final stream messages."""
        with self.lock:
            keys = [key for key in self.streams if select(key)]
            for key in keys:
                state = self.streams.pop(key)
                try:
                    text = state.scrubber.flush()
                except Exception as exc:  # noqa: BLE001
                    self._warn(exc)
                    text = WITHHELD + "\n"
                if text:
                    msg = self.session.msg("stream", {"name": state.name, "text": text}, parent=state.parent_header)
                    self.original(state.socket, msg, ident=state.ident)

    def _finished(self, pid: Any) -> None:
        with self.lock:
            self.done.pop(pid, None)
            self.done[pid] = None
            while len(self.done) > 256:
                del self.done[next(iter(self.done))]

    def flush_all(self) -> None:
        self._flush(lambda key: True)

    # -- failures
    @staticmethod
    def _withheld(msg_type: str | None, body: Any) -> Any:
        if msg_type not in _OUTPUT_TYPES or not isinstance(body, dict):
            return body  # protocol replies must still go out for the kernel to keep working
        if msg_type in ("display_data", "update_display_data", "execute_result"):
            return {**body, "data": {"text/plain": WITHHELD}, "metadata": {}}
        if msg_type == "error":
            return {**body, "evalue": WITHHELD, "traceback": [WITHHELD]}
        if msg_type == "execute_input":
            return {**body, "code": WITHHELD}
        return {key: value for key, value in body.items() if key in ("comm_id", "target_name", "target_module")} | {
            "data": {}}

    def _warn(self, exc: BaseException) -> None:
        if self._warned:
            return
        self._warned = True
        line = f"jupyter-keyvault: output scrubbing failed ({type(exc).__name__}); affected output was withheld"
        try:
            if self.log is not None:
                self.log.error(line)
            else:
                print(line, file=sys.__stderr__)
        except Exception:  # noqa: BLE001, S110 - a warning must never fail the caller
            pass

    def _after_fork_in_child(self) -> None:
        self.lock = threading.RLock()
        self.streams = {}
        self.done = {}


_live_hooks: weakref.WeakSet[_Hook] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for hook in list(_live_hooks):
        hook._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _session_of(ip: Any) -> Any:
    kernel = getattr(ip, "kernel", None)
    return getattr(kernel, "session", None) if kernel is not None else None


def _hook_of(session: Any) -> _Hook | None:
    hook = getattr(session, "_keyvault_output_hook", None) if session is not None else None
    return hook if isinstance(hook, _Hook) else None


def installed(ip: Any) -> bool:
    hook = _hook_of(_session_of(ip))
    return hook is not None and hook.enabled


def install(ip: Any, scrubber: _scrub.Scrubber | None = None) -> bool:
    """Scrub every message this kernel sends. False when `ip` is not an ipykernel shell."""
    session = _session_of(ip)
    if session is None:
        return False
    hook = _hook_of(session)
    if hook is not None:  # installed before (maybe unloaded since): enable again, never wrap twice
        hook.enabled = True
        if scrubber is not None:
            hook.scrubber = scrubber
        return True
    hook = _Hook(session, scrubber or _scrub.default_scrubber, log=getattr(ip.kernel, "log", None))

    def send(stream, msg_or_type, content=None, parent=None, ident=None, buffers=None, track=False,
             header=None, metadata=None):
        return hook.send(stream, msg_or_type, content, parent, ident, buffers, track, header, metadata)

    send.__keyvault_hook__ = hook  # type: ignore[attr-defined]
    send.__doc__ = getattr(hook.original, "__doc__", None)
    session.send = send
    session._keyvault_output_hook = hook
    return True


def uninstall(ip: Any) -> bool:
    """Stop scrubbing this kernel's messages (sends whatever stream text was held back first).

    The wrapper is removed when it is still the outermost one; if something wrapped
    `session.send` after us, ours stays in the chain as a pass-through."""
    session = _session_of(ip)
    hook = _hook_of(session)
    if hook is None:
        return False
    hook.flush_all()
    hook.enabled = False
    original = hook.original  # read before the `is hook` test below, which types `hook` as that getattr's Any | None
    if getattr(session.__dict__.get("send"), "__keyvault_hook__", None) is hook:
        del session.__dict__["send"]
        if getattr(session.send, "__keyvault_hook__", None) is None and session.send != original:
            session.send = original  # we had wrapped someone else's instance-level wrapper
        del session._keyvault_output_hook
    return True
