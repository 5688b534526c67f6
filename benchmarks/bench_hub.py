"""The keyvault hub service under load, on SQLite and on PostgreSQL, 1 and 2 replicas, in one run.

A real JupyterHub checks every token (the service is registered with it as an externally
managed service); the service runs as 1 or 2 replica processes on the one database
(testing/replicas.py). The store holds USERS hub users x CREDS credentials each (seeded
through the Vault before the service starts); every user has a JupyterHub token.

Scenarios, each request as a random user, straight to the replicas' ports (as user servers,
or a Kubernetes Service, reach them):

- list:   GET  {service}/api/credentials                  (token check, groups, personal + shared)
- proxy:  POST {service}/proxy/openai/v1/chat/completions (+ limits as DB counters, usage, key injection)
- direct: POST {fake upstream}/v1/chat/completions         (the same request without the service)

Two load shapes: closed loop (CLIENTS clients always waiting: throughput) and open loop (a
fixed arrival rate, RATE req/s, latency measured from each request's scheduled time, so a
stall is not hidden). CPU per request is read from the processes' own counters
(/proc/<pid>/stat utime+stime of the replicas; of the fake upstream for direct).

    python benchmarks/bench_hub.py [--users 1000] [--creds 5] [--clients 50] [--seconds 15]
                                   [--rate 200] [--backends sqlite,postgresql] [--replicas 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

from jupyter_keyvault.store import Vault
from jupyter_keyvault.store.sql import SQLBackend
from jupyter_keyvault.testing.hub import http, missing_requirements
from jupyter_keyvault.testing.replicas import ServiceReplicas

VALID_KEY = "sk-proj-" + "B3NCH" * 8
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
TICK = os.sysconf("SC_CLK_TCK")


def start_upstream() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_keyvault.testing.fake_upstream", "--key", VALID_KEY],
                            stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    return proc, url


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return total / TICK


def seed(db_url: str, master_key: str, users: int, creds: int) -> float:
    start = time.perf_counter()
    vault = Vault(SQLBackend(db_url), env={"KEYVAULT_MASTER_KEY": master_key}, preferred_source="env",
                  use_keyring=False)
    for u in range(users):
        owner = f"user:u{u:04d}"
        vault.set(owner, "OPENAI_API_KEY", VALID_KEY, provider="openai")
        for c in range(1, creds):
            vault.set(owner, f"KEY_{c}", f"sk-proj-{u:04d}{c:02d}" + "x" * 40, provider="openai")
    vault.close()
    return time.perf_counter() - start


def make_hub_users(hub, users: int) -> list[str]:
    names = [f"u{u:04d}" for u in range(users)]
    for i in range(0, users, 200):
        hub.api("POST", "users", {"usernames": names[i:i + 200]}, expect=(201, 409))
    return [hub.user_token(n) for n in names]


def _headers(tokens: list[str], direct: bool) -> dict:
    if direct:
        return {"Authorization": f"Bearer {VALID_KEY}"}
    return {"Authorization": f"token {random.choice(tokens)}"}  # nosec B311 - load spread


def _summary(latencies: list[float], errors: dict, seconds: float, cpu: float, sent: int) -> dict:
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "rps": n / seconds, "errors": errors,
            "p50_ms": 1000 * statistics.median(latencies) if n else float("nan"),
            "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan"),
            "cpu_ms": 1000 * cpu / sent if sent else float("nan")}


async def closed_loop(method: str, urls: list[str], tokens: list[str], clients: int, seconds: float,
                      body: dict | None, direct: bool, pids: list[int]) -> dict:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    sent = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu0 = cpu_seconds(pids)
        deadline = time.perf_counter() + seconds

        async def worker(w: int):
            nonlocal sent
            url = urls[w % len(urls)]
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.request(method, url, json=body, headers=_headers(tokens, direct)) as resp:
                    await resp.read()
                    status = resp.status
                sent += 1
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[status] = errors.get(status, 0) + 1

        await asyncio.gather(*(worker(w) for w in range(clients)))
        cpu = cpu_seconds(pids) - cpu0
    return _summary(latencies, errors, seconds, cpu, sent)


async def open_loop(method: str, urls: list[str], tokens: list[str], rate: float, seconds: float,
                    body: dict | None, direct: bool, pids: list[int]) -> dict:
    """Request i is sent at t0 + i/rate whatever the earlier ones do; latency counts from that time."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    total = int(rate * seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        cpu0 = cpu_seconds(pids)
        t0 = time.perf_counter() + 0.05

        async def one(i: int):
            scheduled = t0 + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                async with session.request(method, urls[i % len(urls)], json=body,
                                           headers=_headers(tokens, direct)) as resp:
                    await resp.read()
                    status = resp.status
            except aiohttp.ClientError:
                status = 599
            if status == 200:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors[status] = errors.get(status, 0) + 1

        await asyncio.gather(*(one(i) for i in range(total)))
        cpu = cpu_seconds(pids) - cpu0
    return _summary(latencies, errors, seconds, cpu, total)


