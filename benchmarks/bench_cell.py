"""Overhead of output scrubbing on a print-heavy cell (100k lines), in one run.

Two real jupyter servers: one with scrubbing off (`autoload=False`, `scrub_iopub=False`),
one as installed (kernel hooks + server-side filter), each with 1,000 stored values
the server scrubs for. The same cell runs alternately on both; wall time until the
kernel is idle again, through the browser's websocket path. Also the CPU seconds the server
process and the kernel process spent on each cell (from /proc, Linux): on a shared machine
wall time mostly measures the other processes, CPU time measures this work, and it
separates the two parts (server filter, kernel helper).

    python benchmarks/bench_cell.py [--lines 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def time_cell(kernel: ServerKernel, code: str, pids: tuple[int, int] | None = None):
    """Wall seconds, and with pids (server, kernel) also their CPU seconds, for one cell."""
    before = [cpu_seconds(p) for p in pids] if pids else None
    start = time.perf_counter()
    result = await kernel.execute(code, timeout=600)
    elapsed = time.perf_counter() - start
    assert result.error is None, result.text
    if pids is None:
        return elapsed
    return elapsed, *(cpu_seconds(p) - b for p, b in zip(pids, before, strict=True))


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
        pids = {}
        for label, kernel in kernels.items():
            pid = int((await kernel.execute("import os; print(os.getpid())")).stdout.strip())
            pids[label] = (servers[label].proc.pid, pid)
        times: dict[str, list[float]] = {label: [] for label in kernels}
        cpu: dict[str, list[tuple[float, float]]] = {label: [] for label in kernels}
        for kernel in kernels.values():  # warm-up
            await time_cell(kernel, code)
        for _ in range(rounds):
            for label, kernel in kernels.items():
                wall, server_cpu, kernel_cpu = await time_cell(kernel, code, pids[label])
                times[label].append(wall)
                cpu[label].append((server_cpu, kernel_cpu))
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
    print(f"CPU seconds per cell, median of {rounds} (server process / kernel process):")
    base_server = statistics.median(c[0] for c in cpu["without scrubbing"])
    base_kernel = statistics.median(c[1] for c in cpu["without scrubbing"])
    for label in labels:
        server_cpu = statistics.median(c[0] for c in cpu[label])
        kernel_cpu = statistics.median(c[1] for c in cpu[label])
        print(f"  {label:18s} server {server_cpu:6.3f} s ({100 * (server_cpu / base_server - 1):+5.1f} %)"
              f"   kernel {kernel_cpu:6.3f} s ({100 * (kernel_cpu / base_kernel - 1):+5.1f} %)"
              f"   both {100 * ((server_cpu + kernel_cpu) / (base_server + base_kernel) - 1):+5.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--split", action="store_true", help="also time the server filter and the kernel helper alone")
    args = ap.parse_args()
    asyncio.run(main_async(args.lines, args.rounds, args.split))


if __name__ == "__main__":
    main()
