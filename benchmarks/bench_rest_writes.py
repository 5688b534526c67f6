"""Distinct values written through the REST API, and what that does to the rest of the server.

Each case runs against a fresh server: PUT that many distinct values one after another (provider
keys of four providers, opaque 40-hex tokens and 18-character passwords, in turn), or replace one
credential that many times, while another client polls jupyter_server's own `/api/status` every
20 ms. The writes go in batches of 100; a batch and the 2.5 s after it (the scrubber builds that
follow) count as "during", the next second, before the next batch, as "idle", so both see the same
load from the rest of the machine. Nothing on the event loop may grow with the vault: the
scrubber learns each value (and forgets a replaced one) without rebuilding everything, so
`/api/status` during the writes stays near its idle time.

    python benchmarks/bench_rest_writes.py [--sizes 100,1000] [--replace 1000] [--full]

`--full` adds 10,000 distinct values (several minutes on two cores). CI (`.ci/run`) runs no benchmark;
the default, 100 and 1,000 values and 1,000 replacements, takes about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import string
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_keyvault.testing.live_server import JupyterServer  # noqa: E402

ALNUM = string.ascii_letters + string.digits


def rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


PROVIDER_KEYS = (
    lambda: ("sk-proj-" + rand(ALNUM, 40) + "T3BlbkFJ" + rand(ALNUM, 40), "openai"),
    lambda: ("sk-ant-api03-" + rand(ALNUM + "_-", 93) + "AA", "anthropic"),
    lambda: ("gsk_" + rand(ALNUM, 52), "groq"),
    lambda: ("hf_" + rand(string.ascii_letters, 34), "huggingface"),
)


def value(i: int) -> tuple[str, dict]:
    """Provider keys, opaque tokens and passwords in turn (the shapes a vault holds)."""
    kind = i % 3
    if kind == 0:
        secret, provider = PROVIDER_KEYS[(i // 3) % len(PROVIDER_KEYS)]()
        return secret, {"provider": provider}
    if kind == 1:
        return secrets.token_hex(20), {"type": "custom"}
    return rand(ALNUM + "!#%&*+-=?@^_", 18), {"type": "custom"}


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else xs[0]


BATCH = 100  # writes between two idle windows
SETTLE = 2.5  # seconds after a batch still counted as "during" (the scrubber builds that follow it)
IDLE = 1.0  # seconds of idle polling after each batch


async def poll(session, url, headers, phase: list[list[float]], stop: asyncio.Event) -> None:
    """/api/status every 20 ms; each latency goes to the list phase[0] holds at the time."""
    while not stop.is_set():
        start = time.perf_counter()
        async with session.get(url + "/api/status", headers=headers) as resp:
            await resp.read()
        phase[0].append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.02)


async def run(size: int, *, replace: bool = False) -> dict:
    server = JupyterServer("--KeyVault.write_rate_per_minute=1000000").start()
    headers = {"Authorization": f"token {server.token}", "Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession() as session:
            # Idle and loaded windows alternate (a second of idle polling after each batch and its
            # builds), so both see the same load from the rest of this shared machine.
            idle: list[float] = []
            during: list[float] = []
            phase = [idle]
            stop = asyncio.Event()
            poller = asyncio.ensure_future(poll(session, server.url, headers, phase, stop))
            await asyncio.sleep(IDLE)
            puts = []
            for i in range(size):
                if i % BATCH == 0:
                    phase[0] = during
                secret, extra = value(i)
                body = json.dumps({"value": secret, **extra})
                start = time.perf_counter()
                name = "K0" if replace else f"K{i}"
                async with session.put(f"{server.url}/keyvault/api/credentials/{name}", data=body,
                                       headers=headers) as resp:
                    assert resp.status in (201, 204), await resp.text()
                puts.append((time.perf_counter() - start) * 1000)
                if i % BATCH == BATCH - 1 or i == size - 1:
                    await asyncio.sleep(SETTLE)
                    phase[0] = idle
                    await asyncio.sleep(IDLE)
            stop.set()
            await poller
    finally:
        server.stop()
    case = f"{size:,} {'replacements of one' if replace else 'distinct'}"
    return {"case": case, "put_p50": pct(puts, 50), "put_p99": pct(puts, 99), "idle_p50": pct(idle, 50),
            "idle_p99": pct(idle, 99), "during_p50": pct(during, 50), "during_p99": pct(during, 99)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--replace", type=int, default=1000, help="replace one credential this many times (0: skip)")
    parser.add_argument("--full", action="store_true", help="also 10,000 distinct values")
    args = parser.parse_args()
    cases = [(int(s), False) for s in args.sizes.split(",") if s]
    if args.full:
        cases.append((10_000, False))
    if args.replace:
        cases.append((args.replace, True))
    print(f"{'case':>26} {'PUT p50':>8} {'PUT p99':>8} | /api/status idle p50/p99 | during writes p50/p99 "
          "| ratio p50 / p99")
    for size, replace in cases:
        r = await run(size, replace=replace)
        print(f"{r['case']:>26} {r['put_p50']:>6.1f}ms {r['put_p99']:>6.1f}ms | {r['idle_p50']:>7.2f} / {r['idle_p99']:6.2f} ms"
              f"   | {r['during_p50']:>7.2f} / {r['during_p99']:6.2f} ms | {r['during_p50'] / r['idle_p50']:.2f}x / "
              f"{r['during_p99'] / r['idle_p99']:.2f}x", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
