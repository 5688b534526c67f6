"""A small token-bucket limiter keyed by (user, action)."""

from __future__ import annotations

import math
import threading
import time
from typing import Callable


class RateLimiter:
    """`max_keys` bounds the buckets kept: keys can come from callers (a failed token's id, an address),
    and a bucket per key ever seen would grow the server's memory with every forged token."""

    def __init__(self, per_minute: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 4096):
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, int(per_minute)))
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[object, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: object) -> float:
        """Take one token. Returns 0 when allowed, else seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._prune(now)
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget the buckets that have refilled (a full bucket and no bucket answer alike); if over half
        the bound remain, only the most recently used half of it stays. Keys that many and that fresh
        come from a flood of distinct keys, which gets fresh buckets from fresh keys anyway."""
        keep = {key: (tokens, last) for key, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate < self.capacity}
        if len(keep) > self.max_keys // 2:
            recent = sorted(keep.items(), key=lambda item: item[1][1])[-(self.max_keys // 2):]
            keep = dict(recent)
        self._buckets = keep

    def __len__(self) -> int:
        return len(self._buckets)

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
