"""Distinct values written through the REST API, and what that does to the rest of the server.

Each size runs against a fresh server: PUT that many distinct values (provider keys, opaque tokens,
passwords, in turn) one after another, while another client polls jupyter_server's own
`/api/status` every 20 ms. Nothing on the event loop may grow with the vault: the scrubber learns
each value and rebuilds off the loop, so `/api/status` during the writes stays near its idle time.

    python benchmarks/bench_rest_writes.py [--sizes 100,1000]
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


def value(i: int) -> tuple[str, dict]:
    kind = i % 3
    if kind == 0:
        return "sk-proj-" + secrets.token_urlsafe(36), {"provider": "openai"}
    if kind == 1:
        return secrets.token_hex(20), {"type": "custom"}
    alphabet = string.ascii_letters + string.digits + "!#%&*+-=?@^_"
    return "".join(secrets.choice(alphabet) for _ in range(18)), {"type": "custom"}


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else xs[0]


async def poll(session, url, headers, out: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        async with session.get(url + "/api/status", headers=headers) as resp:
            await resp.read()
        out.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.02)


async def run(size: int) -> dict:
    server = JupyterServer("--KeyVault.write_rate_per_minute=1000000").start()
    headers = {"Authorization": f"token {server.token}", "Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession() as session:
            idle: list[float] = []
            stop = asyncio.Event()
            poller = asyncio.ensure_future(poll(session, server.url, headers, idle, stop))
            await asyncio.sleep(3)
            stop.set()
            await poller
            during: list[float] = []
            stop = asyncio.Event()
            poller = asyncio.ensure_future(poll(session, server.url, headers, during, stop))
            puts = []
            for i in range(size):
                secret, extra = value(i)
                body = json.dumps({"value": secret, **extra})
                start = time.perf_counter()
                async with session.put(f"{server.url}/keyvault/api/credentials/K{i}", data=body,
                                       headers=headers) as resp:
                    assert resp.status == 201, await resp.text()
                puts.append((time.perf_counter() - start) * 1000)
            stop.set()
            await poller
    finally:
        server.stop()
    return {"size": size, "put_p50": pct(puts, 50), "put_p99": pct(puts, 99), "idle_p50": pct(idle, 50),
            "idle_p99": pct(idle, 99), "during_p50": pct(during, 50), "during_p99": pct(during, 99)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    args = parser.parse_args()
    print(f"{'values':>7} {'PUT p50':>8} {'PUT p99':>8} | /api/status idle p50/p99 | during writes p50/p99 | p99 ratio")
    for size in (int(s) for s in args.sizes.split(",")):
        r = await run(size)
        print(f"{r['size']:>7} {r['put_p50']:>6.1f}ms {r['put_p99']:>6.1f}ms | {r['idle_p50']:>8.2f} / {r['idle_p99']:.2f} ms"
              f"      | {r['during_p50']:>8.2f} / {r['during_p99']:.2f} ms  | {r['during_p99'] / r['idle_p99']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
