"""What the proxy learns after a response, written in batches off the request path.

A request's count is not here: it is committed with its admission (counters.py) before
anything goes upstream, so an acknowledged request is never lost. What a finished response
reports (its tokens) and the use events of the audit log are queued here and written by the
flusher every `interval` seconds (and before any usage or audit listing), one transaction per
flush. A crash (SIGKILL, OOM) loses at most the tokens and use events of the last interval;
admin events are written at once, not here. A failed flush keeps its batch for the next one
(up to MAX_QUEUED_EVENTS use events through a long outage).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable

from ..store.model import AuditEvent
from .counters import Counters
from .db import HubStore, utc_day

MAX_QUEUED_EVENTS = 100_000  # use events kept through a database outage; the oldest go first beyond this
REPEATED_OUTCOMES = frozenset({"denied", "refused"})  # not bounded by any limit: counted, not a row each
MAX_TARGETS_NAMED = 5


class _Repeats:
    """The refusals of one (owner, actor, action, outcome) since the last flush: one event counts them."""

    def __init__(self, event: AuditEvent):
        self.event = event
        self.count = 1
        self.targets = [event.target] if event.target else []

    def add(self, target: str | None) -> None:
        self.count += 1
        if target and target not in self.targets and len(self.targets) < MAX_TARGETS_NAMED:
            self.targets.append(target)

    def written(self) -> AuditEvent:
        if self.count == 1:
            return self.event
        names = ", ".join(t[:64] for t in self.targets)
        detail = f"{self.count} requests since the last write; named: {names}; first: {self.event.detail or ''}"
        return replace(self.event, target=self.event.target if len(self.targets) <= 1 else None, detail=detail)


class UsageLedger:
    def __init__(self, store: HubStore, counters: Counters, write_audit: Callable[[list[AuditEvent]], None]):
        self.store = store
        self.counters = counters
        self._write_audit = write_audit  # writes a batch of events
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str, str], int] = {}  # (day, user, source, credential) -> tokens
        self._events: list[AuditEvent | _Repeats] = []
        self._repeats: dict[tuple[str, str, str, str], _Repeats] = {}

    def add(self, user: str, source: str, credential: str, *, tokens: int) -> None:
        """Tokens a finished response reported (its request was counted at admission)."""
        if tokens <= 0:
            return
        key = (utc_day(), user, source, credential)
        with self._lock:
            self._tokens[key] = self._tokens.get(key, 0) + tokens

    def audit(self, owner: str, action: str, target: str | None, outcome: str, *, actor: str,
              detail: str | None = None) -> None:
        """Queue an event. Refusals (denied, refused) of one actor are one event per flush that says how
        many there were: a user's loop against a quota, or requests for names that do not exist, must
        not grow the audit table by a row each."""
        event = AuditEvent(None, time.time(), owner, actor, action, target, outcome, detail)
        with self._lock:
            if outcome not in REPEATED_OUTCOMES:
                self._events.append(event)
                return
            key = (owner, actor, action, outcome)
            repeats = self._repeats.get(key)
            if repeats is not None:
                repeats.add(target)
                return
            repeats = self._repeats[key] = _Repeats(event)
            self._events.append(repeats)

    def unflushed_tokens(self, kind: str, subject: str) -> int:
        """Tokens of `kind` ("user"/"shared") `subject` today that the next flush will write."""
        day = utc_day()
        with self._lock:
            return sum(count for (d, user, source, cred), count in self._tokens.items()
                       if d == day and (user == subject if kind == "user" else source == "shared" and cred == subject))

    def pending(self) -> int:
        with self._lock:
            return len(self._tokens) + len(self._events)

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                tokens, self._tokens = self._tokens, {}
                events = [e.written() if isinstance(e, _Repeats) else e for e in self._events]
                self._events, self._repeats = [], {}
            try:
                if tokens:
                    self._write_tokens(tokens)
                    tokens = {}
                if events:
                    self._write_audit(events)
                    events = []
            finally:
                if tokens or events:  # not written (database down): back in the queue, before newer ones
                    with self._lock:
                        for key, count in tokens.items():
                            self._tokens[key] = self._tokens.get(key, 0) + count
                        self._events[:0] = events
                        if len(self._events) > MAX_QUEUED_EVENTS:  # a long outage: memory stays bounded
                            del self._events[:len(self._events) - MAX_QUEUED_EVENTS]

    def _write_tokens(self, tokens: dict[tuple[str, str, str, str], int]) -> None:
        # Rows are locked in the order admissions lock them (users, then shared keys, then usage
        # rows, each sorted), so a flush and admissions on other replicas never deadlock.
        per_counter: dict[tuple[str, str, str], int] = {}
        for (day, user, source, cred), count in tokens.items():
            per_counter[("user", user, day)] = per_counter.get(("user", user, day), 0) + count
            if source == "shared":
                per_counter[("shared", cred, day)] = per_counter.get(("shared", cred, day), 0) + count
        rank = {"user": 0, "shared": 1}
        with self.store._write_lock, self.store._begin() as conn:
            for (kind, subject, day), count in sorted(per_counter.items(), key=lambda kv: (rank[kv[0][0]], kv[0])):
                self.counters.add_tokens(conn, kind, subject, day, count)
            for (day, user, source, cred), count in sorted(tokens.items()):
                self.store.add_usage(conn, day, user, source, cred, 0, count)
