"""The server's memory: a bare jupyter server and one with jupyter-keyvault, started the same way, side by side.

Both servers are the same `jupyter server` command from the same environment (every other installed
extension loads in both); the only difference is `jpserver_extensions={"jupyter_keyvault": ...}`.
RSS (and its anonymous and file-backed parts, from /proc/<pid>/smaps_rollup) is read:

- idle, a few seconds after start;
- after N sequential requests: ours proxies an openai chat POST (vault token) to a fake upstream in
  its own process; the bare server answers its own `GET /api/contents` (the nearest thing it has);
- after 100 and after 500 concurrent streams: ours relays 10-chunk SSE streams, 20 ms apart; the
  bare server gets the same number of concurrent connections, each a `GET /api/contents`;
- after `--settle` seconds (the proxy's idle upstream connections expire after 60 s).

Next to them, bench_peers' bare tornado hop (a tornado handler relaying with a pooled aiohttp client,
no jupyter_server) under the same requests: what any relay hosted by tornado keeps of a burst.

    python benchmarks/bench_rss.py [--requests 300] [--settle 65] [--ports 9600-9699]
    python benchmarks/bench_rss.py --imports   # what loading the extension imports, and what each costs

Our package's bytecode is compiled first, as `pip install` does: from a source checkout with stale
`.pyc` files and PYTHONDONTWRITEBYTECODE set, every import compiles the modules again. That moved
the in-process attribution (`--imports`: scrub.py's compile alone left ~5 MiB) though not, measured,
a whole server's RSS.

The figure the issue asks for (#16: growth over a bare jupyter server <= 20 MiB) is ours minus bare
at each step; "ours after load minus bare idle" is printed too, as bench_peers.py reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers  # noqa: E402  (free_port, wait_http, the fake upstream's key)

STREAM_BODY = bench_peers.STREAM_BODY
SMALL_BODY = json.dumps({"model": bench_peers.MODEL, "messages": bench_peers.MESSAGES}).encode()


def memory(pid: int) -> dict[str, float]:
    """RSS, and how much of it is anonymous (heap, stacks, copied-on-write pages) vs file-backed, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    return {"rss": fields["Rss"], "anon": fields["Anonymous"], "file": fields["Rss"] - fields["Anonymous"]}


async def sequential(url: str, n: int, headers: dict, body: bytes | None) -> int:
    errors = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            method = "POST" if body is not None else "GET"
            async with session.request(method, url, data=body, headers=headers) as r:
                await r.read()
                errors += r.status != 200
    return errors


async def concurrent(url: str, n: int, headers: dict, body: bytes | None, expect_chunks: int) -> int:
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> None:
            nonlocal errors
            try:
                method = "POST" if body is not None else "GET"
                async with session.request(method, url, data=body, headers=headers) as r:
                    got = await r.read()
                    if r.status != 200 or got.count(b'"content"') < expect_chunks:
                        errors += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                errors += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return errors


