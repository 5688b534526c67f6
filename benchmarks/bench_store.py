"""Store benchmarks: set, get (decrypt), list with 10,000 credentials, rotation for 1,000 owners.

Each figure is printed next to the direct path measured in the same run: plain
SQLite with the same durability settings and no encryption.

    python benchmarks/bench_store.py [--credentials 10000] [--owners 1000]
"""

from __future__ import annotations

import argparse
import base64
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from jupyter_keyvault.store import SQLiteBackend, Vault


def per_op(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def plain_sqlite(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE kv (owner TEXT, name TEXT, value BLOB, PRIMARY KEY (owner, name))")
    return db


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--credentials", type=int, default=10_000)
    ap.add_argument("--owners", type=int, default=1_000)
    ap.add_argument("--ops", type=int, default=2_000)
    args = ap.parse_args()
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    tmp = Path(tempfile.mkdtemp(prefix="kv-bench-"))
    vault = Vault(SQLiteBackend(tmp / "v" / "vault.db"), env={"KEYVAULT_MASTER_KEY": key})
    plain = plain_sqlite(tmp / "plain.db")
    value = "sk-proj-" + "x" * 156

    def plain_set(i):
        plain.execute("BEGIN IMMEDIATE")
        plain.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", ("alice", f"K{i}", value.encode()))
        plain.execute("COMMIT")

    n = args.ops
    t_set = per_op(lambda i: vault.set("alice", f"K{i}", value, provider="openai"), n)
    t_plain_set = per_op(plain_set, n)
    # First use of a credential also records last_used_at (a write); later uses within a minute don't.
    t_get_first = per_op(lambda i: vault.get_value("alice", f"K{i % n}"), n)
    t_get = per_op(lambda i: vault.get_value("alice", f"K{i % n}"), n)
    t_plain_get = per_op(lambda i: plain.execute("SELECT value FROM kv WHERE owner = ? AND name = ?",
                                                 ("alice", f"K{i % n}")).fetchone(), n)
    print(f"set            {t_set * 1e3:8.3f} ms/op  ({1 / t_set:8.0f}/s)   plain SQLite {t_plain_set * 1e3:.3f} ms"
          f"  ratio {t_set / t_plain_set:.2f}x")
    print(f"get, first use {t_get_first * 1e3:8.3f} ms/op  ({1 / t_get_first:8.0f}/s)   (includes the last_used_at write)")
    print(f"get (decrypt)  {t_get * 1e3:8.3f} ms/op  ({1 / t_get:8.0f}/s)   plain SQLite {t_plain_get * 1e3:.3f} ms"
          f"  ratio {t_get / t_plain_get:.2f}x")

    # Fill to --credentials in one owner, in batches (bulk load is not what we measure).
    total = args.credentials
    for i in range(n, total):
        vault.set("alice", f"K{i}", value, provider="openai")
    plain.execute("BEGIN")
    plain.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", [("alice", f"K{i}", value.encode()) for i in range(total)])
    plain.execute("COMMIT")
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        items = vault.list("alice")
        runs.append(time.perf_counter() - start)
    assert len(items) >= total
    plain_runs = []
    for _ in range(5):
        start = time.perf_counter()
        plain.execute("SELECT owner, name, value FROM kv WHERE owner = ? ORDER BY name", ("alice",)).fetchall()
        plain_runs.append(time.perf_counter() - start)
    t_list, t_plain_list = statistics.median(runs), statistics.median(plain_runs)
    print(f"list {total} credentials  {t_list * 1e3:8.1f} ms   plain SQLite {t_plain_list * 1e3:.1f} ms"
          f"  ratio {t_list / t_plain_list:.2f}x")

    rot_dir = tmp / "rot"
    rvault = Vault(SQLiteBackend(rot_dir / "vault.db"), env={"KEYVAULT_MASTER_KEY": key})
    for o in range(args.owners):
        rvault.set(f"user{o}", "OPENAI_API_KEY", value)
    new_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    rvault._resolver.env = {"KEYVAULT_MASTER_KEY": key, "KEYVAULT_NEW_MASTER_KEY": new_key}
    start = time.perf_counter()
    count = rvault.rotate_master_key()
    t_rot = time.perf_counter() - start
    # The direct path for rotation: re-encrypting every value instead of re-wrapping data keys.
    start = time.perf_counter()
    for o in range(args.owners):
        rvault.set(f"user{o}", "OPENAI_API_KEY", value)
    t_reencrypt = time.perf_counter() - start
    print(f"rotate master key, {count} owners  {t_rot * 1e3:8.1f} ms  (one transaction)   "
          f"re-encrypting every value instead: {t_reencrypt * 1e3:.1f} ms  ratio {t_rot / t_reencrypt:.3f}x")


if __name__ == "__main__":
    main()
