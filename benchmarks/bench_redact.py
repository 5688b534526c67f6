"""What scrubbing the injected value from relayed responses costs (web/redact.py), per chunk and
per megabyte, against a plain pass-through in the same run.

    python benchmarks/bench_redact.py
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_keyvault.web.redact import InjectedValueRedactor  # noqa: E402

KEY = "sk-proj-" + secrets.token_hex(24)


def sse_chunks(n: int) -> list[bytes]:
    """Chat-completion stream events as an OpenAI-compatible upstream sends them."""
    out = []
    for i in range(n):
        delta = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"content": f" token{i} é"}, "finish_reason": None}]}
        out.append(b"data: " + json.dumps(delta).encode() + b"\n\n")
    return out


def body_chunks(mb: int) -> list[bytes]:
    line = (json.dumps({"embedding": [0.123456] * 40}) + "\n").encode()
    data = line * (mb * 1024 * 1024 // len(line))
    return [data[i:i + 65536] for i in range(0, len(data), 65536)]


def timed(chunks: list[bytes], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        r = InjectedValueRedactor(KEY)
        start = time.perf_counter()
        for chunk in chunks:
            r.feed(chunk)
        r.flush()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    escaped = sse_chunks(20000)  # json.dumps writes the é as \\u00e9: the escape-decoding path
    plain = [c.replace(b"\\u00e9", b"e") for c in escaped]  # no backslash: the fast path
    body = body_chunks(16)
    size = sum(map(len, body)) / 1e6
    for label, chunks in (("SSE events, no escapes", plain), ("SSE events with \\u escapes", escaped)):
        t = timed(chunks)
        print(f"{label:<30} {t / len(chunks) * 1e6:6.2f} us per event ({len(chunks)} events)")
    print(f"{'16 MB JSON body, 64 KiB chunks':<30} {size / timed(body):7.0f} MB/s")


if __name__ == "__main__":
    main()
