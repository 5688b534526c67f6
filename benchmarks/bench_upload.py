"""A big `client.files.create` through the proxy: does it stream, and what does it cost the server's memory?

A fake OpenAI-compatible upstream and a real `jupyter server` run as separate processes on
127.0.0.1. This plain process uploads with the openai SDK and a vault access token (kvt1), from a
file made up as it is read (so the client holds none of it), once to the Jupyter URL and once to
the loopback lane kernels use, while the server's RSS is sampled
from /proc every 10 ms. Then the same upload goes straight to the upstream, for comparison.

Prints: the server's RSS before and at its peak (growth), when the upstream saw its first byte
relative to the client's last, and the time of the proxied and the direct upload.

    python benchmarks/bench_upload.py [--mb 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request

import openai

from jupyter_keyvault.testing.live_server import JupyterServer, free_port
from jupyter_keyvault.testing.uploads import PatternFile, RSSSampler

KEY = "sk-proj-" + "UPL0D" * 8
MB = 1024 * 1024


def rest(server: JupyterServer, method: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(server.url + path, method=method, data=json.dumps(body).encode(),
                                 headers={**server.headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def last_upload(upstream_url: str) -> dict:
    with urllib.request.urlopen(upstream_url + "/_stats") as resp:
        return json.loads(resp.read())["uploads"][-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200, help="upload size in MiB")
    size = parser.parse_args().mb * MB
    upstream = subprocess.Popen([sys.executable, "-m", "jupyter_keyvault.testing.fake_upstream", "--port", "0",
                                 "--key", KEY], stdout=subprocess.PIPE, text=True)
    upstream_url = upstream.stdout.readline().strip()  # type: ignore[union-attr]
    lane_port = free_port()
    server = JupyterServer(config={"KeyVault": {"provider_base_urls": {"openai": upstream_url + "/v1"},
                                                "loopback_proxy_port": lane_port}}).start()
    fronts = {"Jupyter URL": server.url, "loopback lane": f"http://127.0.0.1:{lane_port}"}
    results = {}
    try:
        rest(server, "PUT", "/keyvault/api/credentials/OPENAI_API_KEY", {"value": KEY, "provider": "openai"})
        token = rest(server, "POST", "/keyvault/api/tokens", {"name": "bench", "credentials": ["OPENAI_API_KEY"]})
        for front, url in fronts.items():
            proxied = openai.OpenAI(api_key=token["token"], base_url=url + "/keyvault/proxy/openai/v1",
                                    max_retries=0, timeout=600)
            proxied.files.create(file=("warm.bin", PatternFile(MB)), purpose="assistants")  # pools, imports, caches
            source = PatternFile(size)
            with RSSSampler(server.proc.pid) as rss:  # type: ignore[union-attr]
                proxied_started = time.monotonic()
                proxied.files.create(file=("big.bin", source), purpose="assistants")
                proxied_s = time.monotonic() - proxied_started
            results[front] = (rss, last_upload(upstream_url), proxied_started, source, proxied_s)
        direct = openai.OpenAI(api_key=KEY, base_url=upstream_url + "/v1", max_retries=0, timeout=600)
        started = time.monotonic()
        direct.files.create(file=("big.bin", PatternFile(size)), purpose="assistants")
        direct_s = time.monotonic() - started
    finally:
        server.stop()
        upstream.terminate()
    print(f"upload: {size // MB} MiB (openai SDK files.create, kvt1 token, real jupyter server)")
    for front, (rss, seen, proxied_started, source, proxied_s) in results.items():
        print(f"{front}: server RSS {rss.baseline / MB:.1f} MiB before, {rss.peak / MB:.1f} MiB peak, "
              f"growth {rss.growth / MB:.1f} MiB ({rss.samples} samples)")
        print(f"  upstream: {seen['bytes'] // MB} MiB in {seen['chunks']} chunks; first byte "
              f"{seen['first_byte_at'] - proxied_started:.3f} s after the upload began, "
              f"{source.finished_at - seen['first_byte_at']:.3f} s before the client read its last byte")
        print(f"  time: proxied {proxied_s:.2f} s ({size / MB / proxied_s:.0f} MiB/s), ratio to direct "
              f"{proxied_s / direct_s:.2f}")
    print(f"direct: {direct_s:.2f} s ({size / MB / direct_s:.0f} MiB/s)")


if __name__ == "__main__":
    main()
