"""Kernel start time with and without Landlock isolation: start → kernel_info reply.

The same ipykernel kernelspec, once plain and once through the `keyvault-isolated` provisioner
(launcher process + policy walk + Landlock + IPython dir mirror), interleaved so that machine
noise hits both alike. Jupyter dirs are private temp dirs; nothing of the user's is touched.

    python benchmarks/bench_isolation.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def setup_dirs() -> Path:
    base = Path(tempfile.mkdtemp(prefix="keyvault-bench-isolation-", dir="/var/tmp"))
    for name, var in (("home", "HOME"), ("data", "JUPYTER_DATA_DIR"), ("config", "JUPYTER_CONFIG_DIR"),
                      ("runtime", "JUPYTER_RUNTIME_DIR"), ("ipython", "IPYTHONDIR"), ("notebooks", None)):
        (base / name).mkdir()
        if var:
            os.environ[var] = str(base / name)
    for name, metadata in (("plain", {}), ("isolated", {"kernel_provisioner": {"provisioner_name": "keyvault-isolated"}})):
        spec = base / "data" / "kernels" / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": name, "language": "python", "metadata": metadata,
        }))
    return base


def time_start(kernel_name: str, cwd: str) -> float:
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name=kernel_name)
    start = time.perf_counter()
    km.start_kernel(cwd=cwd)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)  # sends kernel_info_request until the reply arrives
    elapsed = time.perf_counter() - start
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return elapsed


def time_launcher_alone(policy_json: str, rounds: int) -> tuple[float, float]:
    """p50 ms of `/bin/true` directly and through the launcher: the launcher's own cost."""
    import subprocess

    policy_file = Path(os.environ["JUPYTER_RUNTIME_DIR"]) / "bench-policy.json"
    policy_file.write_text(policy_json)
    launcher = [sys.executable, "-m", "jupyter_keyvault.isolation.launch", "--policy", str(policy_file), "--"]
    result = []
    for cmd in (["/bin/true"], [*launcher, "/bin/true"]):
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            subprocess.run(cmd, check=True)
            samples.append(time.perf_counter() - start)
        result.append(statistics.median(samples) * 1000)
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    base = setup_dirs()
    try:
        from jupyter_keyvault.isolation import abi_version
        from jupyter_keyvault.isolation.policy import default_policy, plan_rules
        from jupyter_keyvault.isolation.provisioner import KeyVaultIsolatedProvisioner

        notebooks = str(base / "notebooks")
        KeyVaultIsolatedProvisioner.policy_factory = lambda prov, kw: default_policy(notebook_root=notebooks)
        rules = len(plan_rules(default_policy(notebook_root=notebooks)))
        times: dict[str, list[float]] = {"plain": [], "isolated": []}
        time_start("plain", notebooks)  # warm-up: imports, page cache
        time_start("isolated", notebooks)
        for _ in range(args.rounds):
            for name in times:
                times[name].append(time_start(name, notebooks))
        p50 = {name: statistics.median(t) * 1000 for name, t in times.items()}
        print(f"kernel start → kernel_info reply, p50 of {args.rounds} interleaved rounds "
              f"(Landlock ABI {abi_version()}, {rules} rules):")
        print(f"  isolation off: {p50['plain']:.0f} ms")
        print(f"  isolation on:  {p50['isolated']:.0f} ms  (+{p50['isolated'] - p50['plain']:.0f} ms)")
        bare, launched = time_launcher_alone(default_policy(notebook_root=notebooks).to_json(), args.rounds)
        print(f"launcher alone (/bin/true direct vs through the launcher), p50: {bare:.1f} ms vs {launched:.0f} ms")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
