"""Big uploads without big memory, for tests and benchmarks of the proxy's streamed request bodies.

`PatternFile` is a seekable file of any size, made up as it is read (so a 200 MB upload costs the
client no memory), that records when it was read to the end; `RSSSampler` samples another
process's resident set size from /proc while an upload runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time

_BLOCK = bytes(range(256)) * 256  # 64 KiB that does not compress to nothing


class PatternFile(io.RawIOBase):
    """`size` bytes of a repeating pattern; `finished_at` is the time.monotonic() of the read that hit the end."""

    def __init__(self, size: int):
        self.size = size
        self._pos = 0
        self.finished_at: float | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        self._pos = max(0, min(self.size, base + offset))
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self.size - self._pos)
        if n <= 0:
            if self.finished_at is None:
                self.finished_at = time.monotonic()
            return 0
        start = self._pos % len(_BLOCK)
        data = (_BLOCK[start:] + _BLOCK * (n // len(_BLOCK) + 1))[:n]
        buffer[:n] = data
        self._pos += n
        if self._pos == self.size and self.finished_at is None:
            self.finished_at = time.monotonic()
        return n

    @staticmethod
    def sha256(size: int) -> str:
        digest, left = hashlib.sha256(), size
        while left > 0:
            digest.update(_BLOCK[:min(left, len(_BLOCK))])
            left -= len(_BLOCK)
        return digest.hexdigest()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RSSSampler:
    """Samples a process's RSS every `interval` seconds in a thread; `peak` and `baseline` in bytes."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.pid = pid
        self.interval = interval
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss_bytes(self.pid))
