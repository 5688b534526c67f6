"""Kernel isolation through a real `jupyter server`, on against off, in one run.

For each mode a server runs with its own private dirs and the fake upstream; each round opens a
notebook session (kernel start until its first reply, as a user waits for it) and then times
`keyvault.openai()` chat calls made from that kernel through the proxy. Rounds alternate between
the two servers so machine noise hits both alike.

    python benchmarks/bench_isolation_server.py [--rounds 8] [--calls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_keyvault.testing.fake_upstream import FakeUpstream  # noqa: E402
from jupyter_keyvault.testing.hub import http  # noqa: E402
from jupyter_keyvault.testing.kernel_client import ServerKernel  # noqa: E402
from jupyter_keyvault.testing.live_server import JupyterServer  # noqa: E402
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY  # noqa: E402

CHAT = """
import time, keyvault
client = keyvault.openai()
client.chat.completions.create(model="m", messages=[{"role": "user", "content": "warm"}])
times = []
for _ in range(%d):
    t = time.perf_counter()
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    times.append((time.perf_counter() - t) * 1000)
print("CALLS", " ".join(f"{x:.3f}" for x in times))
"""


async def one_round(server: JupyterServer, calls: int, n: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    kernel = await ServerKernel(server.url + "/", server.token, path=f"bench-{n}.ipynb").start()
    try:
        await kernel.execute("1", timeout=120)
        started = (time.perf_counter() - start) * 1000
        out = (await kernel.execute(CHAT % calls, timeout=300)).stdout
    finally:
        await kernel.stop()
    return started, [float(x) for x in out.split("CALLS", 1)[1].split()]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    with FakeUpstream(valid_keys=(VALID_OPENAI_KEY,)) as upstream:
        servers = {}
        for mode in ("off", "on"):
            srv = JupyterServer(f"--KeyVault.isolate_kernels={mode}",
                                config={"KeyVault": {"provider_base_urls": {"openai": upstream.openai_base_url}}})
            servers[mode] = srv.start()
            http("PUT", srv.url + "/keyvault/api/credentials/OPENAI_API_KEY", token=srv.token,
                 body={"value": VALID_OPENAI_KEY, "provider": "openai"})
        try:
            starts: dict[str, list[float]] = {m: [] for m in servers}
            chats: dict[str, list[float]] = {m: [] for m in servers}
            for n in range(args.rounds):
                for mode in (("off", "on") if n % 2 == 0 else ("on", "off")):
                    started, calls = await one_round(servers[mode], args.calls, n)
                    starts[mode].append(started)
                    chats[mode].extend(calls)
        finally:
            for srv in servers.values():
                srv.stop()
    print(f"{'isolation':<10} {'kernel start p50':>17} {'chat p50':>9} {'chat p99':>9}   ({args.rounds} kernels, "
          f"{args.rounds * args.calls} chat calls each)")
    for mode in ("off", "on"):
        p99 = statistics.quantiles(chats[mode], n=100)[98]
        print(f"{mode:<10} {statistics.median(starts[mode]):>14.0f} ms {statistics.median(chats[mode]):>6.2f} ms "
              f"{p99:>6.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
