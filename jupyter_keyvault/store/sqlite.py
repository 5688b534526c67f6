"""Embedded SQLite backend: one file, WAL, 0600 files in a 0700 directory."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sqlite3
import stat
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from . import faults
from .backend import StorageBackend
from .errors import StaleMasterKey, VaultError, VaultLocked
from .masterkey import fsync_path
from .model import AuditEvent, CredentialRecord

log = logging.getLogger("jupyter_keyvault.store")

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
# One page of a listing, from the (owner, name) index; 'vault_token' is model.HIDDEN_TYPES (tokens are not listed).
_SELECT_PAGE = _SELECT_CRED + " WHERE owner = ? AND name > ? AND type != 'vault_token' ORDER BY name LIMIT ?"
# After a failed integrity check, reads scan the table itself: a damaged index (the usual
# victim of a flipped byte) must not hide credentials that are intact in the table.
_SCAN_CRED = _SELECT_CRED + " NOT INDEXED"
_READS = {
    False: {"one": _SELECT_ONE, "owner": _SELECT_OWNER, "all": _SELECT_ALL, "page": _SELECT_PAGE,
            "count": "SELECT COUNT(*) FROM credentials", "count_owner": "SELECT COUNT(*) FROM credentials WHERE owner = ?"},
    True: {"one": _SCAN_CRED + " WHERE owner = ? AND name = ?", "owner": _SCAN_CRED + " WHERE owner = ? ORDER BY name",
           "page": _SCAN_CRED + " WHERE owner = ? AND name > ? AND type != 'vault_token' ORDER BY name LIMIT ?",
           "all": _SCAN_CRED + " ORDER BY owner, name", "count": "SELECT COUNT(*) FROM credentials NOT INDEXED",
           "count_owner": "SELECT COUNT(*) FROM credentials NOT INDEXED WHERE owner = ?"},
}
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


SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100


def _guard(method):
    """Every public operation: SQLite and OS errors become one clear VaultError."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise faults.from_sqlite(exc, self.path) from None
        except OSError as exc:
            raise faults.from_os(exc, self.path) from None

    return guarded


