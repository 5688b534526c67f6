"""REST API throughput and latency with 1,000 stored credentials, against a real jupyter server.

Baseline in the same run: jupyter_server's own GET /api/status through the same client. The
listing is measured whole (the unpaginated call) and a page of 100 at a time (first page, and a
page from a cursor in the middle); the server-side time of each request is tornado's own
request time, read from the server's access log (DEBUG), next to the client's latency.

    python benchmarks/bench_rest.py [--requests 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time

import httpx

from jupyter_keyvault.store import SQLiteBackend, Vault  # noqa: E402
from jupyter_keyvault.testing.live_server import JupyterServer  # noqa: E402


async def measure(client: httpx.AsyncClient, make_request, n: int, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker():
        nonlocal errors
        for i in counter:
            start = time.perf_counter()
            resp = await make_request(client, i)
            latencies.append(time.perf_counter() - start)
            errors += resp.status_code >= 400

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": n / wall,
        "p50": statistics.median(latencies) * 1e3,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
        "errors": errors,
    }


async def run(server: JupyterServer, n: int, concurrency: int) -> None:
    value = json.dumps({"value": "sk-proj-" + "b" * 48, "provider": "openai"})
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        cases = {
            "GET /api/status (jupyter_server baseline)": lambda c, i: c.get("/api/status"),
            "GET /keyvault/api/credentials (1,000 stored)": lambda c, i: c.get("/keyvault/api/credentials"),
            "GET /keyvault/api/credentials?limit=100 (first page)": lambda c, i: c.get(
                "/keyvault/api/credentials", params={"limit": 100}),
            "GET /keyvault/api/credentials?limit=100&cursor= (page 6)": lambda c, i: c.get(
                "/keyvault/api/credentials", params={"limit": 100, "cursor": MIDDLE}),
            "PUT /keyvault/api/credentials/{name} (replace)": lambda c, i: c.put(
                f"/keyvault/api/credentials/KEY_{i % 1000:04d}", content=value),
        }
        for make in cases.values():  # warm up connections and caches
            await measure(client, make, 50, concurrency)
        results = {label: await measure(client, make, n, concurrency) for label, make in cases.items()}
    base = results["GET /api/status (jupyter_server baseline)"]
    server_times = handler_times(server.log_path.read_text())
    for label, r in results.items():
        print(f"{label:56s} {r['rps']:7.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
              f"errors {r['errors']}  p50 vs baseline {r['p50'] / base['p50']:.2f}x")
    print("\nserver-side request time (tornado's, from the access log), p50 / p99 over every request of the run:")
    for label, times in server_times.items():
        times.sort()
        print(f"  {label:54s} p50 {statistics.median(times):6.2f} ms  p99 {times[int(len(times) * 0.99) - 1]:6.2f} ms"
              f"  ({len(times)} requests)")


MIDDLE = "c1." + __import__("base64").urlsafe_b64encode(b"KEY_0499").decode().rstrip("=")  # after KEY_0499
_ACCESS = re.compile(r"\b200 GET (\S+) \(.*?\) ([0-9.]+)ms")


def handler_times(log: str) -> dict[str, list[float]]:
    kinds = {"GET /keyvault/api/credentials (whole)": lambda u: u == "/keyvault/api/credentials",
             "GET ...?limit=100 (first page)": lambda u: u.endswith("?limit=100"),
             "GET ...?limit=100&cursor=... (page 6)": lambda u: "cursor=" in u}
    out: dict[str, list[float]] = {k: [] for k in kinds}
    for url, ms in _ACCESS.findall(log):
        for kind, match in kinds.items():
            if match(url):
                out[kind].append(float(ms))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    server = JupyterServer("--KeyVault.write_rate_per_minute=100000000", "--ServerApp.log_level=DEBUG")
    owner = "bench"
    vault = Vault(SQLiteBackend(server.vault_path), env={"KEYVAULT_MASTER_KEY": server.master_key})
    for i in range(1000):
        vault.set(owner, f"KEY_{i:04d}", "sk-proj-" + "a" * 48, provider="openai")
    # The handler's own work for a page of 100 (query, records, JSON), without HTTP or other requests.
    for after in (None, "KEY_0499"):
        times = []
        for _ in range(200):
            start = time.perf_counter()
            infos, _ = vault.list_page(owner, limit=100, after=after)
            json.dumps({"credentials": [i.to_json() for i in infos]})
            times.append(time.perf_counter() - start)
        print(f"page of 100 after {after}: handler work p50 {statistics.median(times) * 1e3:.2f} ms (in-process)")
    vault.close()
    server.args.append(f"--KeyVault.owner={owner}")
    with server:
        print(f"jupyter server on 127.0.0.1, 1,000 stored credentials, {args.requests} requests per case, "
              f"concurrency {args.concurrency}, 2-core machine shared by client and server")
        asyncio.run(run(server, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
