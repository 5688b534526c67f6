"""Credential lifetimes in the store: session-only values never reach the backend, expired values
are refused and purged (the audit row stays), key age counts from the current value."""

from __future__ import annotations

import pytest

from jupyter_keyvault.store import SQLiteBackend, Vault
from jupyter_keyvault.store.backup import export_backup
from jupyter_keyvault.store.errors import CredentialExpired, InvalidInput, NotFound
from jupyter_keyvault.store.model import parse_expiry


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def lvault(vault_path, master_key, clock):
    v = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_MASTER_KEY": master_key}, clock=clock)
    yield v
    v.close()


def files_of(vault_path) -> bytes:
    return b"".join(p.read_bytes() for p in vault_path.parent.iterdir() if p.is_file())


def test_given_a_session_value_when_stored_then_it_is_usable_listed_as_session_and_absent_from_every_file(
        lvault, vault_path, canary, tmp_path):
    lvault.set("alice", "KEPT_KEY", "sk-proj-" + "K" * 40)  # a stored one, so the files exist and change
    info, created = lvault.set("alice", "OPENAI_API_KEY", canary, session=True)

    assert created and info.session and info.to_json()["lifetime"] == "session"
    assert lvault.resolve("alice", "OPENAI_API_KEY").value == canary
    assert {i.name: i.session for i in lvault.list("alice")} == {"KEPT_KEY": False, "OPENAI_API_KEY": True}
    assert lvault.count("alice") == 2
    assert [i.name for i, _ in lvault.values_for_export("alice")] == ["KEPT_KEY"]  # what an export holds
    export = export_backup(lvault, "alice", "backup-passphrase")
    lvault.backup_database(tmp_path / "copy.db")
    lvault.backend.close()
    on_disk = files_of(vault_path) + export + (tmp_path / "copy.db").read_bytes()
    assert canary.encode() not in on_disk
    assert b"OPENAI_API_KEY" in on_disk  # the audit row of the write is kept (a name, never the value)


def test_given_a_session_value_when_the_vault_is_reopened_then_it_is_gone(vault_path, master_key, canary):
    first = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_MASTER_KEY": master_key})
    first.set("alice", "OPENAI_API_KEY", canary, session=True)
    first.close()
    second = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_MASTER_KEY": master_key})
    with pytest.raises(NotFound):
        second.info("alice", "OPENAI_API_KEY")
    second.close()


def test_given_a_stored_value_when_a_session_value_of_that_name_is_set_then_the_stored_one_is_deleted_and_back(
        lvault, canary):
    lvault.set("alice", "OPENAI_API_KEY", "sk-proj-" + "S" * 40)
    _, created = lvault.set("alice", "OPENAI_API_KEY", canary, session=True)
    assert created is False
    assert lvault.backend.get_credential("alice", "OPENAI_API_KEY") is None  # one value per name
    assert [i.session for i in lvault.list("alice")] == [True]

    lvault.set("alice", "OPENAI_API_KEY", "sk-proj-" + "T" * 40)  # a stored write replaces the session one
    assert [i.session for i in lvault.list("alice")] == [False]
    assert lvault.get_value("alice", "OPENAI_API_KEY") == "sk-proj-" + "T" * 40


def test_given_session_values_when_the_session_ends_then_only_that_owners_go_and_it_is_audited(lvault):
    lvault.set("alice", "A_KEY", "value-a", session=True)
    lvault.set("bob", "B_KEY", "value-b", session=True)
    assert lvault.end_session("alice", reason="server stopped") == ["A_KEY"]
    assert [i.name for i in lvault.list("alice")] == [] and [i.name for i in lvault.list("bob")] == ["B_KEY"]
    assert any(e.action == "delete" and e.target == "A_KEY" and "server stopped" in (e.detail or "")
               for e in lvault.audit_events("alice"))