class SQLiteBackend(StorageBackend):
    """A vault in one SQLite file (WAL mode: `vault.db-wal` is part of the vault).

    A missing file is a new vault, created atomically (built aside, then linked into
    place) with its schema and identity records in one transaction. A file that exists
    but is empty, truncated, not SQLite, malformed or without a schema is refused with
    VaultDamaged -- never replaced. `PRAGMA quick_check` runs on open; if it fails,
    writes are refused until the user acts, and reads are still attempted.
    """

    name = "sqlite"

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "FULL", busy_timeout_ms: int = 30_000,
                 check_integrity: bool = True):
        self.path = Path(path).expanduser().absolute()
        self.location = str(self.path)
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._check_integrity = check_integrity
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._read_only_reason: str | None = None
        self._write_refusal: VaultError | None = None
        self._wal_inode: int | None = None
        self._wal_lost = False
        self.integrity: dict = {"ok": None, "detail": "not checked", "seconds": None}
        self._reads = _READS[False]
        self._prepare_directory()
        self._new = not os.path.lexists(self.path)
        if self._new:
            if self._wal_path.exists() and self._wal_path.stat().st_size > 0:
                raise faults.damaged(self.path, f"the file is missing but {self._wal_path.name} (its recent writes) "
                                                "is still there")
        else:
            self._open_existing()

    # -- files and connections
    def _prepare_directory(self) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not directory.is_dir():
                raise FileExistsError(errno.EEXIST, "File exists")
        except (FileExistsError, NotADirectoryError) as exc:
            raise VaultLocked(f"cannot open vault at {self.path}: {exc.strerror} ({directory} must be a directory)") from None
        except PermissionError:
            raise faults.permission_denied(self.path, "create", blocked_by=directory) from None
        except OSError as exc:
            raise faults.from_os(exc, directory) from None
        if not os.access(directory, os.X_OK):  # cannot even tell whether the vault file exists
            raise faults.permission_denied(self.path, "reach", blocked_by=directory)
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077 and directory.name == "keyvault" and not faults.filesystem_read_only(directory):
            try:
                os.chmod(directory, 0o700)  # our own directory: keep it private
            except PermissionError:
                pass

    @_guard
    def _open_existing(self) -> None:
        self._inspect_file()
        if faults.filesystem_read_only(self.path):
            self._read_only_reason = "its filesystem is mounted read-only"
        elif not os.access(self.path, os.W_OK):
            self._read_only_reason = "the file is not writable by this user"
        else:
            self._tighten_modes()
        db = self._conn()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise faults.damaged(self.path, "it is a SQLite file without a vault in it (no schema, no identity)")
        if version > SCHEMA_VERSION:
            raise VaultLocked(
                f"vault schema version {version} is newer than this jupyter-keyvault supports ({SCHEMA_VERSION}); upgrade"
            )
        if self._check_integrity:
            self.check_integrity()
        if version < SCHEMA_VERSION:
            with self._tx() as db:
                self._migrate(db)

    def _inspect_file(self) -> None:
        """Refuse, before SQLite sees it, a file that cannot be a vault."""
        try:
            with open(self.path, "rb") as f:
                header = f.read(HEADER_BYTES)
                size = os.fstat(f.fileno()).st_size
        except PermissionError:
            raise faults.permission_denied(self.path, "read") from None
        if size == 0:
            raise faults.damaged(self.path, "it is empty (0 bytes)")
        if len(header) < HEADER_BYTES or header[:16] != SQLITE_MAGIC:
            raise faults.damaged(self.path, "it is not a SQLite database (overwritten or truncated)")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        counter_valid = header[24:28] == header[92:96]
        wal_has_frames = self._wal_path.exists() and self._wal_path.stat().st_size > 32
        # The page count in the header is trustworthy when its change counter matches; a
        # WAL with frames may legitimately hold pages past the end of the file.
        if counter_valid and pages and size < pages * page_size and not wal_has_frames:
            raise faults.damaged(self.path, f"it is truncated ({size} of {pages * page_size} bytes)")

    def _tighten_modes(self) -> None:
        for file in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm", "-journal"))):
            try:
                mode = stat.S_IMODE(file.stat().st_mode)
                if mode & 0o077:
                    os.chmod(file, mode & 0o700)  # private; a deliberately read-only file stays read-only
            except FileNotFoundError:
                pass

    def _connect(self) -> sqlite3.Connection:
        if self._read_only_reason is not None:
            # mode=ro reads the WAL too; immutable=1 is the fallback when the -shm cannot be made.
            db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None,
                                 check_same_thread=False, timeout=self._busy_timeout_ms / 1000)
            try:
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return db
            except sqlite3.OperationalError:
                db.close()
                if self._wal_path.exists() and self._wal_path.stat().st_size > 32:
                    raise faults.read_only(
                        self.path, f"{self._read_only_reason}, and its recent writes in {self._wal_path.name} "
                                   "cannot be read without write access") from None
                return sqlite3.connect(f"{self.path.as_uri()}?immutable=1", uri=True, isolation_level=None,
                                       check_same_thread=False)
        db = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            self._enable_wal(db)
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            # Overwrite freed cells: a migrated plaintext row must not linger on disk.
            db.execute("PRAGMA secure_delete = ON")
        except BaseException:
            db.close()  # e.g. no room for the -shm: do not leak the file handle
            raise
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._new:
            self.create_vault({})  # used without a Vault (tests, tools): a vault with a schema only
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        self._watch_wal(db)
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

    def _watch_wal(self, db: sqlite3.Connection) -> None:
        """Acknowledged writes live in vault.db-wal until a checkpoint. If that file is
        deleted (or replaced) while we hold it open, our writes go to an unlinked inode
        that a crash would lose: copy everything into vault.db now, and from then on
        after every write, so nothing acknowledged depends on the lost file."""
        if self._read_only_reason is not None:
            return
        try:
            inode = os.stat(self._wal_path).st_ino
        except FileNotFoundError:
            inode = None
        if self._wal_inode is None:
            self._wal_inode = inode
            return
        if inode != self._wal_inode and not self._wal_lost:
            self._wal_lost = True
            log.warning("jupyter-keyvault: %s was deleted or replaced while the vault was open; "
                        "checkpointing every write into %s until restart", self._wal_path, self.path)
            self._rescue(db)

    def _rescue(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            return
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # the write itself committed: report, never fail it
            log.warning("jupyter-keyvault: could not checkpoint %s after its WAL was lost: %s", self.path, exc)

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        if write and self._read_only_reason is not None:
            raise faults.read_only(self.path, self._read_only_reason)
        if write and self._write_refusal is not None:
            raise self._write_refusal
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise faults.from_sqlite(exc, self.path) from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")  # also after a failed COMMIT, so the connection stays usable
            raise
        if write and self._wal_lost:
            self._rescue(db)

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

    # -- creation, identity, integrity
    def is_new(self) -> bool:
        return self._new

    @_guard
    def create_vault(self, meta: dict[str, str]) -> bool:
        """Build the schema and `meta` in one transaction in a private file beside the
        vault, then link it into place: the vault file is either absent or complete.
        Returns False (and changes nothing) when another process created it first."""
        with self._create_lock:
            if not self._new:
                return False
            tmp = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                try:
                    os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
                except PermissionError:
                    raise faults.permission_denied(self.path, "create", blocked_by=self.path.parent) from None
                db = sqlite3.connect(tmp, isolation_level=None)
                try:
                    db.execute(f"PRAGMA synchronous = {self._synchronous}")
                    db.execute("BEGIN IMMEDIATE")
                    self._migrate(db)
                    for key, value in meta.items():
                        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
                    db.execute("COMMIT")
                    db.execute("PRAGMA journal_mode = WAL")  # recorded in the file header
                finally:
                    db.close()
                fsync_path(tmp)
                try:
                    os.link(tmp, self.path)  # atomic; fails if another process won the race
                    created = True
                except FileExistsError:
                    created = False
                fsync_path(self.path.parent)
            finally:
                for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-journal", "-wal", "-shm"))):
                    try:
                        leftover.unlink()
                    except FileNotFoundError:
                        pass
            self._new = False
        self._open_existing()
        return created

    @_guard
    def check_integrity(self) -> dict:
        """Run `PRAGMA quick_check`; a failure refuses writes until the user acts."""
        started = time.perf_counter()
        try:
            rows = [r[0] for r in self._conn().execute("PRAGMA quick_check(20)").fetchall()]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        ok = rows == ["ok"]
        lines = [line.strip() for row in rows for line in row.splitlines() if line.strip() and "***" not in line]
        self.integrity = {"ok": ok, "detail": "ok" if ok else "; ".join(lines[:3]),
                          "seconds": round(time.perf_counter() - started, 6), "checked_at": time.time()}
        self._reads = _READS[not ok]
        if ok:
            self._write_refusal = None
        else:
            self._write_refusal = faults.damaged(
                self.path, f"its integrity check failed ({self.integrity['detail']}); writes are refused, "
                           "reads are still attempted")
        return dict(self.integrity)

    def health(self) -> dict:
        problems = []
        if self._read_only_reason:
            problems.append(str(faults.read_only(self.path, self._read_only_reason)))
        if self._write_refusal is not None:
            problems.append(str(self._write_refusal))
        if self._wal_lost:
            problems.append(f"{self._wal_path} was deleted while the vault was open; every write is checkpointed "
                            "into the vault file until the server restarts")
        return {"integrity": dict(self.integrity), "writable": not (self._read_only_reason or self._write_refusal),
                "problems": problems}

    @_guard
    def backup_to(self, dest: str | os.PathLike) -> int:
        """A consistent copy of the whole vault -- including what is still only in the
        WAL -- through SQLite's online backup API. Written 0600, atomically. Returns bytes."""
        dest = Path(dest).absolute()
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
        try:
            target = sqlite3.connect(tmp, isolation_level=None)
            try:
                self._conn().backup(target)
                target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            finally:
                target.close()
            fsync_path(tmp)
            os.replace(tmp, dest)
            fsync_path(dest.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest.stat().st_size

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
        self._wal_inode = None  # our last connection may have removed the WAL legitimately

    # -- meta
    def meta_get(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @_guard
    def meta_init(self, key: str, value: str) -> str:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    @_guard
    def meta_set(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- owner keys
    @_guard
    def get_owner_key(self, owner: str) -> tuple[bytes, str] | None:
        row = self._conn().execute("SELECT wrapped, kek_id FROM owner_keys WHERE owner = ?", (owner,)).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    @_guard
    def init_owner_key(self, owner: str, wrapped: bytes, kek_id: str) -> bytes:
        with self._tx() as db:
            current = db.execute("SELECT value FROM meta WHERE key = 'kek_id'").fetchone()
            if current is not None and current[0] != kek_id:
                raise StaleMasterKey("the master key was rotated by another process")
            db.execute("INSERT OR IGNORE INTO owner_keys (owner, wrapped, kek_id) VALUES (?, ?, ?)", (owner, wrapped, kek_id))
            return bytes(db.execute("SELECT wrapped FROM owner_keys WHERE owner = ?", (owner,)).fetchone()[0])

    @_guard
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

    @_guard
    def count_owners(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM owner_keys").fetchone()[0]

    # -- credentials
    @_guard
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

    @_guard
    def get_credential(self, owner: str, name: str) -> CredentialRecord | None:
        row = self._conn().execute(self._reads["one"], (owner, name)).fetchone()
        return _record(row) if row else None

    @_guard
    def list_credentials(self, owner: str) -> list[CredentialRecord]:
        rows = self._conn().execute(self._reads["owner"], (owner,)).fetchall()
        return [_record(r) for r in rows]

    @_guard
    def list_credentials_page(self, owner: str, after: str | None, limit: int) -> list[CredentialRecord]:
        rows = self._conn().execute(self._reads["page"], (owner, after or "", int(limit))).fetchall()
        return [_record(r) for r in rows]

    @_guard
    def delete_credential(self, owner: str, name: str, audit: AuditEvent | None = None) -> bool:
        with self._tx() as db:
            deleted = db.execute("DELETE FROM credentials WHERE owner = ? AND name = ?", (owner, name)).rowcount > 0
            if deleted and audit is not None:
                self._insert_audit(db, audit)
            return deleted

    @_guard
    def touch_credential(self, owner: str, name: str, at: float) -> None:
        if self._read_only_reason or self._write_refusal:
            return  # last-used is advisory: a read must not fail because it cannot be recorded
        with self._tx() as db:
            db.execute("UPDATE credentials SET last_used_at = ? WHERE owner = ? AND name = ?", (at, owner, name))

    @_guard
    def iter_all_credentials(self):
        rows = self._conn().execute(self._reads["all"]).fetchall()
        return [_record(r) for r in rows]

    @_guard
    def replace_payload(self, rec_id: str, payload: bytes, expected: bytes) -> bool:
        with self._tx() as db:
            return db.execute(
                "UPDATE credentials SET payload = ? WHERE id = ? AND CAST(payload AS BLOB) = ?", (payload, rec_id, expected)
            ).rowcount > 0

    @_guard
    def count_credentials(self, owner: str | None = None) -> int:
        if owner is None:
            return self._conn().execute(self._reads["count"]).fetchone()[0]
        return self._conn().execute(self._reads["count_owner"], (owner,)).fetchone()[0]

    # -- audit
    @_guard
    def append_audit(self, event: AuditEvent) -> None:
        with self._tx() as db:
            self._insert_audit(db, event)

    @staticmethod
    def _insert_audit(db: sqlite3.Connection, event: AuditEvent) -> None:
        db.execute(
            "INSERT INTO audit (at, owner, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.at, event.owner, event.actor, event.action, event.target, event.outcome, event.detail),
        )

    @_guard
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
