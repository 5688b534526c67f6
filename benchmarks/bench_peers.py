"""The keyvault proxy side by side with direct calls, a bare Python hop and the proxies people pick.

One run, every path against the same fake OpenAI upstream (a separate process on 127.0.0.1):

- direct: the openai SDK straight to the upstream;
- keyvault (kernel): the proxy with a kernel credential (kvk1), signed per request by the same
  `KernelAuth` that `keyvault.openai()` uses in a kernel, on the loopback lane kernels are given
  (server/lane.py) and on the Jupyter server's URL (where kernels go with the lane off, or remote);
- keyvault (token): the proxy with a vault access token (kvt1) as the SDK's api_key, on the Jupyter
  server's URL (a tool outside holding a token) and on the lane (`keyvault.env` in a kernel);
- floor: a bare aiohttp reverse proxy written for this benchmark (`--floor-proxy`), the least a
  Python hop costs;
- bare tornado proxy: the same hop in a plain tornado handler (`--tornado-proxy`), what any proxy
  hosted by jupyter_server cannot go below;
- jupyter-server-proxy and LiteLLM proxy when installed in `--peers-python`'s environment (a
  separate venv keeps their pins out of ours), skipped with a line saying so otherwise.

Measured, rounds interleaved (each round calls every path once, in a shuffled order) so a noisy
machine hits all paths alike: small-request p50/p99 (openai SDK non-streaming chat POST over
keep-alive), time to first chunk and chunk spacing (streams of 10 chunks 20 ms apart), upstream
connections per 100 requests and the CPU time each proxy process spends per request (user + system, so
other load on the machine does not inflate it), 100 and 500 concurrent streams (wall time, errors; paths in turn),
RSS of each proxy process next to a bare jupyter server's.

    python benchmarks/bench_peers.py [--quick] [--rounds 300] [--peers-python .venv-peers/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

import aiohttp

KEY = "sk-proj-" + "P33R5" * 8
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hi"}]
STREAM_BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode()
HERE = Path(__file__).resolve().parent


# -- the floor: a bare aiohttp reverse proxy (run in its own process with --floor-proxy PORT UPSTREAM)
def serve_floor_proxy(port: int, upstream: str) -> None:
    from aiohttp import web

    drop = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

    async def handle(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in drop}
        headers["Authorization"] = f"Bearer {KEY}"  # what any key-injecting proxy does
        body = await request.read()
        async with session.request(request.method, upstream + request.path_qs, data=body or None,
                                   headers=headers, allow_redirects=False) as up:
            response = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() not in drop and k.lower() != "content-encoding":
                    response.headers[k] = v
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(auto_decompress=False,
                                               connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", handle)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the same hop hosted by tornado (what jupyter_server runs on), to tell the host's cost from ours
def serve_tornado_proxy(port: int, upstream: str) -> None:
    import tornado.ioloop
    import tornado.web

    drop = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}

    class Relay(tornado.web.RequestHandler):
        async def post(self, path: str) -> None:
            headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in drop}
            headers["Authorization"] = f"Bearer {KEY}"
            async with self.settings["session"].request(self.request.method, upstream + self.request.uri,
                                                        data=self.request.body or None, headers=headers) as up:
                self.set_status(up.status)
                for k, v in up.headers.items():
                    if k.lower() not in drop:
                        self.add_header(k, v)
                async for chunk in up.content.iter_any():
                    self.write(chunk)
                    if not up.content.at_eof():
                        await self.flush()
                self.finish()

        get = post

    async def start() -> None:
        session = aiohttp.ClientSession(auto_decompress=False,
                                        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))
        tornado.web.Application([(r"(/.*)", Relay)], session=session).listen(port, "127.0.0.1")
        print("ready", flush=True)

    loop = tornado.ioloop.IOLoop.current()
    loop.add_callback(start)
    loop.start()


# -- processes
PORTS = range(9300, 9400)  # this benchmark's share of the machine's ports (--ports)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port of PORTS nothing listens on and not given out before (a server may not bind its own yet)."""
    import socket

    for port in random.sample(PORTS, len(PORTS)):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # answering at all is enough
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:g} s")