@pytest.mark.parametrize("session", [False, True], ids=["stored", "session"])
def test_given_an_expiry_when_it_passes_then_every_use_is_refused_listed_expired_and_purged_with_its_audit_row(
        lvault, clock, session):
    lvault.set("alice", "OPENAI_API_KEY", "sk-proj-" + "E" * 40, expires_at=clock.now + 3600, session=session)
    assert lvault.resolve("alice", "OPENAI_API_KEY").value.startswith("sk-proj-E")

    clock.now += 3601
    for purpose in ("use", "reveal", "test", "export"):
        with pytest.raises(CredentialExpired, match="expired"):
            lvault.get_value("alice", "OPENAI_API_KEY", purpose=purpose)
    with pytest.raises(CredentialExpired):
        lvault.resolve("alice", "OPENAI_API_KEY")
    assert lvault.get_value("alice", "OPENAI_API_KEY", purpose="scrub")  # still scrubbed until destroyed
    item = lvault.info("alice", "OPENAI_API_KEY").to_json()
    assert item["expired"] is False  # to_json uses the real time; the vault's clock is ahead
    assert lvault.info("alice", "OPENAI_API_KEY").expired(clock.now)

    assert lvault.purge_expired("alice") == [("alice", "OPENAI_API_KEY")]
    with pytest.raises(NotFound):
        lvault.info("alice", "OPENAI_API_KEY")
    assert lvault.backend.get_credential("alice", "OPENAI_API_KEY") is None
    events = lvault.audit_events("alice")
    assert any(e.action == "expire" and e.target == "OPENAI_API_KEY" and e.actor == "keyvault" for e in events)
    assert any(e.outcome == "expired" for e in events)


def test_given_an_expired_stored_value_when_exported_then_it_is_left_out(lvault, clock, tmp_path):
    lvault.set("alice", "OLD_KEY", "old-value", expires_at=clock.now + 10)
    lvault.set("alice", "NEW_KEY", "new-value")
    clock.now += 11
    assert [info.name for info, _ in lvault.values_for_export("alice")] == ["NEW_KEY"]


def test_given_a_replaced_value_then_its_age_counts_from_the_new_value_and_the_record_keeps_its_creation(
        lvault, clock):
    first, _ = lvault.set("alice", "OPENAI_API_KEY", "value-one")
    clock.now += 100 * 86400
    assert lvault.info("alice", "OPENAI_API_KEY").stale(clock.now, 90 * 86400)
    second, _ = lvault.set("alice", "OPENAI_API_KEY", "value-two")
    assert second.created_at == first.created_at and second.value_created_at == clock.now
    assert not second.stale(clock.now, 90 * 86400) and not second.stale(clock.now, 0)


def test_given_client_metadata_then_it_can_neither_set_nor_drop_the_lifetime_facts(lvault, clock):
    lvault.set("alice", "OPENAI_API_KEY", "value", expires_at=clock.now + 60, session=True,
               metadata={"expires_at": 1.0, "session": False, "note": "x"})
    info = lvault.update_metadata("alice", "OPENAI_API_KEY", {"note": "y", "expires_at": None, "session": False})
    assert info.metadata == {"note": "y"} and info.session and info.expires_at == clock.now + 60
    info = lvault.set_expiry("alice", "OPENAI_API_KEY", None)
    assert info.expires_at is None and info.session
    with pytest.raises(InvalidInput):
        lvault.set_expiry("alice", "OPENAI_API_KEY", clock.now - 1)


@pytest.mark.parametrize("text,seconds", [("90m", 5400), ("8h", 8 * 3600), ("7d", 7 * 86400), ("2w", 14 * 86400),
                                          ("30s", 30)])
def test_given_a_duration_then_the_expiry_is_that_far_from_now(text, seconds):
    assert parse_expiry(text, 1_800_000_000.0) == 1_800_000_000.0 + seconds


