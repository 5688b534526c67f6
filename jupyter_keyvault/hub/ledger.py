"""Usage counters and use-audit events of the proxy, kept in memory and written in batches.

The service is one process, so today's totals per user and per shared key can be checked
in memory (loaded from the database on first use) instead of with a query per request;
increments and audit events are written by a flusher every `interval` seconds (and before
any usage or audit listing), one transaction for all counters. A crash loses at most the
last interval of counts and use events; admin events are written at once, not here.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..store.model import AuditEvent
from .db import HubStore, utc_day


class UsageLedger:
    def __init__(self, store: HubStore, write_audit: Callable[[list[AuditEvent]], None]):
        self.store = store
        self._write_audit = write_audit  # writes a batch of events
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._totals: dict[tuple[str, str, str], list[int]] = {}  # (kind, subject, day) -> [requests, tokens]
        self._pending: dict[tuple[str, str, str, str], list[int]] = {}  # (day, user, source, credential)
        self._events: list[AuditEvent] = []

    def _total(self, kind: str, subject: str, day: str) -> list[int]:
        key = (kind, subject, day)
        found = self._totals.get(key)
        if found is None:
            loader = self.store.user_totals if kind == "user" else self.store.shared_totals
            requests, tokens = loader(subject, day)
            # Pending deltas are not in the database yet.
            for (pday, user, source, cred), (r, t) in self._pending.items():
                if pday == day and ((kind == "user" and user == subject) or
                                    (kind == "shared" and source == "shared" and cred == subject)):
                    requests, tokens = requests + r, tokens + t
            found = self._totals[key] = [requests, tokens]
        return found

    def totals(self, kind: str, subject: str) -> tuple[int, int]:
        with self._lock:
            requests, tokens = self._total(kind, subject, utc_day())
        return requests, tokens

    def add(self, user: str, source: str, credential: str, *, requests: int = 0, tokens: int = 0) -> None:
        day = utc_day()
        with self._lock:
            user_total = self._total("user", user, day)
            shared_total = self._total("shared", credential, day) if source == "shared" else None
            for total in filter(None, (user_total, shared_total)):
                total[0] += requests
                total[1] += tokens
            delta = self._pending.setdefault((day, user, source, credential), [0, 0])
            delta[0] += requests
            delta[1] += tokens
            if len(self._totals) > 100_000:  # yesterday's keys: drop, reload from the database if asked
                self._totals = {k: v for k, v in self._totals.items() if k[2] == day}

    def audit(self, owner: str, action: str, target: str | None, outcome: str, *, actor: str,
              detail: str | None = None) -> None:
        event = AuditEvent(None, time.time(), owner, actor, action, target, outcome, detail)
        with self._lock:
            self._events.append(event)

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
                events, self._events = self._events, []
            if pending:
                self.store.add_usage_batch([(day, user, source, cred, r, t)
                                            for (day, user, source, cred), (r, t) in pending.items()])
            if events:
                self._write_audit(events)
