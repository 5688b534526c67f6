"""LoadingCache: one load per burst, background reloads, and invalidation that beats loads in flight."""

from __future__ import annotations

import asyncio
import time

import pytest

from jupyter_keyvault.cache import REFRESH_AHEAD, LoadingCache


class Source:
    """A slow vault: each read takes `delay` seconds and returns the current value."""

    def __init__(self, value: str = "v1", delay: float = 0.05):
        self.value, self.delay, self.reads, self.fail = value, delay, 0, False

    async def read(self) -> str:
        self.reads += 1
        value = self.value
        await asyncio.sleep(self.delay)
        if self.fail:
            raise KeyError("vault unavailable")
        return value


async def test_given_a_burst_of_misses_when_loading_then_the_vault_is_read_once():
    cache: LoadingCache[str, str] = LoadingCache(lambda: 5.0)
    source = Source()
    results = await asyncio.gather(*(cache.get("k", source.read) for _ in range(500)))
    assert source.reads == 1 and cache.loads == 1
    assert {value for value, _ in results} == {"v1"}
    assert [loaded for _, loaded in results].count(True) == 1  # one call read, the others waited for it
    assert await cache.get("k", source.read) == ("v1", False)


async def test_given_a_discard_during_a_load_when_asked_again_then_the_old_read_is_neither_kept_nor_joined():
    cache: LoadingCache[str, str] = LoadingCache(lambda: 5.0)
    source = Source(delay=0.1)
    early = asyncio.ensure_future(cache.get("k", source.read))
    await asyncio.sleep(0.02)  # the read of "v1" is in flight
    source.value = "v2"
    cache.discard(lambda key: key == "k")  # e.g. the key was replaced through this server
    late = await cache.get("k", source.read)
    assert late == ("v2", True) and source.reads == 2  # a new read, not the one begun before the write
    assert (await early)[0] == "v1"  # the early caller asked before the write
    assert await cache.get("k", source.read) == ("v2", False)


async def test_given_a_clear_during_a_load_when_it_ends_then_nothing_is_stored():
    cache: LoadingCache[str, str] = LoadingCache(lambda: 5.0)
    source = Source(delay=0.05)
    task = asyncio.ensure_future(cache.get("k", source.read))
    await asyncio.sleep(0.01)
    cache.clear()  # e.g. a token was revoked
    await task
    assert len(cache) == 0


async def test_given_an_entry_near_its_end_when_read_then_it_is_served_and_reloaded_in_the_background():
    ttl = 0.5
    cache: LoadingCache[str, str] = LoadingCache(lambda: ttl)
    source = Source(delay=0.05)
    await cache.get("k", source.read)
    source.value = "v2"
    await asyncio.sleep(ttl * (1 - REFRESH_AHEAD) + 0.02)
    start = time.monotonic()
    first = await cache.get("k", source.read)
    assert time.monotonic() - start < 0.04  # served at once, not after the read
    assert first == ("v1", True)  # this caller started the reload, which reads the vault for it
    assert await cache.get("k", source.read) == ("v1", False)  # the reload in flight is not started twice
    await asyncio.sleep(0.1)
    assert await cache.get("k", source.read) == ("v2", False)
    assert source.reads == 2


async def test_given_a_failing_load_when_many_wait_then_all_see_the_error_and_nothing_is_cached():
    cache: LoadingCache[str, str] = LoadingCache(lambda: 5.0)
    source = Source()
    source.fail = True
    results = await asyncio.gather(*(cache.get("k", source.read) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, KeyError) for r in results) and source.reads == 1
    source.fail = False
    assert await cache.get("k", source.read) == ("v1", True)


async def test_given_a_value_that_expires_soon_when_cached_then_it_lives_no_longer_than_itself():
    cache: LoadingCache[str, str] = LoadingCache(lambda: 60.0)
    source = Source(delay=0)
    await cache.get("k", source.read, lifetime=lambda _: 0.1)
    assert (await cache.get("k", source.read, lifetime=lambda _: 0.1))[1] is False
    await asyncio.sleep(0.12)
    assert (await cache.get("k", source.read, lifetime=lambda _: 0.1))[1] is True
    await cache.get("gone", source.read, lifetime=lambda _: -1.0)  # already expired: never stored
    assert (await cache.get("gone", source.read, lifetime=lambda _: -1.0))[1] is True


async def test_given_the_first_caller_cancelled_when_others_wait_then_the_shared_load_still_ends():
    cache: LoadingCache[str, str] = LoadingCache(lambda: 5.0)
    source = Source(delay=0.05)
    first = asyncio.ensure_future(cache.get("k", source.read))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(cache.get("k", source.read))
    await asyncio.sleep(0)
    first.cancel()  # its client left
    assert (await second)[0] == "v1" and source.reads == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_given_a_full_cache_when_a_new_key_arrives_then_it_stays_bounded():
    cache: LoadingCache[int, int] = LoadingCache(lambda: 60.0, max_entries=8)

    async def load_one() -> int:
        return 1

    for key in range(50):
        await cache.get(key, load_one)
    assert len(cache) <= 8