async def warm_up(urls: list[str], tokens: list[str], clients: int) -> None:
    queue = [(url, token) for url in urls for token in tokens]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def worker():
            while queue:
                url, token = queue.pop()
                async with session.get(url, headers={"Authorization": f"token {token}"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"warm-up: {resp.status} {await resp.text()}")

        await asyncio.gather(*(worker() for _ in range(clients)))


def run_backend(backend: str, db_url: str, args, upstream_url: str, upstream_pid: int) -> list[dict]:
    master_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    seconds_seeding = seed(db_url, master_key, args.users, args.creds)
    print(f"[{backend}] seeded {args.users} users x {args.creds} credentials in {seconds_seeding:.1f} s", flush=True)
    counts = [int(n) for n in args.replicas.split(",")]
    replicas = ServiceReplicas(max(counts), db_url, master_key=master_key, extra_args=[
        f"--KeyVaultHubService.provider_base_urls=openai={upstream_url}/v1",
        "--KeyVaultHubService.user_rate_per_minute=0", "--log-level=WARN"])
    replicas.start()
    try:
        t0 = time.perf_counter()
        tokens = make_hub_users(replicas.hub, args.users)
        print(f"[{backend}] {args.users} hub users and tokens in {time.perf_counter() - t0:.1f} s", flush=True)
        for _ in range(300):
            if http("GET", replicas.url(0) + "api/status", token=tokens[0]).status == 200:
                break
            time.sleep(0.2)
        results = []
        for count in counts:
            bases = [replicas.url(i) for i in range(count)]
            pids = [replicas.procs[i].pid for i in range(count)]
            # Every token once on each replica: token and group caches warm, as on a running hub.
            t0 = time.perf_counter()
            asyncio.run(warm_up([b + "api/credentials" for b in bases], tokens, args.clients))
            print(f"[{backend}] warm-up of {len(tokens)} tokens x {count} replica(s): {time.perf_counter() - t0:.1f} s",
                  flush=True)
            for shape in ("closed", "open"):
                for name, method, path, body, direct in (
                    ("list", "GET", "api/credentials", None, False),
                    ("proxy", "POST", "proxy/openai/v1/chat/completions", CHAT, False),
                    ("direct", "POST", "/v1/chat/completions", CHAT, True),
                ):
                    urls = [upstream_url + path] if direct else [b + path for b in bases]
                    measured = [upstream_pid] if direct else pids
                    if shape == "closed":
                        result = asyncio.run(closed_loop(method, urls, tokens, args.clients, args.seconds, body,
                                                         direct, measured))
                    else:
                        result = asyncio.run(open_loop(method, urls, tokens, args.rate, args.seconds, body, direct,
                                                       measured))
                    result.update(backend=backend, replicas=count, shape=shape, scenario=name)
                    results.append(result)
                    print(f"[{backend} x{count} {shape:6s}] {name:6s} {result['requests']:6d} req "
                          f"{result['rps']:7.1f} req/s  p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms"
                          f"  CPU {result['cpu_ms']:.2f} ms/req  errors {result['errors']}", flush=True)
        return results
    finally:
        replicas.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--creds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=200.0, help="arrival rate of the open-loop runs (req/s)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--replicas", default="1,2", help="replica counts to run (SQLite: 1 only)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up the hub and PostgreSQL on kill
    reason = missing_requirements()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    upstream, upstream_url = start_upstream()
    results = []
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                db_url = "sqlite:///" + os.path.join(tempfile.mkdtemp(prefix="kv-bench-"), "hub.sqlite")
                one = argparse.Namespace(**{**vars(args), "replicas": "1"})  # SQLite: one replica
                results += run_backend("sqlite", db_url, one, upstream_url, upstream.pid)
            elif backend == "postgresql":
                from jupyter_keyvault.testing.postgres import PostgresCluster, PostgresUnavailable

                try:
                    cluster = PostgresCluster.start()
                except PostgresUnavailable as exc:
                    print(f"[postgresql] skipped: {exc}")
                    continue
                with cluster:
                    results += run_backend("postgresql", cluster.create_database(), args, upstream_url, upstream.pid)
    finally:
        upstream.terminate()
        upstream.wait(10)
    print()
    print(f"{args.users} users x {args.creds} credentials; closed loop: {args.clients} clients, {args.seconds:g} s; "
          f"open loop: {args.rate:g} req/s for {args.seconds:g} s. CPU: ms of CPU per request of the replicas "
          "(of the fake upstream for direct)")
    print("| backend | replicas | load | scenario | req/s | p50 ms | p99 ms | CPU ms/req | p50 / direct p50 | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in dict.fromkeys((r["backend"], r["replicas"], r["shape"]) for r in results):
        rows = [r for r in results if (r["backend"], r["replicas"], r["shape"]) == key]
        direct = next(r for r in rows if r["scenario"] == "direct")
        for r in rows:
            ratio = r["p50_ms"] / direct["p50_ms"] if direct["p50_ms"] else float("nan")
            print(f"| {r['backend']} | {r['replicas']} | {r['shape']} | {r['scenario']} | {r['rps']:.0f} | "
                  f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_ms']:.2f} | {ratio:.1f}x | {r['errors'] or ''} |")


if __name__ == "__main__":
    main()
