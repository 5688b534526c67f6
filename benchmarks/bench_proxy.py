"""Direct vs proxied, in one run: what the keyvault proxy adds.

A fake OpenAI-compatible upstream and a real jupyter server run as separate
processes on 127.0.0.1; a kernel is started through the server and its session key
signs each proxied request (as the kernel helper does).

Prints: added latency p50/p99 for a small request, added time to first streamed
chunk, upstream TCP connections per 100 sequential proxied requests, and 100
concurrent streams through the proxy with their error count.

    python benchmarks/bench_proxy.py [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from jupyter_keyvault.kernel_auth import make_credential  # noqa: E402
from jupyter_keyvault.store import SQLiteBackend, Vault  # noqa: E402
from jupyter_keyvault.testing.live_server import JupyterServer  # noqa: E402

KEY = "sk-proj-" + "B3NCH" * 8
CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


def start_upstream(chunk_interval: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_keyvault.testing.fake_upstream", "--port", "0", "--key", KEY,
                             "--chunk-interval", str(chunk_interval), "--n-chunks", "5"],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def stats(upstream_url: str) -> dict:
    with urllib.request.urlopen(upstream_url + "/_stats") as resp:
        return json.loads(resp.read())


class Path_:
    """A keep-alive HTTP/1.1 client for one base URL, timing each request."""

    def __init__(self, base: str, auth):
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port)
        self.prefix = parts.path.rstrip("/")
        self.auth = auth

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[float, float, int]:
        """(seconds to first body byte, seconds total, status)."""
        headers = {"Authorization": self.auth(), "Content-Type": "application/json"}
        start = time.perf_counter()
        self.conn.request(method, self.prefix + path, body=body, headers=headers)
        resp = self.conn.getresponse()
        resp.read1(65536)
        t_first = time.perf_counter() - start
        resp.read()
        return t_first, time.perf_counter() - start, resp.status


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1e3


async def concurrent_streams(url: str, auth, n: int) -> tuple[int, int, float]:
    errors = chunks = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one():
            nonlocal errors, chunks
            try:
                async with session.post(url + "/chat/completions", data=CHAT,
                                        headers={"Authorization": auth(), "Content-Type": "application/json"}) as r:
                    if r.status != 200:
                        errors += 1
                        return
                    async for line in r.content:
                        chunks += line.startswith(b"data: {")
            except aiohttp.ClientError:
                errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return errors, chunks, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--streams", type=int, default=100)
    args = ap.parse_args()
    upstream, upstream_url = start_upstream(chunk_interval=0.02)
    server = JupyterServer(f"--KeyVault.provider_base_urls=openai={upstream_url}/v1",
                           "--KeyVault.owner=bench", "--ServerApp.log_level=WARN")
    vault = Vault(SQLiteBackend(server.vault_path), env={"KEYVAULT_MASTER_KEY": server.master_key})
    vault.set("bench", "OPENAI_API_KEY", KEY, provider="openai")
    vault.close()
    try:
        with server:
            req = urllib.request.Request(server.url + "/api/kernels", data=b"{}", headers=server.headers, method="POST")
            kernel_id = json.loads(urllib.request.urlopen(req).read())["id"]
            conn_file = Path(server.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json"
            session_key = json.loads(conn_file.read_text())["key"].encode()

            def kernel_auth() -> str:
                return "Bearer " + make_credential(kernel_id, session_key, int(time.time()), secrets.token_hex(16))

            direct = Path_(upstream_url + "/v1", lambda: f"Bearer {KEY}")
            proxied = Path_(server.url + "/keyvault/proxy/openai/v1", kernel_auth)
            for client in (direct, proxied):  # warm up: connections, caches, the kernel credential path
                for _ in range(50):
                    assert client.request("GET", "/models")[2] == 200

            small = {"direct": [], "proxied": []}
            ttfc = {"direct": [], "proxied": []}
            for _ in range(args.requests):  # interleaved so drift hits both paths alike
                for label, client in (("direct", direct), ("proxied", proxied)):
                    small[label].append(client.request("GET", "/models")[1])
            for _ in range(100):
                for label, client in (("direct", direct), ("proxied", proxied)):
                    t_first, _, status = client.request("POST", "/chat/completions", CHAT)
                    assert status == 200
                    ttfc[label].append(t_first)

            before = stats(upstream_url)["connections_opened"]
            for _ in range(100):
                proxied.request("GET", "/models")
            opened = stats(upstream_url)["connections_opened"] - before - 1  # minus the stats call's own

            errors, chunks, wall = asyncio.run(concurrent_streams(server.url + "/keyvault/proxy/openai/v1", kernel_auth,
                                                                  args.streams))
    finally:
        upstream.terminate()

    d50, p50 = pct(small["direct"], 0.5), pct(small["proxied"], 0.5)
    d99, p99 = pct(small["direct"], 0.99), pct(small["proxied"], 0.99)
    f50, g50 = pct(ttfc["direct"], 0.5), pct(ttfc["proxied"], 0.5)
    print(f"small request (GET /v1/models), {args.requests} sequential, keep-alive:")
    print(f"  direct  p50 {d50:6.2f} ms  p99 {d99:6.2f} ms")
    print(f"  proxied p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   added p50 {p50 - d50:+.2f} ms  p99 {p99 - d99:+.2f} ms"
          f"  (ratio p50 {p50 / d50:.2f}x)   goal: added p50 <= 1.5 ms")
    print("time to first streamed chunk (chat, stream=true), 100 each:")
    print(f"  direct  p50 {f50:6.2f} ms   proxied p50 {g50:6.2f} ms   added {g50 - f50:+.2f} ms"
          f"   goal: <= 1.5 ms")
    print(f"upstream TCP connections opened per 100 sequential proxied requests: {opened}   goal: <= 2")
    print(f"{args.streams} concurrent streams through the proxy: {errors} errors, {chunks} chunks, {wall:.2f} s")


if __name__ == "__main__":
    main()
