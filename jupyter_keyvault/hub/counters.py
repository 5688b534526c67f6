"""Rate limits and daily quotas as atomic counters in the database, shared by every replica.

One admission is one transaction: an upsert of each counter row involved (the user's, then
the shared key's when a shared key is used) whose ON CONFLICT ... WHERE refuses a row over its
daily cap or with an empty rate bucket, RETURNING the row it took; then the usage row of that
request. If a row was refused, the transaction rolls back and nothing is counted. (One
single-row statement per subject: SQLAlchemy caches its compiled form, not a multi-row one's.)
PostgreSQL locks each counter row until the transaction ends, so N replicas admitting at
once still give exactly `requests_per_day` admissions; SQLite runs the same statements (one
writer at a time). The user's row always comes first, and the flusher locks users before
shared keys too, so no two transactions lock two rows in opposite orders.

The rate limit is a token bucket (burst = the per-minute figure) kept in the same row: its
level and the time it was last taken from. Time is the replica's clock (keep replicas on NTP).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import sqlalchemy as sa

from .common import QuotaExceeded
from .db import HubStore, Limits, counters, utc_day


class _Refused(Exception):
    pass


UNLIMITED = 2**62  # a cap no counter reaches; 0/None in Limits means "no limit"


@dataclass(frozen=True)
class Subject:
    label: str  # "user" or "shared key", for messages
    kind: str  # "user" | "shared"
    name: str
    limits: Limits
    unflushed_tokens: int = 0  # this replica's tokens not yet in the database (they lower the token cap)


def _level(bucket, bucket_at, old_rate, rate_per_minute, burst, now):
    """The bucket level at `now`, as an SQL expression: full when there was no rate limit before."""
    elapsed = sa.case((now > bucket_at, now - bucket_at), else_=0.0)
    refilled = bucket + elapsed * rate_per_minute / 60.0
    return sa.case((old_rate <= 0, burst), (refilled > burst, burst), else_=refilled)


class Counters:
    """Admit proxied requests against the limits, counting them in the database."""

    def __init__(self, store: HubStore, clock=time.time):
        self.store = store
        self.clock = clock
        self._upsert: sa.Insert | None = None

    def admit(self, subjects: list[Subject], usage_key: tuple[str, str, str]) -> None:
        """Count one request for every subject and in the usage table, or raise QuotaExceeded
        (nothing counted). `usage_key` is (user, source, credential). Committed on return: the
        request's usage record is then acknowledged, before anything goes upstream."""
        now = self.clock()
        day = utc_day(now)
        statement = self._statement()
        try:
            with self.store._write_lock, self.store._begin() as conn:
                for subject in subjects:
                    if conn.execute(statement, self._row(subject, day, now)).first() is None:
                        raise _Refused  # rolls back: a row taken for the user is given back
                user, source, credential = usage_key
                self.store.add_usage(conn, day, user, source, credential, 1, 0)
                return
        except _Refused:
            pass
        raise self._refusal(subjects, self._rows(subjects), day, now)

    def _rows(self, subjects: list[Subject]) -> dict:
        """The counter rows of these subjects as they are now, by (kind, name)."""
        with self.store._connect() as conn:
            return {(r.kind, r.subject): r for r in conn.execute(sa.select(counters).where(
                sa.tuple_(counters.c.kind, counters.c.subject).in_([(s.kind, s.name) for s in subjects])))}

    def _statement(self):
        """The admission upsert of one counter row, built once (parameters: the row's columns)."""
        if self._upsert is not None:
            return self._upsert
        put = self.store.insert(counters)
        t, x = counters.c, put.excluded
        same_day = t.day == x.day
        level = _level(t.bucket, t.bucket_at, t.rate_per_minute, x.rate_per_minute, x.burst, x.bucket_at)
        stmt = self._upsert = put.on_conflict_do_update(
            index_elements=[t.kind, t.subject],
            set_={
                "requests": sa.case((same_day, t.requests + 1), else_=1),
                "tokens": sa.case((same_day, t.tokens), else_=0),
                "day": x.day,
                "requests_cap": x.requests_cap, "tokens_cap": x.tokens_cap,
                "rate_per_minute": x.rate_per_minute, "burst": x.burst,
                "bucket": sa.case((x.rate_per_minute > 0, level - 1), else_=t.bucket),
                "bucket_at": x.bucket_at,
            },
            where=sa.and_(
                sa.or_(sa.not_(same_day), sa.and_(t.requests < x.requests_cap, t.tokens < x.tokens_cap)),
                sa.or_(x.rate_per_minute <= 0, level >= 1),
            ),
        ).returning(t.kind)
        return stmt

    @staticmethod
    def _row(s: Subject, day: str, now: float) -> dict:
        lim = s.limits
        rate = float(lim.rate_per_minute or 0)
        burst = float(max(1, int(rate))) if rate else 1.0
        return {"kind": s.kind, "subject": s.name, "day": day, "requests": 1, "tokens": 0,
                "requests_cap": lim.requests_per_day or UNLIMITED,
                "tokens_cap": (lim.tokens_per_day - s.unflushed_tokens) if lim.tokens_per_day else UNLIMITED,
                "rate_per_minute": rate, "burst": burst, "bucket": burst - 1, "bucket_at": now}

    @staticmethod
    def _refusal(subjects: list[Subject], state: dict, day: str, now: float) -> QuotaExceeded:
        """Why the admission was refused, from the rows as they are now (the message only)."""
        for s in subjects:
            row = state.get((s.kind, s.name))
            if row is None:
                continue
            lim, who = s.limits, f"{s.label} {s.name}"
            if row.day == day and lim.requests_per_day and row.requests >= lim.requests_per_day:
                return QuotaExceeded(f"daily request quota reached for {who} ({row.requests}/{lim.requests_per_day} "
                                     "requests today); it resets at 00:00 UTC", seconds_to_midnight(now))
            over_tokens = _token_refusal(s, row, day, now)
            if over_tokens is not None:
                return over_tokens
            if lim.rate_per_minute and row.rate_per_minute > 0:
                elapsed = max(0.0, now - row.bucket_at)
                level = min(row.burst, row.bucket + elapsed * lim.rate_per_minute / 60.0)
                if level < 1:
                    wait = (1 - level) * 60.0 / lim.rate_per_minute
                    return QuotaExceeded(f"rate limit of {lim.rate_per_minute:g} requests/min reached for {who}; "
                                         f"retry in {max(1, math.ceil(wait))} s", wait)
        # Another replica moved the counters between the two statements: ask the client to retry.
        return QuotaExceeded("a limit was reached; retry in 1 s", 1.0)

    def token_refusal(self, subjects: list[Subject]) -> QuotaExceeded | None:
        """Why these subjects may not spend more tokens today (their daily token quota is used up), or
        None. Counts nothing: for a session already admitted (Realtime), checked as it reports usage."""
        limited = [s for s in subjects if s.limits.tokens_per_day]
        if not limited:
            return None
        now = self.clock()
        day = utc_day(now)
        state = self._rows(limited)
        for s in limited:
            row = state.get((s.kind, s.name))
            refusal = _token_refusal(s, row, day, now) if row is not None else None
            if refusal is not None:
                return refusal
        return None

    def add_tokens(self, conn: sa.Connection, kind: str, subject: str, day: str, tokens: int) -> None:
        """Tokens a finished response reported, counted against today's quota (from the flusher)."""
        conn.execute(counters.update().where(counters.c.kind == kind, counters.c.subject == subject,
                                             counters.c.day == day).values(tokens=counters.c.tokens + tokens))

    def today(self, kind: str, subject: str) -> tuple[int, int]:
        day = utc_day(self.clock())
        with self.store._connect() as conn:
            row = conn.execute(sa.select(counters.c.requests, counters.c.tokens).where(
                counters.c.kind == kind, counters.c.subject == subject, counters.c.day == day)).first()
        return (int(row.requests), int(row.tokens)) if row else (0, 0)


def _token_refusal(s: Subject, row, day: str, now: float) -> QuotaExceeded | None:
    """The daily token quota of `s`, given its counter row: what the database holds plus this replica's unflushed tokens."""
    tokens = row.tokens + s.unflushed_tokens
    if row.day == day and s.limits.tokens_per_day and tokens >= s.limits.tokens_per_day:
        return QuotaExceeded(f"daily token quota reached for {s.label} {s.name} ({tokens}/{s.limits.tokens_per_day} "
                             "tokens today); it resets at 00:00 UTC", seconds_to_midnight(now))
    return None


def seconds_to_midnight(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return 86400 - (now % 86400)
