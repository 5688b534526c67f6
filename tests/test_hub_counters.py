"""Counters, the change generation and the ledger on SQLite: the same statements the replicas
run on PostgreSQL (tests/test_hub_replicas.py runs them across processes)."""

from __future__ import annotations

import threading
import time

import pytest

from jupyter_keyvault.hub.common import QuotaExceeded
from jupyter_keyvault.hub.counters import Counters, Subject
from jupyter_keyvault.hub.db import HubStore, Limits
from jupyter_keyvault.hub.invalidation import ChangeWatcher
from jupyter_keyvault.hub.ledger import UsageLedger


class Clock:
    def __init__(self, now: float = 1_767_225_600.0):  # 2026-01-01 00:00 UTC
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    s = HubStore(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    yield s
    s.close()


def user(name: str, **limits) -> Subject:
    return Subject("user", "user", name, Limits(**limits))


def test_given_a_daily_quota_of_5_when_8_threads_race_then_exactly_5_are_admitted_and_counted(store):
    counters = Counters(store)
    outcomes: list[bool] = []

    def one():
        try:
            counters.admit([user("dave", requests_per_day=5)], ("dave", "personal", "K"))
            outcomes.append(True)
        except QuotaExceeded as exc:
            assert "daily request quota reached for user dave (5/5" in str(exc)
            outcomes.append(False)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(True) == 5
    assert counters.today("user", "dave") == (5, 0)
    assert store.user_totals("dave") == (5, 0)  # the usage rows were written with the admissions


def test_a_shared_key_over_its_quota_refuses_without_counting_the_user(store):
    counters = Counters(store)
    shared = Subject("shared key", "shared", "COURSE", Limits(requests_per_day=1))
    counters.admit([user("dave"), shared], ("dave", "shared", "COURSE"))
    with pytest.raises(QuotaExceeded, match="shared key COURSE"):
        counters.admit([user("erin"), shared], ("erin", "shared", "COURSE"))
    assert counters.today("user", "erin") == (0, 0)  # rolled back with the refused shared row
    assert store.user_totals("erin") == (0, 0)


def test_the_rate_bucket_refills_with_time_and_says_when_to_retry(store):
    clock = Clock()
    counters = Counters(store, clock=clock)
    limited = user("dave", rate_per_minute=2)
    for _ in range(2):
        counters.admit([limited], ("dave", "personal", "K"))
    with pytest.raises(QuotaExceeded, match=r"rate limit of 2 requests/min reached for user dave; retry in 30 s") as info:
        counters.admit([limited], ("dave", "personal", "K"))
    assert 29 < info.value.retry_after <= 30
    clock.now += 30
    counters.admit([limited], ("dave", "personal", "K"))
    with pytest.raises(QuotaExceeded):
        counters.admit([limited], ("dave", "personal", "K"))


def test_the_daily_count_starts_again_on_a_new_utc_day(store):
    clock = Clock()
    counters = Counters(store, clock=clock)
    counters.admit([user("dave", requests_per_day=1)], ("dave", "personal", "K"))
    with pytest.raises(QuotaExceeded):
        counters.admit([user("dave", requests_per_day=1)], ("dave", "personal", "K"))
    clock.now += 86400
    counters.admit([user("dave", requests_per_day=1)], ("dave", "personal", "K"))
    assert counters.today("user", "dave") == (1, 0)


def test_tokens_reach_the_counters_through_the_ledger_and_a_token_quota_then_refuses(store):
    counters = Counters(store)
    ledger = UsageLedger(store, counters, lambda events: None)
    counters.admit([user("dave", tokens_per_day=100)], ("dave", "personal", "K"))
    ledger.add("dave", "personal", "K", tokens=150)
    ledger.flush()
    assert counters.today("user", "dave") == (1, 150)
    assert store.user_totals("dave") == (1, 150)
    with pytest.raises(QuotaExceeded, match="daily token quota reached for user dave"):
        counters.admit([user("dave", tokens_per_day=100)], ("dave", "personal", "K"))


def test_a_failed_flush_keeps_its_batch_for_the_next_one(store, tmp_path):
    counters = Counters(store)
    written = []

    def failing(events):
        raise RuntimeError("database down")

    ledger = UsageLedger(store, counters, failing)
    ledger.audit("user:dave", "use", "K", "ok", actor="dave")
    with pytest.raises(RuntimeError):
        ledger.flush()
    assert ledger.pending() == 1
    ledger._write_audit = written.extend
    ledger.flush()
    assert len(written) == 1 and ledger.pending() == 0


def test_grants_and_limits_raise_the_change_generation_that_the_watcher_reports(store):
    seen = []
    watcher = ChangeWatcher(store, lambda: seen.append(store.generation()))
    watcher.poll()
    store.grant("COURSE", "group", "class-a", "carol")
    watcher.poll()
    store.set_limits("user", "dave", Limits(requests_per_day=3))
    store.revoke("COURSE", "group", "class-a")
    watcher.poll()
    assert len(seen) == 2 and seen[1] > seen[0]
    assert watcher.healthy(max_age=5)


def test_tokens_not_yet_flushed_on_this_replica_already_count_against_the_token_quota(store):
    counters = Counters(store)
    ledger = UsageLedger(store, counters, lambda events: None)
    counters.admit([user("dave", tokens_per_day=100)], ("dave", "personal", "K"))
    ledger.add("dave", "personal", "K", tokens=120)  # not flushed
    pending = ledger.unflushed_tokens("user", "dave")
    assert pending == 120
    with pytest.raises(QuotaExceeded, match=r"daily token quota reached for user dave \(120/100"):
        counters.admit([Subject("user", "user", "dave", Limits(tokens_per_day=100), pending)],
                       ("dave", "personal", "K"))


def test_token_refusal_counts_the_database_and_this_replicas_unflushed_tokens_and_counts_nothing(store):
    clock = Clock(time.time())  # the ledger writes to today's rows
    counters = Counters(store, clock=clock)
    ledger = UsageLedger(store, counters, lambda events: None)
    shared = Subject("shared key", "shared", "COURSE", Limits(tokens_per_day=50))
    counters.admit([user("dave", tokens_per_day=100), shared], ("dave", "shared", "COURSE"))
    assert counters.token_refusal([user("dave", tokens_per_day=100), shared]) is None
    ledger.add("dave", "shared", "COURSE", tokens=30)
    ledger.flush()
    assert counters.token_refusal([user("dave", tokens_per_day=100), shared]) is None
    refusal = counters.token_refusal([user("dave", tokens_per_day=100),
                                      Subject("shared key", "shared", "COURSE", Limits(tokens_per_day=50), 20)])
    assert refusal is not None and "daily token quota reached for shared key COURSE (50/50" in str(refusal)
    assert counters.token_refusal([user("dave")]) is None  # no token quota: nothing read
    assert counters.today("user", "dave") == (1, 30)  # a check counts nothing
    clock.now += 86400  # yesterday's tokens do not count today
    assert counters.token_refusal([user("dave", tokens_per_day=10)]) is None


def test_a_rate_limit_set_after_unlimited_use_starts_with_a_full_bucket(store):
    counters = Counters(store)
    for _ in range(5):
        counters.admit([user("dave")], ("dave", "personal", "K"))
    for _ in range(2):
        counters.admit([user("dave", rate_per_minute=2)], ("dave", "personal", "K"))
    with pytest.raises(QuotaExceeded, match="rate limit of 2 requests/min"):
        counters.admit([user("dave", rate_per_minute=2)], ("dave", "personal", "K"))


def test_refusals_of_one_user_are_one_audit_event_per_flush_that_says_how_many(store):
    """A loop against a quota, or requests for names that do not exist, are not bounded by any limit:
    each was an audit row, so one user could grow the service's audit table at will."""
    written: list = []
    ledger = UsageLedger(store, Counters(store), written.extend)
    for i in range(500):
        ledger.audit("user:erin", "use", f"NAME_{i}", "denied", actor="erin", detail="no key granted")
    for _ in range(3):
        ledger.audit("shared", "use", "COURSE", "refused", actor="dave", detail="daily request quota reached")
    for _ in range(2):
        ledger.audit("user:erin", "use", "OPENAI_API_KEY", "ok", actor="erin")  # uses: bounded by the limits
    ledger.flush()
    denied = [e for e in written if e.outcome == "denied"]
    assert len(denied) == 1 and denied[0].target is None and denied[0].actor == "erin"
    assert denied[0].detail == ("500 requests since the last write; named: NAME_0, NAME_1, NAME_2, NAME_3, NAME_4; "
                                "first: no key granted")
    refused = [e for e in written if e.outcome == "refused"]
    assert len(refused) == 1 and refused[0].target == "COURSE" and refused[0].detail.startswith("3 requests")
    assert len([e for e in written if e.outcome == "ok"]) == 2
    written.clear()
    ledger.audit("user:erin", "use", "X", "denied", actor="erin", detail="no key granted")
    ledger.flush()  # a new interval starts its own count
    assert [(e.target, e.detail) for e in written] == [("X", "no key granted")]