def test_given_dates_and_times_then_they_are_utc_unless_an_offset_is_named():
    now = 1_700_000_000.0  # 2023-11-14
    assert parse_expiry("2026-12-24", now) == 1_798_070_400.0
    assert parse_expiry("2026-12-24T18:00:00Z", now) == 1_798_070_400.0 + 18 * 3600
    assert parse_expiry("2026-12-24T18:00:00+02:00", now) == 1_798_070_400.0 + 16 * 3600


@pytest.mark.parametrize("text", ["", "soon", "8x", "2020-01-01", "-5h", "2099-01-01", "8 hours", "1e3"])
def test_given_a_bad_or_past_expiry_then_a_clear_error(text):
    with pytest.raises(InvalidInput, match="expiry"):
        parse_expiry(text, 1_800_000_000.0)


def test_given_an_export_then_an_expiry_travels_with_its_value_and_one_expired_since_is_skipped_on_import(
        lvault, clock, vault_path, master_key, tmp_path):
    from jupyter_keyvault.store.backup import import_backup

    lvault.set("alice", "SOON_KEY", "soon-value-123", expires_at=clock.now + 3600)
    lvault.set("alice", "LATER_KEY", "later-value-123", expires_at=clock.now + 10 * 86400)
    lvault.set("alice", "PLAIN_KEY", "plain-value-123")
    data = export_backup(lvault, "alice", "backup-passphrase")
    other = Vault(SQLiteBackend(tmp_path / "other" / "vault.db"), env={"KEYVAULT_MASTER_KEY": master_key})
    try:
        # Imported a day later (real clock: the export's expiries are relative to the fake one).
        import time

        a_day_later = _shift_expiries(data, clock.now - time.time() + 86400)
        imported, skipped = import_backup(other, "alice", a_day_later, "backup-passphrase")
        assert sorted(imported) == ["LATER_KEY", "PLAIN_KEY"] and skipped == ["SOON_KEY"]
        assert other.info("alice", "LATER_KEY").expires_at is not None
        assert other.info("alice", "PLAIN_KEY").expires_at is None
    finally:
        other.close()


def _shift_expiries(data: bytes, seconds: float) -> bytes:
    """Re-seal a backup with its expiries moved (what a day passing does to them)."""
    import base64
    import json

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from jupyter_keyvault.store.backup import _aad, _derive, read_backup

    items = read_backup(data, "backup-passphrase")
    for item in items:
        if item["expires_at"] is not None:
            item["expires_at"] -= seconds
    doc = json.loads(data)
    header = {k: doc[k] for k in ("format", "version", "created_at", "count", "kdf")}
    nonce = base64.b64decode(doc["nonce"])
    sealed = AESGCM(_derive("backup-passphrase", header["kdf"])).encrypt(nonce, json.dumps(items).encode(),
                                                                          _aad(header))
    return json.dumps({**doc, "ciphertext": base64.b64encode(sealed).decode()}).encode()


def test_given_session_values_among_stored_ones_when_listed_in_pages_then_every_name_comes_once_in_order(lvault):
    for i in range(7):
        lvault.set("alice", f"KEY_{i}", f"stored-value-{i:02d}-xxxxxxxx")
    for name in ("KEY_0", "KEY_35", "KEY_9", "A_FIRST"):  # one replaces a stored value, the others are new
        lvault.set("alice", name, "session-value-" + name + "-xxxxxxxx", session=True)
    lvault.set("bob", "KEY_4", "bobs-session-value-xxxxxxxx", session=True)  # another owner's: never listed
    names, after = [], None
    while True:
        page, more = lvault.list_page("alice", limit=3, after=after, include_env=False)
        names += [i.name for i in page]
        if not more:
            break
        after = page[-1].name
    assert names == [i.name for i in lvault.list("alice", include_env=False)]
    assert names == sorted({"A_FIRST", "KEY_35", "KEY_9", *(f"KEY_{i}" for i in range(7))})
    sessions = {i.name for i in lvault.list("alice") if i.to_json().get("lifetime") == "session"}
    assert sessions == {"KEY_0", "KEY_35", "KEY_9", "A_FIRST"}
