"""Storage faults, injected for real, as a user meets them through `jupyter keyvault`.

Each test breaks the vault's storage the way it breaks in the field -- a full disk, a
read-only mount, a file emptied or truncated, a lost WAL, a flipped byte, a file the
user may not read, the wrong master key -- runs the real CLI in a subprocess, and
asserts the ONE line the user sees and that nothing acknowledged was lost.

Tests run as root (so does CI): a 2 MiB tmpfs is mounted for the vault and unmounted
in teardown; permission bits are enforced by running the CLI with the DAC-override
capabilities dropped (setpriv), since root otherwise reads through them.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import AS_UNPRIVILEGED as DROP_DAC
from test_cli import ERROR, OWNER, Cli, new_canary

from jupyter_keyvault.store import SQLiteBackend, Vault, VaultDiskFull, VaultReadOnly
from jupyter_keyvault.testing.pytest_plugin import new_master_key

pytestmark = pytest.mark.faults


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a 2 MiB tmpfs (root only, as in CI); yields a mounter for a directory."""
    if os.geteuid() != 0:  # CI runs as root, where KEYVAULT_STRICT_SKIPS=1 would fail this skip anyway
        pytest.skip("mounting a tmpfs needs root (CI runs these as root)")
    mounted: list[Path] = []

    def mount(where: Path, size: str = "2m") -> Path:
        where.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["mount", "-o", "remount,rw", str(where)], capture_output=True)
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def user(tmp_path, master_key) -> Cli:
    return Cli(tmp_path / "user", master_key)


def open_vault(user: Cli) -> Vault:
    return Vault(SQLiteBackend(user.vault_db), env={"KEYVAULT_MASTER_KEY": user.master_key})


def store_values(user: Cli, count: int, prefix: str = "KEY") -> dict[str, str]:
    values = {}
    for i in range(count):
        name, value = f"{prefix}_{i}", new_canary()
        user.secrets.add(value)
        user.ok("set", name, input=value)
        values[name] = value
    return values


def assert_all_present(user: Cli, values: dict[str, str]) -> None:
    """Nothing acknowledged lost: every name is listed and every value decrypts."""
    listed = {i["name"] for i in user.list_json()}
    assert set(values) <= listed, sorted(set(values) - listed)
    vault = open_vault(user)
    try:
        for name, value in values.items():
            assert vault.get_value(OWNER, name, touch=False) == value
    finally:
        vault.close()



