"""The SQL backend under real concurrency and crashes, on a real PostgreSQL: processes
racing to migrate a new database, to create the same owner keys, to rotate the master
key while others create owners, and writers (or the database server) killed mid-burst."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed: pip install jupyter-keyvault[hub]")

from test_store_durability import burst_value, child_env, concurrent_owner, concurrent_value  # noqa: E402

from jupyter_keyvault.store import Vault, WrongMasterKey  # noqa: E402
from jupyter_keyvault.store.crypto import KeyEncryptionKey  # noqa: E402
from jupyter_keyvault.store.masterkey import read_key_file  # noqa: E402
from jupyter_keyvault.store.sql import SQLBackend  # noqa: E402
from jupyter_keyvault.testing.pytest_plugin import new_master_key  # noqa: E402

WORKERS = 4
SETS_PER_WORKER = 100


def _opener(url: str, worker: int, barrier, results) -> None:
    try:
        barrier.wait(timeout=60)
        backend = SQLBackend(url)
        revision = backend.schema_revision()
        backend.close()
        results.put((worker, list(revision), None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put((worker, None, f"{type(exc).__name__}: {exc}"))


def run_processes(target, args_for, count: int, timeout: float = 180) -> dict:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(w), w, barrier, results)) for w in range(count)]
    for p in procs:
        p.start()
    try:
        outcomes = {}
        for _ in procs:
            worker, *rest = results.get(timeout=timeout)
            outcomes[worker] = rest
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * count
    return outcomes


def test_given_six_processes_opening_one_empty_postgres_database_at_once_then_all_succeed_on_one_migrated_schema(postgres_url):
    outcomes = run_processes(_opener, lambda w: (postgres_url,), 6)
    assert outcomes == {w: [["0002"], None] for w in range(6)}


def _writer(url: str, master_key: str, worker: int, barrier, results) -> None:
    errors: list[str] = []
    try:
        vault = Vault(SQLBackend(url), env={"KEYVAULT_MASTER_KEY": master_key})
        barrier.wait(timeout=60)
        for i in range(SETS_PER_WORKER):
            try:
                vault.set(concurrent_owner(worker, i), f"W{worker}_{i}", concurrent_value(worker, i))
            except Exception as exc:  # noqa: BLE001
                errors.append(f"set {i}: {type(exc).__name__}: {exc}")
        for i in range(SETS_PER_WORKER):
            if vault.get_value(concurrent_owner(worker, i), f"W{worker}_{i}") != concurrent_value(worker, i):
                errors.append(f"read-back mismatch for W{worker}_{i}")
        vault.close()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"worker {worker}: {type(exc).__name__}: {exc}")
    results.put((worker, errors))


def test_given_processes_racing_to_create_one_owner_key_on_postgres_then_all_credentials_open_with_one_key(postgres_url, master_key):
    outcomes = run_processes(_writer, lambda w: (postgres_url, master_key), WORKERS)
    assert outcomes == {w: [[]] for w in range(WORKERS)}
    vault = Vault(SQLBackend(postgres_url), env={"KEYVAULT_MASTER_KEY": master_key})
    try:
        assert vault.count() == WORKERS * SETS_PER_WORKER
        assert vault.backend.count_owners() == 1 + WORKERS  # "shared" got exactly one data key
        for w in range(WORKERS):
            for i in range(SETS_PER_WORKER):
                assert vault.get_value(concurrent_owner(w, i), f"W{w}_{i}") == concurrent_value(w, i)
        assert len([e for e in vault.audit_events(None, limit=1000) if e.action == "set"]) == WORKERS * SETS_PER_WORKER
    finally:
        vault.close()


CREATORS = 3
OWNERS_PER_CREATOR = 40
ROTATIONS = 8


def _creator_or_rotator(url: str, key_file: str, worker: int, barrier, results) -> None:
    """Worker 0 rotates the master key again and again; the others create new owners meanwhile."""
    errors: list[str] = []
    done: list[str] = []
    try:
        vault = Vault(SQLBackend(url), key_file=key_file, env={}, use_keyring=False)
        barrier.wait(timeout=60)
        if worker == 0:
            for _ in range(ROTATIONS):
                vault.rotate_master_key()
                time.sleep(0.02)
        else:
            for i in range(OWNERS_PER_CREATOR):
                owner = f"user-{worker}-{i}"
                vault.set(owner, "OPENAI_API_KEY", f"sk-rot-{worker}-{i}-" + "x" * 20)
                done.append(owner)
        vault.close()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"worker {worker}: {type(exc).__name__}: {exc}")
    results.put((worker, errors, done))


def test_given_a_rotation_racing_owner_key_creation_on_postgres_then_no_owner_key_is_left_under_a_stale_master_key(
    postgres_url, tmp_path
):
    key_file = tmp_path / "master.key"
    Vault(SQLBackend(postgres_url), key_file=key_file, env={}, use_keyring=False).close()  # creates the key file
    first_key = key_file.read_text()

    outcomes = run_processes(_creator_or_rotator, lambda w: (postgres_url, str(key_file)), 1 + CREATORS)

    assert {w: errors for w, (errors, _) in outcomes.items()} == {w: [] for w in range(1 + CREATORS)}
    assert key_file.read_text() != first_key
    vault = Vault(SQLBackend(postgres_url), key_file=key_file, env={}, use_keyring=False)
    try:
        current = KeyEncryptionKey(read_key_file(key_file)).kek_id
        assert vault.backend.meta_get("kek_id") == current
        owners = [o for _, (_, done) in outcomes.items() for o in done]
        assert len(owners) == CREATORS * OWNERS_PER_CREATOR
        for owner in owners:
            assert vault.backend.get_owner_key(owner)[1] == current, owner
            worker, i = owner.split("-")[1:]
            assert vault.get_value(owner, "OPENAI_API_KEY") == f"sk-rot-{worker}-{i}-" + "x" * 20
        rotations = [e for e in vault.audit_events(None, limit=1000) if e.action == "rotate"]
        assert len(rotations) == ROTATIONS
    finally:
        vault.close()


def _rival_rotator(url: str, keys: tuple[str, str], worker: int, barrier, results) -> None:
    try:
        vault = Vault(SQLBackend(url), env={"KEYVAULT_MASTER_KEY": keys[0], "KEYVAULT_NEW_MASTER_KEY": keys[1 + worker]})
        barrier.wait(timeout=60)
        try:
            vault.rotate_master_key()
            outcome = "rotated"
        except Exception as exc:  # noqa: BLE001
            outcome = f"refused: {type(exc).__name__}"
        vault.close()
        results.put((worker, outcome))
    except Exception as exc:  # noqa: BLE001
        results.put((worker, f"error: {type(exc).__name__}: {exc}"))


def test_given_two_hosts_rotating_one_postgres_vault_at_once_then_exactly_one_wins_and_every_value_opens_with_its_key(
    postgres_url,
):
    """No shared file lock (env keys, as on two hosts): only the database serialises them."""
    old = new_master_key()
    rivals = (new_master_key(), new_master_key())
    vault = Vault(SQLBackend(postgres_url), env={"KEYVAULT_MASTER_KEY": old})
    for i in range(30):
        vault.set(f"user{i}", "OPENAI_API_KEY", f"sk-rival-{i}-" + "y" * 20)
    vault.close()

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_rival_rotator, args=(postgres_url, (old, *rivals), w, barrier, results)) for w in range(2)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)

    assert sorted(outcomes.values()) == ["refused: StaleMasterKey", "rotated"]
    winner = rivals[[w for w, o in outcomes.items() if o == "rotated"][0]]
    loser = rivals[[w for w, o in outcomes.items() if o != "rotated"][0]]
    vault = Vault(SQLBackend(postgres_url), env={"KEYVAULT_MASTER_KEY": winner})
    try:
        for i in range(30):
            assert vault.get_value(f"user{i}", "OPENAI_API_KEY") == f"sk-rival-{i}-" + "y" * 20
    finally:
        vault.close()
    for wrong in (old, loser):
        backend = SQLBackend(postgres_url)
        try:
            with pytest.raises(WrongMasterKey):
                Vault(backend, env={"KEYVAULT_MASTER_KEY": wrong})
        finally:
            backend.close()


BURST_WRITER = textwrap.dedent(
    """
    import hashlib, os
    from jupyter_keyvault.store import Vault
    from jupyter_keyvault.store.sql import SQLBackend

    vault = Vault(SQLBackend(os.environ["KEYVAULT_DB_URL"]))  # the key comes from KEYVAULT_MASTER_KEY
    for i in range(1_000_000):
        name = f"BURST_{i}"
        vault.set("alice" if i % 3 else "bob", name, f"sk-burst-{i}-" + hashlib.sha256(name.encode()).hexdigest())
        print(name, flush=True)  # acknowledged: set() has returned
    """
)


def read_acknowledged(proc: subprocess.Popen, at_least: int, kill) -> tuple[list[str], bytes]:
    acknowledged: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while len(acknowledged) < at_least and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(line.decode().strip())
    finally:
        kill()
        rest, err = proc.communicate(timeout=60)
    acknowledged += [ln.decode() for ln in rest.split(b"\n")[:-1]]  # a torn last line was not acknowledged
    return acknowledged, err


def assert_acknowledged_survive(url: str, master_key: str, acknowledged: list[str]) -> None:
    assert acknowledged == [f"BURST_{i}" for i in range(len(acknowledged))]
    vault = Vault(SQLBackend(url), env={"KEYVAULT_MASTER_KEY": master_key})
    try:
        for i, name in enumerate(acknowledged):
            assert vault.get_value("alice" if i % 3 else "bob", name) == burst_value(i)
        assert len(acknowledged) <= vault.count() <= len(acknowledged) + 1  # at most one committed, unacknowledged
        assert len([e for e in vault.audit_events(None, limit=1000) if e.action == "set"]) == vault.count()
    finally:
        vault.close()


def test_given_a_writer_killed_with_sigkill_mid_burst_on_postgres_then_every_acknowledged_write_survives(postgres_url, master_key):
    proc = subprocess.Popen(
        [sys.executable, "-c", BURST_WRITER],
        env=child_env(KEYVAULT_MASTER_KEY=master_key, KEYVAULT_DB_URL=postgres_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    acknowledged, err = read_acknowledged(proc, 200, lambda: proc.send_signal(signal.SIGKILL))
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert len(acknowledged) >= 200, err.decode()
    assert_acknowledged_survive(postgres_url, master_key, acknowledged)


def test_given_the_postgres_server_killed_mid_burst_when_restarted_then_every_acknowledged_write_survives(
    postgres_cluster, postgres_url, master_key
):
    if not postgres_cluster.can_crash:
        pytest.skip("KEYVAULT_TEST_POSTGRES_URL points at an external server: it is not ours to kill")
    proc = subprocess.Popen(
        [sys.executable, "-c", BURST_WRITER],
        env=child_env(KEYVAULT_MASTER_KEY=master_key, KEYVAULT_DB_URL=postgres_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        acknowledged, err = read_acknowledged(proc, 200, postgres_cluster.kill_server)
    finally:
        if proc.poll() is None:
            proc.kill()
        postgres_cluster.restart_after_crash()
    assert proc.returncode == 1, err.decode()  # the writer saw the server go away
    assert b"VaultLocked" in err or b"OperationalError" in err, err.decode()[-2000:]
    assert len(acknowledged) >= 200
    assert_acknowledged_survive(postgres_url, master_key, acknowledged)
