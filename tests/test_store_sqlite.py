"""SQLiteBackend: the shared StorageBackend contract plus what only SQLite has
(file permissions, schema versioning, append-only triggers, on-disk hygiene)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from store_suite import StorageBackendSuite, make_event, make_record

from jupyter_keyvault.store import SQLiteBackend, VaultDamaged, VaultError, VaultLocked
from jupyter_keyvault.store.sqlite import SCHEMA_VERSION


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


class _umask:
    def __init__(self, mask: int):
        self.mask = mask

    def __enter__(self):
        self.old = os.umask(self.mask)

    def __exit__(self, *exc):
        os.umask(self.old)


class TestSQLiteBackend(StorageBackendSuite):
    @pytest.fixture
    def db_path(self, tmp_path) -> Path:
        return tmp_path / "keyvault" / "vault.db"

    @pytest.fixture
    def backend(self, db_path):
        b = SQLiteBackend(db_path)
        b.create_vault({})  # the contract is about an existing (empty) vault
        yield b
        b.close()

    # ------------------------------------------------------------------ permissions
    @pytest.mark.parametrize("umask", [0o000, 0o022, 0o002])
    def test_given_any_umask_when_a_new_vault_is_written_then_dir_is_0700_and_db_wal_shm_are_0600(self, db_path, umask):
        with _umask(umask):
            b = SQLiteBackend(db_path)
            try:
                b.upsert_credential(make_record())
                b.append_audit(make_event())
                assert mode(db_path.parent) == 0o700
                assert mode(db_path) == 0o600
                for suffix in ("-wal", "-shm"):
                    assert sidecar(db_path, suffix).exists(), f"WAL mode should keep {suffix} while open"
                    assert mode(sidecar(db_path, suffix)) == 0o600
            finally:
                b.close()

    def test_given_a_world_readable_keyvault_dir_and_db_when_opened_then_both_are_made_private(self, db_path):
        SQLiteBackend(db_path).create_vault({})
        os.chmod(db_path.parent, 0o755)
        os.chmod(db_path, 0o644)
        b = SQLiteBackend(db_path)
        b.close()
        assert mode(db_path.parent) == 0o700
        assert mode(db_path) == 0o600

    def test_given_a_world_readable_wal_left_behind_when_opened_then_it_is_made_private(self, db_path):
        made = SQLiteBackend(db_path)
        made.create_vault({})
        made.close()
        wal = sidecar(db_path, "-wal")
        db = sqlite3.connect(db_path)  # a foreign connection leaves a WAL behind while open
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
        db.commit()
        try:
            os.chmod(wal, 0o644)
            b = SQLiteBackend(db_path)
            try:
                assert mode(wal) == 0o600
                assert b.meta_get("x") == "y"
            finally:
                b.close()
        finally:
            db.close()

    # ------------------------------------------------------------------ schema
    def test_given_a_new_vault_when_opened_then_the_schema_version_is_recorded(self, backend, db_path):
        db = sqlite3.connect(db_path)
        try:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert {"meta", "owner_keys", "credentials", "audit"} <= tables
        finally:
            db.close()

    def test_given_an_existing_vault_when_reopened_then_its_data_and_schema_version_are_kept(self, backend, db_path):
        backend.upsert_credential(make_record(payload=b"kept"))
        backend.meta_init("vault_id", "abc")
        other = SQLiteBackend(db_path)
        try:
            assert other.get_credential("alice", "OPENAI_API_KEY").payload == b"kept"
            assert other.meta_get("vault_id") == "abc"
            assert other._conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            other.close()

    def test_given_a_vault_from_a_newer_version_when_opened_then_it_is_refused_with_a_clear_error_and_left_alone(self, db_path):
        b = SQLiteBackend(db_path)
        b.upsert_credential(make_record(payload=b"from the future"))
        b.close()
        db = sqlite3.connect(db_path)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.commit()
        db.close()
        before = db_path.read_bytes()

        with pytest.raises(VaultLocked) as info:
            SQLiteBackend(db_path)

        message = str(info.value)
        assert f"schema version {SCHEMA_VERSION + 1}" in message
        assert "newer" in message and "upgrade" in message
        db = sqlite3.connect(db_path)
        try:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
            assert db.execute("SELECT payload FROM credentials").fetchone()[0] == b"from the future"
        finally:
            db.close()
        assert db_path.read_bytes() == before

    def test_given_a_vault_when_opened_then_it_uses_wal_and_secure_delete(self, backend, db_path):
        conn = backend._conn()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1

    def test_given_a_replaced_payload_when_the_vault_is_closed_then_the_old_bytes_are_gone_from_disk(self, db_path):
        old = b"legacy-plaintext-" + os.urandom(8).hex().encode()
        b = SQLiteBackend(db_path)
        rec = make_record(payload=old)
        b.upsert_credential(rec)
        b.replace_payload(rec.id, b"\x00KV1" + os.urandom(64), rec.payload)
        b.upsert_credential(make_record(name="DELETED", payload=old + b"-deleted"))
        b.delete_credential("alice", "DELETED")
        b.close()  # last connection: checkpoints the WAL into the db file
        for path in db_path.parent.iterdir():
            assert old not in path.read_bytes(), path.name

    # ------------------------------------------------------------------ append-only audit
    def test_given_audit_rows_when_updated_through_raw_sqlite_then_the_trigger_refuses(self, backend, db_path):
        backend.append_audit(make_event(outcome="ok"))
        db = sqlite3.connect(db_path)
        try:
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute("UPDATE audit SET outcome = 'forged'")
            db.rollback()
            assert db.execute("SELECT outcome FROM audit").fetchall() == [("ok",)]
        finally:
            db.close()
        assert backend.list_audit(None)[0].outcome == "ok"

    def test_given_audit_rows_when_deleted_through_raw_sqlite_then_the_trigger_refuses(self, backend, db_path):
        backend.append_audit(make_event())
        backend.append_audit(make_event(action="delete"))
        db = sqlite3.connect(db_path)
        try:
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute("DELETE FROM audit")
            db.rollback()
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute("DELETE FROM audit WHERE action = 'set'")
            db.rollback()
            assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 2
        finally:
            db.close()
        assert len(backend.list_audit(None)) == 2

    def test_given_the_audit_insert_fails_when_a_credential_is_written_then_the_write_is_rolled_back(self, backend, db_path):
        backend.upsert_credential(make_record(name="EXISTING", payload=b"old"))
        db = sqlite3.connect(db_path, isolation_level=None)
        try:
            db.execute(
                "CREATE TRIGGER audit_refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit disk full'); END"
            )
        finally:
            db.close()
        with pytest.raises(VaultError, match="refused the operation: audit disk full"):
            backend.upsert_credential(make_record(name="NEW"), audit=make_event())
        with pytest.raises(VaultError, match="refused the operation: audit disk full"):
            backend.upsert_credential(make_record(name="EXISTING", payload=b"new"), audit=make_event())
        with pytest.raises(VaultError, match="refused the operation: audit disk full"):
            backend.delete_credential("alice", "EXISTING", audit=make_event(action="delete"))
        assert backend.get_credential("alice", "NEW") is None
        assert backend.get_credential("alice", "EXISTING").payload == b"old"

    # ------------------------------------------------------------------ locations
    def test_given_a_path_whose_parent_is_a_file_when_opened_then_a_clear_vault_locked_error_is_raised(self, tmp_path):
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        with pytest.raises(VaultLocked, match="cannot open vault at .*must be a directory"):
            SQLiteBackend(blocker / "vault.db")

    def test_given_a_relative_path_when_opened_then_the_location_is_absolute(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        b = SQLiteBackend(Path("rel") / "vault.db")
        try:
            assert b.location == str(tmp_path / "rel" / "vault.db")
            assert Path(b.location).is_absolute()
        finally:
            b.close()

    def test_given_two_backends_on_one_file_when_both_write_then_each_sees_the_others_rows(self, backend, db_path):
        other = SQLiteBackend(db_path)
        try:
            backend.upsert_credential(make_record("alice", "A"))
            other.upsert_credential(make_record("bob", "B"))
            assert backend.get_credential("bob", "B") is not None
            assert other.get_credential("alice", "A") is not None
            assert other.meta_init("vault_id", "one") == backend.meta_init("vault_id", "two") == "one"
        finally:
            other.close()


# ====================================================================== damaged files and identity
class TestDamagedFiles:
    @pytest.fixture
    def db_path(self, tmp_path) -> Path:
        path = tmp_path / "keyvault" / "vault.db"
        path.parent.mkdir()
        return path

    def test_given_a_zero_byte_vault_file_when_opened_then_vault_damaged_names_it_and_it_is_left_alone(self, db_path):
        db_path.write_bytes(b"")
        with pytest.raises(VaultDamaged, match=r"vault file .*vault\.db is damaged: it is empty \(0 bytes\)"):
            SQLiteBackend(db_path)
        assert db_path.read_bytes() == b"" and sorted(p.name for p in db_path.parent.iterdir()) == ["vault.db"]

    def test_given_a_file_that_is_not_sqlite_when_opened_then_vault_damaged(self, db_path):
        db_path.write_bytes(b"{\"not\": \"a database\"}" * 10)
        with pytest.raises(VaultDamaged, match="not a SQLite database"):
            SQLiteBackend(db_path)

    def test_given_a_sqlite_file_without_a_vault_schema_when_opened_then_vault_damaged(self, db_path):
        with sqlite3.connect(db_path) as db:
            db.execute("CREATE TABLE unrelated (x)")
        with pytest.raises(VaultDamaged, match="without a vault in it"):
            SQLiteBackend(db_path)

    def test_given_a_truncated_vault_file_when_opened_then_vault_damaged_says_truncated(self, db_path):
        b = SQLiteBackend(db_path)
        for i in range(200):
            b.upsert_credential(make_record(name=f"K{i}", payload=os.urandom(200)))
        b.close()
        data = db_path.read_bytes()
        db_path.write_bytes(data[: len(data) // 2])
        with pytest.raises(VaultDamaged, match=r"it is truncated \(\d+ of \d+ bytes\)"):
            SQLiteBackend(db_path)

    def test_given_a_missing_vault_file_when_opened_then_it_is_new_and_nothing_is_written_until_used(self, db_path):
        b = SQLiteBackend(db_path)
        try:
            assert b.is_new() and not db_path.exists()
            assert b.create_vault({"vault_id": "v1"}) is True
            assert not b.is_new() and b.meta_get("vault_id") == "v1"
            assert b.create_vault({"vault_id": "v2"}) is False
        finally:
            b.close()

    def test_given_two_creators_racing_on_one_missing_file_then_exactly_one_wins_and_both_see_its_identity(self, db_path):
        backends = [SQLiteBackend(db_path) for _ in range(4)]
        try:
            from store_suite import run_concurrently

            won = run_concurrently(lambda i: backends[i].create_vault({"vault_id": f"v{i}"}), list(range(4)))
            assert sorted(won) == [False, False, False, True]
            winner = f"v{won.index(True)}"
            assert {b.meta_get("vault_id") for b in backends} == {winner}
        finally:
            for b in backends:
                b.close()
        assert sorted(p.name for p in db_path.parent.iterdir() if not p.name.startswith("vault.db")) == []

    def test_given_a_missing_vault_file_beside_a_wal_with_frames_when_opened_then_vault_damaged(self, db_path):
        db_path.with_name("vault.db-wal").write_bytes(b"\x37\x7f\x06\x82" + os.urandom(600))
        with pytest.raises(VaultDamaged, match="the file is missing but vault.db-wal"):
            SQLiteBackend(db_path)
        assert not db_path.exists()

    def test_given_writes_still_in_the_wal_when_backed_up_then_the_copy_has_them_and_a_copy_of_the_file_alone_does_not(
        self, db_path, tmp_path
    ):
        b = SQLiteBackend(db_path)
        try:
            b.create_vault({"vault_id": "v"})
            b._conn().execute("PRAGMA wal_autocheckpoint = 0")
            b.upsert_credential(make_record(name="ONLY_IN_WAL", payload=b"wal"))
            (tmp_path / "file-alone.db").write_bytes(db_path.read_bytes())
            size = b.backup_to(tmp_path / "backup.db")
        finally:
            b.close()
        assert size == (tmp_path / "backup.db").stat().st_size and mode(tmp_path / "backup.db") == 0o600
        with sqlite3.connect(tmp_path / "file-alone.db") as db:
            assert db.execute("SELECT COUNT(*) FROM credentials").fetchone()[0] == 0
        copy = SQLiteBackend(tmp_path / "backup.db")
        try:
            assert copy.get_credential("alice", "ONLY_IN_WAL").payload == b"wal"
            assert copy.meta_get("vault_id") == "v"
        finally:
            copy.close()

    def test_given_an_open_vault_when_checked_then_quick_check_is_ok_and_timed(self, db_path):
        b = SQLiteBackend(db_path)
        try:
            b.create_vault({})
            result = b.check_integrity()
            assert result["ok"] is True and result["detail"] == "ok" and 0 <= result["seconds"] < 5
            assert b.health() == {"integrity": b.integrity, "writable": True, "problems": []}
        finally:
            b.close()


