"""Overhead of output scrubbing on a print-heavy cell (100k lines), in one run.

Two real jupyter servers: one with scrubbing off (`autoload=False`, `scrub_iopub=False`),
one as installed (kernel hooks + server-side filter), each with 1,000 stored values
the server scrubs for. The same cell runs alternately on both; wall time until the
kernel is idle again, through the browser's websocket path.

    python benchmarks/bench_cell.py [--lines 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

from jupyter_keyvault.store import SQLiteBackend, Vault
from jupyter_keyvault.testing.kernel_client import ServerKernel
from jupyter_keyvault.testing.live_server import JupyterServer

CONFIGS = {  # label -> (kernel helper loaded, server-side filter on)
    "without scrubbing": (False, False),
    "with scrubbing": (True, True),
    "server filter only": (False, True),
    "kernel helper only": (True, False),
}


def make_server(helper: bool, server_filter: bool) -> JupyterServer:
    flags = [f"--KeyVault.autoload={helper}", f"--KeyVault.scrub_iopub={server_filter}"]
    server = JupyterServer("--KeyVault.owner=bench", *flags)
    vault = Vault(SQLiteBackend(server.vault_path), env={"KEYVAULT_MASTER_KEY": server.master_key})
    for i in range(1000):
        vault.set("bench", f"KEY_{i}", f"sk-proj-{i:06d}" + "k" * 40, provider="openai")
    vault.close()
    return server


async def time_cell(kernel: ServerKernel, code: str) -> float:
    start = time.perf_counter()
    result = await kernel.execute(code, timeout=600)
    elapsed = time.perf_counter() - start
    assert result.error is None, result.text
    return elapsed


async def main_async(lines: int, rounds: int, split: bool) -> None:
    labels = list(CONFIGS) if split else list(CONFIGS)[:2]
    servers = {label: make_server(*CONFIGS[label]) for label in labels}
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        kernels = {label: await ServerKernel(server.url, server.token, path="bench.ipynb").start()
                   for label, server in servers.items()}
        loaded = await kernels["with scrubbing"].execute("print('keyvault' in get_ipython().extension_manager.loaded)")
        code = f"for i in range({lines}):\n    print(i, 'row of ordinary output, nothing secret here', i * 3.14)"
        times: dict[str, list[float]] = {label: [] for label in kernels}
        for kernel in kernels.values():  # warm-up
            await time_cell(kernel, code)
        for _ in range(rounds):
            for label, kernel in kernels.items():
                times[label].append(await time_cell(kernel, code))
        for kernel in kernels.values():
            await kernel.stop()
    base = statistics.median(times["without scrubbing"])
    with_ = statistics.median(times["with scrubbing"])
    print(f"print-heavy cell, {lines:,} lines, median of {rounds} (helper loaded in the scrubbing kernel: "
          f"{loaded.stdout.strip()}):")
    print(f"  without scrubbing  {base:7.3f} s")
    print(f"  with scrubbing     {with_:7.3f} s   overhead {100 * (with_ / base - 1):+.1f} %   goal: <= 5 %")
    for label in labels[2:]:
        part = statistics.median(times[label])
        print(f"  {label:18s} {part:7.3f} s   overhead {100 * (part / base - 1):+.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--split", action="store_true", help="also time the server filter and the kernel helper alone")
    args = ap.parse_args()
    asyncio.run(main_async(args.lines, args.rounds, args.split))


if __name__ == "__main__":
    main()
