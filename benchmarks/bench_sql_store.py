"""SQL backend benchmarks: the Vault over SQLBackend (SQLite and PostgreSQL) next to the
embedded SQLiteBackend (the direct path), measured in the same run.

    python benchmarks/bench_sql_store.py [--ops 1000] [--credentials 5000] [--owners 1000] [--threads 8]

PostgreSQL: a throwaway local cluster (jupyter_keyvault/testing/postgres.py), or the server
named by KEYVAULT_TEST_POSTGRES_URL. Figures are per operation, single client unless noted.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jupyter_keyvault.store import SQLiteBackend, Vault
from jupyter_keyvault.store.sql import SQLBackend
from jupyter_keyvault.testing.postgres import PostgresCluster, PostgresUnavailable

VALUE = "sk-proj-" + "x" * 156


def per_op(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def concurrent_rate(fn, n: int, threads: int) -> float:
    """Operations per second with `threads` clients calling fn(i) for i in range(n)."""
    counter = iter(range(n))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            fn(i)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(worker)
    return n / (time.perf_counter() - start)


def measure(label: str, make_backend, args, key: str) -> dict:
    vault = Vault(make_backend("main"), env={"KEYVAULT_MASTER_KEY": key})
    n = args.ops
    r = {"label": label}
    r["set"] = per_op(lambda i: vault.set("alice", f"K{i}", VALUE, provider="openai"), n)
    per_op(lambda i: vault.get_value("alice", f"K{i % n}"), n)  # first use writes last_used_at
    r["get"] = per_op(lambda i: vault.get_value("alice", f"K{i % n}"), n)
    for i in range(n, args.credentials):
        vault.set("alice", f"K{i}", VALUE)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        assert len(vault.list("alice")) >= args.credentials
        runs.append(time.perf_counter() - start)
    r["list"] = statistics.median(runs)
    r["set_mt"] = concurrent_rate(lambda i: vault.set(f"user{i % 50}", f"C{i}", VALUE), n, args.threads)
    r["get_mt"] = concurrent_rate(lambda i: vault.get_value("alice", f"K{i % n}"), n, args.threads)
    vault.close()

    rvault = Vault(make_backend("rot"), env={"KEYVAULT_MASTER_KEY": key})
    for o in range(args.owners):
        rvault.set(f"user{o}", "OPENAI_API_KEY", VALUE)
    new_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    rvault._resolver.env = {"KEYVAULT_MASTER_KEY": key, "KEYVAULT_NEW_MASTER_KEY": new_key}
    start = time.perf_counter()
    rvault.rotate_master_key()
    r["rotate"] = time.perf_counter() - start
    rvault.close()
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=1_000)
    ap.add_argument("--credentials", type=int, default=5_000)
    ap.add_argument("--owners", type=int, default=1_000)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    tmp = Path(tempfile.mkdtemp(prefix="kv-bench-sql-"))
    results = [
        measure("embedded SQLiteBackend (direct path)", lambda tag: SQLiteBackend(tmp / tag / "embedded.db"), args, key),
        measure("SQLBackend, sqlite:///", lambda tag: SQLBackend(f"sqlite:///{tmp / tag / 'sql.db'}"), args, key),
    ]
    try:
        with PostgresCluster.start() as pg:
            results.append(measure("SQLBackend, postgresql+psycopg", lambda tag: SQLBackend(pg.create_database()), args, key))
    except PostgresUnavailable as exc:
        print(f"(PostgreSQL skipped: {exc})")
    base = results[0]
    print(f"ops={args.ops} credentials listed={args.credentials} owners rotated={args.owners} threads={args.threads}")
    print(f"{'backend':40} {'set ms':>8} {'get ms':>8} {'list ms':>8} {'rotate ms':>10} {'set/s MT':>9} {'get/s MT':>9}")
    for r in results:
        print(f"{r['label']:40} {r['set'] * 1e3:8.3f} {r['get'] * 1e3:8.3f} {r['list'] * 1e3:8.1f} {r['rotate'] * 1e3:10.1f}"
              f" {r['set_mt']:9.0f} {r['get_mt']:9.0f}")
    for r in results[1:]:
        print(f"ratio vs direct path, {r['label']}: set {r['set'] / base['set']:.2f}x, get {r['get'] / base['get']:.2f}x,"
              f" list {r['list'] / base['list']:.2f}x, rotate {r['rotate'] / base['rotate']:.2f}x,"
              f" threaded set rate {r['set_mt'] / base['set_mt']:.2f}x, threaded get rate {r['get_mt'] / base['get_mt']:.2f}x")


if __name__ == "__main__":
    main()
