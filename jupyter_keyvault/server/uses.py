"""Uses of credentials and access tokens, recorded off the request path.

A proxied request served from the decrypted-key cache only counts itself in memory; once a second
a worker thread writes the counts (one audit row per credential and caller, saying how many
requests it stands for; one for all failed token attempts; the last-used times), and `close()`
writes what is left, so a clean stop loses no use. A batch that cannot be written (disk full,
locked) is kept for the next one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Callable

from ..store import VaultError

log = logging.getLogger(__name__)

CredentialUses = dict[tuple[str, str], int]  # (credential name, caller) -> requests
MAX_REFUSAL_SAMPLES = 5


@dataclass
class Refusals:
    """Failed token attempts in one interval: how many, and the first few (credential, client)."""

    count: int = 0
    samples: list[tuple[str, str]] = field(default_factory=list)
    credential: str | None = None  # the one credential every attempt named, if only one was

    def add(self, credential: str, client: str) -> None:
        credential = credential[:64]  # the caller's header, not yet checked: bounded in the audit log
        self.credential = credential if self.count == 0 or self.credential == credential else None
        self.count += 1
        if len(self.samples) < MAX_REFUSAL_SAMPLES:
            self.samples.append((credential, client[:80]))

    def merge(self, other: Refusals) -> None:
        """Add a batch that could not be written back in (before newer attempts' samples)."""
        if other.count:
            self.credential = other.credential if self.count == 0 or self.credential == other.credential else None
            self.count += other.count
            self.samples = (other.samples + self.samples)[:MAX_REFUSAL_SAMPLES]

    @property
    def detail(self) -> str:
        seen = ", ".join(f"{credential} from {client}" for credential, client in self.samples)
        return f"{self.count} failed attempt(s); first: {seen}"


class UseLog:
    def __init__(self, write: Callable[[CredentialUses, set[str], Refusals], None], interval: float = 1.0):
        self._write = write
        self._interval = interval
        self._credentials: collections.Counter = collections.Counter()
        self._tokens: set[str] = set()
        self._refusals = Refusals()
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Future] = set()

    def credential(self, name: str, actor: str) -> None:
        self._credentials[(name, actor)] += 1
        self._schedule()

    def token(self, token_id: str) -> None:
        self._tokens.add(token_id)
        self._schedule()

    def refusal(self, credential: str, client: str) -> None:
        """A failed token attempt. Each interval's are one audit row however many there were: anyone who
        reaches the proxy can send forged tokens, and must not grow the audit log by a row each."""
        self._refusals.add(credential, client)
        self._schedule()

    @property
    def pending(self) -> int:
        return sum(self._credentials.values()) + len(self._tokens) + self._refusals.count

    def _schedule(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._write_soon)

    def _write_soon(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        credentials, tokens, refusals = dict(self._credentials), self._tokens, self._refusals
        self._credentials, self._tokens, self._refusals = collections.Counter(), set(), Refusals()
        if not credentials and not tokens and not refusals.count:
            return
        try:
            await asyncio.to_thread(self._write, credentials, tokens, refusals)
        except VaultError as exc:
            log.warning("jupyter-keyvault: %d use(s) not recorded yet, retrying: %s",
                        sum(credentials.values()) + refusals.count, exc)
            self._credentials.update(credentials)
            self._tokens |= tokens
            self._refusals.merge(refusals)
            self._schedule()

    async def close(self) -> None:
        """Write every use counted so far (a clean stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self.flush()
        if self._timer is not None:  # the last write failed: say what is lost rather than retry forever
            self._timer.cancel()
            self._timer = None
            log.error("jupyter-keyvault: %d use(s) could not be recorded at shutdown", self.pending)
