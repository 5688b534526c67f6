"""Credential lifetimes: what the periodic purge costs when nothing has expired (its usual case, run
in a worker thread every expiry_check_seconds), beside listing the same vault, in one run.

    python benchmarks/bench_lifetimes.py [--credentials 1000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
from pathlib import Path

from jupyter_keyvault.store import SQLiteBackend, Vault


def timed(fn, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--credentials", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    tmp = Path(tempfile.mkdtemp(prefix="kv-bench-life-"))
    vault = Vault(SQLiteBackend(tmp / "vault.db"), env={"KEYVAULT_MASTER_KEY": key})
    far = time.time() + 86400
    for i in range(args.credentials):
        vault.set("alice", f"KEY_{i}", "sk-proj-" + "x" * 60, expires_at=far if i % 2 else None,
                  session=i % 10 == 0)
    now = time.time()

    purge = timed(lambda: vault.purge_expired(), args.rounds)
    listing = timed(lambda: vault.list("alice"), args.rounds)
    with_json = timed(lambda: [i.to_json() for i in vault.list("alice")], args.rounds)
    stale = timed(lambda: [i.stale(now, 90 * 86400) for i in vault.list("alice")], args.rounds)
    print(f"{args.credentials} credentials (half with an expiry, a tenth session-only), median of {args.rounds}:")
    print(f"  purge_expired, nothing expired:   {purge * 1000:8.2f} ms")
    print(f"  list (records only):              {listing * 1000:8.2f} ms")
    print(f"  list + to_json with lifetimes:    {with_json * 1000:8.2f} ms")
    print(f"  list + stale check:               {stale * 1000:8.2f} ms")
    vault.close()


if __name__ == "__main__":
    main()
