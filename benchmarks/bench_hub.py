"""The keyvault hub service under sustained load, on SQLite and on PostgreSQL, in one run.

A real JupyterHub starts the service (as a hub-managed service). The store holds USERS hub
users x CREDS credentials each (seeded through the Vault before the service starts); every
user has a JupyterHub token. CLIENTS concurrent clients, each request as a random user,
keep the service busy for SECONDS per scenario:

- list:   GET  {service}/api/credentials                  (token check, groups, personal + shared)
- proxy:  POST {service}/proxy/openai/v1/chat/completions (+ quota checks, usage counting, key injection)
- direct: POST {fake upstream}/v1/chat/completions         (the same request without the service)

Requests go straight to the service's port, as single-user servers call it.

    python benchmarks/bench_hub.py [--users 1000] [--creds 5] [--clients 50] [--seconds 15]
                                   [--backends sqlite,postgresql]
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

from jupyter_keyvault.hub.config import keyvault_service_config
from jupyter_keyvault.store import Vault
from jupyter_keyvault.store.sql import SQLBackend
from jupyter_keyvault.testing.hub import JupyterHubHarness, http, missing_requirements
from jupyter_keyvault.testing.live_server import free_port

VALID_KEY = "sk-proj-" + "B3NCH" * 8
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def start_upstream() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_keyvault.testing.fake_upstream", "--key", VALID_KEY],
                            stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    return proc, url


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


def make_hub_users(hub: JupyterHubHarness, users: int) -> list[str]:
    names = [f"u{u:04d}" for u in range(users)]
    for i in range(0, users, 200):
        hub.api("POST", "users", {"usernames": names[i:i + 200]}, expect=(201, 409))
    return [hub.user_token(n) for n in names]


async def load(name: str, method: str, url: str, tokens: list[str], clients: int, seconds: float,
               body: dict | None = None, direct: bool = False) -> dict:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker():
            while time.perf_counter() < deadline:
                if direct:
                    headers = {"Authorization": f"Bearer {VALID_KEY}"}
                else:
                    headers = {"Authorization": f"token {random.choice(tokens)}"}  # nosec B311 - load spread
                t0 = time.perf_counter()
                async with session.request(method, url, json=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[status] = errors.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    latencies.sort()
    n = len(latencies)
    return {
        "scenario": name, "requests": n, "rps": n / seconds, "errors": errors,
        "p50_ms": 1000 * statistics.median(latencies) if n else float("nan"),
        "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan"),
    }


async def warm_up(url: str, tokens: list[str], clients: int) -> None:
    queue = list(tokens)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def worker():
            while queue:
                token = queue.pop()
                async with session.get(url, headers={"Authorization": f"token {token}"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"warm-up: {resp.status} {await resp.text()}")

        await asyncio.gather(*(worker() for _ in range(clients)))


def run_backend(backend: str, db_url: str, args, upstream_url: str) -> list[dict]:
    master_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    seconds_seeding = seed(db_url, master_key, args.users, args.creds)
    print(f"[{backend}] seeded {args.users} users x {args.creds} credentials in {seconds_seeding:.1f} s", flush=True)
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="kv-bench-service-")
    service, roles, user_env = keyvault_service_config(
        port=port, master_key=master_key, data_dir=data_dir, db_url=db_url,
        extra_args=[f"--KeyVaultHubService.provider_base_urls=openai={upstream_url}/v1",
                    "--KeyVaultHubService.user_rate_per_minute=0", "--log-level=WARN"])
    hub = JupyterHubHarness(services=[service], load_roles=roles, user_env=user_env)
    hub.start()
    try:
        t0 = time.perf_counter()
        tokens = make_hub_users(hub, args.users)
        print(f"[{backend}] {args.users} hub users and tokens in {time.perf_counter() - t0:.1f} s", flush=True)
        base = f"http://127.0.0.1:{port}/services/keyvault/"
        for _ in range(300):
            if http("GET", base + "api/status", token=tokens[0]).status == 200:
                break
            time.sleep(0.2)
        # Every token once: the service's token and group caches are then warm, as on a running hub.
        t0 = time.perf_counter()
        asyncio.run(warm_up(base + "api/credentials", tokens, args.clients))
        print(f"[{backend}] first request of each user (token + groups looked up at the hub): "
              f"{time.perf_counter() - t0:.1f} s for {len(tokens)}", flush=True)
        results = []
        for name, method, url, body, direct in (
            ("list", "GET", base + "api/credentials", None, False),
            ("proxy", "POST", base + "proxy/openai/v1/chat/completions", CHAT, False),
            ("direct", "POST", upstream_url + "/v1/chat/completions", CHAT, True),
        ):
            result = asyncio.run(load(name, method, url, tokens, args.clients, args.seconds, body, direct))
            result["backend"] = backend
            results.append(result)
            print(f"[{backend}] {name:6s} {result['requests']:6d} req  {result['rps']:7.1f} req/s  "
                  f"p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  errors {result['errors']}",
                  flush=True)
        return results
    finally:
        hub.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--creds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--backends", default="sqlite,postgresql")
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
                results += run_backend("sqlite", db_url, args, upstream_url)
            elif backend == "postgresql":
                from jupyter_keyvault.testing.postgres import PostgresCluster, PostgresUnavailable

                try:
                    cluster = PostgresCluster.start()
                except PostgresUnavailable as exc:
                    print(f"[postgresql] skipped: {exc}")
                    continue
                with cluster:
                    results += run_backend("postgresql", cluster.create_database(), args, upstream_url)
    finally:
        upstream.terminate()
        upstream.wait(10)
    print()
    print(f"{args.users} users x {args.creds} credentials, {args.clients} concurrent clients, {args.seconds:g} s each")
    print("| backend | scenario | req/s | p50 ms | p99 ms | p50 / direct p50 |")
    print("|---|---|---|---|---|---|")
    for backend in dict.fromkeys(r["backend"] for r in results):
        rows = [r for r in results if r["backend"] == backend]
        direct = next(r for r in rows if r["scenario"] == "direct")
        for r in rows:
            ratio = r["p50_ms"] / direct["p50_ms"] if direct["p50_ms"] else float("nan")
            print(f"| {backend} | {r['scenario']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                  f"{ratio:.1f}x |")


if __name__ == "__main__":
    main()
