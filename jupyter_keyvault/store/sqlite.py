"""Embedded SQLite backend: one file, WAL, 0600 files in a 0700 directory."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from .backend import StorageBackend
from .errors import StaleMasterKey, VaultLocked
from .model import AuditEvent, CredentialRecord

SCHEMA_VERSION = 1

# Each entry upgrades the schema from version i to i+1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS owner_keys (
        owner TEXT PRIMARY KEY,
        wrapped BLOB NOT NULL,
        kek_id TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS credentials (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        provider TEXT,
        payload BLOB NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_used_at REAL,
        metadata TEXT NOT NULL DEFAULT '{}',
        UNIQUE (owner, name)
    );
    CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        owner TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        outcome TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX IF NOT EXISTS audit_owner ON audit (owner, id);
    CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    """,
]

# Whole statements as literals: no SQL is ever assembled from strings at run time.
_SELECT_CRED = (
    "SELECT id, owner, name, type, provider, payload, created_at, updated_at, last_used_at, metadata "
    "FROM credentials"
)
_SELECT_ONE = _SELECT_CRED + " WHERE owner = ? AND name = ?"
_SELECT_OWNER = _SELECT_CRED + " WHERE owner = ? ORDER BY name"
_SELECT_ALL = _SELECT_CRED + " ORDER BY owner, name"
_INSERT_CRED = (
    "INSERT INTO credentials (id, owner, name, type, provider, payload, created_at, updated_at, last_used_at, "
    "metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_AUDIT_COLS = "SELECT id, at, owner, actor, action, target, outcome, detail FROM audit"
_AUDIT_QUERIES = {
    (False, False): _AUDIT_COLS + " ORDER BY id DESC LIMIT ?",
    (True, False): _AUDIT_COLS + " WHERE owner = ? ORDER BY id DESC LIMIT ?",
    (False, True): _AUDIT_COLS + " WHERE id < ? ORDER BY id DESC LIMIT ?",
    (True, True): _AUDIT_COLS + " WHERE owner = ? AND id < ? ORDER BY id DESC LIMIT ?",
}


def _blob(value: bytes | str) -> bytes:
    """A payload as bytes; legacy rows written by hand (sqlite3 shell) may hold TEXT."""
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def _record(row: tuple) -> CredentialRecord:
    return CredentialRecord(
        id=row[0],
        owner=row[1],
        name=row[2],
        type=row[3],
        provider=row[4],
        payload=_blob(row[5]),
        created_at=row[6],
        updated_at=row[7],
        last_used_at=row[8],
        metadata=json.loads(row[9]) if row[9] and row[9] != "{}" else {},
    )


def _event(row: tuple) -> AuditEvent:
    return AuditEvent(*row)


class SQLiteBackend(StorageBackend):
    name = "sqlite"

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "FULL", busy_timeout_ms: int = 30_000):
        self.path = Path(path).expanduser().absolute()
        self.location = str(self.path)
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._prepare_files()
        with self._tx() as db:
            self._migrate(db)
        self._tighten_sidecars()

    # -- files and connections
    def _prepare_files(self) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
                raise VaultLocked(f"vault directory {directory} is not readable and writable by this user")
            if not self.path.exists():
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
            if not os.access(self.path, os.R_OK | os.W_OK):
                raise VaultLocked(f"vault file {self.path} is not readable and writable by this user")
        except PermissionError:
            raise VaultLocked(f"vault directory {directory} is not readable and writable by this user") from None
        except OSError as exc:
            raise VaultLocked(f"cannot open vault at {self.path}: {exc.strerror or exc}") from None
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077 and directory.name == "keyvault":
            os.chmod(directory, 0o700)  # our own directory: keep it private

    def _tighten_sidecars(self) -> None:
        for suffix in ("-wal", "-shm", "-journal"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
                db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                self._enable_wal(db)
                db.execute(f"PRAGMA synchronous = {self._synchronous}")
                # Overwrite freed cells: a migrated plaintext row must not linger on disk.
                db.execute("PRAGMA secure_delete = ON")
            except sqlite3.Error as exc:
                raise VaultLocked(f"cannot open vault at {self.path}: {exc}") from None
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def _enable_wal(self, db: sqlite3.Connection) -> None:
        """Switch to WAL. The switch does not wait on the busy handler, so processes
        opening a brand-new vault at the same moment get "database is locked": retry."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay = 0.001
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as exc:
            raise VaultLocked(f"vault is busy or unreadable: {exc}") from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")  # also after a failed COMMIT, so the connection stays usable
            raise

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise VaultLocked(
                f"vault schema version {version} is newer than this jupyter-keyvault supports ({SCHEMA_VERSION}); upgrade"
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in _split_sql(MIGRATIONS[step]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {step + 1}")

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    # -- meta
    def meta_get(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def meta_init(self, key: str, value: str) -> str:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def meta_set(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- owner keys
    def get_owner_key(self, owner: str) -> tuple[bytes, str] | None:
        row = self._conn().execute("SELECT wrapped, kek_id FROM owner_keys WHERE owner = ?", (owner,)).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    def init_owner_key(self, owner: str, wrapped: bytes, kek_id: str) -> bytes:
        with self._tx() as db:
            current = db.execute("SELECT value FROM meta WHERE key = 'kek_id'").fetchone()
            if current is not None and current[0] != kek_id:
                raise StaleMasterKey("the master key was rotated by another process")
            db.execute("INSERT OR IGNORE INTO owner_keys (owner, wrapped, kek_id) VALUES (?, ?, ?)", (owner, wrapped, kek_id))
            return bytes(db.execute("SELECT wrapped FROM owner_keys WHERE owner = ?", (owner,)).fetchone()[0])

    def rewrap_owner_keys(self, rewrap: Callable[[str, bytes], bytes], new_kek_id: str, meta: dict[str, str]) -> int:
        with self._tx() as db:
            rows = db.execute("SELECT owner, wrapped FROM owner_keys").fetchall()
            for owner, wrapped in rows:
                db.execute(
                    "UPDATE owner_keys SET wrapped = ?, kek_id = ? WHERE owner = ?",
                    (rewrap(owner, bytes(wrapped)), new_kek_id, owner),
                )
            for key, value in meta.items():
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return len(rows)

    def count_owners(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM owner_keys").fetchone()[0]

    # -- credentials
    def upsert_credential(self, rec: CredentialRecord, audit: AuditEvent | None = None) -> tuple[CredentialRecord, bool]:
        with self._tx() as db:
            row = db.execute(_SELECT_ONE, (rec.owner, rec.name)).fetchone()
            if row is None:
                db.execute(
                    _INSERT_CRED,
                    (rec.id, rec.owner, rec.name, rec.type, rec.provider, rec.payload, rec.created_at,
                     rec.updated_at, rec.last_used_at, json.dumps(rec.metadata)),
                )
                created = True
            else:
                old = _record(row)
                db.execute(
                    "UPDATE credentials SET type = ?, provider = ?, payload = ?, updated_at = ?, metadata = ? WHERE id = ?",
                    (rec.type, rec.provider, rec.payload, rec.updated_at, json.dumps(rec.metadata), old.id),
                )
                rec.id, rec.created_at, rec.last_used_at = old.id, old.created_at, old.last_used_at
                created = False
            if audit is not None:
                self._insert_audit(db, replace(audit, detail="created" if created else "replaced"))
            return rec, created

    def get_credential(self, owner: str, name: str) -> CredentialRecord | None:
        row = self._conn().execute(
            _SELECT_ONE, (owner, name)
        ).fetchone()
        return _record(row) if row else None

    def list_credentials(self, owner: str) -> list[CredentialRecord]:
        rows = self._conn().execute(
            _SELECT_OWNER, (owner,)
        ).fetchall()
        return [_record(r) for r in rows]

    def delete_credential(self, owner: str, name: str, audit: AuditEvent | None = None) -> bool:
        with self._tx() as db:
            deleted = db.execute("DELETE FROM credentials WHERE owner = ? AND name = ?", (owner, name)).rowcount > 0
            if deleted and audit is not None:
                self._insert_audit(db, audit)
            return deleted

    def touch_credential(self, owner: str, name: str, at: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE credentials SET last_used_at = ? WHERE owner = ? AND name = ?", (at, owner, name))

    def iter_all_credentials(self):
        rows = self._conn().execute(_SELECT_ALL).fetchall()
        return [_record(r) for r in rows]

    def replace_payload(self, rec_id: str, payload: bytes, expected: bytes) -> bool:
        with self._tx() as db:
            return db.execute(
                "UPDATE credentials SET payload = ? WHERE id = ? AND CAST(payload AS BLOB) = ?", (payload, rec_id, expected)
            ).rowcount > 0

    def count_credentials(self, owner: str | None = None) -> int:
        if owner is None:
            return self._conn().execute("SELECT COUNT(*) FROM credentials").fetchone()[0]
        return self._conn().execute("SELECT COUNT(*) FROM credentials WHERE owner = ?", (owner,)).fetchone()[0]

    # -- audit
    def append_audit(self, event: AuditEvent) -> None:
        with self._tx() as db:
            self._insert_audit(db, event)

    @staticmethod
    def _insert_audit(db: sqlite3.Connection, event: AuditEvent) -> None:
        db.execute(
            "INSERT INTO audit (at, owner, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.at, event.owner, event.actor, event.action, event.target, event.outcome, event.detail),
        )

    def list_audit(self, owner: str | None, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]:
        args: list = [a for a in (owner, before_id) if a is not None] + [int(limit)]
        sql = _AUDIT_QUERIES[(owner is not None, before_id is not None)]
        return [_event(r) for r in self._conn().execute(sql, args).fetchall()]


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current).strip()
        if joined.endswith(";") and (not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")):
            statements.append(joined)
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements
