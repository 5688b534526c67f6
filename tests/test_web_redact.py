"""The injected-value redactor (web/redact.py): whatever the chunking, the value never comes out,
in raw or JSON-escaped form; clean streams pass through unchanged and undelayed."""

from __future__ import annotations

import gzip
import json
import secrets

import pytest

from jupyter_keyvault.testing.hostile_upstream import escaped
from jupyter_keyvault.web.redact import InjectedValueRedactor, decoder_for

VALUE = "sk-proj-REDACTME" + secrets.token_hex(8)


def run(chunks: list[bytes]) -> bytes:
    r = InjectedValueRedactor(VALUE)
    return b"".join(r.feed(c) for c in chunks) + r.flush()


@pytest.mark.parametrize("form", [VALUE, escaped(VALUE), "".join(f"\\u{ord(c):04X}" for c in VALUE)])
def test_given_the_value_split_at_every_position_then_it_never_comes_out(form):
    document = ('{"a": "before ' + form + ' after", "b": "' + form + '"}').encode()
    for cut in range(1, len(document)):
        out = run([document[:cut], document[cut:]])
        assert VALUE.encode() not in out
        decoded = json.loads(out)
        assert VALUE not in json.dumps(decoded, ensure_ascii=False), (cut, out)
        assert decoded["a"] == "before [REDACTED] after"


def test_given_a_stream_without_the_value_then_every_byte_leaves_at_once_and_unchanged():
    r = InjectedValueRedactor(VALUE)
    sent, received = b"", b""
    for chunk in (b'data: {"delta": "hi \\u00e9"}\n\n', b"data: sk-proj-other\n\n", b'data: "s', b"data: [DONE]\n\n"):
        sent += chunk
        received += r.feed(chunk)
        # Only a tail that could begin the value ("s", "sk-…") may wait for the next chunk.
        held = sent[len(received):].decode()
        assert sent.startswith(received) and (held == "" or VALUE.startswith(held)), held
    assert received + r.flush() == sent and r.redactions == 0


def test_given_an_escape_cut_in_the_middle_then_it_is_decoded_with_the_next_chunk():
    text = ('x ' + escaped(VALUE) + ' y').encode()
    cut = text.index(b"\\u") + 3  # inside the first escape
    assert VALUE.encode() not in run([text[:cut], text[cut:]])
    assert b"[REDACTED]" in run([text[:cut], text[cut:]])


def test_given_headers_and_reasons_then_the_value_is_replaced_in_place():
    r = InjectedValueRedactor(VALUE)
    assert r.text(f"Bearer {VALUE}") == "Bearer [REDACTED]"
    assert r.text("nothing here") == "nothing here"


def test_given_a_gzip_body_then_the_decoder_gives_bytes_the_redactor_can_read():
    body = gzip.compress(json.dumps({"echo": VALUE}).encode())
    decoder = decoder_for("gzip")
    plain = decoder.decompress(body[:10]) + decoder.decompress(body[10:]) + decoder.flush()
    assert VALUE.encode() not in run([plain])
    assert decoder_for("identity") is None and decoder_for(None) is None