def imports_report() -> None:
    """In a fresh interpreter that has what a bare server imports, load the extension the way
    jupyter_server does and attribute the RSS it adds to the packages it pulls in."""
    code = r"""
import gc, importlib, json, sys
def rss_anon():
    fields = dict(line.split()[:2] for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
    return int(fields["Rss:"]) / 1024, int(fields["Anonymous:"]) / 1024
import jupyter_server.serverapp, jupyterlab, jupyter_lsp, jupyter_server_terminals, notebook_shim  # noqa
before = set(sys.modules); gc.collect(); r0, a0 = rss_anon()
steps = [("cryptography.hazmat.primitives.ciphers.aead",), ("ahocorasick", "jupyter_keyvault.scrub"),
         ("jupyter_keyvault.store",), ("jupyter_keyvault.server.app",), None, ("aiohttp",)]
rows, load = [], None
for step in steps:
    if step is None:  # everything above is the extension's load
        gc.collect(); r, a = rss_anon(); load = [r - r0, a - a0, sorted({m.split(".")[0] for m in set(sys.modules) - before})]
        continue
    gc.collect(); (r, a), n = rss_anon(), len(sys.modules)
    for m in step:
        importlib.import_module(m)
    gc.collect(); r2, a2 = rss_anon()
    rows.append((" + ".join(step), r2 - r, a2 - a, len(sys.modules) - n))
print(json.dumps({"rows": rows, "load": load}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)
    print("| imported (in this order, over a bare server's modules) | RSS | anonymous | modules |")
    print("|---|---|---|---|")
    rows = out["rows"]
    for name, rss, anon, count in rows[:-1]:
        print(f"| {name} | +{rss:.1f} MiB | +{anon:.1f} MiB | {count} |")
    print(f"| **the extension's load, total** | **+{out['load'][0]:.1f} MiB** | +{out['load'][1]:.1f} MiB | |")
    name, rss, anon, count = rows[-1]
    print(f"| then, at the first proxied request: {name} | +{rss:.1f} MiB | +{anon:.1f} MiB | {count} |")
    print("top-level packages the load adds:", ", ".join(out["load"][2]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300, help="sequential requests before the second reading")
    ap.add_argument("--settle", type=float, default=65, help="seconds to wait before the last reading (0: skip)")
    ap.add_argument("--ports", default="9600-9699", help="port range for the servers this benchmark starts")
    ap.add_argument("--imports", action="store_true", help="only attribute the extension's imports")
    ap.add_argument("--front", choices=("lane", "jupyter"), default="lane",
                    help="where our proxy is called: the loopback lane kernels use, or the Jupyter server's URL")
    args = ap.parse_args()
    import jupyter_keyvault

    compileall.compile_dir(Path(jupyter_keyvault.__file__).parent, quiet=1)
    if args.imports:
        imports_report()
        return
    low, high = (int(x) for x in args.ports.split("-"))
    bench_peers.PORTS = range(low, high + 1)
    free_port = bench_peers.free_port

    from jupyter_keyvault.store import SQLiteBackend, Vault
    from jupyter_keyvault.store.tokens import TokenStore
    from jupyter_keyvault.testing.live_server import JupyterServer

    key = bench_peers.KEY
    upstream = subprocess.Popen([sys.executable, "-m", "jupyter_keyvault.testing.fake_upstream", "--port",
                                 str(free_port()), "--key", key, "--chunk-interval", "0.02", "--n-chunks", "10"],
                                stdout=subprocess.PIPE, text=True)
    upstream_url = upstream.stdout.readline().strip()  # type: ignore[union-attr]

    lane_port = free_port()

    def server(enabled: bool) -> JupyterServer:
        s = JupyterServer(f"--KeyVault.provider_base_urls=openai={upstream_url}/v1", "--KeyVault.owner=bench",
                          "--ServerApp.log_level=WARN", *([f"--KeyVault.loopback_proxy_port={lane_port}"] if enabled else []),
                          config={"ServerApp": {"jpserver_extensions": {"jupyter_keyvault": enabled}}})
        s.port = free_port()
        s.url = f"http://127.0.0.1:{s.port}"
        s.args = [f"--port={s.port}" if a.startswith("--port=") else a for a in s.args]
        if not enabled:
            s.ready_path = "/api/status"
        return s

    ours, bare = server(True), server(False)
    vault = Vault(SQLiteBackend(ours.vault_path), env={"KEYVAULT_MASTER_KEY": ours.master_key})
    vault.set("bench", "OPENAI_API_KEY", key, provider="openai")
    token, _ = TokenStore(vault).create("bench", "bench", ["OPENAI_API_KEY"], 86400)
    vault.close()
    hop_port = free_port()  # what any relay hosted by tornado keeps: bench_peers' bare tornado hop
    hop = subprocess.Popen([sys.executable, str(Path(bench_peers.__file__)), "--tornado-proxy", str(hop_port),
                            upstream_url], stdout=subprocess.PIPE, text=True)
    hop.stdout.readline()  # type: ignore[union-attr]
    readings: list[tuple[str, dict, dict, dict, str]] = []

    def read(when: str, note: str = "") -> None:
        readings.append((when, memory(bare.proc.pid), memory(ours.proc.pid), memory(hop.pid), note))

    try:
        ours.start()
        bare.start()
        bench_peers.wait_http(f"http://127.0.0.1:{hop_port}/v1/models", 30, hop)
        time.sleep(3)
        read("idle, 3 s after start")

        front = f"http://127.0.0.1:{lane_port}" if args.front == "lane" else ours.url
        proxy = front + "/keyvault/proxy/openai/v1/chat/completions"
        print(f"our proxy called at {proxy}")
        ours_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        bare_url, bare_headers = bare.url + "/api/contents", bare.headers
        hop_url, hop_headers = f"http://127.0.0.1:{hop_port}/v1/chat/completions", {"Content-Type": "application/json"}
        e1 = asyncio.run(sequential(proxy, args.requests, ours_headers, SMALL_BODY))
        e2 = asyncio.run(sequential(bare_url, args.requests, bare_headers, None))
        e3 = asyncio.run(sequential(hop_url, args.requests, hop_headers, SMALL_BODY))
        read(f"after {args.requests} sequential requests", f"{e2} / {e1} / {e3}")
        for n in (100, 500):
            e1 = asyncio.run(concurrent(proxy, n, ours_headers, STREAM_BODY, 10))
            e2 = asyncio.run(concurrent(bare_url, n, bare_headers, None, 0))
            e3 = asyncio.run(concurrent(hop_url, n, hop_headers, STREAM_BODY, 10))
            time.sleep(1)
            read(f"after {n} concurrent streams", f"{e2} / {e1} / {e3}")
        if args.settle:
            time.sleep(args.settle)
            read(f"{args.settle:g} s later")
    finally:
        ours.stop()
        bare.stop()
        for proc in (hop, upstream):
            proc.terminate()
            proc.wait(10)

    print("| when | bare jupyter server | with jupyter-keyvault | difference | (anonymous / file-backed) "
          "| bare tornado hop (growth since idle) | errors: bare / ours / hop |")
    print("|---|---|---|---|---|---|---|")
    hop_idle = readings[0][3]["rss"]
    for when, b, o, h, note in readings:
        print(f"| {when} | {b['rss']:.1f} MiB | {o['rss']:.1f} MiB | **+{o['rss'] - b['rss']:.1f} MiB** | "
              f"+{o['anon'] - b['anon']:.1f} / +{o['file'] - b['file']:.1f} MiB | {h['rss']:.1f} MiB "
              f"(+{h['rss'] - hop_idle:.1f}) | {note} |")
    idle_bare, idle_ours = readings[0][1]["rss"], readings[0][2]["rss"]
    worst = max(o["rss"] - b["rss"] for _, b, o, _, _ in readings)
    print(f"\nlargest difference, same step: +{worst:.1f} MiB -> {'met' if worst <= 20 else 'NOT met'} "
          f"(goal <= 20 MiB); ours at the end minus the bare server idle: +{readings[-1][2]['rss'] - idle_bare:.1f} MiB; "
          f"growth since idle at the end: bare +{readings[-1][1]['rss'] - idle_bare:.1f}, "
          f"ours +{readings[-1][2]['rss'] - idle_ours:.1f}, tornado hop +{readings[-1][3]['rss'] - hop_idle:.1f} MiB")


if __name__ == "__main__":
    main()
