"""The service's own tables (grants, limits, usage), in the same database as the vault.

SQLAlchemy Core; the schema carries a version row and is created or migrated at start.
No value is ever stored here: shared keys themselves live in the encrypted vault.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

SCHEMA_VERSION = 1

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

LIMIT_FIELDS = ("rate_per_minute", "requests_per_day", "tokens_per_day")


@dataclass(frozen=True)
class Limits:
    rate_per_minute: float | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None

    def to_json(self) -> dict:
        return {f: getattr(self, f) for f in LIMIT_FIELDS}


def utc_day(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts if ts is not None else time.time()))


class HubStore:
    """Grants, limits and usage counters over one SQLAlchemy engine."""

    def __init__(self, db_url: str, **engine_kwargs):
        if db_url.startswith("sqlite"):
            engine_kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        self.engine = sa.create_engine(db_url, future=True, **engine_kwargs)
        if db_url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _wal(conn, _record):
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        self._write_lock = threading.Lock()  # SQLite has one writer; serialise here instead of retrying
        self.migrate()

    def migrate(self) -> int:
        """Create the tables, or bring an older schema up to SCHEMA_VERSION; refuse a newer one."""
        with self.engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            row = conn.execute(sa.select(schema_version.c.version).where(schema_version.c.id == 1)).first()
            if row is None:
                conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION))
                return SCHEMA_VERSION
            if row.version > SCHEMA_VERSION:
                raise RuntimeError(f"the keyvault hub database has schema version {row.version}, newer than this "
                                   f"version of jupyter-keyvault understands ({SCHEMA_VERSION}); upgrade it")
            # Future migrations go here, one step per version, inside this transaction.
            conn.execute(schema_version.update().where(schema_version.c.id == 1).values(version=SCHEMA_VERSION))
            return SCHEMA_VERSION

    # -- grants
    def grant(self, shared_name: str, kind: str, subject: str, actor: str) -> bool:
        with self._write_lock, self.engine.begin() as conn:
            exists = conn.execute(sa.select(grants.c.subject).where(
                grants.c.shared_name == shared_name, grants.c.kind == kind, grants.c.subject == subject)).first()
            if exists:
                return False
            conn.execute(grants.insert().values(shared_name=shared_name, kind=kind, subject=subject,
                                                created_at=time.time(), created_by=actor))
            return True

    def revoke(self, shared_name: str, kind: str, subject: str) -> bool:
        with self._write_lock, self.engine.begin() as conn:
            result = conn.execute(grants.delete().where(
                grants.c.shared_name == shared_name, grants.c.kind == kind, grants.c.subject == subject))
            return result.rowcount > 0

    def revoke_all(self, shared_name: str) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(grants.delete().where(grants.c.shared_name == shared_name))
            conn.execute(limits.delete().where(limits.c.kind == "shared", limits.c.subject == shared_name))

    def grants_of(self, shared_name: str | None = None) -> list[dict]:
        query = sa.select(grants).order_by(grants.c.shared_name, grants.c.kind, grants.c.subject)
        if shared_name is not None:
            query = query.where(grants.c.shared_name == shared_name)
        with self.engine.connect() as conn:
            return [{"shared": r.shared_name, "kind": r.kind, "subject": r.subject} for r in conn.execute(query)]

    def granted_to(self, username: str, groups: list[str]) -> list[str]:
        """Names of the shared keys this user may use, sorted."""
        cond = sa.and_(grants.c.kind == "user", grants.c.subject == username)
        if groups:
            cond = sa.or_(cond, sa.and_(grants.c.kind == "group", grants.c.subject.in_(groups)))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(grants.c.shared_name).where(cond).distinct())
            return sorted(r.shared_name for r in rows)

    # -- limits
    def set_limits(self, kind: str, subject: str, values: Limits) -> None:
        """Replace the limits of a subject; all-empty limits remove the row (back to the defaults)."""
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(limits.delete().where(limits.c.kind == kind, limits.c.subject == subject))
            if any(v is not None for v in values.to_json().values()):
                conn.execute(limits.insert().values(kind=kind, subject=subject, **values.to_json()))

    def get_limits(self, kind: str, subject: str) -> Limits | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(limits).where(limits.c.kind == kind, limits.c.subject == subject)).first()
        if row is None:
            return None
        return Limits(row.rate_per_minute, row.requests_per_day, row.tokens_per_day)

    def all_limits(self) -> list[dict]:
        with self.engine.connect() as conn:
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
        with self._write_lock, self.engine.begin() as conn:
            for day, username, source, credential, requests, tokens in rows:
                key = (usage.c.day == day) & (usage.c.username == username) & (usage.c.source == source) & \
                      (usage.c.credential == credential)
                updated = conn.execute(usage.update().where(key).values(
                    requests=usage.c.requests + requests, tokens=usage.c.tokens + tokens))
                if updated.rowcount == 0:
                    conn.execute(usage.insert().values(day=day, username=username, source=source,
                                                       credential=credential, requests=requests, tokens=tokens))

    def user_totals(self, username: str, day: str | None = None) -> tuple[int, int]:
        query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.requests), 0),
                          sa.func.coalesce(sa.func.sum(usage.c.tokens), 0)).where(
            usage.c.day == (day or utc_day()), usage.c.username == username)
        with self.engine.connect() as conn:
            requests, tokens = conn.execute(query).one()
        return int(requests), int(tokens)

    def shared_totals(self, shared_name: str, day: str | None = None) -> tuple[int, int]:
        query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.requests), 0),
                          sa.func.coalesce(sa.func.sum(usage.c.tokens), 0)).where(
            usage.c.day == (day or utc_day()), usage.c.source == "shared", usage.c.credential == shared_name)
        with self.engine.connect() as conn:
            requests, tokens = conn.execute(query).one()
        return int(requests), int(tokens)

    def usage_rows(self, username: str | None = None, day: str | None = None) -> list[dict]:
        query = sa.select(usage).order_by(usage.c.day.desc(), usage.c.username, usage.c.source, usage.c.credential)
        if username is not None:
            query = query.where(usage.c.username == username)
        if day is not None:
            query = query.where(usage.c.day == day)
        with self.engine.connect() as conn:
            return [{"day": r.day, "user": r.username, "source": r.source, "credential": r.credential,
                     "requests": r.requests, "tokens": r.tokens} for r in conn.execute(query.limit(5000))]

    def close(self) -> None:
        self.engine.dispose()