CPU_REQUESTS = 300


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads): unlike latency, not inflated by other load."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bare_jupyter_args(python: str, port: int, root: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """A jupyter server without our extension, no auth (127.0.0.1 only, for a benchmark)."""
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_keyvault": False}}}))
    return [python, "-m", "jupyter_server", "--allow-root", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={root}", "--ServerApp.log_level=WARN", *extra]


def jupyter_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "JUPYTER_"))}
    env.update(HOME=str(root), JUPYTER_CONFIG_DIR=str(root / "config"), JUPYTER_DATA_DIR=str(root / "data"),
               JUPYTER_RUNTIME_DIR=str(root / "runtime"), JUPYTER_PLATFORM_DIRS="1")
    return env


def has_module(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


class Path_:
    """One way to reach the upstream: an openai SDK client, and raw headers for aiohttp."""

    def __init__(self, label: str, base_url: str, client, headers: Callable[[], dict], pid: int | None = None):
        self.label, self.base_url, self.client, self.headers, self.pid = label, base_url, client, headers, pid
        self.small: list[float] = []
        self.ttfc: list[float] = []
        self.gaps: list[float] = []
        self.conns_per_100: int | None = None
        self.cpu_ms: float | None = None
        self.streams: dict[int, tuple[int, float]] = {}
        self.rss: float | None = None

    def small_request(self) -> None:
        start = time.perf_counter()
        reply = self.client.chat.completions.create(model=MODEL, messages=MESSAGES)
        self.small.append(time.perf_counter() - start)
        assert reply.choices[0].message.content, self.label

    def stream(self) -> None:
        start = time.perf_counter()
        arrivals = []
        for chunk in self.client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter())
        assert len(arrivals) == 10, (self.label, len(arrivals))
        self.ttfc.append(arrivals[0] - start)
        self.gaps.extend(b - a for a, b in itertools.pairwise(arrivals))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1e3


def upstream_connections(upstream_url: str) -> int:
    with urllib.request.urlopen(upstream_url + "/_stats") as resp:
        return json.loads(resp.read())["connections_opened"]


async def concurrent_streams(path: Path_, n: int) -> tuple[int, float]:
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> None:
            nonlocal errors
            try:
                async with session.post(path.base_url + "/chat/completions", data=STREAM_BODY,
                                        headers={**path.headers(), "Content-Type": "application/json"}) as r:
                    body = await r.read()
                    if r.status != 200 or body.count(b'"content"') < 10:
                        errors += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return errors, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300, help="interleaved small-request rounds")
    ap.add_argument("--stream-rounds", type=int, default=100,
                    help="interleaved streaming rounds (the p50 of 30 moved by 0.3 ms between runs)")
    ap.add_argument("--quick", action="store_true", help="CI size: 30 rounds, 5 stream rounds, 100 streams only")
    default_peers = HERE.parent / ".venv-peers" / "bin" / "python"
    ap.add_argument("--peers-python", default=str(default_peers if default_peers.exists() else sys.executable),
                    help="the Python whose environment has jupyter-server-proxy and litellm (a separate venv)")
    ap.add_argument("--ports", default="9300-9399", help="port range for the servers this benchmark starts")
    ap.add_argument("--floor-proxy", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    ap.add_argument("--tornado-proxy", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_proxy:
        serve_floor_proxy(int(args.floor_proxy[0]), args.floor_proxy[1])
        return
    if args.tornado_proxy:
        serve_tornado_proxy(int(args.tornado_proxy[0]), args.tornado_proxy[1])
        return
    global PORTS
    low, high = (int(x) for x in args.ports.split("-"))
    PORTS = range(low, high + 1)
    if args.quick:
        args.rounds, args.stream_rounds = 30, 5
    concurrency = (100,) if args.quick else (100, 500)

    import compileall

    import openai

    import jupyter_keyvault
    from jupyter_keyvault.kernel.auth import KernelAuth
    from jupyter_keyvault.kernel.clients import _proxy_http_client
    from jupyter_keyvault.kernel.identity import KernelIdentity
    from jupyter_keyvault.kernel_auth import make_credential
    from jupyter_keyvault.store import SQLiteBackend, Vault
    from jupyter_keyvault.store.tokens import TokenStore
    from jupyter_keyvault.testing.live_server import JupyterServer

    # As `pip install` does, so every server imports our modules as an installed one would (from a
    # checkout with stale .pyc files and PYTHONDONTWRITEBYTECODE, each start compiles them again).
    compileall.compile_dir(Path(jupyter_keyvault.__file__).parent, quiet=1)
    procs: list[subprocess.Popen] = []
    skipped: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="kv-peers-"))

    def start(cmd: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, **kw)
        procs.append(proc)
        return proc

    upstream = start([sys.executable, "-m", "jupyter_keyvault.testing.fake_upstream", "--port", str(free_port()), "--key", KEY,
                      "--chunk-interval", "0.02", "--n-chunks", "10"], stdout=subprocess.PIPE, text=True)
    upstream_url = upstream.stdout.readline().strip()
    kv_port, lane_port = free_port(), free_port()
    server = JupyterServer(f"--KeyVault.provider_base_urls=openai={upstream_url}/v1", "--KeyVault.owner=bench",
                           "--ServerApp.log_level=WARN", f"--KeyVault.loopback_proxy_port={lane_port}")
    server.port, server.url = kv_port, f"http://127.0.0.1:{kv_port}"
    server.args = [f"--port={kv_port}" if a.startswith("--port=") else a for a in server.args]
    vault = Vault(SQLiteBackend(server.vault_path), env={"KEYVAULT_MASTER_KEY": server.master_key})
    vault.set("bench", "OPENAI_API_KEY", KEY, provider="openai")
    token, _ = TokenStore(vault).create("bench", "bench", ["OPENAI_API_KEY"], 86400)
    vault.close()
    paths: list[Path_] = []
    try:
        server.start()
        kv_rss_idle = rss_mib(server.proc.pid)
        req = urllib.request.Request(server.url + "/api/kernels", data=b"{}", headers=server.headers, method="POST")
        kernel_id = json.loads(urllib.request.urlopen(req).read())["id"]
        conn_file = Path(server.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json"
        session_key = json.loads(conn_file.read_text())["key"].encode()
        identity = KernelIdentity(server.url, kernel_id, session_key)
        proxy_url = server.url + "/keyvault/proxy/openai/v1"
        lane_url = f"http://127.0.0.1:{lane_port}/keyvault/proxy/openai/v1"

        def sdk(base_url: str, api_key: str, **kw) -> openai.OpenAI:
            return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, **kw)

        def kernel_headers() -> dict:
            return {"Authorization": "Bearer " + make_credential(kernel_id, session_key, int(time.time()),
                                                                 secrets.token_hex(16))}

        paths.append(Path_("direct", upstream_url + "/v1", sdk(upstream_url + "/v1", KEY),
                           lambda: {"Authorization": f"Bearer {KEY}"}))
        for label, url in (("loopback lane", lane_url), ("Jupyter URL", proxy_url)):
            paths.append(Path_(f"keyvault, kernel (kvk1), {label}", url,
                               sdk(url, "placeholder",
                                   http_client=_proxy_http_client(openai, KernelAuth(identity), False)),
                               kernel_headers, server.proc.pid))
            paths.append(Path_(f"keyvault, token (kvt1), {label}", url, sdk(url, token),
                               lambda: {"Authorization": f"Bearer {token}"}, server.proc.pid))

        floor_port = free_port()
        floor = start([sys.executable, __file__, "--floor-proxy", str(floor_port), upstream_url],
                      stdout=subprocess.PIPE, text=True)
        floor.stdout.readline()
        floor_url = f"http://127.0.0.1:{floor_port}/v1"
        wait_http(floor_url + "/models", 30, floor)
        paths.append(Path_("floor: bare aiohttp proxy", floor_url, sdk(floor_url, "unused"),
                           lambda: {"Authorization": "Bearer unused"}, floor.pid))
        tornado_port = free_port()
        hop = start([sys.executable, __file__, "--tornado-proxy", str(tornado_port), upstream_url],
                    stdout=subprocess.PIPE, text=True)
        hop.stdout.readline()
        tornado_url = f"http://127.0.0.1:{tornado_port}/v1"
        wait_http(tornado_url + "/models", 30, hop)
        paths.append(Path_("bare tornado proxy (jupyter_server's host)", tornado_url, sdk(tornado_url, "unused"),
                           lambda: {"Authorization": "Bearer unused"}, hop.pid))

        bare_root = work / "bare"
        bare_port = free_port()
        bare = start(bare_jupyter_args(sys.executable, bare_port, bare_root), env=jupyter_env(bare_root),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{bare_port}/api/status", 60, bare)

        peers = args.peers_python
        if has_module(peers, "jupyter_server_proxy"):
            jsp_root = work / "jsp"
            jsp_port = free_port()
            jsp = start(bare_jupyter_args(peers, jsp_port, jsp_root), env=jupyter_env(jsp_root),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            upstream_port = upstream_url.rsplit(":", 1)[1]
            jsp_url = f"http://127.0.0.1:{jsp_port}/proxy/127.0.0.1:{upstream_port}/v1"
            wait_http(f"http://127.0.0.1:{jsp_port}/api/status", 60, jsp)
            paths.append(Path_("jupyter-server-proxy", jsp_url, sdk(jsp_url, KEY),
                               lambda: {"Authorization": f"Bearer {KEY}"}, jsp.pid))
        else:
            skipped.append(f"jupyter-server-proxy: not installed for {peers}")

        litellm_bin = Path(peers).parent / "litellm"
        if litellm_bin.exists():
            cfg = work / "litellm.yaml"
            cfg.write_text(json.dumps({"model_list": [{"model_name": MODEL, "litellm_params": {
                "model": f"openai/{MODEL}", "api_base": upstream_url + "/v1", "api_key": KEY}}]}))
            ll_port = free_port()
            ll_key = "sk-" + secrets.token_hex(32)  # it refuses to start without one; checked per request
            ll = start([str(litellm_bin), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(ll_port),
                        "--num_workers", "1"],
                       env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                            "LITELLM_MASTER_KEY": ll_key},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
            wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", 120, ll)
            ll_url = f"http://127.0.0.1:{ll_port}/v1"
            paths.append(Path_("LiteLLM proxy", ll_url, sdk(ll_url, ll_key),
                               lambda: {"Authorization": f"Bearer {ll_key}"}, ll.pid))
        else:
            skipped.append(f"LiteLLM proxy: no litellm next to {peers}")

        for path in paths:  # warm up: connections, caches, imports on the peers' side
            for _ in range(20):
                path.small_request()
            path.stream()
            path.ttfc.clear()
            path.gaps.clear()
            path.small.clear()

        for _ in range(args.rounds):
            for path in random.sample(paths, len(paths)):
                path.small_request()
        for _ in range(args.stream_rounds):
            for path in random.sample(paths, len(paths)):
                path.stream()
        for path in paths:  # one path at a time: connections it opens, CPU its process spends
            before, cpu = upstream_connections(upstream_url), cpu_seconds(path.pid)
            for _ in range(CPU_REQUESTS):
                path.small_request()
            path.cpu_ms = (cpu_seconds(path.pid) - cpu) / CPU_REQUESTS * 1e3 if path.pid else None
            opened = upstream_connections(upstream_url) - before - 1  # minus the stats call's own
            path.conns_per_100 = round(opened * 100 / CPU_REQUESTS)
        for n in concurrency:
            for path in random.sample(paths, len(paths)):
                path.streams[n] = asyncio.run(concurrent_streams(path, n))
        for path in paths:
            path.rss = rss_mib(path.pid) if path.pid else None
        bare_rss = rss_mib(bare.pid)
    finally:
        for path in paths:
            path.client.close()
        server.stop()
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    report(paths, args, concurrency, skipped, bare_rss, kv_rss_idle)


def report(paths: list[Path_], args, concurrency: tuple[int, ...], skipped: list[str], bare_rss: float,
           kv_rss_idle: float) -> None:
    direct = paths[0]
    d50, d99, dttfc = pct(direct.small, 0.5), pct(direct.small, 0.99), pct(direct.ttfc, 0.5)
    print(f"{args.rounds} interleaved rounds of an openai SDK chat POST (keep-alive), {args.stream_rounds} of a "
          f"10-chunk stream 20 ms apart; {os.cpu_count()} cores, other work on the machine\n")
    cols = ["path", "p50", "p99", "added p50", "added p99", "TTFC p50", "added TTFC", "chunk gap p50/max",
            "upstream conns /100", "proxy CPU /request"] + [f"{n} streams" for n in concurrency] + ["RSS"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for p in paths:
        row = [p.label, f"{pct(p.small, .5):.2f} ms", f"{pct(p.small, .99):.2f} ms",
               "" if p is direct else f"{pct(p.small, .5) - d50:+.2f} ms",
               "" if p is direct else f"{pct(p.small, .99) - d99:+.2f} ms",
               f"{pct(p.ttfc, .5):.2f} ms", "" if p is direct else f"{pct(p.ttfc, .5) - dttfc:+.2f} ms",
               f"{pct(p.gaps, .5):.1f}/{max(p.gaps) * 1e3:.1f} ms", str(p.conns_per_100),
               "" if p.cpu_ms is None else f"{p.cpu_ms:.2f} ms"]
        row += [f"{p.streams[n][0]} errors, {p.streams[n][1]:.2f} s" for n in concurrency]
        row.append(f"{p.rss:.0f} MiB" if p.rss else "")
        print("| " + " | ".join(row) + " |")
    print(f"| bare jupyter server (no extension, idle) | | | | | | | | | | {'| ' * len(concurrency)}"
          f"{bare_rss:.0f} MiB |")
    for line in skipped:
        print(f"skipped {line}")

    floor = next(p for p in paths if p.label.startswith("floor"))
    f50, f99, fttfc = pct(floor.small, .5), pct(floor.small, .99), pct(floor.ttfc, .5)
    print("\ngoals (added over direct, against the floor's added):")
    for p in paths:
        if not p.label.startswith("keyvault"):
            continue
        checks = [("p50 <= floor + 0.5 ms", pct(p.small, .5) - f50, 0.5),
                  ("TTFC <= floor + 0.5 ms", pct(p.ttfc, .5) - fttfc, 0.5),
                  ("p99 <= floor + 2 ms", pct(p.small, .99) - f99, 2.0)]
        for name, over, limit in checks:
            print(f"  {p.label}: {name}: {over:+.2f} ms over the floor -> {'met' if over <= limit else 'NOT met'}")
    n = max(concurrency)
    kv = next(p for p in paths if p.label.startswith("keyvault, token"))
    for p in (q for q in paths if q.label.startswith("keyvault")):
        ratio = p.streams[n][1] / floor.streams[n][1]
        ok = p.streams[n][0] == 0 and ratio <= 1.3
        print(f"  {p.label}: {n} streams: {p.streams[n][0]} errors, {ratio:.2f}x the floor's wall time "
              f"-> {'met' if ok else 'NOT met'} (goal 0 errors, <= 1.3x)")
    growth = (kv.rss or 0) - bare_rss
    print(f"  RSS: keyvault server {kv.rss:.0f} MiB after the run ({kv_rss_idle:.0f} MiB idle at start), bare jupyter "
          f"server {bare_rss:.0f} MiB: +{growth:.0f} MiB -> {'met' if growth <= 20 else 'NOT met'} (goal <= 20 MiB)")


if __name__ == "__main__":
    main()
