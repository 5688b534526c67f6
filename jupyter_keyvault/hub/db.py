"""The service's own tables (grants, limits, usage, counters, the change generation), in the
same database as the vault.

SQLAlchemy Core; the schema carries a version row and is created or migrated at start.
No value is ever stored here: shared keys themselves live in the encrypted vault.
Every replica of the service shares these tables, so nothing that must agree between
replicas lives in a replica's memory (see counters.py and invalidation.py).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

import sqlalchemy as sa

from ..store.errors import VaultError, VaultLocked

SCHEMA_VERSION = 2  # 2: counters and the change generation (replicas)

metadata = sa.MetaData()

schema_version = sa.Table(
    "keyvault_hub_schema", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

# A shared key is granted to a JupyterHub group or user.
grants = sa.Table(
    "keyvault_hub_grants", metadata,
    sa.Column("shared_name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),  # "group" | "user"
    sa.Column("subject", sa.String(256), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
)

# Limits per user ("user", name; "*" is the default for every user) and per shared key ("shared", name).
limits = sa.Table(
    "keyvault_hub_limits", metadata,
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("subject", sa.String(256), primary_key=True),
    sa.Column("rate_per_minute", sa.Float, nullable=True),
    sa.Column("requests_per_day", sa.Integer, nullable=True),
    sa.Column("tokens_per_day", sa.Integer, nullable=True),
)

# One row per (UTC day, user, credential used); source "personal" or "shared".
usage = sa.Table(
    "keyvault_hub_usage", metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("username", sa.String(256), primary_key=True),
    sa.Column("source", sa.String(8), primary_key=True),
    sa.Column("credential", sa.String(64), primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False, default=0),
    sa.Column("tokens", sa.Integer, nullable=False, default=0),
)
sa.Index("keyvault_hub_usage_shared", usage.c.day, usage.c.source, usage.c.credential)

# Today's request/token totals and the rate bucket of one user ("user", name) or shared key
# ("shared", name), changed only by single-statement upserts (counters.py), so every replica
# sees one count. The caps are those of the last admission (the upsert's WHERE reads them).
counters = sa.Table(
    "keyvault_hub_counters", metadata,
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("subject", sa.String(256), primary_key=True),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("requests_cap", sa.BigInteger, nullable=False),
    sa.Column("tokens_cap", sa.BigInteger, nullable=False),
    sa.Column("rate_per_minute", sa.Float, nullable=False),  # 0: no rate limit
    sa.Column("burst", sa.Float, nullable=False),
    sa.Column("bucket", sa.Float, nullable=False),  # requests left in the bucket at bucket_at
    sa.Column("bucket_at", sa.Float, nullable=False),  # epoch seconds
)

# One row; its generation goes up with every change of grants, limits or credentials, so
# other replicas drop their caches (invalidation.py).
changes = sa.Table(
    "keyvault_hub_changes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
)

LIMIT_FIELDS = ("rate_per_minute", "requests_per_day", "tokens_per_day")


@dataclass(frozen=True)
class Limits:
    rate_per_minute: float | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None

    def to_json(self) -> dict:
        return {f: getattr(self, f) for f in LIMIT_FIELDS}


HUB_MIGRATION_LOCK_ID = 0x6B76_6875_62  # "kvhub": replicas migrating one database take turns


def _first_line(exc: Exception) -> str:
    # The driver's first line only: later lines (PostgreSQL's DETAIL) may quote row contents.
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["error"])[0][:200]


def utc_day(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts if ts is not None else time.time()))


class SchemaTooNew(VaultError):
    """The database was written by a newer jupyter-keyvault: this replica refuses to run on it."""


class HubStore:
    """Grants, limits, usage and counters over one SQLAlchemy engine. Database errors come out as
    VaultLocked (503 with a clear message); the pool drops dead connections after one failure."""

    def __init__(self, db_url: str, **engine_kwargs):
        self.dialect = sa.engine.make_url(db_url).get_backend_name()
        self._usage_upsert: sa.Insert | None = None
        if db_url.startswith("sqlite"):
            engine_kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        self.engine = sa.create_engine(db_url, future=True, **engine_kwargs)
        if db_url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _wal(conn, _record):
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                # WAL + NORMAL: a commit survives a crash or SIGKILL of the service (what "acknowledged"
                # promises); only a power loss or kernel crash can lose the last commits. FULL would fsync
                # on every proxied request's admission.
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()
        # SQLite has one writer: serialise here instead of retrying. PostgreSQL needs no lock.
        self._write_lock: threading.Lock | nullcontext = threading.Lock() if self.dialect == "sqlite" else nullcontext()
        self.migrate()

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise VaultLocked(f"the keyvault database is unavailable, retry shortly ({_first_line(exc)})") from None

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise VaultLocked(f"the keyvault database is unavailable, retry shortly ({_first_line(exc)})") from None

    def insert(self, table: sa.Table):
        """The dialect's INSERT, which has on_conflict_do_update (PostgreSQL and SQLite alike)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def migrate(self) -> int:
        """Create the tables, or bring an older schema up to SCHEMA_VERSION; refuse a newer one
        (before creating anything, so a newer database is left exactly as it was)."""
        with self._begin() as conn:
            if self.dialect == "postgresql":  # replicas starting together: one migrates, the others wait
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": HUB_MIGRATION_LOCK_ID})
            row = None
            if sa.inspect(conn).has_table(schema_version.name):
                row = conn.execute(sa.select(schema_version.c.version).where(schema_version.c.id == 1)).first()
            if row is not None and row.version > SCHEMA_VERSION:
                raise SchemaTooNew(f"the keyvault hub database has schema version {row.version}, newer than this "
                                   f"version of jupyter-keyvault understands ({SCHEMA_VERSION}): this replica "
                                   "refuses to start; upgrade jupyter-keyvault on every replica")
            metadata.create_all(conn, checkfirst=True)  # 1 -> 2 only adds tables
            if conn.execute(sa.select(changes.c.id)).first() is None:
                conn.execute(changes.insert().values(id=1, generation=0))
            if row is None:
                conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION))
            else:
                conn.execute(schema_version.update().where(schema_version.c.id == 1).values(version=SCHEMA_VERSION))
            return SCHEMA_VERSION

    # -- the change generation (cache invalidation across replicas)
    def bump(self, conn: sa.Connection | None = None) -> None:
        if conn is None:
            with self._begin() as conn:
                return self.bump(conn)
        conn.execute(changes.update().where(changes.c.id == 1).values(generation=changes.c.generation + 1))

    def generation(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(sa.select(changes.c.generation).where(changes.c.id == 1)).scalar_one())

    # -- grants
    def grant(self, shared_name: str, kind: str, subject: str, actor: str) -> bool:
        with self._write_lock, self._begin() as conn:
            exists = conn.execute(sa.select(grants.c.subject).where(
                grants.c.shared_name == shared_name, grants.c.kind == kind, grants.c.subject == subject)).first()
            if exists:
                return False
            conn.execute(grants.insert().values(shared_name=shared_name, kind=kind, subject=subject,
                                                created_at=time.time(), created_by=actor))
            self.bump(conn)
            return True

    def revoke(self, shared_name: str, kind: str, subject: str) -> bool:
        with self._write_lock, self._begin() as conn:
            result = conn.execute(grants.delete().where(
                grants.c.shared_name == shared_name, grants.c.kind == kind, grants.c.subject == subject))
            self.bump(conn)
            return result.rowcount > 0

    def revoke_all(self, shared_name: str) -> None:
        with self._write_lock, self._begin() as conn:
            conn.execute(grants.delete().where(grants.c.shared_name == shared_name))
            conn.execute(limits.delete().where(limits.c.kind == "shared", limits.c.subject == shared_name))
            self.bump(conn)

    def grants_of(self, shared_name: str | None = None) -> list[dict]:
        query = sa.select(grants).order_by(grants.c.shared_name, grants.c.kind, grants.c.subject)
        if shared_name is not None:
            query = query.where(grants.c.shared_name == shared_name)
        with self._connect() as conn:
            return [{"shared": r.shared_name, "kind": r.kind, "subject": r.subject} for r in conn.execute(query)]

    def granted_to(self, username: str, groups: list[str]) -> list[str]:
        """Names of the shared keys this user may use, sorted."""
        cond = sa.and_(grants.c.kind == "user", grants.c.subject == username)
        if groups:
            cond = sa.or_(cond, sa.and_(grants.c.kind == "group", grants.c.subject.in_(groups)))
        with self._connect() as conn:
            rows = conn.execute(sa.select(grants.c.shared_name).where(cond).distinct())
            return sorted(r.shared_name for r in rows)

    # -- limits
    def set_limits(self, kind: str, subject: str, values: Limits) -> None:
        """Replace the limits of a subject; all-empty limits remove the row (back to the defaults)."""
        with self._write_lock, self._begin() as conn:
            conn.execute(limits.delete().where(limits.c.kind == kind, limits.c.subject == subject))
            if any(v is not None for v in values.to_json().values()):
                conn.execute(limits.insert().values(kind=kind, subject=subject, **values.to_json()))
            self.bump(conn)

    def get_limits(self, kind: str, subject: str) -> Limits | None:
        with self._connect() as conn:
            row = conn.execute(sa.select(limits).where(limits.c.kind == kind, limits.c.subject == subject)).first()
        if row is None:
            return None
        return Limits(row.rate_per_minute, row.requests_per_day, row.tokens_per_day)

    def all_limits(self) -> list[dict]:
        with self._connect() as conn:
            return [{"kind": r.kind, "subject": r.subject, **Limits(r.rate_per_minute, r.requests_per_day,
                                                                      r.tokens_per_day).to_json()}
                    for r in conn.execute(sa.select(limits).order_by(limits.c.kind, limits.c.subject))]

    # -- usage
    def count_request(self, username: str, source: str, credential: str, day: str | None = None) -> None:
        self._add(username, source, credential, requests=1, tokens=0, day=day)

    def count_tokens(self, username: str, source: str, credential: str, tokens: int, day: str | None = None) -> None:
        if tokens > 0:
            self._add(username, source, credential, requests=0, tokens=tokens, day=day)

    def _add(self, username, source, credential, *, requests, tokens, day):
        self.add_usage_batch([(day or utc_day(), username, source, credential, requests, tokens)])

    def add_usage_batch(self, rows: list[tuple[str, str, str, str, int, int]]) -> None:
        """Add (day, user, source, credential, requests, tokens) deltas in one transaction."""
        with self._write_lock, self._begin() as conn:
            for row in rows:
                self.add_usage(conn, *row)

    def add_usage(self, conn: sa.Connection, day: str, username: str, source: str, credential: str,
                  requests: int, tokens: int) -> None:
        """One upsert, safe against other replicas adding to the same row."""
        if self._usage_upsert is None:  # built once: this runs with every admission
            put = self.insert(usage)
            self._usage_upsert = put.on_conflict_do_update(
                index_elements=[usage.c.day, usage.c.username, usage.c.source, usage.c.credential],
                set_={"requests": usage.c.requests + put.excluded.requests,
                      "tokens": usage.c.tokens + put.excluded.tokens})
        conn.execute(self._usage_upsert, {"day": day, "username": username, "source": source,
                                          "credential": credential, "requests": requests, "tokens": tokens})

    def user_totals(self, username: str, day: str | None = None) -> tuple[int, int]:
        query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.requests), 0),
                          sa.func.coalesce(sa.func.sum(usage.c.tokens), 0)).where(
            usage.c.day == (day or utc_day()), usage.c.username == username)
        with self._connect() as conn:
            requests, tokens = conn.execute(query).one()
        return int(requests), int(tokens)

    def shared_totals(self, shared_name: str, day: str | None = None) -> tuple[int, int]:
        query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.requests), 0),
                          sa.func.coalesce(sa.func.sum(usage.c.tokens), 0)).where(
            usage.c.day == (day or utc_day()), usage.c.source == "shared", usage.c.credential == shared_name)
        with self._connect() as conn:
            requests, tokens = conn.execute(query).one()
        return int(requests), int(tokens)

    def usage_rows(self, username: str | None = None, day: str | None = None) -> list[dict]:
        query = sa.select(usage).order_by(usage.c.day.desc(), usage.c.username, usage.c.source, usage.c.credential)
        if username is not None:
            query = query.where(usage.c.username == username)
        if day is not None:
            query = query.where(usage.c.day == day)
        with self._connect() as conn:
            return [{"day": r.day, "user": r.username, "source": r.source, "credential": r.credential,
                     "requests": r.requests, "tokens": r.tokens} for r in conn.execute(query.limit(5000))]

    def close(self) -> None:
        self.engine.dispose()
