"""The StorageBackend contract, as a mixin every backend's test class inherits.

Subclasses provide a `backend` fixture (a fresh, empty backend) and get every test
below. Only the abstract contract of `jupyter_keyvault.store.backend.StorageBackend`
is tested here -- nothing SQLite-specific -- so a SQLAlchemy/PostgreSQL backend can
run the very same suite:

    class TestPostgresBackend(StorageBackendSuite):
        @pytest.fixture
        def backend(self, ...):
            ...

The class name deliberately lacks the `Test` prefix so pytest does not collect the
mixin by itself.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from jupyter_keyvault.store import AuditEvent, CredentialRecord, StorageBackend

ALL_BYTES = bytes(range(256))


def make_record(owner: str = "alice", name: str = "OPENAI_API_KEY", **overrides) -> CredentialRecord:
    fields = dict(
        id=uuid.uuid4().hex,
        owner=owner,
        name=name,
        type="api_key",
        provider="openai",
        payload=b"\x00KV1" + uuid.uuid4().bytes + b"opaque",
        created_at=1_000.0,
        updated_at=1_000.0,
        last_used_at=None,
        metadata={},
    )
    fields.update(overrides)
    return CredentialRecord(**fields)


def make_event(owner: str = "alice", action: str = "set", **overrides) -> AuditEvent:
    fields = dict(
        id=None,
        at=2_000.0,
        owner=owner,
        actor=owner,
        action=action,
        target="OPENAI_API_KEY",
        outcome="ok",
        detail=None,
    )
    fields.update(overrides)
    return AuditEvent(**fields)


def run_concurrently(fn, args: list) -> list:
    """Call fn(arg) for every arg from its own thread, all released at once."""
    barrier = threading.Barrier(len(args))

    def call(arg):
        barrier.wait()
        return fn(arg)

    with ThreadPoolExecutor(max_workers=len(args)) as pool:
        return list(pool.map(call, args))


class StorageBackendSuite:
    """Contract tests for StorageBackend. Requires a `backend` fixture."""

    # ------------------------------------------------------------------ identity
    def test_given_a_backend_when_inspected_then_it_is_a_storage_backend_with_a_name(self, backend):
        assert isinstance(backend, StorageBackend)
        assert isinstance(backend.name, str) and backend.name and backend.name != "abstract"
        assert isinstance(backend.location, str)

    # ------------------------------------------------------------------ meta
    def test_given_an_absent_meta_key_when_read_then_it_is_none(self, backend):
        assert backend.meta_get("no-such-key") is None

    def test_given_an_absent_meta_key_when_initialised_then_the_value_is_stored_and_returned(self, backend):
        assert backend.meta_init("vault_id", "first") == "first"
        assert backend.meta_get("vault_id") == "first"

    def test_given_a_present_meta_key_when_initialised_again_then_the_first_value_wins(self, backend):
        backend.meta_init("vault_id", "first")
        assert backend.meta_init("vault_id", "second") == "first"
        assert backend.meta_get("vault_id") == "first"

    def test_given_many_threads_racing_to_initialise_one_meta_key_then_all_agree_on_one_stored_value(self, backend):
        candidates = [f"value-{i}" for i in range(8)]
        results = run_concurrently(lambda v: backend.meta_init("race", v), candidates)
        assert len(set(results)) == 1
        assert results[0] in candidates
        assert backend.meta_get("race") == results[0]

    def test_given_a_meta_key_when_set_then_it_is_overwritten(self, backend):
        backend.meta_init("kek_check", "old")
        backend.meta_set("kek_check", "new")
        assert backend.meta_get("kek_check") == "new"
        assert backend.meta_init("kek_check", "ignored") == "new"

    def test_given_an_absent_meta_key_when_set_then_it_is_created(self, backend):
        backend.meta_set("kdf", '{"alg": "scrypt"}')
        assert backend.meta_get("kdf") == '{"alg": "scrypt"}'

    def test_given_distinct_meta_keys_when_written_then_they_do_not_interfere(self, backend):
        backend.meta_set("a", "1")
        backend.meta_set("b", "2")
        assert (backend.meta_get("a"), backend.meta_get("b")) == ("1", "2")

    # ------------------------------------------------------------------ owner keys
    def test_given_an_unknown_owner_when_its_key_is_read_then_it_is_none(self, backend):
        assert backend.get_owner_key("nobody") is None
        assert backend.count_owners() == 0

    def test_given_a_new_owner_when_its_key_is_initialised_then_the_blob_and_kek_id_are_stored(self, backend):
        stored = backend.init_owner_key("alice", b"\x00KW1wrapped-alice", "kek-1")
        assert stored == b"\x00KW1wrapped-alice"
        assert backend.get_owner_key("alice") == (b"\x00KW1wrapped-alice", "kek-1")
        assert backend.count_owners() == 1

    def test_given_an_owner_with_a_key_when_initialised_again_then_the_first_key_is_kept_and_returned(self, backend):
        backend.init_owner_key("alice", b"first", "kek-1")
        assert backend.init_owner_key("alice", b"second", "kek-2") == b"first"
        assert backend.get_owner_key("alice") == (b"first", "kek-1")
        assert backend.count_owners() == 1

    def test_given_many_threads_racing_to_initialise_one_owner_key_then_all_get_the_same_stored_key(self, backend):
        blobs = [f"wrapped-{i}".encode() for i in range(8)]
        results = run_concurrently(lambda b: backend.init_owner_key("alice", b, "kek-1"), blobs)
        assert len(set(results)) == 1
        assert backend.get_owner_key("alice") == (results[0], "kek-1")
        assert backend.count_owners() == 1

    def test_given_binary_wrapped_keys_when_stored_then_every_byte_round_trips(self, backend):
        backend.init_owner_key("alice", ALL_BYTES, "kek-1")
        assert backend.get_owner_key("alice") == (ALL_BYTES, "kek-1")

    def test_given_several_owners_when_rewrapped_then_every_key_is_replaced_with_the_new_kek_id_and_meta(self, backend):
        for owner in ("alice", "bob", "carol"):
            backend.init_owner_key(owner, f"old-{owner}".encode(), "kek-old")
        backend.meta_set("kek_check", "old-check")
        seen = []

        def rewrap(owner: str, blob: bytes) -> bytes:
            seen.append((owner, blob))
            return b"new-" + blob

        count = backend.rewrap_owner_keys(rewrap, "kek-new", {"kek_check": "new-check", "kdf": "params"})

        assert count == 3
        assert sorted(seen) == [("alice", b"old-alice"), ("bob", b"old-bob"), ("carol", b"old-carol")]
        for owner in ("alice", "bob", "carol"):
            assert backend.get_owner_key(owner) == (f"new-old-{owner}".encode(), "kek-new")
        assert backend.meta_get("kek_check") == "new-check"
        assert backend.meta_get("kdf") == "params"
        assert backend.count_owners() == 3

    def test_given_no_owners_when_rewrapped_then_zero_is_returned_and_the_meta_is_still_set(self, backend):
        count = backend.rewrap_owner_keys(lambda o, b: b, "kek-new", {"kek_check": "new-check"})
        assert count == 0
        assert backend.meta_get("kek_check") == "new-check"

    def test_given_a_rewrap_that_raises_midway_when_rotating_then_nothing_changes(self, backend):
        for owner in ("alice", "bob", "carol", "dave"):
            backend.init_owner_key(owner, f"old-{owner}".encode(), "kek-old")
        backend.meta_set("kek_check", "old-check")
        calls = []

        def rewrap(owner: str, blob: bytes) -> bytes:
            calls.append(owner)
            if len(calls) == 3:
                raise RuntimeError("simulated failure while re-wrapping")
            return b"new-" + blob

        with pytest.raises(RuntimeError, match="simulated failure"):
            backend.rewrap_owner_keys(rewrap, "kek-new", {"kek_check": "new-check", "kdf": "new-kdf"})

        assert len(calls) == 3  # two keys were re-wrapped before the failure ...
        for owner in ("alice", "bob", "carol", "dave"):  # ... and all of it rolled back
            assert backend.get_owner_key(owner) == (f"old-{owner}".encode(), "kek-old")
        assert backend.meta_get("kek_check") == "old-check"
        assert backend.meta_get("kdf") is None

    def test_given_a_failed_rewrap_when_the_backend_is_used_afterwards_then_it_still_works(self, backend):
        backend.init_owner_key("alice", b"old", "kek-old")

        def boom(owner, blob):
            raise ValueError("boom")

        with pytest.raises(ValueError):
            backend.rewrap_owner_keys(boom, "kek-new", {})
        assert backend.rewrap_owner_keys(lambda o, b: b + b"!", "kek-new", {}) == 1
        assert backend.get_owner_key("alice") == (b"old!", "kek-new")
        backend.upsert_credential(make_record())
        assert backend.count_credentials() == 1

    # ------------------------------------------------------------------ credentials
    def test_given_a_new_record_when_upserted_then_it_is_created_and_reads_back_identically(self, backend):
        rec = make_record(metadata={"base_url": "https://api.example.com", "scopes": ["a", "b"], "n": 3})
        expected = dataclasses.replace(rec, metadata=dict(rec.metadata))
        stored, created = backend.upsert_credential(rec)
        assert created is True
        assert (stored.id, stored.created_at) == (expected.id, expected.created_at)
        assert backend.get_credential("alice", "OPENAI_API_KEY") == expected

    def test_given_binary_payloads_when_stored_then_every_byte_round_trips(self, backend):
        backend.upsert_credential(make_record(payload=ALL_BYTES * 4))
        assert backend.get_credential("alice", "OPENAI_API_KEY").payload == ALL_BYTES * 4

    def test_given_an_existing_record_when_upserted_again_then_id_created_at_and_last_used_are_kept(self, backend):
        first = make_record(created_at=100.0, updated_at=100.0)
        backend.upsert_credential(first)
        backend.touch_credential("alice", "OPENAI_API_KEY", 150.0)
        second = make_record(
            type="custom",
            provider="groq",
            payload=b"\x00KV1second",
            created_at=200.0,
            updated_at=200.0,
            metadata={"note": "replaced"},
        )

        stored, created = backend.upsert_credential(second)

        assert created is False
        assert stored.id == first.id and stored.created_at == 100.0
        got = backend.get_credential("alice", "OPENAI_API_KEY")
        assert got.id == first.id
        assert got.created_at == 100.0
        assert got.last_used_at == 150.0
        assert got.updated_at == 200.0
        assert (got.type, got.provider, got.payload, got.metadata) == ("custom", "groq", b"\x00KV1second", {"note": "replaced"})
        assert backend.count_credentials() == 1

    def test_given_the_same_name_for_two_owners_when_stored_then_they_are_independent_rows(self, backend):
        backend.upsert_credential(make_record("alice", payload=b"A"))
        _, created = backend.upsert_credential(make_record("bob", payload=b"B"))
        assert created is True
        assert backend.get_credential("alice", "OPENAI_API_KEY").payload == b"A"
        assert backend.get_credential("bob", "OPENAI_API_KEY").payload == b"B"
        assert backend.get_credential("alice", "OPENAI_API_KEY").id != backend.get_credential("bob", "OPENAI_API_KEY").id

    def test_given_no_record_when_read_then_it_is_none(self, backend):
        assert backend.get_credential("alice", "MISSING") is None
        backend.upsert_credential(make_record("bob"))
        assert backend.get_credential("alice", "OPENAI_API_KEY") is None

    def test_given_mixed_case_and_underscore_names_when_listed_in_pages_then_byte_order_without_tokens_or_others(
            self, backend):
        # Byte order ('Z' < '_' < 'a'), which a locale collation (PostgreSQL's default) would not give.
        names = ["b_key", "A_KEY", "_X", "ZZ", "a", "B", "aa", "A"]
        for name in names:
            backend.upsert_credential(make_record("alice", name))
        backend.upsert_credential(make_record("alice", "__token_x", type="vault_token"))
        backend.upsert_credential(make_record("bob", "AB"))
        pages, after = [], None
        while True:
            page = backend.list_credentials_page("alice", after, 3)
            pages.append([r.name for r in page])
            if len(page) < 3:
                break
            after = page[-1].name
        assert [n for p in pages for n in p] == sorted(names)
        assert all(len(p) <= 3 for p in pages)

    def test_given_records_of_several_owners_when_listed_then_only_that_owners_records_are_returned(self, backend):
        for name in ("ZETA", "ALPHA", "MIDDLE"):
            backend.upsert_credential(make_record("alice", name))
        backend.upsert_credential(make_record("bob", "BOBS_KEY"))
        assert {r.name for r in backend.list_credentials("alice")} == {"ZETA", "ALPHA", "MIDDLE"}
        assert all(r.owner == "alice" for r in backend.list_credentials("alice"))
        assert [r.name for r in backend.list_credentials("bob")] == ["BOBS_KEY"]
        assert backend.list_credentials("nobody") == []

    def test_given_a_record_when_deleted_then_true_is_returned_and_it_is_gone_for_that_owner_only(self, backend):
        backend.upsert_credential(make_record("alice"))
        backend.upsert_credential(make_record("bob"))
        assert backend.delete_credential("alice", "OPENAI_API_KEY") is True
        assert backend.get_credential("alice", "OPENAI_API_KEY") is None
        assert backend.get_credential("bob", "OPENAI_API_KEY") is not None
        assert backend.delete_credential("alice", "OPENAI_API_KEY") is False
        assert backend.delete_credential("alice", "NEVER_EXISTED") is False

    def test_given_a_deleted_record_when_stored_again_then_it_is_created_afresh(self, backend):
        first = make_record(created_at=1.0)
        backend.upsert_credential(first)
        backend.delete_credential("alice", "OPENAI_API_KEY")
        second = make_record(created_at=2.0)
        stored, created = backend.upsert_credential(second)
        assert created is True
        assert stored.id == second.id != first.id
        assert backend.get_credential("alice", "OPENAI_API_KEY").created_at == 2.0

    def test_given_a_record_when_touched_then_only_last_used_at_changes(self, backend):
        rec = make_record(updated_at=10.0)
        backend.upsert_credential(rec)
        backend.touch_credential("alice", "OPENAI_API_KEY", 42.5)
        got = backend.get_credential("alice", "OPENAI_API_KEY")
        assert got.last_used_at == 42.5
        assert (got.updated_at, got.payload, got.id) == (10.0, rec.payload, rec.id)

    def test_given_a_missing_record_when_touched_then_nothing_is_created(self, backend):
        backend.touch_credential("alice", "MISSING", 42.5)
        assert backend.get_credential("alice", "MISSING") is None
        assert backend.count_credentials() == 0

    def test_given_records_of_every_owner_when_iterated_then_all_rows_are_returned(self, backend):
        wanted = {("alice", "A"), ("alice", "B"), ("bob", "A"), ("carol", "C")}
        for owner, name in wanted:
            backend.upsert_credential(make_record(owner, name))
        assert {(r.owner, r.name) for r in backend.iter_all_credentials()} == wanted

    def test_given_a_record_when_its_payload_is_replaced_then_only_the_payload_changes(self, backend):
        rec = make_record(payload=b"legacy plaintext", updated_at=5.0, metadata={"k": "v"})
        backend.upsert_credential(rec)
        assert backend.replace_payload(rec.id, b"\x00KV1sealed", b"legacy plaintext") is True
        got = backend.get_credential("alice", "OPENAI_API_KEY")
        assert got.payload == b"\x00KV1sealed"
        assert (got.id, got.updated_at, got.metadata, got.type, got.provider) == (rec.id, 5.0, {"k": "v"}, "api_key", "openai")

    def test_given_a_payload_changed_meanwhile_when_replaced_conditionally_then_the_newer_payload_is_kept(self, backend):
        rec = make_record(payload=b"legacy plaintext")
        backend.upsert_credential(rec)
        backend.upsert_credential(make_record(payload=b"\x00KV1newer"))
        assert backend.replace_payload(rec.id, b"\x00KV1sealed", b"legacy plaintext") is False
        assert backend.get_credential("alice", "OPENAI_API_KEY").payload == b"\x00KV1newer"

    def test_given_meta_names_another_kek_when_an_owner_key_is_created_then_it_is_refused(self, backend):
        from jupyter_keyvault.store.errors import StaleMasterKey

        backend.meta_init("kek_id", "current")
        with pytest.raises(StaleMasterKey):
            backend.init_owner_key("carol", b"wrapped-by-stale", "stale")
        assert backend.get_owner_key("carol") is None
        assert backend.init_owner_key("carol", b"wrapped-by-current", "current") == b"wrapped-by-current"

    def test_given_records_when_counted_then_totals_and_per_owner_counts_are_right(self, backend):
        assert backend.count_credentials() == 0
        for name in ("A", "B", "C"):
            backend.upsert_credential(make_record("alice", name))
        backend.upsert_credential(make_record("bob", "A"))
        backend.upsert_credential(make_record("alice", "A"))  # a replace, not a new row
        assert backend.count_credentials() == 4
        assert backend.count_credentials("alice") == 3
        assert backend.count_credentials("bob") == 1
        assert backend.count_credentials("nobody") == 0
        backend.delete_credential("alice", "B")
        assert backend.count_credentials() == 3
        assert backend.count_credentials("alice") == 2

    def test_given_many_threads_writing_distinct_records_then_every_record_is_stored(self, backend):
        names = [f"KEY_{i}" for i in range(16)]
        results = run_concurrently(lambda n: backend.upsert_credential(make_record("alice", n, payload=n.encode())), names)
        assert all(created for _, created in results)
        assert backend.count_credentials("alice") == 16
        for name in names:
            assert backend.get_credential("alice", name).payload == name.encode()

    def test_given_many_threads_upserting_one_name_then_exactly_one_row_exists_and_one_was_created(self, backend):
        results = run_concurrently(lambda i: backend.upsert_credential(make_record(payload=f"v{i}".encode()))[1], range(8))
        assert results.count(True) == 1
        assert backend.count_credentials() == 1

    # ------------------------------------------------------------------ audit
    def test_given_an_appended_event_when_listed_then_it_reads_back_with_an_integer_id(self, backend):
        event = make_event(target=None, detail="created", outcome="ok", actor="admin")
        backend.append_audit(event)
        (got,) = backend.list_audit("alice")
        assert isinstance(got.id, int)
        assert (got.at, got.owner, got.actor, got.action, got.target, got.outcome, got.detail) == (
            2_000.0, "alice", "admin", "set", None, "ok", "created",
        )

    def test_given_several_events_when_listed_then_they_come_newest_first_with_increasing_ids(self, backend):
        for i in range(5):
            backend.append_audit(make_event(action=f"action-{i}", at=float(i)))
        events = backend.list_audit("alice")
        assert [e.action for e in events] == [f"action-{i}" for i in reversed(range(5))]
        ids = [e.id for e in events]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5

    def test_given_events_of_several_owners_when_listed_by_owner_then_only_theirs_are_returned(self, backend):
        backend.append_audit(make_event("alice"))
        backend.append_audit(make_event("bob"))
        backend.append_audit(make_event("alice"))
        assert [e.owner for e in backend.list_audit("alice")] == ["alice", "alice"]
        assert [e.owner for e in backend.list_audit("bob")] == ["bob"]
        assert backend.list_audit("nobody") == []
        assert sorted(e.owner for e in backend.list_audit(None)) == ["alice", "alice", "bob"]

    def test_given_many_events_when_paged_by_before_id_then_every_event_is_seen_exactly_once_in_order(self, backend):
        for i in range(25):
            backend.append_audit(make_event("alice", action=f"a{i}"))
            backend.append_audit(make_event("bob", action=f"b{i}"))
        pages, before = [], None
        while True:
            page = backend.list_audit("alice", limit=10, before_id=before)
            if not page:
                break
            assert len(page) <= 10
            pages.append(page)
            before = page[-1].id
        assert [len(p) for p in pages] == [10, 10, 5]
        seen = [e.action for p in pages for e in p]
        assert seen == [f"a{i}" for i in reversed(range(25))]

    def test_given_a_limit_when_listing_audit_then_at_most_that_many_newest_events_are_returned(self, backend):
        for i in range(7):
            backend.append_audit(make_event(action=f"a{i}"))
        assert [e.action for e in backend.list_audit(None, limit=3)] == ["a6", "a5", "a4"]
        newest = backend.list_audit(None, limit=1)[0]
        assert [e.action for e in backend.list_audit(None, limit=100, before_id=newest.id)][:2] == ["a5", "a4"]

    def test_given_a_before_id_older_than_every_event_when_listed_then_nothing_is_returned(self, backend):
        backend.append_audit(make_event())
        oldest = backend.list_audit(None)[-1]
        assert backend.list_audit(None, before_id=oldest.id) == []

    def test_given_an_upsert_with_an_audit_event_then_the_event_is_appended_saying_created_or_replaced(self, backend):
        backend.upsert_credential(make_record(), audit=make_event(detail=None))
        backend.upsert_credential(make_record(payload=b"second"), audit=make_event(detail="ignored"))
        backend.upsert_credential(make_record(name="NO_AUDIT"))
        events = backend.list_audit("alice")
        assert [(e.action, e.target, e.outcome, e.detail) for e in events] == [
            ("set", "OPENAI_API_KEY", "ok", "replaced"),
            ("set", "OPENAI_API_KEY", "ok", "created"),
        ]

    def test_given_an_audit_event_that_cannot_be_stored_when_upserting_then_the_credential_is_not_stored(self, backend):
        broken = make_event(actor=None)  # violates the audit log's NOT NULL actor
        with pytest.raises(Exception):  # noqa: B017 - each backend raises its own driver error
            backend.upsert_credential(make_record(), audit=broken)
        assert backend.get_credential("alice", "OPENAI_API_KEY") is None
        assert backend.count_credentials() == 0
        assert backend.list_audit(None) == []

    def test_given_a_delete_with_an_audit_event_then_it_is_appended_only_if_a_row_was_deleted(self, backend):
        backend.upsert_credential(make_record())
        assert backend.delete_credential("alice", "OPENAI_API_KEY", audit=make_event(action="delete")) is True
        assert backend.delete_credential("alice", "OPENAI_API_KEY", audit=make_event(action="delete")) is False
        assert [(e.action, e.target) for e in backend.list_audit("alice")] == [("delete", "OPENAI_API_KEY")]

    def test_given_an_audit_event_that_cannot_be_stored_when_deleting_then_the_credential_is_kept(self, backend):
        backend.upsert_credential(make_record(payload=b"kept"))
        with pytest.raises(Exception):  # noqa: B017 - each backend raises its own driver error
            backend.delete_credential("alice", "OPENAI_API_KEY", audit=make_event(action="delete", actor=None))
        assert backend.get_credential("alice", "OPENAI_API_KEY").payload == b"kept"
        assert backend.list_audit(None) == []

    def test_given_the_backend_interface_then_the_audit_log_has_no_update_or_delete_path(self, backend):
        audit_methods = {m for m in dir(backend) if "audit" in m.lower() and not m.startswith("_")}
        assert audit_methods == {"append_audit", "list_audit"}
        abstract = {m for m in dir(StorageBackend) if "audit" in m.lower() and not m.startswith("_")}
        assert abstract == {"append_audit", "list_audit"}

    def test_given_audited_credentials_when_deleted_then_their_audit_events_remain(self, backend):
        backend.upsert_credential(make_record())
        backend.append_audit(make_event(action="set"))
        backend.delete_credential("alice", "OPENAI_API_KEY")
        backend.append_audit(make_event(action="delete"))
        assert [e.action for e in backend.list_audit("alice")] == ["delete", "set"]

    def test_given_listed_audit_events_when_mutated_then_the_log_is_unchanged(self, backend):
        backend.append_audit(make_event(outcome="ok"))
        (event,) = backend.list_audit("alice")
        with pytest.raises(Exception):  # noqa: B017 - each backend raises its own driver error
            event.outcome = "tampered"  # type: ignore[misc]  # AuditEvent is frozen
        assert backend.list_audit("alice")[0].outcome == "ok"

    def test_given_many_threads_appending_audit_events_then_none_is_lost_and_ids_are_unique(self, backend):
        run_concurrently(lambda i: backend.append_audit(make_event(action=f"a{i}")), range(12))
        events = backend.list_audit(None, limit=100)
        assert sorted(e.action for e in events) == sorted(f"a{i}" for i in range(12))
        assert len({e.id for e in events}) == 12
