"""Durability and hygiene of the store: concurrent writer processes, SIGKILL in the
middle of a burst of writes, and a canary value searched for at rest, in logs and in
exception messages."""

from __future__ import annotations

import base64
import hashlib
import logging
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import pytest

from jupyter_keyvault.store import (
    DecryptionError,
    InvalidInput,
    MasterKeyError,
    NoCredential,
    NotFound,
    SQLiteBackend,
    Vault,
    WrongMasterKey,
)
from jupyter_keyvault.testing.pytest_plugin import new_master_key

REPO = Path(__file__).resolve().parents[1]
WORKERS = 4
SETS_PER_WORKER = 200


# ---------------------------------------------------------------------- helpers
def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return env


def concurrent_value(worker: int, i: int) -> str:
    return f"sk-conc-w{worker}-i{i}-" + hashlib.sha256(f"{worker}:{i}".encode()).hexdigest()[:24]


def concurrent_owner(worker: int, i: int) -> str:
    # Half the writes go to one owner every process shares (racing to create its data key).
    return "shared" if i % 2 == 0 else f"user{worker}"


def _concurrent_writer(path: str, master_key: str, worker: int, barrier, results) -> None:
    """Runs in a spawned process: open the vault, wait for the others, write, read back."""
    errors: list[str] = []
    try:
        vault = Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": master_key})
        barrier.wait(timeout=60)
        for i in range(SETS_PER_WORKER):
            try:
                vault.set(concurrent_owner(worker, i), f"W{worker}_{i}", concurrent_value(worker, i))
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                errors.append(f"set {i}: {type(exc).__name__}: {exc}")
        for i in range(SETS_PER_WORKER):
            if vault.get_value(concurrent_owner(worker, i), f"W{worker}_{i}") != concurrent_value(worker, i):
                errors.append(f"read-back mismatch for W{worker}_{i}")
        vault.close()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"worker {worker}: {type(exc).__name__}: {exc}")
    results.put((worker, errors))


# ====================================================================== concurrency
def test_given_four_processes_writing_one_new_vault_at_once_then_all_800_credentials_are_present_and_readable(
    vault_path, master_key
):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_writer, args=(str(vault_path), master_key, w, barrier, results))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)

    assert [p.exitcode for p in procs] == [0] * WORKERS
    assert outcomes == {w: [] for w in range(WORKERS)}
    vault = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_MASTER_KEY": master_key})
    try:
        assert vault.count() == WORKERS * SETS_PER_WORKER
        assert vault.backend.count_owners() == 1 + WORKERS
        for w in range(WORKERS):
            for i in range(SETS_PER_WORKER):
                assert vault.get_value(concurrent_owner(w, i), f"W{w}_{i}") == concurrent_value(w, i)
        sets = [e for e in vault.audit_events(None, limit=1000) if e.action == "set"]
        assert len(sets) == WORKERS * SETS_PER_WORKER
    finally:
        vault.close()
    assert integrity(vault_path) == "ok"


OPENERS = 6
OPEN_ROUNDS = 12


def _racing_opener(base: str, worker: int, barrier, results) -> None:
    """Runs in a spawned process: for each round, open a brand-new vault at the same
    instant as the others (file-keyed, so the key file is created racily too) and write."""
    errors: list[str] = []
    for r in range(OPEN_ROUNDS):
        try:
            barrier.wait(timeout=60)
            vault = Vault(SQLiteBackend(os.path.join(base, f"round{r}", "vault.db")), env={}, use_keyring=False)
            try:
                vault.set("shared", f"OPENER_{worker}", f"sk-opener-{r}-{worker}")
            finally:
                vault.close()
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            errors.append(f"round {r}: {type(exc).__name__}: {exc}")
    results.put((worker, errors))


def test_given_several_processes_opening_a_brand_new_vault_at_the_same_instant_then_none_fails_and_all_agree_on_one_key(
    tmp_path,
):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(OPENERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_racing_opener, args=(str(tmp_path), w, barrier, results)) for w in range(OPENERS)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)

    assert outcomes == {w: [] for w in range(OPENERS)}
    for r in range(OPEN_ROUNDS):
        path = tmp_path / f"round{r}" / "vault.db"
        vault = Vault(SQLiteBackend(path), env={}, use_keyring=False)
        try:
            assert {vault.get_value("shared", f"OPENER_{w}") for w in range(OPENERS)} == {
                f"sk-opener-{r}-{w}" for w in range(OPENERS)
            }
        finally:
            vault.close()
        assert sorted(p.name for p in path.parent.iterdir()) == ["master.key", "vault.db"]