def fill_disk(directory: Path) -> Path:
    """Write a filler file until the filesystem has not one byte left."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 1):
            while True:
                try:
                    f.write(b"\xa5" * chunk)
                except OSError:
                    break
    assert os.statvfs(directory).f_bavail == 0
    return filler


# ====================================================================== full disk
def test_given_a_full_disk_when_setting_then_one_disk_full_line_and_after_freeing_space_writes_work(user, tmpfs):
    tmpfs(user.vault_dir)
    values = store_values(user, 3)
    filler = fill_disk(user.vault_dir)

    new_value = new_canary()
    user.secrets.add(new_value)
    res = user.fail("set", "WHILE_FULL", input=new_value, match="disk full")
    assert str(user.vault_dir) in res.err and "free some space" in res.err
    res = user.fail("delete", "KEY_0", match="disk full")
    # A new process cannot even open the vault: SQLite needs room for its -shm index. (A
    # server that already has it open keeps reading: see the next test.)
    user.fail("list", match="disk full")

    filler.unlink()
    user.ok("set", "AFTER_FREE", input=new_value)
    assert_all_present(user, {**values, "AFTER_FREE": new_value})
    assert "WHILE_FULL" not in {i["name"] for i in user.list_json()}
    user.assert_not_on_disk()


def test_given_a_full_disk_and_no_vault_yet_when_listing_then_one_disk_full_line_and_no_partial_vault(user, tmpfs):
    tmpfs(user.vault_dir)
    filler = fill_disk(user.vault_dir)
    user.fail("list", match="disk full")
    assert sorted(p.name for p in user.vault_dir.iterdir()) == ["filler"]  # nothing half-made to trip over later
    filler.unlink()
    assert "No credentials yet" in user.ok("list").out


def test_given_a_full_disk_when_a_value_is_read_then_it_is_returned_even_though_last_used_cannot_be_recorded(
    user, tmpfs
):
    tmpfs(user.vault_dir)
    values = store_values(user, 1)
    vault = open_vault(user)
    try:
        vault.list(OWNER)
        fill_disk(user.vault_dir)
        assert vault.get_value(OWNER, "KEY_0") == values["KEY_0"]  # touch=True: the advisory write fails quietly
    finally:
        vault.close()


def test_given_a_disk_that_fills_while_a_vault_is_open_then_writes_fail_clearly_and_acknowledged_ones_survive(
    user, tmpfs
):
    tmpfs(user.vault_dir)
    vault = open_vault(user)
    acknowledged = {}
    try:
        filler = None
        for i in range(2000):
            value = new_canary()
            try:
                vault.set(OWNER, f"FILL_{i}", value)
            except VaultDiskFull as exc:
                assert "disk full" in str(exc) and str(user.vault_dir) in str(exc)
                break
            acknowledged[f"FILL_{i}"] = value
            if i == 5:
                filler = fill_disk(user.vault_dir)  # leave the WAL a little room to grow, then none
        else:
            pytest.fail("the disk never filled")
        assert vault.list(OWNER, include_env=False)  # reads still work on a full disk
        filler.unlink()
        vault.set(OWNER, "AFTER_FREE", "sk-after-free-value")
        acknowledged["AFTER_FREE"] = "sk-after-free-value"
    finally:
        vault.close()
    assert_all_present(user, acknowledged)


# ====================================================================== read-only
def test_given_a_read_only_filesystem_when_listing_and_setting_then_reads_work_and_writes_get_one_clear_line(
    user, tmpfs
):
    mount = tmpfs(user.vault_dir)
    values = store_values(user, 2)
    _run("mount", "-o", "remount,ro", str(mount))

    assert {i["name"] for i in user.list_json()} == set(values)
    res = user.fail("set", "WHILE_RO", input="sk-proj-" + "r" * 24, match="read-only")
    assert "filesystem is mounted read-only" in res.err and str(user.vault_db) in res.err
    user.fail("delete", "KEY_0", match="read-only")
    status = user.ok("status").out
    assert "Writes:      REFUSED" in status and "read-only" in status

    _run("mount", "-o", "remount,rw", str(mount))
    user.ok("set", "AFTER_RW", input="sk-proj-" + "w" * 24)
    assert_all_present(user, values)


def test_given_a_read_only_bind_mount_of_a_vault_when_opened_then_reads_work_and_writes_raise_vault_read_only(
    user, tmpfs, tmp_path
):
    tmpfs(user.vault_dir)
    values = store_values(user, 2)
    view = tmp_path / "ro-view"
    view.mkdir()
    _run("mount", "--bind", str(user.vault_dir), str(view))
    try:
        _run("mount", "-o", "remount,bind,ro", str(view))
        vault = Vault(SQLiteBackend(view / "vault.db"), env={"KEYVAULT_MASTER_KEY": user.master_key})
        try:
            assert {i.name for i in vault.list(OWNER)} == set(values)
            assert vault.get_value(OWNER, "KEY_0") == values["KEY_0"]
            with pytest.raises(VaultReadOnly, match="filesystem is mounted read-only"):
                vault.set(OWNER, "WHILE_RO", "sk-while-read-only")
            assert vault.status()["storage"]["writable"] is False
        finally:
            vault.close()
    finally:
        if subprocess.run(["umount", str(view)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(view)], capture_output=True)
    assert_all_present(user, values)


# ====================================================================== permissions
def test_given_a_vault_file_this_user_may_not_read_when_listing_then_the_message_names_the_file(user):
    store_values(user, 1)
    os.chmod(user.vault_db, 0o000)
    res = user.run("list", wrapper=DROP_DAC)
    assert res.rc == 1 and len(res.err_lines) == 1, str(res)
    line = res.err_lines[0]
    assert line.startswith(ERROR) and "permission denied" in line
    assert str(user.vault_db) in line and "mode 0000" in line
    assert "Traceback" not in res.err


def test_given_a_vault_file_made_read_only_when_setting_then_writes_are_refused_and_reads_work(user):
    values = store_values(user, 1)
    os.chmod(user.vault_db, 0o400)
    assert {i["name"] for i in user.list_json(wrapper=DROP_DAC)} == set(values)
    res = user.run("set", "NEW_KEY", input="sk-proj-" + "n" * 24, wrapper=DROP_DAC)
    assert res.rc == 1 and len(res.err_lines) == 1 and "read-only" in res.err, str(res)
    assert "not writable" in res.err and str(user.vault_db) in res.err
    os.chmod(user.vault_db, 0o600)
    assert_all_present(user, values)


# ====================================================================== damaged files
def test_given_a_zero_byte_vault_file_when_used_then_it_is_refused_as_damaged_and_never_replaced(user):
    user.vault_dir.mkdir(parents=True)
    user.vault_db.write_bytes(b"")
    for args, stdin in ((["list"], None), (["set", "NEW_KEY"], "sk-proj-" + "z" * 24), (["status"], None)):
        res = user.fail(*args, input=stdin, match="is damaged: it is empty (0 bytes)")
        assert str(user.vault_db) in res.err and "restore it from a backup" in res.err
    assert user.vault_db.read_bytes() == b""
    assert sorted(p.name for p in user.vault_dir.iterdir()) == ["vault.db"]


def test_given_no_vault_file_when_listing_then_a_new_empty_vault_is_created(user):
    assert "No credentials yet" in user.ok("list").out
    assert user.vault_db.stat().st_size > 0


@pytest.mark.parametrize("keep", ["half", "header"])
def test_given_a_truncated_vault_file_when_used_then_it_is_refused_as_damaged(user, keep):
    store_values(user, 40)
    data = user.vault_db.read_bytes()
    cut = len(data) // 2 if keep == "half" else 60
    user.vault_db.write_bytes(data[:cut])
    expect = "is truncated" if keep == "half" else "not a SQLite database"
    user.fail("list", match=expect)
    user.fail("set", "NEW_KEY", input="sk-proj-" + "t" * 24, match=expect)
    assert user.vault_db.stat().st_size == cut


def test_given_a_vault_without_its_identity_records_when_used_then_it_is_refused_not_opened_empty(user):
    # What an old-style vault looks like after losing its WAL: schema checkpointed, identity not.
    store_values(user, 1)
    with sqlite3.connect(user.vault_db) as db:
        db.execute("DELETE FROM meta")
        db.execute("DELETE FROM credentials")
    res = user.fail("list", match="has no vault id and key check record")
    assert "restore it from a backup" in res.err and str(user.vault_db) in res.err


def test_given_a_missing_vault_file_beside_its_wal_when_used_then_it_is_refused_as_damaged(user):
    store_values(user, 1)
    holder = sqlite3.connect(user.vault_db)  # holds the WAL open so it stays on disk
    try:
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        holder.execute("INSERT INTO meta (key, value) VALUES ('late', 'write')")
        holder.commit()
        saved_wal = user.vault_dir / "saved-wal"
        shutil.copy(user.vault_dir / "vault.db-wal", saved_wal)
    finally:
        holder.close()
    user.vault_db.unlink()
    shutil.copy(saved_wal, user.vault_dir / "vault.db-wal")
    user.fail("list", match="the file is missing but vault.db-wal")
    assert not user.vault_db.exists()


def test_given_the_wrong_master_key_when_listing_then_one_wrong_master_key_line(user):
    values = store_values(user, 1)
    res = user.fail("list", env={"KEYVAULT_MASTER_KEY": new_master_key()}, match="wrong master key")
    assert str(user.vault_db) in res.err
    assert_all_present(user, values)


def _index_root_page(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'credentials'"
        ).fetchone()[0]
    return root, page_size


def test_given_a_flipped_byte_in_an_index_page_then_writes_are_refused_and_the_values_are_recoverable(user, tmp_path):
    values = store_values(user, 30)
    root, page_size = _index_root_page(user.vault_db)
    data = bytearray(user.vault_db.read_bytes())
    offset = (root - 1) * page_size
    data[offset + 3] ^= 0xFF  # the page's cell count: the b-tree no longer adds up
    user.vault_db.write_bytes(bytes(data))

    res = user.fail("set", "NEW_KEY", input="sk-proj-" + "f" * 24, match="integrity check failed")
    assert str(user.vault_db) in res.err and "writes are refused" in res.err
    status = user.ok("status").out
    assert "Integrity:   FAILED" in status and "Writes:      REFUSED" in status
    # Reads are still attempted, and succeed: they scan the intact table, not the damaged index.
    assert {i["name"] for i in user.list_json()} == set(values)

    # Nothing acknowledged is lost: every value still decrypts, and a rescue export from
    # the damaged vault restores all of them into a new one.
    assert_all_present(user, values)
    backup = tmp_path / "rescue.kvbackup"
    env = {"KEYVAULT_BACKUP_PASSPHRASE": "rescue passphrase"}
    user.ok("export", backup, env=env, quiet=False)
    restored = Cli(tmp_path / "restored", user.master_key)
    restored.secrets |= user.secrets
    restored.ok("import", backup, env=env)
    assert "Integrity:   ok" in restored.ok("status").out
    assert_all_present(restored, values)


# ====================================================================== lost WAL
WRITER = r"""
import os, sys, time
from jupyter_keyvault.store import SQLiteBackend, Vault, VaultDiskFull, VaultReadOnly
from jupyter_keyvault.testing.pytest_plugin import new_master_key
vault = Vault(SQLiteBackend(sys.argv[1]))
phase_file = sys.argv[2]
i = 0
while True:
    name = f"W_{i}"
    vault.set("cli-tester", name, f"sk-proj-acked-{i:06d}-" + "x" * 20)
    print(name, flush=True)  # acknowledged
    i += 1
    if i == 20:
        while not os.path.exists(phase_file):  # wait until the test has deleted the WAL
            time.sleep(0.01)
    time.sleep(0.002)
"""


def test_given_the_wal_deleted_under_a_running_writer_and_a_crash_then_every_acknowledged_write_survives(
    user, tmp_path
):
    store_values(user, 1, prefix="BEFORE")
    env = user.command_env(None)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(user.vault_db), str(tmp_path / "wal-deleted")],
                              stdout=subprocess.PIPE, env=env, text=True)
    acked = []
    try:
        while len(acked) < 20:
            acked.append(writer.stdout.readline().strip())
        wal = user.vault_dir / "vault.db-wal"
        assert wal.exists() and wal.stat().st_size > 0
        wal.unlink()
        (user.vault_dir / "vault.db-shm").unlink()
        (tmp_path / "wal-deleted").write_text("go")
        while len(acked) < 40:
            acked.append(writer.stdout.readline().strip())
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    acked = [a for a in acked if a]
    assert len(acked) == 40
    expected = {name: f"sk-proj-acked-{int(name[2:]):06d}-" + "x" * 20 for name in acked}
    assert_all_present(user, expected)
