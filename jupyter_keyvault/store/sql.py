"""SQL backend (SQLAlchemy Core): SQLite for one machine, PostgreSQL for a hub.

    SQLBackend("sqlite:////srv/keyvault/vault.db")
    SQLBackend("postgresql+psycopg://keyvault:PASSWORD@db.internal/keyvault")

The schema is versioned with alembic; the scripts ship in `store/migrations/` and run
when a backend opens (under a lock, so several processes may open a new database at
once). A database migrated by a newer jupyter-keyvault is refused, never modified.

Atomicity (what the embedded SQLite backend gets from BEGIN IMMEDIATE):
- SQLite: every write transaction is BEGIN IMMEDIATE, so writers are serialised.
- PostgreSQL (READ COMMITTED): inserts that may race use ON CONFLICT; replacing a
  credential locks its row (SELECT ... FOR UPDATE); creating an owner key takes
  ROW EXCLUSIVE on owner_keys *before* reading the recorded KEK id, and a rotation takes
  SHARE ROW EXCLUSIVE, so an owner key is never created under a KEK that a concurrent
  rotation has just replaced (the creator waits, then sees the new KEK and is refused
  with StaleMasterKey).
- The audit table is append-only on both: triggers refuse UPDATE, DELETE (and TRUNCATE
  on PostgreSQL). See docs/postgresql.md for running with a role that cannot drop them.

Tables are prefixed `keyvault_` and the alembic version table is `keyvault_alembic_version`,
so the store can share a database with JupyterHub's own tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from . import faults
from .backend import StorageBackend
from .errors import StaleMasterKey, VaultError, VaultLocked
from .model import HIDDEN_TYPES, AuditEvent, CredentialRecord

# pg_advisory_xact_lock key held while migrating ("kvmigrat" as an int64).
MIGRATION_LOCK_ID = int.from_bytes(b"kvmigrat", "big") & 0x7FFF_FFFF_FFFF_FFFF

metadata = sa.MetaData()

meta_table = sa.Table(
    "keyvault_meta",
    metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

owner_keys = sa.Table(
    "keyvault_owner_keys",
    metadata,
    sa.Column("owner", sa.String(256), primary_key=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("kek_id", sa.String(128), nullable=False),
)

credentials = sa.Table(
    "keyvault_credentials",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("provider", sa.String(64)),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("last_used_at", sa.Double),
    sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
    sa.UniqueConstraint("owner", "name", name="keyvault_credentials_owner_name"),
)

audit = sa.Table(
    "keyvault_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256)),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Index("keyvault_audit_owner", "owner", "id"),
    sqlite_autoincrement=True,
)

_CRED_COLUMNS = [
    credentials.c.id, credentials.c.owner, credentials.c.name, credentials.c.type, credentials.c.provider,
    credentials.c.payload, credentials.c.created_at, credentials.c.updated_at, credentials.c.last_used_at,
    credentials.c.metadata,
]
_AUDIT_COLUMNS = [
    audit.c.id, audit.c.at, audit.c.owner, audit.c.actor, audit.c.action, audit.c.target, audit.c.outcome,
    audit.c.detail,
]

# Hot statements built once (building a statement costs more than running it on SQLite).
_SELECT_ONE = sa.select(*_CRED_COLUMNS).where(
    credentials.c.owner == sa.bindparam("owner"), credentials.c.name == sa.bindparam("name"))
_SELECT_OWNER = sa.select(*_CRED_COLUMNS).where(credentials.c.owner == sa.bindparam("owner")).order_by(credentials.c.name)


def _select_page(collation: str | None) -> sa.Select:
    """One page of a listing in byte order of names (what Python's sort and the cursors use): PostgreSQL's
    default collation may sort by locale, so names are compared there as "C"."""
    name = credentials.c.name.collate(collation) if collation else credentials.c.name
    return (sa.select(*_CRED_COLUMNS)
            .where(credentials.c.owner == sa.bindparam("owner"), name > sa.bindparam("after"),
                   credentials.c.type.not_in(HIDDEN_TYPES))
            .order_by(name).limit(sa.bindparam("limit")))


_SELECT_PAGE = {"postgresql": _select_page("C")}
_SELECT_PAGE_DEFAULT = _select_page(None)
_SELECT_META = sa.select(meta_table.c.value).where(meta_table.c.key == sa.bindparam("key"))
_SELECT_OWNER_KEY = sa.select(owner_keys.c.wrapped, owner_keys.c.kek_id).where(owner_keys.c.owner == sa.bindparam("owner"))
_UPDATE_CRED = (credentials.update().where(credentials.c.id == sa.bindparam("b_id"))
                .values(type=sa.bindparam("b_type"), provider=sa.bindparam("b_provider"),
                        payload=sa.bindparam("b_payload"), updated_at=sa.bindparam("b_updated_at"),
                        metadata=sa.bindparam("b_metadata")))
_DELETE_CRED = credentials.delete().where(
    credentials.c.owner == sa.bindparam("owner"), credentials.c.name == sa.bindparam("name"))
_INSERT_AUDIT = audit.insert()
_TOUCH = (credentials.update()
          .where(credentials.c.owner == sa.bindparam("b_owner"), credentials.c.name == sa.bindparam("b_name"))
          .values(last_used_at=sa.bindparam("b_at")))


def _record(row) -> CredentialRecord:
    return CredentialRecord(
        id=row[0],
        owner=row[1],
        name=row[2],
        type=row[3],
        provider=row[4],
        payload=bytes(row[5]),
        created_at=row[6],
        updated_at=row[7],
        last_used_at=row[8],
        metadata=json.loads(row[9]) if row[9] and row[9] != "{}" else {},
    )


def mask_url(url: str | URL) -> str:
    """The URL as it may be shown: the password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


NO_SQLITE_FILE = "db_url: an in-memory SQLite database would lose every credential; give a file path"


def _parse_url(db_url: str | URL) -> URL:
    try:
        url = make_url(db_url)
    except ArgumentError:
        raise VaultLocked("db_url is not a valid SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db)") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise VaultLocked(f"db_url: unsupported database {url.get_backend_name()!r}; use sqlite or postgresql")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise VaultLocked(NO_SQLITE_FILE)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() not in ("psycopg",):
        raise VaultLocked("db_url: use the psycopg 3 driver, postgresql+psycopg://...")
    return url


def _prepare_sqlite_file(path: Path) -> None:
    """Create the database 0600 in a 0700 directory before SQLite does (with the umask)."""
    directory = path.parent
    if path.exists():
        try:
            with open(path, "rb") as f:
                header = f.read(16)
        except OSError as exc:
            raise faults.from_os(exc, path) from None
        # A foreign or overwritten file is damage, never a new vault. (0 bytes is left to
        # SQLite here: this backend makes the file empty itself before migrating into it.)
        if header and header != b"SQLite format 3\x00":
            raise faults.damaged(path, "it is not a SQLite database")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
    except OSError as exc:
        raise VaultLocked(f"cannot open vault at {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.R_OK | os.W_OK):
        raise VaultLocked(f"vault file {path} is not readable and writable by this user")
    if stat.S_IMODE(directory.stat().st_mode) & 0o077 and directory.name == "keyvault":
        os.chmod(directory, 0o700)


def _sqlite_wal(dbapi_conn, timeout: float) -> None:
    """Switch to WAL; the switch ignores the busy handler, so retry while another opener holds it."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # sqlite3.OperationalError; the driver module is not imported here
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _dispose_all_after_fork() -> None:
    for backend in list(_LIVE):
        backend._engine.dispose(close=False)  # the parent's sockets stay the parent's


_LIVE: weakref.WeakSet[SQLBackend] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_all_after_fork)


class SQLBackend(StorageBackend):
    """StorageBackend over SQLAlchemy Core. Thread-safe (a connection pool) and process-safe."""

    def __init__(
        self,
        db_url: str | URL,
        *,
        auto_migrate: bool = True,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        busy_timeout: float = 30.0,
        synchronous: str = "FULL",
        engine_options: dict | None = None,
    ):
        url = _parse_url(db_url)
        self.url = url
        self.dialect = url.get_backend_name()
        self.name = "sql-" + self.dialect
        self.location = mask_url(url)
        self._busy_timeout = busy_timeout
        # hide_parameters: SQLAlchemy errors and logs would otherwise quote bound values (blobs, names).
        options: dict = {"hide_parameters": True}
        self.path: Path | None  # the SQLite file; None for a server database
        if self.dialect == "sqlite":
            if url.database is None:  # _parse_url refused it already; checked again to narrow the type
                raise VaultLocked(NO_SQLITE_FILE)
            self.path = Path(url.database).expanduser().absolute()
            url = url.set(database=str(self.path))
            self.location = str(self.path)
            _prepare_sqlite_file(self.path)
            options.update(
                connect_args={"timeout": busy_timeout, "check_same_thread": False},
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
            )
            options["poolclass"] = sa.pool.QueuePool
        else:
            self.path = None
            # pre_ping: a connection the server dropped (restart, failover) is replaced, not handed out.
            options.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout, pool_recycle=1800,
                           pool_pre_ping=True)
        options.update(engine_options or {})
        try:
            self._engine: Engine = sa.create_engine(url, **options)
        except (NoSuchModuleError, ImportError) as exc:
            raise VaultLocked(f"db_url: the database driver is not installed ({exc}); pip install jupyter-keyvault[hub]") from None
        if self.dialect == "sqlite":
            self._install_sqlite_hooks(synchronous)
        self._prepare_statements()
        # Writes on SQLite begin IMMEDIATE (see _install_sqlite_hooks). Reads are single statements:
        # autocommit spares the BEGIN/ROLLBACK round trips. All share one pool.
        self._writer = self._engine.execution_options(keyvault_write=True)
        # (SQLite connections are already in autocommit: the begin hook emits nothing for reads.)
        self._reader = self._engine if self.dialect == "sqlite" else self._engine.execution_options(
            isolation_level="AUTOCOMMIT")
        self._closed = False
        # SQLite has one writer at a time: threads of this process queue here instead of
        # sleep-polling in SQLite's busy handler (other processes still meet BEGIN IMMEDIATE).
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        try:
            self._open(auto_migrate)
        except BaseException:
            self._engine.dispose()
            raise
        if self.path is not None:
            for suffix in ("-wal", "-shm", "-journal"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.chmod(side, 0o600)
        _LIVE.add(self)

    # -- engine
    def _install_sqlite_hooks(self, synchronous: str) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise VaultLocked("synchronous must be OFF, NORMAL, FULL or EXTRA")
        busy_ms = int(self._busy_timeout * 1000)
        timeout = self._busy_timeout

        @event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            dbapi_conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            _sqlite_wal(dbapi_conn, timeout)
            dbapi_conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            dbapi_conn.execute("PRAGMA secure_delete = ON")  # freed cells are zeroed on disk

        @event.listens_for(self._engine, "begin")
        def _on_begin(conn: Connection):
            if conn.get_execution_options().get("keyvault_write", False):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One write transaction: committed on success, rolled back on any error."""
        if self._closed:
            raise VaultLocked("the vault backend is closed")
        try:
            with self._write_lock, self._writer.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise VaultLocked(f"vault database is busy or unreachable: {_reason(exc)}") from None
        except sa.exc.DBAPIError as exc:
            # First line only: PostgreSQL's DETAIL quotes the failing row.
            raise VaultError(f"the vault database refused the change: {_reason(exc)}") from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        if self._closed:
            raise VaultLocked("the vault backend is closed")
        try:
            with self._reader.connect() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise VaultLocked(f"vault database is busy or unreachable: {_reason(exc)}") from None
        except sa.exc.DBAPIError as exc:
            raise VaultError(f"the vault database refused the query: {_reason(exc)}") from None

    def _prepare_statements(self) -> None:
        """Dialect-specific upserts, built once."""
        put = self._insert(meta_table)
        self._meta_insert_ignore = self._insert(meta_table).on_conflict_do_nothing()
        self._meta_upsert = put.on_conflict_do_update(index_elements=[meta_table.c.key],
                                                      set_={"value": put.excluded.value})
        self._owner_key_insert_ignore = self._insert(owner_keys).on_conflict_do_nothing()
        self._credential_insert_ignore = (
            self._insert(credentials)
            .on_conflict_do_nothing(index_elements=[credentials.c.owner, credentials.c.name])
            .returning(credentials.c.id)
        )

    def _insert(self, table: sa.Table):
        # Two names: the dialects' insert() functions return different Insert types.
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    # -- schema
    def _open(self, auto_migrate: bool) -> None:
        from . import migrate

        try:
            with self._writer.begin() as conn:
                if self.dialect == "postgresql":
                    # One migrator at a time; the others wait, then find the schema current.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
                migrate.check_and_upgrade(conn, auto_migrate=auto_migrate, where=self.location)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise VaultLocked(f"cannot open vault database {self.location}: {_reason(exc)}") from None

    def schema_revision(self) -> tuple[str, ...]:
        from . import migrate

        with self._read() as conn:
            return migrate.current_revisions(conn)

    def default_key_file(self) -> Path | None:
        return self.path.with_name("master.key") if self.path is not None else None

    def close(self) -> None:
        self._closed = True
        self._engine.dispose()
        _LIVE.discard(self)

    # -- meta
    def meta_get(self, key: str) -> str | None:
        with self._read() as conn:
            return conn.execute(_SELECT_META, {"key": key}).scalar()

    def meta_init(self, key: str, value: str) -> str:
        with self._tx() as conn:
            conn.execute(self._meta_insert_ignore, {"key": key, "value": value})
            return conn.execute(_SELECT_META, {"key": key}).scalar_one()

    def _meta_put(self, conn: Connection, key: str, value: str) -> None:
        conn.execute(self._meta_upsert, {"key": key, "value": value})

    def create_vault(self, meta: dict[str, str]) -> bool:
        """The vault id goes in first: a concurrent creator waits on its key, then finds
        it taken and writes nothing, so identity records never mix two creators."""
        with self._tx() as conn:
            vault_id = meta.get("vault_id", "")
            conn.execute(self._meta_insert_ignore, {"key": "vault_id", "value": vault_id})
            if conn.execute(_SELECT_META, {"key": "vault_id"}).scalar_one() != vault_id:
                return False
            for key, value in meta.items():
                if key != "vault_id":
                    self._meta_put(conn, key, value)
            return True

    def meta_set(self, key: str, value: str) -> None:
        with self._tx() as conn:
            self._meta_put(conn, key, value)

    # -- owner keys
    def get_owner_key(self, owner: str) -> tuple[bytes, str] | None:
        with self._read() as conn:
            row = conn.execute(_SELECT_OWNER_KEY, {"owner": owner}).first()
        return (bytes(row[0]), row[1]) if row else None

    def init_owner_key(self, owner: str, wrapped: bytes, kek_id: str) -> bytes:
        with self._tx() as conn:
            if self.dialect == "postgresql":
                # Before reading kek_id: waits for a rotation in flight, then sees its new KEK id.
                conn.exec_driver_sql("LOCK TABLE keyvault_owner_keys IN ROW EXCLUSIVE MODE")
            current = conn.execute(_SELECT_META, {"key": "kek_id"}).scalar()
            if current is not None and current != kek_id:
                raise StaleMasterKey("the master key was rotated by another process")
            conn.execute(self._owner_key_insert_ignore, {"owner": owner, "wrapped": wrapped, "kek_id": kek_id})
            row = conn.execute(_SELECT_OWNER_KEY, {"owner": owner}).first()
            if row is None:  # never: inserted just above, or by the writer that insert waited for
                raise faults.damaged(self.location, f"the data key of owner {owner!r} vanished as it was stored")
            return bytes(row[0])

    def rewrap_owner_keys(self, rewrap: Callable[[str, bytes], bytes], new_kek_id: str, meta: dict[str, str]) -> int:
        with self._tx() as conn:
            if self.dialect == "postgresql":
                # Blocks owner-key creation (and other rotations) until this commits.
                conn.exec_driver_sql("LOCK TABLE keyvault_owner_keys IN SHARE ROW EXCLUSIVE MODE")
            rows = conn.execute(sa.select(owner_keys.c.owner, owner_keys.c.wrapped).order_by(owner_keys.c.owner)).all()
            if rows:
                conn.execute(
                    owner_keys.update()
                    .where(owner_keys.c.owner == sa.bindparam("b_owner"))
                    .values(wrapped=sa.bindparam("b_wrapped"), kek_id=new_kek_id),
                    [{"b_owner": owner, "b_wrapped": rewrap(owner, bytes(wrapped))} for owner, wrapped in rows],
                )
            for key, value in meta.items():
                self._meta_put(conn, key, value)
            return len(rows)

    def count_owners(self) -> int:
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(owner_keys)).scalar_one()

    # -- credentials
    def upsert_credential(self, rec: CredentialRecord, audit: AuditEvent | None = None) -> tuple[CredentialRecord, bool]:
        select_row = _SELECT_ONE.with_for_update()
        key = {"owner": rec.owner, "name": rec.name}
        with self._tx() as conn:
            row = conn.execute(select_row, key).first()
            created = False
            while row is None and not created:
                inserted = conn.execute(self._credential_insert_ignore, {
                    "id": rec.id, "owner": rec.owner, "name": rec.name, "type": rec.type, "provider": rec.provider,
                    "payload": rec.payload, "created_at": rec.created_at, "updated_at": rec.updated_at,
                    "last_used_at": rec.last_used_at, "metadata": json.dumps(rec.metadata),
                })
                created = inserted.first() is not None
                if not created:  # a concurrent writer created it first: replace theirs (or retry if deleted)
                    row = conn.execute(select_row, key).first()
            if not created:
                old = _record(row)
                conn.execute(_UPDATE_CRED, {
                    "b_id": old.id, "b_type": rec.type, "b_provider": rec.provider, "b_payload": rec.payload,
                    "b_updated_at": rec.updated_at, "b_metadata": json.dumps(rec.metadata),
                })
                rec.id, rec.created_at, rec.last_used_at = old.id, old.created_at, old.last_used_at
            if audit is not None:
                self._insert_audit(conn, replace(audit, detail="created" if created else "replaced"))
            return rec, created

    def get_credential(self, owner: str, name: str) -> CredentialRecord | None:
        with self._read() as conn:
            row = conn.execute(_SELECT_ONE, {"owner": owner, "name": name}).first()
        return _record(row) if row else None

    def list_credentials(self, owner: str) -> list[CredentialRecord]:
        with self._read() as conn:
            rows = conn.execute(_SELECT_OWNER, {"owner": owner}).all()
        return [_record(r) for r in rows]

    def list_credentials_page(self, owner: str, after: str | None, limit: int) -> list[CredentialRecord]:
        with self._read() as conn:
            statement = _SELECT_PAGE.get(self.dialect, _SELECT_PAGE_DEFAULT)
            rows = conn.execute(statement, {"owner": owner, "after": after or "", "limit": int(limit)}).all()
        return [_record(r) for r in rows]

    def delete_credential(self, owner: str, name: str, audit: AuditEvent | None = None) -> bool:
        with self._tx() as conn:
            deleted = conn.execute(_DELETE_CRED, {"owner": owner, "name": name}).rowcount > 0
            if deleted and audit is not None:
                self._insert_audit(conn, audit)
            return deleted

    def touch_credential(self, owner: str, name: str, at: float) -> None:
        with self._tx() as conn:
            conn.execute(_TOUCH, {"b_owner": owner, "b_name": name, "b_at": at})

    def iter_all_credentials(self) -> list[CredentialRecord]:
        with self._read() as conn:
            rows = conn.execute(sa.select(*_CRED_COLUMNS).order_by(credentials.c.owner, credentials.c.name)).all()
        return [_record(r) for r in rows]

    def replace_payload(self, rec_id: str, payload: bytes, expected: bytes) -> bool:
        with self._tx() as conn:
            return conn.execute(
                credentials.update()
                .where(credentials.c.id == rec_id, credentials.c.payload == expected)
                .values(payload=payload)
            ).rowcount > 0

    def count_credentials(self, owner: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(credentials)
        if owner is not None:
            query = query.where(credentials.c.owner == owner)
        with self._read() as conn:
            return conn.execute(query).scalar_one()

    # -- audit
    def append_audit(self, event: AuditEvent) -> None:
        with self._tx() as conn:
            self._insert_audit(conn, event)

    @staticmethod
    def _insert_audit(conn: Connection, event: AuditEvent) -> None:
        conn.execute(_INSERT_AUDIT, {
            "at": event.at, "owner": event.owner, "actor": event.actor, "action": event.action,
            "target": event.target, "outcome": event.outcome, "detail": event.detail,
        })

    def list_audit(self, owner: str | None, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]:
        query = sa.select(*_AUDIT_COLUMNS).order_by(audit.c.id.desc()).limit(int(limit))
        if owner is not None:
            query = query.where(audit.c.owner == owner)
        if before_id is not None:
            query = query.where(audit.c.id < int(before_id))
        with self._read() as conn:
            return [AuditEvent(*row) for row in conn.execute(query).all()]


def _reason(exc: DBAPIError) -> str:
    """The driver's first message line: names the host or the lock, never a password."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def migrate_command(argv: list[str] | None = None) -> int:
    """`python -m jupyter_keyvault.store.migrate upgrade|current`: the URL comes from
    KEYVAULT_DB_URL (not argv, where other users could read a password in `ps`)."""
    args = sys.argv[1:] if argv is None else argv
    if args not in (["upgrade"], ["current"]):
        print("usage: KEYVAULT_DB_URL=... python -m jupyter_keyvault.store.migrate upgrade|current", file=sys.stderr)
        return 2
    url = os.environ.get("KEYVAULT_DB_URL")
    if not url:
        print("error: set KEYVAULT_DB_URL to the database URL", file=sys.stderr)
        return 2
    try:
        backend = SQLBackend(url, auto_migrate=args == ["upgrade"])
    except VaultLocked as exc:
        if args == ["current"]:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    try:
        print(" ".join(backend.schema_revision()) or "empty")
    finally:
        backend.close()
    return 0
