"""Known values change without the event loop paying for it: incremental add / forget /
replace, a rebuild in a worker thread swapped in atomically; and the encoded-form finders
(`find_deep`, `scrub_bytes`) used by the server filter and the notebook walk."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import urllib.parse

import pytest

from jupyter_keyvault import scrub
from jupyter_keyvault.scrub import Scrubber, base64_cores


def opaque() -> str:
    return secrets.token_hex(20)  # no provider prefix: only a known-value match finds it


def test_given_a_server_scrubber_when_a_value_is_added_then_scrubbing_does_not_rebuild_but_still_redacts_it(monkeypatch):
    s = Scrubber(build_on_scrub=False)
    for i in range(300):
        s.add_known(opaque(), f"OLD_{i}")
    s.rebuild()
    builds = []
    original = scrub._Engine.__init__
    monkeypatch.setattr(scrub._Engine, "__init__", lambda self, *a, **kw: (builds.append(1), original(self, *a, **kw))[1])
    fresh = opaque()
    s.add_known(fresh, "NEW")
    assert s.dirty
    assert s.scrub(f"x {fresh} y") == "x [REDACTED:NEW] y"  # found by the small pending search
    assert builds == []  # …without building on the caller's thread
    s.rebuild()
    assert not s.dirty and builds  # the build happened when asked for
    assert s.scrub(f"x {fresh} y") == "x [REDACTED:NEW] y"


def test_given_a_value_is_replaced_or_deleted_then_the_old_one_is_forgotten_at_once_and_after_the_rebuild():
    s = Scrubber(build_on_scrub=False)
    old, new = opaque(), opaque()
    s.add_known(old, "K")
    s.rebuild()
    s.replace_known(old, new, "K")
    assert s.known_count == 1
    assert s.scrub(old) == old  # hidden from the installed matcher without a rebuild
    assert s.scrub_deep(base64.b64encode(old.encode()).decode()) == base64.b64encode(old.encode()).decode()
    assert s.scrub(new) == "[REDACTED:K]"
    s.rebuild()
    assert s.scrub(old) == old
    assert s.scrub(new) == "[REDACTED:K]"
    s.forget(new)
    s.rebuild()
    assert s.scrub(new) == new and s.known_count == 0


def test_given_values_known_by_name_when_replaced_or_deleted_by_name_then_the_old_ones_are_forgotten():
    s = Scrubber(build_on_scrub=False)
    first, second, other = opaque(), opaque(), opaque()
    s.add_known(first, "API")
    s.add_known(other, "OTHER")
    s.replace_known(None, second, "API")  # the server need not decrypt the old value to forget it
    s.rebuild()
    assert s.scrub(first) == first and s.scrub(second) == "[REDACTED:API]"
    assert s.forget_name("API") == 1
    s.rebuild()
    assert s.scrub(second) == second and s.scrub(other) == "[REDACTED:OTHER]"


def test_given_a_stale_build_when_installed_after_a_newer_one_then_it_is_refused():
    s = Scrubber(build_on_scrub=False)
    a, b = opaque(), opaque()
    s.add_known(a, "A")
    stale = s.prepare()
    s.add_known(b, "B")
    s.install(s.prepare())
    assert s.install(stale) is False
    assert s.scrub(f"{a} {b}") == "[REDACTED:A] [REDACTED:B]"


async def test_given_1000_opaque_values_when_rebuilt_async_then_the_loop_keeps_running_and_scrubs_stay_fast():
    s = Scrubber(build_on_scrub=False)
    values = [opaque() for _ in range(1000)]
    for i, v in enumerate(values):
        s.add_known(v, f"V{i}")
    gaps: list[float] = []
    scrub_times: list[float] = []
    done = asyncio.Event()

    async def ticker():
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def scrubbing():
        while not done.is_set():
            start = time.perf_counter()
            s.scrub("ordinary output line without secrets " * 4)
            scrub_times.append(time.perf_counter() - start)
            await asyncio.sleep(0.001)

    tasks = [asyncio.create_task(ticker()), asyncio.create_task(scrubbing())]
    start = time.perf_counter()
    await asyncio.gather(s.rebuild_async(), s.rebuild_async())  # concurrent callers share the build
    build = time.perf_counter() - start
    done.set()
    await asyncio.gather(*tasks)
    assert not s.dirty
    assert s.scrub(values[500]) == "[REDACTED:V500]"
    assert scrub_times and max(scrub_times) < 0.25  # a scrub on the loop never runs the build
    # The loop kept running through the build: the thread yields the GIL every few ms, and
    # the build runs with the cycle collector paused (a full collection would stop every
    # thread for ~0.3 s in a process holding a whole Jupyter server).
    assert build > 0.1 and max(gaps) < 0.1, (max(gaps), build)


def test_given_adds_while_a_build_runs_in_another_thread_then_nothing_is_lost():
    s = Scrubber(build_on_scrub=False)
    first = [opaque() for _ in range(200)]
    for v in first:
        s.add_known(v, "F")
    builder = threading.Thread(target=s.rebuild)
    builder.start()
    late = opaque()
    s.add_known(late, "LATE")
    builder.join()
    assert s.scrub(late) == "[REDACTED:LATE]"  # pending until the next build, never dropped
    s.rebuild()
    assert s.scrub(late) == "[REDACTED:LATE]" and s.scrub(first[0]) == "[REDACTED:F]"


# -- encoded forms

ENCODINGS = {
    "html decimal": lambda v: "".join(f"&#{ord(c)};" for c in v),
    "html hex": lambda v: "".join(f"&#x{ord(c):X};" for c in v),
    "html mixed": lambda v: v[:5] + f"&#{ord(v[5])};" + v[6:7] + f"&#x{ord(v[7]):x};" + v[8:],
    "html named": lambda v: v.replace("-", "&#45;").replace("_", "&lowbar;") + "&period;",
    "percent": lambda v: urllib.parse.quote(v, safe=""),
    "percent all": lambda v: "".join(f"%{b:02x}" for b in v.encode()),
    "\\u escapes": lambda v: "".join(f"\\u{ord(c):04x}" for c in v),
    "\\x escapes": lambda v: "".join(f"\\x{ord(c):02x}" for c in v),
    "split by tags": lambda v: f"<span>{v[:7]}</span><b>{v[7:]}</b>",
    "zero-width": lambda v: "\u200b".join(v),
    "double encoded": lambda v: "".join(f"&amp;#{ord(c)};" for c in v).replace("&amp;", "&#38;"),
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("kind", ["known", "pattern"])
def test_given_an_encoded_secret_when_deep_scrubbed_then_the_whole_encoding_is_redacted(encoding, kind, canary):
    s = Scrubber()
    value = canary
    if kind == "known":
        value = opaque()
        s.add_known(value, "K")
    text = "before " + ENCODINGS[encoding](value) + " after"
    out = s.scrub_deep(text)
    assert out.startswith("before ") and out.endswith(" after")
    assert "REDACTED" in out
    for i in range(0, len(value) - 8):
        assert value[i:i + 8] not in out.replace("&#", "").replace("%", "")


@pytest.mark.parametrize("pad", [0, 1, 2, 3, 4, 5])
def test_given_a_known_value_inside_base64_at_any_alignment_then_it_is_found_without_decoding(pad):
    s = Scrubber()
    value = opaque()
    s.add_known(value, "K")
    payload = base64.b64encode(secrets.token_bytes(pad) + value.encode() + secrets.token_bytes(7)).decode()
    assert s.find(payload) == []
    assert s.find_deep(payload) and "[REDACTED:K]" in s.scrub_deep(payload)
    urlsafe = base64.urlsafe_b64encode(b"\xfb\xff" * pad + value.encode()).decode()
    assert s.find_deep(urlsafe)
    assert all(len(core) >= 8 for core in base64_cores(value))


def test_given_binary_data_with_a_secret_when_scrubbed_then_it_is_overwritten_in_place_keeping_the_length(canary):
    s = Scrubber()
    value = opaque()
    s.add_known(value, "K")
    data = b"\x00\xff" + value.encode() + b"\x01" + canary.encode() + b"\x02" + base64.b64encode(value.encode())
    out, n = s.scrub_bytes(data)
    assert len(out) == len(data) and n == 3
    assert value.encode() not in out and canary.encode() not in out and base64.b64encode(value.encode())[:-4] not in out
    assert out[:2] == b"\x00\xff"


def test_given_ordinary_encoded_output_when_deep_scrubbed_then_nothing_changes():
    s = Scrubber()
    s.add_known(opaque(), "K")
    samples = [
        "<table><tr><td>&nbsp;1&amp;2</td></tr></table> 100% done, 50%|#### | %20 %7E",
        json.dumps({"path": "C:\\users\\x", "esc": "\\u001b[31mred"}),
        base64.b64encode(secrets.token_bytes(3000)).decode(),
        "<svg><text>sklearn sk-learn task-12345</text></svg>",
    ]
    for text in samples:
        assert s.scrub_deep(text) == text


def test_given_a_value_added_since_the_last_build_when_split_across_stream_chunks_then_it_is_still_redacted():
    """Before a rebuild installs it, a new value is found by the pending search; a stream must also
    hold back a trailing prefix of it at a chunk boundary, at every split point."""
    import secrets as _secrets

    from jupyter_keyvault.scrub import Scrubber

    value = _secrets.token_hex(20)  # opaque: no provider pattern would catch it
    line = f"FD2 {value} done\n"
    for cut in range(1, len(line)):
        scrubber = Scrubber(build_on_scrub=False)
        scrubber.add_known(value, "DB_TOKEN")  # pending: no build has run
        stream = scrubber.stream()
        out = stream.feed(line[:cut]) + stream.feed(line[cut:]) + stream.flush()
        assert value not in out and out == "FD2 [REDACTED:DB_TOKEN] done\n", (cut, out)
