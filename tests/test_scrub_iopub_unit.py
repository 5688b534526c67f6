"""The server's message filter on real jupyter_client frames, without a server: what the
raw-bytes prefilter lets through untouched, and what it sends to be scrubbed."""

from __future__ import annotations

import json
import secrets

from jupyter_client.session import Session

from jupyter_keyvault.scrub import Scrubber
from jupyter_keyvault.server.iopub import MessageFilter

SESSION = Session(key=b"unit-test-key")
PARENT = SESSION.msg("execute_request", {"code": "x"})


def frames(msg_type: str, content: dict, **kw) -> list[bytes]:
    msg = SESSION.msg(msg_type, content, parent=PARENT, **kw)
    _, fed = SESSION.feed_identities(SESSION.serialize(msg))
    return [bytes(f) for f in fed[1:]]


def parsed(raw: list[bytes]) -> dict:
    header, parent, metadata, content = (json.loads(f) for f in raw[:4])
    return {"header": header, "parent_header": parent, "metadata": metadata, "content": content, "buffers": raw[4:]}


def scrubber_with(value: str) -> Scrubber:
    s = Scrubber(build_on_scrub=False)
    s.add_known(value, "K")
    s.rebuild()
    return s


def test_given_clean_messages_then_the_prefilter_passes_them_without_parsing():
    filt = MessageFilter(scrubber_with(secrets.token_hex(20)))
    assert not filt.needs_parsing(frames("stream", {"name": "stdout", "text": "epoch 1 loss 0.25\n" * 50}))
    assert not filt.needs_parsing(frames("status", {"execution_state": "idle"}))
    assert not filt.needs_parsing(frames("stream", {"name": "stdout", "text": "\x1b[31mred\x1b[0m <obj at 0x1>\n"}))


def test_given_a_value_anywhere_or_encoded_then_the_prefilter_sends_it_to_be_scrubbed():
    value = secrets.token_hex(20)
    filt = MessageFilter(scrubber_with(value))
    cases = [
        frames("status", {"execution_state": "busy", "extra": value}),
        frames("stream", {"name": "stdout", "text": "hi\n"}, metadata={"x": value}),
        frames("my_custom_type", {"deep": [{"v": value}]}),
        frames("display_data", {"data": {"text/html": "".join(f"&#{ord(c)};" for c in value)}, "metadata": {}}),
        frames("stream", {"name": "stdout", "text": "".join(f"%{ord(c):02x}" for c in value) + "\n"}),
        frames("display_data", {"data": {"image/png": "iVBORw0KGgo="}, "metadata": {}}),
        frames("stream", {"name": "stdout", "text": "no newline, may continue " + value[:10]}),
    ]
    for raw in cases:
        assert filt.needs_parsing(raw)
    raw = frames("comm_msg", {"comm_id": "c", "data": {}})
    assert filt.needs_parsing(raw + [b"binary " + value.encode()])  # buffers are always scanned


def test_given_a_value_split_across_stream_messages_then_it_is_held_and_redacted_before_idle():
    value = secrets.token_hex(20)
    filt = MessageFilter(scrubber_with(value))
    sent = []
    for raw in (frames("stream", {"name": "stdout", "text": "key " + value[:17]}),
                frames("stream", {"name": "stdout", "text": value[17:] + " done\n"}),
                frames("status", {"execution_state": "idle"})):
        msg = parsed(raw)
        out = filt.process("iopub", msg) if filt.needs_parsing(raw) else None
        sent += [msg] if out is None else out
    text = "".join(m["content"].get("text", "") for m in sent)
    assert value not in json.dumps(sent) and value[:17] not in text
    assert text == "key [REDACTED:K] done\n"
    assert sent[-1]["content"] == {"execution_state": "idle"}


def test_given_buffers_with_a_value_then_they_keep_their_length_and_lose_the_value():
    value = secrets.token_hex(20)
    filt = MessageFilter(scrubber_with(value))
    msg = parsed(frames("comm_msg", {"comm_id": "c", "data": {"buffer_paths": [["value"]]}}))
    msg["buffers"] = [b"\x89PNG" + value.encode() + b"\x00", b"clean"]
    out = filt.process("iopub", msg)
    assert [len(b) for b in out[0]["buffers"]] == [len(msg["buffers"][0]), 5]
    assert value.encode() not in out[0]["buffers"][0] and out[0]["buffers"][1] == b"clean"
