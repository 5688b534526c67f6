"""Cache invalidation across replicas: a versioned row, polled.

Every change of grants, limits, shared keys or personal credentials raises the generation in
`keyvault_hub_changes` (in the same transaction for grants and limits, right after the vault
write for credentials, before the admin's request is answered). Each replica reads that one
row every `interval` seconds in a background thread; when it moved, the replica's caches
(shared keys, grants, limits, decrypted keys) are dropped. A revoke answered by one replica is
therefore enforced by every other within `interval` + one query (0.25 s by default; the stated
bound is 1 s). Cache entries remember the epoch they were loaded in, so a load that raced the
change is never kept. The same code runs on SQLite (one replica) and PostgreSQL.

The last successful poll also tells readiness whether the database answers (health.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .db import HubStore

log = logging.getLogger("jupyter_keyvault.hub")


class ChangeWatcher:
    def __init__(self, store: HubStore, on_change: Callable[[], None], interval: float = 0.25):
        self.store = store
        self.on_change = on_change
        self.interval = interval
        self.generation: int | None = None
        self.last_ok = 0.0  # monotonic time of the last successful poll
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        try:
            current = self.store.generation()
        except Exception as exc:  # noqa: BLE001 - a database outage: readiness reports it, the next poll retries
            if not self.last_error:
                log.warning("keyvault: the database does not answer: %s", exc)
            self.last_error = str(exc)
            return
        if self.last_error:
            log.warning("keyvault: the database answers again")
            self.on_change()  # changes made meanwhile were not seen
        self.last_error = ""
        self.last_ok = time.monotonic()
        if self.generation is not None and current != self.generation:
            self.on_change()
        self.generation = current

    def healthy(self, max_age: float) -> bool:
        return not self.last_error and time.monotonic() - self.last_ok <= max_age

    def start(self) -> None:
        self.poll()
        self._thread = threading.Thread(target=self._run, name="keyvault-change-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