BURST_WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from jupyter_keyvault.store import SQLiteBackend, Vault

    vault = Vault(SQLiteBackend(sys.argv[1]))  # the master key comes from KEYVAULT_MASTER_KEY
    for i in range(1_000_000):
        name = f"BURST_{i}"
        vault.set("alice" if i % 3 else "bob", name, f"sk-burst-{i}-" + hashlib.sha256(name.encode()).hexdigest())
        print(name, flush=True)  # acknowledged: set() has returned
    """
)


def burst_value(i: int) -> str:
    name = f"BURST_{i}"
    return f"sk-burst-{i}-" + hashlib.sha256(name.encode()).hexdigest()


@pytest.mark.faults  # SIGKILL during writes: part of the fault-injection suite (-m faults)
def test_given_a_writer_killed_with_sigkill_mid_burst_when_reopened_then_every_acknowledged_write_survives(
    vault_path, master_key
):
    proc = subprocess.Popen(
        [sys.executable, "-c", BURST_WRITER, str(vault_path)],
        env=child_env(KEYVAULT_MASTER_KEY=master_key),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    acknowledged: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    # Whatever was printed before the kill was acknowledged too; a torn last line was not.
    acknowledged += [ln.decode() for ln in rest.split(b"\n")[:-1]]
    assert len(acknowledged) >= 300, err.decode()
    assert acknowledged == [f"BURST_{i}" for i in range(len(acknowledged))]

    assert integrity(vault_path) == "ok"
    vault = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_MASTER_KEY": master_key})
    try:
        for i, name in enumerate(acknowledged):
            assert vault.get_value("alice" if i % 3 else "bob", name) == burst_value(i)
        assert vault.count() >= len(acknowledged)
        assert vault.count() <= len(acknowledged) + 1  # at most one committed but not yet acknowledged
    finally:
        vault.close()
    assert integrity(vault_path) == "ok"


# ====================================================================== canary
def encodings_of(secret: str) -> dict[str, bytes]:
    """The canary as it could appear in a file: raw, UTF-16/32, hex, base64 at every alignment."""
    raw = secret.encode("utf-8")
    forms = {
        "utf-8": raw,
        "utf-16-le": secret.encode("utf-16-le"),
        "utf-16-be": secret.encode("utf-16-be"),
        "utf-32-le": secret.encode("utf-32-le"),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }
    for shift in range(3):
        chunk = raw[shift:]
        chunk = chunk[: len(chunk) - len(chunk) % 3]
        forms[f"base64+{shift}"] = base64.b64encode(chunk)
        forms[f"urlsafe-base64+{shift}"] = base64.urlsafe_b64encode(chunk)
    return forms


def assert_absent_from_text(secret: str, text: str, where: str) -> None:
    for form, needle in encodings_of(secret).items():
        assert needle.decode("latin-1") not in text, f"canary ({form}) found in {where}"


def assert_absent_from_dir(secret: str, directory: Path) -> list[str]:
    scanned = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for form, needle in encodings_of(secret).items():
            assert needle not in data, f"canary ({form}) found in {path.name}"
        scanned.append(path.name)
    return scanned


def exercise(vault: Vault, canary: str) -> None:
    """Every ordinary operation that handles the canary value."""
    vault.set("alice", "CANARY_KEY", canary, provider="openai")
    vault.set("alice", "CANARY_KEY", canary, provider="openai", metadata={"label": "work"})  # a replace
    vault.set("bob", "CANARY_KEY", canary)
    vault.set("alice", "DELETED_CANARY", canary + "-deleted")
    vault.delete("alice", "DELETED_CANARY")
    assert vault.get_value("alice", "CANARY_KEY") == canary
    assert vault.resolve("alice", "CANARY_KEY").value == canary
    vault.update_metadata("alice", "CANARY_KEY", {"label": "renamed"})
    vault.list("alice")
    vault.status()


@pytest.mark.parametrize("source", ["env", "file"])
def test_given_a_canary_value_when_stored_then_no_form_of_it_is_in_any_file_of_the_vault_directory(
    vault_path, master_key, canary, source
):
    env = {"KEYVAULT_MASTER_KEY": master_key} if source == "env" else {}
    vault = Vault(SQLiteBackend(vault_path), env=env, use_keyring=False)
    try:
        exercise(vault, canary)
        if source == "file":
            vault.rotate_master_key()
        scanned = assert_absent_from_dir(canary, vault_path.parent)  # while open: db, -wal, -shm
        assert {"vault.db", "vault.db-wal", "vault.db-shm"} <= set(scanned)
        if source == "file":
            assert "master.key" in scanned
    finally:
        vault.close()
    scanned = assert_absent_from_dir(canary, vault_path.parent)  # after the final checkpoint
    assert "vault.db" in scanned
    reopened = Vault(SQLiteBackend(vault_path), env=env, use_keyring=False)
    try:
        assert reopened.get_value("alice", "CANARY_KEY") == canary  # it really was stored
    finally:
        reopened.close()


def test_given_a_canary_value_when_operations_succeed_and_fail_then_no_log_or_error_message_contains_it(
    vault_path, master_key, canary, caplog
):
    failures: list[BaseException] = []

    def expect_failure(exc_type, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except exc_type as exc:
            failures.append(exc)
        else:
            pytest.fail(f"{fn.__name__}{args[:2]} did not raise {exc_type.__name__}")

    caplog.set_level(logging.DEBUG)  # root and every library logger at DEBUG
    vault = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_MASTER_KEY": master_key}, env_credential_names=["MISSING"])
    try:
        exercise(vault, canary)
        expect_failure(InvalidInput, vault.set, "alice", "bad-name", canary)
        expect_failure(InvalidInput, vault.set, "alice", "", canary)
        expect_failure(InvalidInput, vault.set, "alice", "CANARY_KEY", canary + "\x00")
        expect_failure(InvalidInput, vault.set, "alice", "CANARY_KEY", canary * 400)
        expect_failure(InvalidInput, vault.set, "alice", "CANARY_KEY", canary.encode() + b"\xff")
        expect_failure(InvalidInput, vault.set, "alice", "CANARY_KEY", canary + "\ud800")
        expect_failure(InvalidInput, vault.set, "alice", "CANARY_KEY", canary, type="password")
        expect_failure(InvalidInput, vault.set, "alice", "CANARY_KEY", canary, provider="p" * 100)
        expect_failure(InvalidInput, vault.set, "\x00", "CANARY_KEY", canary)
        expect_failure(NotFound, vault.get_value, "alice", "MISSING")
        expect_failure(NoCredential, vault.resolve, "alice", "MISSING")
        expect_failure(MasterKeyError, vault.rotate_master_key)
        db = sqlite3.connect(vault_path, isolation_level=None)
        try:
            payload = bytearray(db.execute("SELECT payload FROM credentials WHERE owner = 'alice'").fetchone()[0])
            payload[-1] ^= 1
            db.execute("UPDATE credentials SET payload = ? WHERE owner = 'alice'", (bytes(payload),))
        finally:
            db.close()
        expect_failure(DecryptionError, vault.get_value, "alice", "CANARY_KEY")
        expect_failure(DecryptionError, vault.resolve, "alice", "CANARY_KEY")
        assert vault.get_value("bob", "CANARY_KEY") == canary
    finally:
        vault.close()
    file_keyed = Vault(SQLiteBackend(vault_path.with_name("file-keyed.db")), env={}, use_keyring=False)
    try:  # the weak-key warning path logs on every open
        exercise(file_keyed, canary)
    finally:
        file_keyed.close()
    backend = SQLiteBackend(vault_path)
    try:
        expect_failure(WrongMasterKey, Vault, backend, env={"KEYVAULT_MASTER_KEY": new_master_key()})
    finally:
        backend.close()

    assert len(failures) == 15
    for exc in failures:
        rendered = "".join(traceback.format_exception(exc))
        for text, where in ((str(exc), "str"), (repr(exc), "repr"), (rendered, "traceback")):
            assert_absent_from_text(canary, text, f"{where} of {type(exc).__name__}: {exc}")
    assert any("no strong master-key source" in r.getMessage() for r in caplog.records)  # capture works
    assert_absent_from_text(canary, caplog.text, "captured logs")
    for record in caplog.records:
        assert_absent_from_text(canary, repr(record.args) + record.getMessage(), f"log record {record.name}")
