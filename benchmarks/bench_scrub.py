"""Scrubber throughput on mixed notebook output with 1,000 known values and every pattern.

Each figure is printed next to the direct path measured in the same run: a pass that only
touches the bytes (``text.encode()``), and the previous engine (one big regex alternation
of known values and patterns) on a 10 MB sample. Throughputs are characters per CPU second of
this process (see `timed`); `--baseline REV` times the engine of a git revision interleaved
with this one.

    python benchmarks/bench_scrub.py [--mb 100] [--known 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import string
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_keyvault.scrub import DEFAULT_PATTERNS, Scrubber

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


# -- fake secrets (shaped like real keys, never real)

def fake_openai(rng):
    kind = rng.randrange(3)
    if kind == 0:
        return "sk-" + rand(rng, ALNUM, 48)
    if kind == 1:
        return "sk-proj-" + rand(rng, ALNUM + "_-", 74) + "T3BlbkFJ" + rand(rng, ALNUM + "_-", 74)
    return "sk-svcacct-" + rand(rng, ALNUM + "_-", 74) + "T3BlbkFJ" + rand(rng, ALNUM + "_-", 74)


FAKE_KEYS = [
    fake_openai,
    lambda rng: "sk-ant-api03-" + rand(rng, ALNUM + "_-", 93) + "AA",
    lambda rng: "gsk_" + rand(rng, ALNUM, 52),
    lambda rng: "sk-or-v1-" + rand(rng, HEX, 64),
    lambda rng: "hf_" + rand(rng, ALNUM, 34),
    lambda rng: "ghp_" + rand(rng, ALNUM, 36),
    lambda rng: "github_pat_" + rand(rng, ALNUM, 22) + "_" + rand(rng, ALNUM, 59),
    lambda rng: "AKIA" + rand(rng, string.ascii_uppercase + "234567", 16),
    lambda rng: "AIza" + rand(rng, ALNUM + "_-", 35),
    lambda rng: "xoxb-" + rand(rng, string.digits, 12) + "-" + rand(rng, string.digits, 13) + "-" + rand(rng, ALNUM, 24),
]


def known_values(rng: random.Random, n: int, opaque: float = 0.25) -> list[tuple[str, str]]:
    """Provider-shaped keys plus a fraction of opaque tokens with no recognisable prefix."""
    out = []
    every = round(1 / opaque) if opaque else 0
    for i in range(n):
        if every and i % every == every - 1:
            value = rand(rng, ALNUM + "_-.", rng.randrange(24, 64))  # a custom service's token
        else:
            value = FAKE_KEYS[i % len(FAKE_KEYS)](rng)
        out.append((value, f"SECRET_{i}"))
    return out


# -- ordinary output

WORDS = ["the", "of", "and", "to", "in", "is", "for", "on", "with", "as", "by", "model", "data", "train", "test", "loss", "accuracy", "epoch", "batch", "value", "error", "warning", "info", "debug", "request", "response", "client", "server", "file", "path", "line", "column", "index", "frame", "shape", "dtype", "float64", "int64", "object", "memory", "usage", "sklearn", "numpy", "pandas", "matplotlib", "torch"]


def pip_log(rng):
    pkg = rng.choice(["numpy", "pandas", "scikit-learn", "requests", "matplotlib", "torch", "openai"])
    ver = f"{rng.randrange(1, 3)}.{rng.randrange(30)}.{rng.randrange(10)}"
    return (f"Collecting {pkg}=={ver}\n"
            f"  Downloading {pkg.replace('-', '_')}-{ver}-cp311-cp311-manylinux_2_17_x86_64.whl (12.{rng.randrange(10)} MB)\n"
            f"     ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 12.3/12.3 MB 41.2 MB/s eta 0:00:00\n"
            f"  Hash: sha256:{rand(rng, HEX, 64)}\n"
            f"Requirement already satisfied: threadpoolctl>=3.1.0 in ./.venv/lib/python3.11/site-packages (from {pkg}) (3.5.0)\n"
            f"Successfully installed {pkg}-{ver}\n")


def git_log(rng):
    sha = rand(rng, HEX, 40)
    return (f"commit {sha}\nAuthor: Ada Lovelace <ada@example.org>\nDate:   Tue Mar {rng.randrange(1, 29)} 10:{rng.randrange(60):02d}:00 2024 +0100\n\n"
            f"    Fix task-{rng.randrange(10000, 99999)}: handle empty frames in sk-learn pipeline\n\n"
            f"diff --git a/src/model.py b/src/model.py\nindex {sha[:7]}..{rand(rng, HEX, 7)} 100644\n"
            f"--- a/src/model.py\n+++ b/src/model.py\n@@ -10,7 +10,7 @@ def fit(X, y):\n-    clf = LogisticRegression()\n+    clf = LogisticRegression(max_iter=1000)\n")


def dataframe(rng):
    rows = ["    sepal_length  sepal_width  petal_length  species"]
    for i in range(rng.randrange(5, 15)):
        rows.append(f"{i:<4}{rng.uniform(4, 8):>12.3f}{rng.uniform(2, 4):>13.3f}{rng.uniform(1, 7):>14.3f}  {rng.choice(['setosa', 'virginica', 'versicolor'])}")
    rows.append(f"\n[{len(rows) - 1} rows x 4 columns]\n")
    return "\n".join(rows)


def sklearn_report(rng):
    lines = ["              precision    recall  f1-score   support", ""]
    for c in ("class_0", "class_1", "class_2"):
        lines.append(f"{c:>12}       {rng.random():.2f}      {rng.random():.2f}      {rng.random():.2f}        {rng.randrange(10, 99)}")
    lines.append("")
    lines.append("/usr/lib/python3/site-packages/sklearn/linear_model/_logistic.py:469: ConvergenceWarning: "
                 "lbfgs failed to converge (status=1):\nSTOP: TOTAL NO. of ITERATIONS REACHED LIMIT.\n")
    return "\n".join(lines) + "\n"


def traceback_text(rng):
    return ("Traceback (most recent call last):\n"
            f"  File \"/home/jovyan/work/analysis.py\", line {rng.randrange(1, 500)}, in <module>\n"
            "    result = client.chat.completions.create(model=\"gpt-4o\", messages=messages)\n"
            "  File \"/opt/conda/lib/python3.11/site-packages/openai/_base_client.py\", line 1040, in _request\n"
            "    raise self._make_status_error_from_response(err.response) from None\n"
            f"openai.RateLimitError: Error code: 429 - {{'error': {{'message': 'Rate limit reached', 'request_id': 'req_{rand(rng, HEX, 32)}'}}}}\n")


def log_lines(rng):
    out = []
    for _ in range(rng.randrange(3, 10)):
        out.append(f"2024-05-{rng.randrange(1, 29):02d} 12:{rng.randrange(60):02d}:{rng.randrange(60):02d},{rng.randrange(1000):03d} "
                   f"INFO [{rng.choice(WORDS)}] {' '.join(rng.choices(WORDS, k=rng.randrange(5, 15)))} "
                   f"id={rng.getrandbits(128):032x} uuid={'-'.join(rand(rng, HEX, n) for n in (8, 4, 4, 4, 12))}")
    return "\n".join(out) + "\n"


def training(rng):
    return "".join(f"Epoch {e}/20 - loss: {rng.random():.4f} - accuracy: {rng.random():.4f} - val_loss: {rng.random():.4f}\n"
                   for e in range(1, rng.randrange(3, 12)))


def image_json(rng):
    raw = bytes(rng.getrandbits(8) for _ in range(rng.randrange(600, 3000)))
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + zlib.compress(raw, 0)).decode()
    return f'{{"output_type": "display_data", "data": {{"image/png": "{png}", "text/plain": ["<Figure size 640x480 with 1 Axes>"]}}}}\n'


def npm_log(rng):
    return (f"added {rng.randrange(50, 900)} packages, and audited {rng.randrange(900, 1500)} packages in {rng.randrange(2, 40)}s\n"
            f"npm WARN deprecated inflight@1.0.6: This module is not supported, and leaks memory.\n"
            f"npm notice integrity sha512-{base64.b64encode(bytes(rng.getrandbits(8) for _ in range(64))).decode()}\n")


GENERATORS = [pip_log, git_log, dataframe, sklearn_report, traceback_text, log_lines, training, image_json, npm_log]
WEIGHTS = [3, 2, 3, 2, 2, 5, 3, 1, 1]


def mixed_output(rng: random.Random, size: int, secrets: list[str], secret_rate: float = 0.002) -> str:
    """About `size` characters of notebook-ish output; a small fraction of blocks leak a secret."""
    parts: list[str] = []
    total = 0
    # Generate a pool of blocks once and reuse it, so building 100 MB stays quick.
    pool = [rng.choices(GENERATORS, WEIGHTS)[0](rng) for _ in range(3000)]
    while total < size:
        block = rng.choice(pool)
        if secrets and rng.random() < secret_rate * 20:
            block += f"api_key = '{rng.choice(secrets)}'\n"
        parts.append(block)
        total += len(block)
    return "".join(parts)[:size]


def mbps(nchars: int, seconds: float) -> float:
    return nchars / 1e6 / seconds


def timed(fn, *args):
    """(result, CPU seconds of this process): on a shared machine, wall time mostly measures the
    other processes (it moved by 3x between runs here); one-threaded scanning is all CPU."""
    start = time.process_time()
    result = fn(*args)
    return result, time.process_time() - start


def old_engine(known: list[tuple[str, str]]):
    """The previous engine: every known value and pattern in one regex alternation."""
    parts = ["(?P<known>" + "|".join(re.escape(v) for v, _ in sorted(known, key=lambda kv: -len(kv[0]))) + ")"]
    tok = r"A-Za-z0-9_\-"
    for i, p in enumerate(DEFAULT_PATTERNS):
        parts.append(f"(?P<p{i}>(?<![{tok}])(?:{p.regex})(?![{tok}]))")
    rx = re.compile("|".join(parts))
    return lambda text: rx.sub("[REDACTED]", text)


def best_of(repeat: int, fn, *args):
    """(result, best CPU seconds, median): this machine is shared, so the best run is the figure."""
    times, result = [], None
    for _ in range(repeat):
        result, seconds = timed(fn, *args)
        times.append(seconds)
    times.sort()
    return result, times[0], times[len(times) // 2]


def engine_at(revision: str):
    """The scrub module as it was at a git revision, to measure it in the same run (this
    machine is shared, so only same-run figures compare)."""
    import importlib.util
    import subprocess
    import tempfile

    source = subprocess.run(["git", "show", f"{revision}:jupyter_keyvault/scrub.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp(prefix="kv-bench-")) / "scrub_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("scrub_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scrub_baseline"] = module
    spec.loader.exec_module(module)
    return module


def bench_rebuild(known: list[tuple[str, str]]) -> None:
    """What a server pays on its event loop when a value is stored: before, the next scrub
    rebuilt the matcher there; now the loop only adds (and a scrub searches the few values
    not yet built in), the build runs in a worker thread (rebuild_async)."""
    import asyncio

    scrubber = Scrubber(build_on_scrub=False)
    for value, name in known:
        scrubber.add_known(value, name)
    scrubber.rebuild()
    line = "an ordinary line of output, 64 characters long, nothing secret.\n" * 4
    fresh = rand(random.Random(1), ALNUM, 40)
    _, t_add = timed(scrubber.add_known, fresh, "NEW")
    _, t_scrub_pending = timed(scrubber.scrub, line)
    loop_gaps: list[float] = []

    async def measure():
        done = asyncio.Event()

        async def ticker():
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                loop_gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        await scrubber.rebuild_async()
        elapsed = time.perf_counter() - start
        done.set()
        await task
        return elapsed

    t_rebuild = asyncio.run(measure())
    _, t_scrub_built = timed(scrubber.scrub, line)
    old = Scrubber()  # a kernel or CLI scrubber: the first scrub after an add builds (now only the delta)
    for value, name in known:
        old.add_known(value, name)
    old.scrub("x")
    old.add_known(fresh, "NEW")
    _, t_old = timed(old.scrub, line)
    print(f"store one value with {len(known):,} known, on the event loop:")
    print(f"  a kernel's scrubber (builds on scrub): add + next scrub {t_old * 1000:8.1f} ms")
    print(f"  add_known:                                            {t_add * 1e6:8.1f} us")
    print(f"  a scrub while the rebuild is pending:                 {t_scrub_pending * 1e6:8.1f} us")
    print(f"  rebuild_async (worker thread), loop's longest pause:  {t_rebuild * 1000:8.1f} ms, "
          f"{max(loop_gaps) * 1000:.1f} ms")
    print(f"  a scrub after the swap:                               {t_scrub_built * 1e6:8.1f} us")


def bench_server_filter(known: list[tuple[str, str]], total_lines: int) -> None:
    """Both sides of a print-heavy cell, per stream message, without a kernel process:

    - server: what jupyter_server does anyway with each message (deserialize, re-encode as
      JSON for the legacy protocol) against what the filter adds (the raw-bytes prefilter;
      a parse only for the few that need it), with every known value;
    - kernel: the helper's stream scrubber on the same text, with what a proxy-mode kernel
      knows (patterns only).

    ipykernel batches prints (it flushes about every 0.2 s), so messages are few and large in
    a print-heavy cell; small messages show the fixed cost per message."""
    import json

    from jupyter_client.session import Session

    from jupyter_keyvault.server.iopub import MessageFilter

    server_scrubber = Scrubber(build_on_scrub=False)
    for value, name in known:
        server_scrubber.add_known(value, name)
    server_scrubber.rebuild()
    kernel_scrubber = Scrubber()
    session = Session(key=b"bench-key")
    parent = session.msg("execute_request", {"code": "for i in range(100000): print(i)"})
    print(f"print-heavy cell without a kernel: {total_lines:,} lines of "
          "`print(i, 'row of ordinary output, nothing secret here', i * 3.14)`, per message:")
    print(f"  {'lines/message':>13} {'messages':>8} {'server work':>12} {'+ filter':>18} {'previous filter':>18} "
          f"{'kernel helper':>14}")
    for per_message in (40, 10_000):
        count = max(1, total_lines // per_message)
        frames_list, texts = [], []
        for m in range(count):
            text = "".join(f"{i} row of ordinary output, nothing secret here {i * 3.14}\n"
                           for i in range(m * per_message, (m + 1) * per_message))
            texts.append(text)
            frames_list.append(session.serialize(session.msg("stream", {"name": "stdout", "text": text}, parent=parent)))

        def server_work(frames_list=frames_list):
            for frames in frames_list:
                _, fed = session.feed_identities(frames)
                msg = session.deserialize(fed)
                session.digest_history.discard(fed[0])
                json.dumps(msg, default=str)

        def filter_work(frames_list=frames_list):
            filt = MessageFilter(server_scrubber)
            parsed = 0
            for frames in frames_list:
                _, fed = session.feed_identities(frames)
                parsed += filt.needs_parsing([bytes(f) for f in fed[1:]])
            return parsed

        def old_filter_work(frames_list=frames_list):  # the previous filter: parse and stream-scrub every stream message
            stream = server_scrubber.stream()
            for frames in frames_list:
                _, fed = session.feed_identities(frames)
                msg = session.deserialize(fed, content=True, copy=True)
                session.digest_history.discard(fed[0])
                stream.feed(msg["content"]["text"])

        def kernel_work(texts=texts):
            stream = kernel_scrubber.stream()
            for text in texts:
                stream.feed(text)
            stream.flush()

        _, t_server, _ = best_of(3, server_work)
        parsed, t_filter, _ = best_of(3, filter_work)
        _, t_old, _ = best_of(3, old_filter_work)
        _, t_kernel, _ = best_of(3, kernel_work)
        us = 1e6 / count
        print(f"  {per_message:>13,} {count:>8,} {t_server * us:>9.1f} us {t_filter * us:>9.1f} us ({100 * t_filter / t_server:+4.0f} %)"
              f" {t_old * us:>9.1f} us ({100 * t_old / t_server:+4.0f} %) {t_kernel * us:>11.1f} us"
              f"{'' if not parsed else f'  ({parsed} parsed)'}")
        print(f"  {'':>13} {'':>8} whole cell: server work {t_server * 1000:.1f} ms, filter {t_filter * 1000:.1f} ms, "
              f"previous filter {t_old * 1000:.1f} ms, kernel helper {t_kernel * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--known", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--opaque", type=float, default=0.25, help="fraction of known values with no provider prefix")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--old-mb", type=int, default=10, help="sample size for the previous engine (0 to skip)")
    ap.add_argument("--baseline", default="", help="a git revision whose engine is measured in the same run")
    ap.add_argument("--lines", type=int, default=100_000, help="printed lines for the print-heavy-cell figures")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    known = known_values(rng, args.known, args.opaque)
    leaked = [v for v, _ in known[:50]] + [FAKE_KEYS[i % len(FAKE_KEYS)](rng) for i in range(50)]
    text = mixed_output(rng, args.mb * 1_000_000, leaked)
    n = len(text)
    scrubber = Scrubber()
    for value, name in known:
        scrubber.add_known(value, name)
    opaque = sum(1 for v, _ in known if not any(v.startswith(p) for p in ("sk-", "gsk_", "hf_", "ghp_", "github_pat_", "AKIA", "AIza", "xoxb-")))
    print(f"data: {n / 1e6:.0f} M characters of mixed output ({'pure ASCII' if text.isascii() else 'with non-ASCII'}), "
          f"{scrubber.known_count} known values ({opaque} without a provider prefix), {len(DEFAULT_PATTERNS)} patterns, "
          f"aho-corasick={'yes' if scrubber.uses_automaton else 'no (regex fallback)'}")

    _, t_build = timed(scrubber.scrub, "the first scrub after adds builds the engine")
    print(f"engine build after {scrubber.known_count:,} adds:          {t_build * 1000:8.1f} ms")
    out, t_scrub, t_med = best_of(args.repeat, scrubber.scrub, text)
    redactions = out.count("[REDACTED")
    print(f"scrub() one-shot:                          {mbps(n, t_scrub):8.1f} MB/s  (median {mbps(n, t_med):.1f}; {redactions} redactions)")
    # A result string beyond 32 MB (glibc's largest reused block; non-ASCII text takes two bytes
    # a character) is fresh memory each time, and its page faults count; outputs are smaller.
    pieces = [text[i:i + 1_000_000] for i in range(0, n, 1_000_000)]
    _, t_pieces, _ = best_of(args.repeat, lambda: [scrubber.scrub(p) for p in pieces])
    print(f"scrub() of the same text as 1 MB outputs:  {mbps(n, t_pieces):8.1f} MB/s")
    _, t_encode, _ = best_of(args.repeat, str.encode, text)
    print(f"direct path text.encode(), same data:      {mbps(n, t_encode):8.1f} MB/s")
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    _, t_ascii, _ = best_of(args.repeat, scrubber.scrub, ascii_text)
    print(f"scrub() one-shot, same data made ASCII:    {mbps(n, t_ascii):8.1f} MB/s")

    provider_only = Scrubber()
    for value, name in known_values(random.Random(args.seed), args.known, 0):
        provider_only.add_known(value, name)
    _, t_prov, _ = best_of(args.repeat, provider_only.scrub, text)
    print(f"scrub() one-shot, provider-shaped values:  {mbps(n, t_prov):8.1f} MB/s  ({provider_only.known_count} known, none opaque)")
    patterns_only = Scrubber()
    _, t_pat, _ = best_of(args.repeat, patterns_only.scrub, text)
    print(f"scrub() one-shot, patterns only:           {mbps(n, t_pat):8.1f} MB/s")

    def run_stream():
        stream = scrubber.stream()
        step = args.chunk
        pieces = [stream.feed(text[i:i + step]) for i in range(0, n, step)]
        pieces.append(stream.flush())
        return "".join(pieces)

    streamed, t_stream, t_smed = best_of(max(1, args.repeat - 1), run_stream)
    print(f"StreamScrubber, {args.chunk // 1024} KiB chunks:              {mbps(n, t_stream):8.1f} MB/s  "
          f"(median {mbps(n, t_smed):.1f}; same output as one-shot: {streamed == out})")

    hex_known = [(rand(rng, HEX, 40), f"HEX_{i}") for i in range(args.known)]
    hex_scrubber = Scrubber()
    for value, name in hex_known:
        hex_scrubber.add_known(value, name)
    hex_scrubber.scrub("x")
    _, t_hex, _ = best_of(args.repeat, hex_scrubber.scrub, text)
    _, t_hex_ascii, _ = best_of(args.repeat, hex_scrubber.scrub, ascii_text)
    _, t_hex_pieces, _ = best_of(args.repeat, lambda: [hex_scrubber.scrub(p) for p in pieces])
    print(f"scrub() one-shot, {args.known:,} opaque 40-hex values + patterns: {mbps(n, t_hex):6.1f} MB/s  "
          f"(ASCII: {mbps(n, t_hex_ascii):.1f}; as 1 MB outputs: {mbps(n, t_hex_pieces):.1f})")

    if args.baseline:
        # Interleaved (this engine, then that one, in turn), so both see the same machine load.
        base = engine_at(args.baseline)
        # Engines before ahocorasick-rs used pyahocorasick; without it they fall back to a regex
        # (about 1 MB/s), which is no comparison: say which one is measured.
        automaton = "yes" if base.Scrubber().uses_automaton else "NO: its regex fallback (install pyahocorasick)"
        print(f"interleaved with the engine at {args.baseline} (best of {args.repeat} each, MB/s; "
              f"its automaton: {automaton}):")
        print(f"  {'':38s} {'this':>8} {'baseline':>9} {'ratio':>6}")

        def stream_runner(engine):
            def run():
                stream = engine.stream()
                pieces = [stream.feed(text[i:i + args.chunk]) for i in range(0, n, args.chunk)]
                pieces.append(stream.flush())
                return "".join(pieces)
            return run

        for label, values, data, stream in (("one-shot, same mix", known, text, False),
                                            ("same mix as 1 MB outputs", known, pieces, False),
                                            ("one-shot, same mix, ASCII", known, ascii_text, False),
                                            (f"one-shot, {args.known:,} opaque 40-hex", hex_known, text, False),
                                            (f"StreamScrubber {args.chunk // 1024} KiB, same mix", known, text, True)):
            engines = []
            for module in (sys.modules["jupyter_keyvault.scrub"], base):
                engine = module.Scrubber()
                for value, name in values:
                    engine.add_known(value, name)
                engine.scrub("x")
                if stream:
                    engines.append(stream_runner(engine))
                elif isinstance(data, list):
                    engines.append(lambda e=engine, d=data: [e.scrub(p) for p in d])
                else:
                    engines.append(lambda e=engine, d=data: e.scrub(d))
            best = [float("inf"), float("inf")]
            for _ in range(args.repeat):
                for i, run in enumerate(engines):
                    _, seconds = timed(run)
                    best[i] = min(best[i], seconds)
            print(f"  {label:38s} {mbps(n, best[0]):8.1f} {mbps(n, best[1]):9.1f} {best[1] / best[0]:5.2f}x")

    bench_rebuild(known)
    bench_server_filter(known, args.lines)

    if args.old_mb:
        sample = text[:args.old_mb * 1_000_000]
        old = old_engine(known)
        _, t_old = timed(old, sample)
        print(f"previous engine (one regex), {len(sample) / 1e6:.0f} MB sample: {mbps(len(sample), t_old):8.1f} MB/s")


if __name__ == "__main__":
    main()
