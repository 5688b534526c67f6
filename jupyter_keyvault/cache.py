"""A short-lived cache for what the proxy looks up on every request (a decrypted key, a verified
token, a credential's metadata), so that a burst of requests reads the vault once.

- Concurrent misses for one key share a single load: 500 streams arriving as an entry expires
  make one vault read, not 500 worker-thread jobs queued behind each other.
- An entry close to its end is reloaded in the background while it is still served, so a busy
  key never makes a request wait for the vault.
- `discard`/`clear` win over loads in flight: a load started before them is neither stored nor
  joined by a later caller (a revoked token or a changed key is never served from a stale read).
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)

REFRESH_AHEAD = 0.2  # the last fifth of an entry's life: reload in the background


class LoadingCache(Generic[K, V]):
    def __init__(self, ttl: Callable[[], float], *, max_entries: int = 1024):
        self._ttl = ttl  # read at each load, so a changed setting applies at once
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, float, V]] = {}  # key -> (refresh after, expires, value)
        self._loading: dict[K, tuple[int, asyncio.Future[V]]] = {}
        self._generation = 0
        self.loads = 0  # vault reads made, for tests and benchmarks

    async def get(self, key: K, load: Callable[[], Awaitable[V]], *,
                  lifetime: Callable[[V], float] | None = None) -> tuple[V, bool]:
        """(value, whether this call started the load that reads it): the one call that starts a
        load, in the foreground or as a background reload, is the one its vault read (and the use it
        audits) stands for; every other call was served by the cache or by that load.
        `lifetime(value)` may shorten an entry's life (a token that expires sooner than the cache
        would keep it)."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[1] > now:
            if entry[0] <= now:
                _, started = self._start_load(key, load, lifetime)  # errors are seen by the next miss
                return entry[2], started
            return entry[2], False
        task, started = self._start_load(key, load, lifetime)
        return await asyncio.shield(task), started

    def _start_load(self, key: K, load: Callable[[], Awaitable[V]],
                    lifetime: Callable[[V], float] | None) -> tuple[asyncio.Future[V], bool]:
        loading = self._loading.get(key)
        if loading is not None and loading[0] == self._generation:
            return loading[1], False
        generation = self._generation
        task: asyncio.Future[V] = asyncio.ensure_future(self._load(key, load, lifetime, generation))
        self._loading[key] = (generation, task)
        task.add_done_callback(_retrieve)  # a background reload that failed is not an error here
        return task, True

    async def _load(self, key: K, load: Callable[[], Awaitable[V]], lifetime: Callable[[V], float] | None,
                    generation: int) -> V:
        try:
            self.loads += 1
            value = await load()
            if generation == self._generation:
                ttl = self._ttl() if lifetime is None else min(self._ttl(), lifetime(value))
                if ttl > 0:
                    if len(self._entries) >= self.max_entries and key not in self._entries:
                        self._drop_expired()
                    now = time.monotonic()
                    self._entries[key] = (now + ttl * (1 - REFRESH_AHEAD), now + ttl, value)
            return value
        finally:
            current = self._loading.get(key)
            if current is not None and current[0] == generation:
                del self._loading[key]

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for key in [k for k, e in self._entries.items() if e[1] <= now]:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()

    def discard(self, match: Callable[[K], bool]) -> None:
        """Forget the entries whose key matches, and let no load in flight be stored or joined."""
        self._generation += 1
        for key in [k for k in self._entries if match(k)]:
            del self._entries[key]

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
