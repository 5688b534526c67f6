"""The vault: envelope encryption, tamper resistance, validation, master-key sources,
rotation (including crashes), env precedence and audit."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jupyter_keyvault.store import (
    DecryptionError,
    InvalidInput,
    MasterKeyError,
    NoCredential,
    NotFound,
    SQLiteBackend,
    Vault,
    VaultDamaged,
    WrongMasterKey,
    crypto,
)
from jupyter_keyvault.store import masterkey as mk
from jupyter_keyvault.testing.pytest_plugin import new_master_key

REPO = Path(__file__).resolve().parents[1]
OPAQUE = "credential {} could not be decrypted (corrupted or tampered)"


# ---------------------------------------------------------------------- helpers
def env_vault(path: Path, key: str, **kw) -> Vault:
    return Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": key, **kw.pop("env", {})}, **kw)


def file_vault(path: Path, **kw) -> Vault:
    return Vault(SQLiteBackend(path), env=kw.pop("env", {}), use_keyring=False, **kw)


def open_fails(path: Path, exc_type, **kw) -> pytest.ExceptionInfo:
    """Open a vault expecting `exc_type`; always close the backend it used."""
    backend = SQLiteBackend(path)
    try:
        with pytest.raises(exc_type) as info:
            Vault(backend, **kw)
    finally:
        backend.close()
    return info


@contextlib.contextmanager
def raw_db(path: Path):
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def payload_of(path: Path, owner: str, name: str) -> bytes:
    with raw_db(path) as db:
        return bytes(db.execute("SELECT payload FROM credentials WHERE owner = ? AND name = ?", (owner, name)).fetchone()[0])


def set_payload(path: Path, owner: str, name: str, payload) -> None:
    with raw_db(path) as db:
        cur = db.execute("UPDATE credentials SET payload = ? WHERE owner = ? AND name = ?", (payload, owner, name))
        assert cur.rowcount == 1


def files_digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def meta(path: Path, key: str) -> str | None:
    with raw_db(path) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None


def owner_keys(path: Path) -> list[tuple]:
    with raw_db(path) as db:
        return db.execute("SELECT owner, wrapped, kek_id FROM owner_keys ORDER BY owner").fetchall()


def audit_rows(path: Path) -> list[tuple]:
    with raw_db(path) as db:
        return db.execute("SELECT * FROM audit ORDER BY id").fetchall()


def fill(vault: Vault) -> dict[tuple[str, str], str]:
    values = {
        ("alice", "OPENAI_API_KEY"): "sk-alice-openai-" + os.urandom(8).hex(),
        ("alice", "ANTHROPIC_API_KEY"): "sk-ant-alice-" + os.urandom(8).hex(),
        ("bob", "OPENAI_API_KEY"): "sk-bob-openai-" + os.urandom(8).hex(),
    }
    for (owner, name), value in values.items():
        vault.set(owner, name, value)
    return values


def assert_reads(vault: Vault, values: dict[tuple[str, str], str]) -> None:
    for (owner, name), value in values.items():
        assert vault.get_value(owner, name) == value


# ====================================================================== round trips
ROUND_TRIPS = {
    "api_key": ("OPENAI_API_KEY", "openai", "sk-proj-" + "a1B2" * 12),
    "oauth2": (
        "GITHUB_OAUTH",
        "github",
        json.dumps({"access_token": "gho_abc", "refresh_token": "ghr_def", "expires_at": 1_900_000_000, "scope": "repo"}),
    ),
    "custom": ("MY_SERVICE_CONFIG", None, "user=ünïcødé ✓\npassword=p@ss w0rd\n\ttabbed line"),
}


@pytest.mark.parametrize("kind", sorted(ROUND_TRIPS))
def test_given_a_credential_of_each_type_when_stored_then_it_reads_back_exactly_with_its_metadata(vault, kind):
    name, provider, value = ROUND_TRIPS[kind]
    info, created = vault.set("alice", name, value, provider=provider, type=kind, metadata={"label": kind})

    assert created is True
    assert (info.name, info.type, info.provider, info.metadata) == (name, kind, provider, {"label": kind})
    assert vault.get_value("alice", name) == value
    stored = vault.info("alice", name)
    assert (stored.type, stored.provider) == (kind, provider)
    assert value not in repr(info) and value not in json.dumps(info.to_json())


def test_given_a_stored_credential_when_set_again_then_it_is_replaced_not_duplicated(vault):
    first, created1 = vault.set("alice", "OPENAI_API_KEY", "sk-first-value-000000")
    second, created2 = vault.set("alice", "OPENAI_API_KEY", "sk-second-value-11111")
    assert (created1, created2) == (True, False)
    assert second.id == first.id and second.created_at == first.created_at
    assert vault.get_value("alice", "OPENAI_API_KEY") == "sk-second-value-11111"
    assert vault.count("alice") == 1


def test_given_several_named_credentials_per_provider_and_owner_then_each_reads_its_own_value(vault):
    values = {}
    for owner in ("alice", "bob"):
        for name in ("OPENAI_API_KEY", "OPENAI_WORK", "OPENAI_PERSONAL", "ANTHROPIC_API_KEY"):
            provider = "anthropic" if name.startswith("ANTHROPIC") else "openai"
            values[(owner, name)] = f"sk-{owner}-{name.lower()}-{os.urandom(6).hex()}"
            vault.set(owner, name, values[(owner, name)], provider=provider)

    assert_reads(vault, values)
    assert len(set(values.values())) == 8
    for owner in ("alice", "bob"):
        listed = vault.list(owner)
        assert [i.name for i in listed] == sorted(["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_PERSONAL", "OPENAI_WORK"])
        assert {i.owner for i in listed} == {owner}
        assert [i.name for i in listed if i.provider == "openai"] == ["OPENAI_API_KEY", "OPENAI_PERSONAL", "OPENAI_WORK"]
    assert vault.count() == 8


def test_given_one_owners_credential_when_another_owner_asks_for_it_then_it_is_not_found(vault):
    vault.set("alice", "ALICE_ONLY", "sk-alice-private-12345")
    with pytest.raises(NotFound):
        vault.get_value("bob", "ALICE_ONLY")
    with pytest.raises(NotFound):
        vault.delete("bob", "ALICE_ONLY")
    assert vault.list("bob") == []
    assert vault.get_value("alice", "ALICE_ONLY") == "sk-alice-private-12345"


def test_given_a_credential_when_deleted_then_it_is_gone_and_deleting_again_is_not_found(vault):
    vault.set("alice", "OPENAI_API_KEY", "sk-to-be-deleted-0000")
    vault.delete("alice", "OPENAI_API_KEY")
    with pytest.raises(NotFound, match="no credential named OPENAI_API_KEY"):
        vault.get_value("alice", "OPENAI_API_KEY")
    with pytest.raises(NotFound):
        vault.delete("alice", "OPENAI_API_KEY")
    assert vault.count() == 0


def test_given_stored_values_when_the_database_is_read_raw_then_no_value_is_in_plaintext(vault, vault_path):
    values = fill(vault)
    with raw_db(vault_path) as db:
        payloads = [bytes(r[0]) for r in db.execute("SELECT payload FROM credentials")]
    assert len(payloads) == 3
    for payload in payloads:
        assert payload.startswith(crypto.VALUE_MAGIC)
        for value in values.values():
            assert value.encode() not in payload


# ====================================================================== tamper
def test_given_every_single_byte_of_a_ciphertext_flipped_when_read_then_each_read_fails_opaquely(vault, vault_path):
    secret = "sk-tamper-target-" + os.urandom(8).hex()
    vault.set("alice", "TARGET", secret)
    others = {("alice", "OTHER"): "sk-other-alice-value", ("bob", "TARGET"): "sk-target-of-bob-value"}
    for (owner, name), value in others.items():
        vault.set(owner, name, value)
    original = payload_of(vault_path, "alice", "TARGET")
    assert len(original) == 4 + 12 + len(secret) + 16

    messages = set()
    with raw_db(vault_path) as db:
        for i in range(len(original)):
            tampered = bytearray(original)
            tampered[i] ^= 0xFF
            db.execute("UPDATE credentials SET payload = ? WHERE owner = 'alice' AND name = 'TARGET'", (bytes(tampered),))
            with pytest.raises(DecryptionError) as info:
                vault.get_value("alice", "TARGET")
            messages.add(str(info.value))
            assert vault.get_value("alice", "OTHER") == "sk-other-alice-value"
        db.execute("UPDATE credentials SET payload = ? WHERE owner = 'alice' AND name = 'TARGET'", (original,))

    assert messages == {OPAQUE.format("TARGET")}
    assert secret not in "".join(messages)
    assert_reads(vault, others)
    assert vault.get_value("alice", "TARGET") == secret
    errors = [e for e in vault.audit_events("alice", limit=1000) if e.outcome == "error"]
    assert len(errors) == len(original)


@pytest.mark.parametrize("payload_kind", ["truncated", "empty", "tag_only", "text"])
def test_given_a_malformed_payload_when_read_then_the_same_opaque_error_is_raised(vault, vault_path, payload_kind):
    vault.set("alice", "TARGET", "sk-malformed-target-000")
    original = payload_of(vault_path, "alice", "TARGET")
    replacement = {
        "truncated": original[:20],
        "empty": b"",
        "tag_only": crypto.VALUE_MAGIC + b"\x00" * 28,
        "text": "\x00KV1 not really a blob at all, just text",
    }[payload_kind]
    set_payload(vault_path, "alice", "TARGET", replacement)
    with pytest.raises(DecryptionError) as info:
        vault.get_value("alice", "TARGET")
    assert str(info.value) == OPAQUE.format("TARGET")


@pytest.mark.parametrize("index", [0, 1, 2, 3, 10, -1])
def test_given_a_tampered_ciphertext_when_the_vault_is_reopened_then_it_is_not_resealed_as_legacy_plaintext(
    vault, vault_path, master_key, index
):
    vault.set("alice", "TARGET", "sk-reopen-target-0000")
    vault.close()
    tampered = bytearray(payload_of(vault_path, "alice", "TARGET"))
    tampered[index] ^= 0xFF
    set_payload(vault_path, "alice", "TARGET", bytes(tampered))

    reopened = env_vault(vault_path, master_key)
    try:
        assert reopened.legacy_migrated == 0
        assert payload_of(vault_path, "alice", "TARGET") == bytes(tampered)  # the evidence is left alone
        with pytest.raises(DecryptionError, match="could not be decrypted"):
            reopened.get_value("alice", "TARGET")
    finally:
        reopened.close()


def test_given_a_ciphertext_copied_to_another_name_of_the_same_owner_when_read_then_it_is_rejected(vault, vault_path):
    vault.set("alice", "SOURCE", "sk-source-value-aaaa")
    vault.set("alice", "VICTIM", "sk-victim-value-bbbb")
    set_payload(vault_path, "alice", "VICTIM", payload_of(vault_path, "alice", "SOURCE"))
    with pytest.raises(DecryptionError) as info:
        vault.get_value("alice", "VICTIM")
    assert str(info.value) == OPAQUE.format("VICTIM")
    assert vault.get_value("alice", "SOURCE") == "sk-source-value-aaaa"


def test_given_a_ciphertext_copied_to_another_owners_row_when_opened_then_it_is_rejected(vault, vault_path):
    vault.set("alice", "OPENAI_API_KEY", "sk-alice-value-cccc")
    vault.set("bob", "OPENAI_API_KEY", "sk-bob-value-dddd")
    set_payload(vault_path, "bob", "OPENAI_API_KEY", payload_of(vault_path, "alice", "OPENAI_API_KEY"))
    with pytest.raises(DecryptionError):
        vault.get_value("bob", "OPENAI_API_KEY")
    assert vault.get_value("alice", "OPENAI_API_KEY") == "sk-alice-value-cccc"


def test_given_a_row_moved_to_another_owner_when_opened_then_it_is_rejected(vault, vault_path):
    vault.set("alice", "MOVED", "sk-alice-moved-eeee")
    vault.set("bob", "BOBS", "sk-bob-own-ffff")  # bob has a data key of his own
    with raw_db(vault_path) as db:
        db.execute("UPDATE credentials SET owner = 'bob' WHERE owner = 'alice' AND name = 'MOVED'")
    with pytest.raises(DecryptionError):
        vault.get_value("bob", "MOVED")
    assert vault.get_value("bob", "BOBS") == "sk-bob-own-ffff"


def test_given_a_credentials_type_changed_in_the_database_when_opened_then_it_is_rejected(vault, vault_path):
    vault.set("alice", "TOKEN", "sk-typed-value-gggg", type="api_key")
    with raw_db(vault_path) as db:
        db.execute("UPDATE credentials SET type = 'custom' WHERE name = 'TOKEN'")
    with pytest.raises(DecryptionError):
        vault.get_value("alice", "TOKEN")


def test_given_a_wrapped_data_key_copied_between_owners_when_opened_then_it_is_rejected(vault, vault_path, master_key):
    vault.set("alice", "OPENAI_API_KEY", "sk-alice-dek-hhhh")
    vault.set("bob", "OPENAI_API_KEY", "sk-bob-dek-iiii")
    vault.close()
    with raw_db(vault_path) as db:
        alice_wrapped = db.execute("SELECT wrapped FROM owner_keys WHERE owner = 'alice'").fetchone()[0]
        db.execute("UPDATE owner_keys SET wrapped = ? WHERE owner = 'bob'", (alice_wrapped,))

    reopened = env_vault(vault_path, master_key)
    try:
        with pytest.raises(DecryptionError, match="could not be decrypted") as info:
            reopened.get_value("bob", "OPENAI_API_KEY")
        assert "sk-" not in str(info.value)
        assert reopened.get_value("alice", "OPENAI_API_KEY") == "sk-alice-dek-hhhh"
    finally:
        reopened.close()


# ====================================================================== wrong master key
def test_given_a_wrong_master_key_when_opened_then_it_is_refused_and_the_files_are_untouched(vault, vault_path, master_key):
    values = fill(vault)
    vault.close()  # last connection: the WAL is checkpointed into vault.db
    before = files_digest(vault_path.parent)
    wrong = new_master_key()

    info = open_fails(vault_path, WrongMasterKey, env={"KEYVAULT_MASTER_KEY": wrong})

    message = str(info.value)
    assert "vault was sealed with a different master key" in message
    assert wrong not in message and master_key not in message
    assert files_digest(vault_path.parent) == before
    right = env_vault(vault_path, master_key)
    try:
        assert_reads(right, values)
    finally:
        right.close()


def test_given_a_wrong_master_key_while_another_process_has_the_vault_open_then_db_and_wal_are_untouched(
    vault, vault_path
):
    fill(vault)
    vault.backend._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = files_digest(vault_path.parent)
    open_fails(vault_path, WrongMasterKey, env={"KEYVAULT_MASTER_KEY": new_master_key()})
    after = files_digest(vault_path.parent)
    assert {k: v for k, v in after.items() if not k.endswith("-shm")} == {
        k: v for k, v in before.items() if not k.endswith("-shm")
    }


# ====================================================================== nonces
def test_given_one_data_key_when_sealing_100000_values_then_every_nonce_is_unique():
    dek = crypto.new_data_key()
    nonces = set()
    for _ in range(100_000):
        blob = crypto.seal_value(dek, "alice", "OPENAI_API_KEY", "api_key", b"sk-same-plaintext")
        assert blob[:4] == crypto.VALUE_MAGIC
        nonces.add(blob[4:16])
    assert len(nonces) == 100_000


def test_given_the_same_value_set_repeatedly_through_the_vault_then_every_stored_nonce_and_ciphertext_differ(
    vault, vault_path
):
    nonces, payloads = set(), set()
    for _ in range(300):
        vault.set("alice", "OPENAI_API_KEY", "sk-identical-value-jjjj")
        payload = payload_of(vault_path, "alice", "OPENAI_API_KEY")
        nonces.add(payload[4:16])
        payloads.add(payload)
    assert len(nonces) == len(payloads) == 300
    assert vault.get_value("alice", "OPENAI_API_KEY") == "sk-identical-value-jjjj"


# ====================================================================== legacy plaintext
def test_given_legacy_plaintext_rows_when_the_vault_opens_then_they_are_encrypted_in_place_and_still_read(
    vault, vault_path, master_key
):
    vault.set("alice", "MODERN", "sk-modern-value-kkkk")
    vault.close()
    legacy_blob = "sk-legacy-blob-" + os.urandom(8).hex()
    legacy_text = "sk-legacy-text-" + os.urandom(8).hex()
    with raw_db(vault_path) as db:
        insert = (
            "INSERT INTO credentials (id, owner, name, type, provider, payload, created_at, updated_at) "
            "VALUES (?, ?, ?, 'api_key', 'openai', ?, 1.0, 1.0)"
        )
        db.execute(insert, ("legacy-1", "alice", "LEGACY_BLOB", legacy_blob.encode()))
        db.execute(insert, ("legacy-2", "carol", "LEGACY_TEXT", legacy_text))  # as TEXT, like the sqlite3 shell

    reopened = env_vault(vault_path, master_key)
    try:
        assert reopened.legacy_migrated == 2
        for owner, name, value in (("alice", "LEGACY_BLOB", legacy_blob), ("carol", "LEGACY_TEXT", legacy_text)):
            payload = payload_of(vault_path, owner, name)
            assert payload.startswith(crypto.VALUE_MAGIC)
            assert value.encode() not in payload
            assert reopened.get_value(owner, name) == value
        assert reopened.get_value("alice", "MODERN") == "sk-modern-value-kkkk"
    finally:
        reopened.close()

    for path in vault_path.parent.iterdir():  # no plaintext residue left in free pages or the WAL
        data = path.read_bytes()
        assert legacy_blob.encode() not in data and legacy_text.encode() not in data, path.name
    again = env_vault(vault_path, master_key)
    try:
        assert again.legacy_migrated == 0
        assert again.get_value("carol", "LEGACY_TEXT") == legacy_text
    finally:
        again.close()


# ====================================================================== name validation
BAD_NAMES = {
    "empty": ("", "empty"),
    "whitespace": ("   \t ", "empty"),
    "65_chars": ("A" * 65, "longer than 64"),
    "leading_digit": ("1OPENAI", "not starting with a digit"),
    "dash": ("OPENAI-API-KEY", "environment variable"),
    "space": ("OPENAI API KEY", "environment variable"),
    "unicode": ("ÖPENAI_KEY", "environment variable"),
    "unicode_digit": ("KEY_١", "environment variable"),
    "newline": ("OPENAI\nKEY", "environment variable"),
    "none": (None, "must be a string"),
    "int": (123, "must be a string"),
    "bytes": (b"OPENAI_API_KEY", "must be a string"),
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_given_an_invalid_name_when_set_then_invalid_input_explains_it_and_nothing_is_stored(vault, vault_path, case):
    name, fragment = BAD_NAMES[case]
    with pytest.raises(InvalidInput) as info:
        vault.set("alice", name, "sk-valid-value-llll")
    assert fragment in str(info.value)
    assert "sk-valid-value-llll" not in str(info.value)
    assert vault.count() == 0
    assert vault.list("alice") == []
    assert audit_rows(vault_path) == []


def test_given_the_longest_valid_name_when_set_then_it_is_accepted(vault):
    name = "A" + "_9" * 31 + "Z"
    assert len(name) == 64
    vault.set("alice", name, "sk-longest-name-mmmm")
    assert vault.get_value("alice", name) == "sk-longest-name-mmmm"


def test_given_a_name_with_surrounding_spaces_when_set_then_it_is_stored_trimmed(vault):
    vault.set("alice", "  OPENAI_API_KEY \n", "sk-trimmed-name-nnnn")
    assert [i.name for i in vault.list("alice")] == ["OPENAI_API_KEY"]
    assert vault.get_value("alice", "OPENAI_API_KEY") == "sk-trimmed-name-nnnn"


# ====================================================================== value validation
def test_given_a_value_of_exactly_16_kib_when_set_then_it_is_accepted_and_reads_back(vault):
    value = "k" * (16 * 1024)
    vault.set("alice", "BIG", value)
    assert vault.get_value("alice", "BIG") == value


def test_given_a_multibyte_value_of_exactly_16_kib_when_set_then_it_is_accepted(vault):
    value = "é" * (8 * 1024)
    assert len(value.encode()) == 16 * 1024
    vault.set("alice", "BIG", value)
    assert vault.get_value("alice", "BIG") == value


BAD_VALUES = {
    "16KiB_plus_1": ("k" * (16 * 1024 + 1), "16385 bytes; the limit is 16384"),
    "multibyte_16KiB_plus_1": ("é" * (8 * 1024) + "k", "16385 bytes"),
    "non_utf8_bytes": (b"sk-\xff\xfe-not-utf8", "not valid UTF-8"),
    "lone_surrogate": ("sk-\ud800-surrogate", "not valid UTF-8"),
    "empty": ("", "empty"),
    "empty_bytes": (b"", "empty"),
    "whitespace": (" \n\t ", "whitespace"),
    "nul": ("sk-with-\x00-nul", "NUL"),
    "none": (None, "must be a string"),
    "int": (12345, "must be a string"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_given_an_invalid_value_when_set_then_it_is_rejected_and_the_stored_value_is_unchanged(vault, vault_path, case):
    value, fragment = BAD_VALUES[case]
    vault.set("alice", "EXISTING", "sk-existing-value-oooo")
    before = payload_of(vault_path, "alice", "EXISTING")

    with pytest.raises(InvalidInput) as info:
        vault.set("alice", "EXISTING", value)
    with pytest.raises(InvalidInput):
        vault.set("alice", "NEW_ONE", value)

    assert fragment in str(info.value)
    if isinstance(value, str) and len(value.strip()) > 8:
        assert value[3:] not in str(info.value)
    assert payload_of(vault_path, "alice", "EXISTING") == before
    assert vault.get_value("alice", "EXISTING") == "sk-existing-value-oooo"
    assert [i.name for i in vault.list("alice")] == ["EXISTING"]


def test_given_a_utf8_bytes_value_when_set_then_it_is_stored_as_text(vault):
    vault.set("alice", "FROM_BYTES", "sk-bytes-ünï-pppp".encode())
    assert vault.get_value("alice", "FROM_BYTES") == "sk-bytes-ünï-pppp"


@pytest.mark.parametrize("kind", ["password", "", None, "API_KEY"])
def test_given_an_unknown_credential_type_when_set_then_it_is_rejected(vault, kind):
    with pytest.raises(InvalidInput, match="credential type must be one of api_key, oauth2, custom"):
        vault.set("alice", "TYPED", "sk-typed-qqqq", type=kind)
    assert vault.count() == 0


# ====================================================================== master key: env
MALFORMED_KEYS = {
    "not_base64": "this is not base64 at all!",
    "31_bytes": base64.urlsafe_b64encode(b"\x07" * 31).decode(),
    "33_bytes": base64.urlsafe_b64encode(b"\x07" * 33).decode(),
    "bad_padding": "abcde",
    "non_ascii": "ключ" * 11,
}


@pytest.mark.parametrize("case", sorted(MALFORMED_KEYS))
def test_given_a_malformed_env_master_key_when_opened_then_master_key_error_never_echoes_it(vault_path, case):
    key = MALFORMED_KEYS[case]
    info = open_fails(vault_path, MasterKeyError, env={"KEYVAULT_MASTER_KEY": key})
    message = str(info.value)
    assert "KEYVAULT_MASTER_KEY" in message
    assert key not in message and key.strip() not in message
    if case.endswith("_bytes"):
        assert f"exactly 32 bytes (got {case[:2]})" in message


def test_given_a_malformed_env_key_on_an_existing_vault_then_it_is_refused_and_the_right_key_still_opens(
    vault, vault_path, master_key
):
    values = fill(vault)
    vault.close()
    open_fails(vault_path, MasterKeyError, env={"KEYVAULT_MASTER_KEY": MALFORMED_KEYS["31_bytes"]})
    v = env_vault(vault_path, master_key)
    try:
        assert_reads(v, values)
    finally:
        v.close()


def test_given_an_env_keyed_vault_when_reopened_without_the_env_key_then_a_clear_error_names_the_variable(
    vault, vault_path
):
    fill(vault)
    vault.close()
    info = open_fails(vault_path, MasterKeyError, env={}, use_keyring=False)
    assert not isinstance(info.value, WrongMasterKey)
    assert str(info.value) == "this vault is sealed with a master key from KEYVAULT_MASTER_KEY, which is not set"


def test_given_an_env_key_when_a_vault_is_created_then_status_reports_a_strong_env_source_without_the_key(
    vault, master_key
):
    status = vault.status()
    assert status["protection"] == {"source": "env", "strong": True, "detail": "KEYVAULT_MASTER_KEY"}
    assert status["warnings"] == []
    raw = base64.urlsafe_b64decode(master_key)
    for text in (repr(status), json.dumps(status), repr(vault.master), str(vault.master)):
        assert master_key not in text and master_key.rstrip("=") not in text
        assert raw.hex() not in text and repr(raw) not in text


# ====================================================================== master key: keyring
def test_given_a_keyring_when_a_vault_is_created_then_a_key_is_generated_stored_and_reused(vault_path, memory_keyring):
    v = Vault(SQLiteBackend(vault_path), env={})
    try:
        v.set("alice", "OPENAI_API_KEY", "sk-keyring-value-rrrr")
        entries = dict(memory_keyring.entries)
        assert list(entries) == [("jupyter-keyvault", f"master-key:{v.vault_id}")]
        stored_key = entries[("jupyter-keyvault", f"master-key:{v.vault_id}")]
        assert len(base64.urlsafe_b64decode(stored_key)) == 32
        status = v.status()
        assert status["protection"]["source"] == "keyring" and status["protection"]["strong"] is True
        assert status["warnings"] == []
        assert stored_key not in repr(status) and stored_key not in json.dumps(status)
    finally:
        v.close()

    again = Vault(SQLiteBackend(vault_path), env={})
    try:
        assert again.get_value("alice", "OPENAI_API_KEY") == "sk-keyring-value-rrrr"
        assert dict(memory_keyring.entries) == entries
    finally:
        again.close()


def test_given_a_keyring_vault_whose_entry_was_removed_when_opened_then_a_clear_error_is_raised(
    vault_path, memory_keyring
):
    v = Vault(SQLiteBackend(vault_path), env={})
    v.set("alice", "OPENAI_API_KEY", "sk-keyring-lost-ssss")
    v.close()
    memory_keyring.entries.clear()
    info = open_fails(vault_path, MasterKeyError, env={})
    assert "keyring has no entry" in str(info.value)
    assert memory_keyring.entries == {}  # no fresh key was silently generated


def test_given_a_keyring_vault_when_no_keyring_backend_is_available_then_a_clear_error_is_raised(
    vault_path, memory_keyring
):
    import keyring
    from keyring.backends import fail

    Vault(SQLiteBackend(vault_path), env={}).close()
    keyring.set_keyring(fail.Keyring())
    info = open_fails(vault_path, MasterKeyError, env={})
    assert "no keyring backend is available" in str(info.value)


# ====================================================================== master key: passphrase
def test_given_a_passphrase_when_a_vault_is_created_then_kdf_params_are_stored_and_it_reopens(vault_path, canary):
    passphrase = "correct horse battery staple " + canary
    v = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_PASSPHRASE": passphrase})
    try:
        v.set("alice", "OPENAI_API_KEY", "sk-passphrase-value-tttt")
        status = v.status()
        assert status["protection"] == {"source": "passphrase", "strong": True, "detail": "scrypt"}
        assert passphrase not in repr(status) and canary not in json.dumps(status)
    finally:
        v.close()

    params = json.loads(meta(vault_path, "kdf"))
    assert params["alg"] == "scrypt"
    assert params["n"] >= 2**14 and params["r"] >= 8 and params["p"] >= 1
    assert len(base64.b64decode(params["salt"])) == 16
    assert meta(vault_path, "kek_source") == "passphrase"
    again = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_PASSPHRASE": passphrase})
    try:
        assert again.get_value("alice", "OPENAI_API_KEY") == "sk-passphrase-value-tttt"
    finally:
        again.close()


def test_given_a_passphrase_vault_when_opened_with_a_wrong_passphrase_then_wrong_master_key(vault_path):
    Vault(SQLiteBackend(vault_path), env={"KEYVAULT_PASSPHRASE": "the right one"}).close()
    info = open_fails(vault_path, WrongMasterKey, env={"KEYVAULT_PASSPHRASE": "the wrong one"})
    assert "vault was sealed with a different master key" in str(info.value)
    assert "the wrong one" not in str(info.value)
    info = open_fails(vault_path, MasterKeyError, env={})
    assert "KEYVAULT_PASSPHRASE" in str(info.value)


def test_given_two_passphrase_vaults_with_one_passphrase_then_their_salts_differ(tmp_path):
    salts = []
    for name in ("one", "two"):
        path = tmp_path / name / "vault.db"
        Vault(SQLiteBackend(path), env={"KEYVAULT_PASSPHRASE": "shared passphrase"}).close()
        salts.append(json.loads(meta(path, "kdf"))["salt"])
    assert salts[0] != salts[1]


# ====================================================================== master key: key file
def test_given_no_strong_source_when_a_vault_is_created_then_a_0600_key_file_is_used_with_a_loud_warning(
    vault_path, caplog
):
    with caplog.at_level("WARNING", logger="jupyter_keyvault.store"):
        v = file_vault(vault_path)
    try:
        v.set("alice", "OPENAI_API_KEY", "sk-file-value-uuuu")
        key_file = vault_path.with_name("master.key")
        assert key_file.exists()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key_text = key_file.read_text().strip()
        assert len(base64.urlsafe_b64decode(key_text)) == 32
        status = v.status()
        assert status["protection"]["source"] == "file"
        assert status["protection"]["strong"] is False
        assert status["warnings"] == [mk.KEY_FILE_WARNING]
        assert "no strong master-key source" in status["warnings"][0]
        assert key_text not in repr(status) and key_text not in json.dumps(status)
        assert key_text not in caplog.text
        assert "no strong master-key source" in caplog.text
        assert not list(vault_path.parent.glob("*.tmp"))
    finally:
        v.close()
    again = file_vault(vault_path)
    try:
        assert again.get_value("alice", "OPENAI_API_KEY") == "sk-file-value-uuuu"
    finally:
        again.close()


def test_given_a_file_keyed_vault_whose_key_file_is_missing_when_opened_then_a_clear_error_is_raised(vault_path):
    file_vault(vault_path).close()
    key_file = vault_path.with_name("master.key")
    key_file.unlink()
    info = open_fails(vault_path, MasterKeyError, env={}, use_keyring=False)
    assert "key file" in str(info.value) and "missing" in str(info.value)
    assert not key_file.exists()  # no new key silently generated


def test_given_an_existing_file_keyed_vault_when_a_keyring_appears_then_it_keeps_using_the_file(
    vault_path, memory_keyring
):
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        v = Vault(SQLiteBackend(vault_path), env={})
        assert v.status()["protection"]["source"] == "file"
        v.set("alice", "OPENAI_API_KEY", "sk-file-then-keyring-vvvv")
        v.close()
    finally:
        keyring.set_keyring(previous)
    assert mk.keyring_usable()

    again = Vault(SQLiteBackend(vault_path), env={})
    try:
        assert again.status()["protection"]["source"] == "file"
        assert again.get_value("alice", "OPENAI_API_KEY") == "sk-file-then-keyring-vvvv"
        assert memory_keyring.entries == {}
    finally:
        again.close()


# ====================================================================== rotation
def test_given_an_env_keyed_vault_with_a_new_key_when_rotated_then_only_the_new_key_opens_it(vault_path, master_key):
    new_key = new_master_key()
    v = env_vault(vault_path, master_key, env={"KEYVAULT_NEW_MASTER_KEY": new_key})
    values = fill(v)
    old_wrapped = owner_keys(vault_path)

    assert v.rotate_master_key(actor="admin") == 2
    assert_reads(v, values)  # the open vault keeps working
    v.close()

    new_wrapped = owner_keys(vault_path)
    assert [r[0] for r in new_wrapped] == ["alice", "bob"]
    assert all(o[1] != n[1] and o[2] != n[2] for o, n in zip(old_wrapped, new_wrapped, strict=True))
    info = open_fails(vault_path, WrongMasterKey, env={"KEYVAULT_MASTER_KEY": master_key})
    assert "vault was sealed with a different master key" in str(info.value)
    assert "KEYVAULT_NEW_MASTER_KEY" in str(info.value)  # the hint for a forgotten swap
    reopened = env_vault(vault_path, new_key)
    try:
        assert_reads(reopened, values)
        rotations = [e for e in reopened.audit_events(None) if e.action == "rotate"]
        assert len(rotations) == 1 and rotations[0].outcome == "ok"
    finally:
        reopened.close()


def test_given_an_env_keyed_vault_without_a_new_key_when_rotated_then_a_clear_error_and_nothing_changes(
    vault, vault_path, master_key
):
    values = fill(vault)
    check_before, keys_before = meta(vault_path, "kek_check"), owner_keys(vault_path)

    with pytest.raises(MasterKeyError, match="put the new key in KEYVAULT_NEW_MASTER_KEY"):
        vault.rotate_master_key()

    assert meta(vault_path, "kek_check") == check_before
    assert owner_keys(vault_path) == keys_before
    assert_reads(vault, values)
    vault.close()
    reopened = env_vault(vault_path, master_key)
    try:
        assert_reads(reopened, values)
    finally:
        reopened.close()


@pytest.mark.parametrize("new_key", ["same", "malformed"])
def test_given_a_useless_new_env_key_when_rotated_then_it_is_refused_and_nothing_changes(vault_path, master_key, new_key):
    text = master_key if new_key == "same" else "too-short"
    v = env_vault(vault_path, master_key, env={"KEYVAULT_NEW_MASTER_KEY": text})
    try:
        values = fill(v)
        keys_before = owner_keys(vault_path)
        with pytest.raises(MasterKeyError) as info:
            v.rotate_master_key()
        assert text not in str(info.value)
        assert owner_keys(vault_path) == keys_before
        assert_reads(v, values)
    finally:
        v.close()


def test_given_a_file_keyed_vault_when_rotated_then_the_key_file_is_replaced_and_the_old_key_fails(vault_path):
    v = file_vault(vault_path)
    values = fill(v)
    key_file = vault_path.with_name("master.key")
    old_text = key_file.read_text()

    assert v.rotate_master_key() == 2
    v.close()

    new_text = key_file.read_text()
    assert new_text != old_text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not key_file.with_name("master.key.next").exists()
    reopened = file_vault(vault_path)
    try:
        assert_reads(reopened, values)
    finally:
        reopened.close()
    key_file.write_text(old_text)
    open_fails(vault_path, WrongMasterKey, env={}, use_keyring=False)


def test_given_a_keyring_keyed_vault_when_rotated_then_the_keyring_entry_is_replaced(vault_path, memory_keyring):
    v = Vault(SQLiteBackend(vault_path), env={})
    values = fill(v)
    entry = ("jupyter-keyvault", f"master-key:{v.vault_id}")
    old_key = memory_keyring.entries[entry]

    assert v.rotate_master_key() == 2
    v.close()

    assert list(memory_keyring.entries) == [entry]  # the pending slot is gone
    assert memory_keyring.entries[entry] != old_key
    reopened = Vault(SQLiteBackend(vault_path), env={})
    try:
        assert_reads(reopened, values)
    finally:
        reopened.close()
    memory_keyring.entries[entry] = old_key
    open_fails(vault_path, WrongMasterKey, env={})


def test_given_a_passphrase_vault_with_a_new_passphrase_when_rotated_then_only_the_new_one_opens_it(vault_path):
    v = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_PASSPHRASE": "old pass", "KEYVAULT_NEW_PASSPHRASE": "new pass"})
    values = fill(v)
    salt_before = json.loads(meta(vault_path, "kdf"))["salt"]
    v.rotate_master_key()
    v.close()
    assert json.loads(meta(vault_path, "kdf"))["salt"] != salt_before
    open_fails(vault_path, WrongMasterKey, env={"KEYVAULT_PASSPHRASE": "old pass"})
    reopened = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_PASSPHRASE": "new pass"})
    try:
        assert_reads(reopened, values)
    finally:
        reopened.close()


def _fail_on_second_wrap(monkeypatch):
    real_wrap = crypto.KeyEncryptionKey.wrap
    calls = []

    def wrap(self, owner, dek):
        calls.append(owner)
        if len(calls) == 2:
            raise RuntimeError("simulated crash while re-wrapping")
        return real_wrap(self, owner, dek)

    monkeypatch.setattr(crypto.KeyEncryptionKey, "wrap", wrap)
    return calls


def test_given_a_rotation_that_fails_midway_when_reopened_then_it_rolled_back_and_the_old_key_opens(
    vault_path, master_key, monkeypatch
):
    new_key = new_master_key()
    v = env_vault(vault_path, master_key, env={"KEYVAULT_NEW_MASTER_KEY": new_key})
    values = fill(v)
    check_before, keys_before = meta(vault_path, "kek_check"), owner_keys(vault_path)
    calls = _fail_on_second_wrap(monkeypatch)

    with pytest.raises(RuntimeError, match="simulated crash"):
        v.rotate_master_key()
    monkeypatch.undo()

    assert len(calls) == 2
    assert meta(vault_path, "kek_check") == check_before
    assert owner_keys(vault_path) == keys_before
    assert_reads(v, values)  # the vault that failed to rotate keeps working
    v.close()
    reopened = env_vault(vault_path, master_key)
    try:
        assert_reads(reopened, values)
    finally:
        reopened.close()
    open_fails(vault_path, WrongMasterKey, env={"KEYVAULT_MASTER_KEY": new_key})


def test_given_a_file_keyed_rotation_that_fails_midway_when_reopened_then_the_staged_key_is_discarded(
    vault_path, monkeypatch
):
    v = file_vault(vault_path)
    values = fill(v)
    key_file = vault_path.with_name("master.key")
    old_text = key_file.read_text()
    _fail_on_second_wrap(monkeypatch)

    with pytest.raises(RuntimeError):
        v.rotate_master_key()
    monkeypatch.undo()
    v.close()

    assert key_file.read_text() == old_text
    reopened = file_vault(vault_path)
    try:
        assert not key_file.with_name("master.key.next").exists()
        assert key_file.read_text() == old_text
        assert_reads(reopened, values)
    finally:
        reopened.close()


CRASH_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from jupyter_keyvault.store import SQLiteBackend, Vault

    vault = Vault(SQLiteBackend(sys.argv[1]), env={}, use_keyring=False)
    real_replace = os.replace

    def crash_on_promote(src, dst, *args, **kwargs):
        if str(src).endswith(".next"):  # the commit is done; die before the new key is promoted
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = crash_on_promote
    vault.rotate_master_key()
    print("rotation finished without crashing")
    """
)


def test_given_a_crash_after_commit_before_the_key_file_is_promoted_when_reopened_then_the_rotation_resumes(vault_path):
    v = file_vault(vault_path)
    values = fill(v)
    v.close()
    key_file = vault_path.with_name("master.key")
    staged = key_file.with_name("master.key.next")
    old_text = key_file.read_text()

    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_COMMIT, str(vault_path)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "finished" not in proc.stdout
    assert staged.exists() and key_file.read_text() == old_text  # committed, not promoted

    reopened = file_vault(vault_path)
    try:
        assert_reads(reopened, values)
        assert not staged.exists()
        assert key_file.read_text() != old_text
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    finally:
        reopened.close()
    again = file_vault(vault_path)
    try:
        assert_reads(again, values)
    finally:
        again.close()


def test_given_a_keyring_rotation_interrupted_after_commit_when_reopened_then_it_resumes(
    vault_path, memory_keyring, monkeypatch
):
    v = Vault(SQLiteBackend(vault_path), env={})
    values = fill(v)
    vault_id = v.vault_id
    real_set = mk.keyring_set

    def crash_on_promote(vid, key, pending=False):
        if not pending:
            raise KeyboardInterrupt("simulated crash before the new key was promoted")
        real_set(vid, key, pending)

    monkeypatch.setattr(mk, "keyring_set", crash_on_promote)
    with pytest.raises(KeyboardInterrupt):
        v.rotate_master_key()
    monkeypatch.undo()
    v.close()
    pending = ("jupyter-keyvault", f"pending-master-key:{vault_id}")
    assert pending in memory_keyring.entries

    reopened = Vault(SQLiteBackend(vault_path), env={})
    try:
        assert_reads(reopened, values)
        assert pending not in memory_keyring.entries
    finally:
        reopened.close()
    again = Vault(SQLiteBackend(vault_path), env={})
    try:
        assert_reads(again, values)
    finally:
        again.close()


def test_given_a_stale_staged_key_file_without_a_commit_when_opened_then_it_is_discarded(vault_path, caplog):
    v = file_vault(vault_path)
    values = fill(v)
    v.close()
    key_file = vault_path.with_name("master.key")
    old_text = key_file.read_text()
    staged = key_file.with_name("master.key.next")
    mk.write_private_file(staged, (new_master_key() + "\n").encode())

    with caplog.at_level("WARNING", logger="jupyter_keyvault.store"):
        reopened = file_vault(vault_path)
    try:
        assert not staged.exists()
        assert key_file.read_text() == old_text
        assert_reads(reopened, values)
        assert "discarded an unfinished master-key rotation" in caplog.text
    finally:
        reopened.close()


@pytest.mark.parametrize("source", ["file", "keyring"])
def test_given_a_rotation_in_flight_when_another_vault_opens_meanwhile_then_the_staged_key_survives(
    vault_path, memory_keyring, source
):
    def open_vault() -> Vault:
        return Vault(SQLiteBackend(vault_path), env={}, use_keyring=source == "keyring")

    rotating = open_vault()
    values = fill(rotating)
    real_rewrap = rotating.backend.rewrap_owner_keys
    opened_meanwhile = []

    def rewrap_while_another_process_opens(*args, **kwargs):
        other = open_vault()  # sees the staged key of a rotation that has not committed yet
        try:
            opened_meanwhile.append(other.get_value("alice", "OPENAI_API_KEY"))
        finally:
            other.close()
        return real_rewrap(*args, **kwargs)

    rotating.backend.rewrap_owner_keys = rewrap_while_another_process_opens
    assert rotating.rotate_master_key() == 2
    rotating.close()

    assert opened_meanwhile == [values[("alice", "OPENAI_API_KEY")]]
    reopened = open_vault()
    try:
        assert_reads(reopened, values)
    finally:
        reopened.close()


def test_given_a_stale_pending_keyring_entry_without_a_commit_when_opened_then_it_is_discarded(
    vault_path, memory_keyring
):
    v = Vault(SQLiteBackend(vault_path), env={})
    values = fill(v)
    v.close()
    mk.keyring_set(v.vault_id, os.urandom(32), pending=True)

    reopened = Vault(SQLiteBackend(vault_path), env={})
    try:
        assert list(memory_keyring.entries) == [("jupyter-keyvault", f"master-key:{v.vault_id}")]
        assert_reads(reopened, values)
    finally:
        reopened.close()


# ====================================================================== env precedence
def test_given_an_env_credential_name_when_resolved_then_the_env_var_wins_over_the_stored_value(vault_path, master_key):
    v = env_vault(
        vault_path, master_key, env={"OPENAI_API_KEY": "sk-from-env-wwww"}, env_credential_names=["OPENAI_API_KEY"]
    )
    try:
        v.set("alice", "OPENAI_API_KEY", "sk-from-vault-xxxx", provider="openai")
        resolved = v.resolve("alice", "OPENAI_API_KEY")
        assert (resolved.value, resolved.source) == ("sk-from-env-wwww", "env")
        assert "sk-from-env-wwww" not in repr(resolved)
        listed = {i.name: i.source for i in v.list("alice")}
        assert listed == {"OPENAI_API_KEY": "env"}
        use = v.audit_events("alice")[0]
        assert (use.action, use.outcome, use.detail) == ("use", "ok", "source=env")
    finally:
        v.close()


def test_given_an_env_var_not_listed_as_a_credential_name_when_resolved_then_the_vault_value_is_used(
    vault_path, master_key
):
    v = env_vault(vault_path, master_key, env={"OPENAI_API_KEY": "sk-from-env-yyyy", "OTHER": "x"}, env_credential_names=["OTHER"])
    try:
        v.set("alice", "OPENAI_API_KEY", "sk-from-vault-zzzz", provider="openai")
        resolved = v.resolve("alice", "OPENAI_API_KEY")
        assert (resolved.value, resolved.source, resolved.provider) == ("sk-from-vault-zzzz", "vault", "openai")
    finally:
        v.close()


def test_given_an_env_credential_name_set_to_empty_when_resolved_then_the_vault_value_is_used(vault_path, master_key):
    v = env_vault(vault_path, master_key, env={"OPENAI_API_KEY": ""}, env_credential_names=["OPENAI_API_KEY"])
    try:
        v.set("alice", "OPENAI_API_KEY", "sk-from-vault-0a0a")
        assert v.resolve("alice", "OPENAI_API_KEY").source == "vault"
    finally:
        v.close()


def test_given_neither_env_nor_vault_holds_a_credential_when_resolved_then_no_credential_says_so(
    vault_path, master_key
):
    v = env_vault(vault_path, master_key, env_credential_names=["OPENAI_API_KEY"])
    try:
        with pytest.raises(NoCredential, match="No API key configured for OPENAI_API_KEY") as info:
            v.resolve("alice", "OPENAI_API_KEY")
        assert isinstance(info.value, LookupError)
        with pytest.raises(NoCredential, match="use the panel"):
            v.resolve("alice", "OPENAI_API_KEY", how_to_add="use the panel")
    finally:
        v.close()


# ====================================================================== audit
def test_given_a_sequence_of_operations_then_each_is_audited_with_its_outcome_and_never_the_value(
    vault_path, master_key, canary
):
    new_key = new_master_key()
    v = env_vault(vault_path, master_key, env={"KEYVAULT_NEW_MASTER_KEY": new_key})
    try:
        v.set("alice", "OPENAI_API_KEY", canary, provider="openai")
        v.set("alice", "OPENAI_API_KEY", canary + "-2", provider="openai")
        v.resolve("alice", "OPENAI_API_KEY", actor="kernel-1")
        v.set("alice", "DOOMED", canary + "-doomed")
        v.delete("alice", "DOOMED")
        with pytest.raises(NotFound):
            v.delete("alice", "NEVER_THERE")
        set_payload(vault_path, "alice", "OPENAI_API_KEY", b"\x00KV1" + os.urandom(40))
        with pytest.raises(DecryptionError):
            v.get_value("alice", "OPENAI_API_KEY")
        v.rotate_master_key(actor="admin")

        alice = [(e.action, e.target, e.outcome, e.detail) for e in reversed(v.audit_events("alice"))]
        assert alice == [
            ("set", "OPENAI_API_KEY", "ok", "created"),
            ("set", "OPENAI_API_KEY", "ok", "replaced"),
            ("use", "OPENAI_API_KEY", "ok", "source=vault"),
            ("set", "DOOMED", "ok", "created"),
            ("delete", "DOOMED", "ok", None),
            ("delete", "NEVER_THERE", "not_found", None),
            ("use", "OPENAI_API_KEY", "error", "decryption failed"),
        ]
        assert [e.actor for e in v.audit_events("alice") if e.action == "use" and e.outcome == "ok"] == ["kernel-1"]
        rotate = [e for e in v.audit_events(None) if e.action == "rotate"]
        assert len(rotate) == 1 and rotate[0].outcome == "ok" and rotate[0].actor == "admin"
        all_events = v.audit_events(None, limit=1000)
        assert v.audit_events("bob") == []
    finally:
        v.close()

    dumped = json.dumps([e.to_json() for e in all_events]) + repr(audit_rows(vault_path))
    assert canary not in dumped
    assert canary[len("sk-proj-"):] not in dumped
    assert master_key not in dumped and new_key not in dumped


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_given_an_out_of_range_audit_limit_when_listed_then_it_is_rejected(vault, limit):
    with pytest.raises(InvalidInput, match="limit must be between 1 and 1000"):
        vault.audit_events(None, limit=limit)


def test_given_another_process_rotated_the_key_when_a_new_owner_is_created_then_it_is_wrapped_under_the_new_key(tmp_path):
    path = tmp_path / "kv" / "vault.db"
    a = Vault(SQLiteBackend(path), env={})
    b = Vault(SQLiteBackend(path), env={})  # opened before the rotation: holds the old key
    a.set("alice", "OPENAI_API_KEY", "sk-alice-value-123456")
    a.rotate_master_key()
    b.set("carol", "OPENAI_API_KEY", "sk-carol-value-123456")
    a.close(), b.close()
    reopened = Vault(SQLiteBackend(path), env={})
    assert reopened.get_value("carol", "OPENAI_API_KEY") == "sk-carol-value-123456"
    assert reopened.get_value("alice", "OPENAI_API_KEY") == "sk-alice-value-123456"


# ====================================================================== identity and storage health
def test_given_a_new_vault_then_its_identity_records_are_in_the_vault_file_itself_not_only_in_the_wal(
    vault_path, master_key, tmp_path
):
    v = env_vault(vault_path, master_key)
    try:
        # While the vault is open, a copy of vault.db alone (no -wal) must already be a whole vault.
        alone = tmp_path / "alone.db"
        alone.write_bytes(vault_path.read_bytes())
        with raw_db(alone) as db:
            stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
        assert {"vault_id", "kek_check", "kek_source", "kek_id"} <= set(stored)
        assert stored["vault_id"] == v.vault_id and stored["kek_source"] == "env"
    finally:
        v.close()


@pytest.mark.parametrize("missing", [("kek_check",), ("vault_id",), ("vault_id", "kek_check")])
def test_given_a_vault_without_its_identity_records_when_opened_then_vault_damaged_and_nothing_is_written(
    vault, vault_path, master_key, missing
):
    vault.set("alice", "KEPT", "sk-kept-value-aaaa")
    vault.close()
    with raw_db(vault_path) as db:
        for key in missing:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))
    before = files_digest(vault_path.parent)
    info = open_fails(vault_path, VaultDamaged, env={"KEYVAULT_MASTER_KEY": master_key})
    message = str(info.value)
    assert str(vault_path) in message and "restore it from a backup" in message
    assert {"vault_id": "vault id", "kek_check": "key check"}[missing[0]] in message
    assert files_digest(vault_path.parent) == before


def test_given_an_empty_schema_without_identity_when_opened_then_it_is_refused_not_silently_initialised(
    vault_path, master_key
):
    made = SQLiteBackend(vault_path)
    made.create_vault({})  # what a vault that lost its identity looks like: a schema, no records
    made.close()
    open_fails(vault_path, VaultDamaged, env={"KEYVAULT_MASTER_KEY": master_key})


def test_given_a_vault_when_its_status_is_read_then_the_integrity_check_and_its_time_are_reported(vault):
    storage = vault.status()["storage"]
    assert storage["writable"] is True and storage["problems"] == []
    assert storage["integrity"]["ok"] is True and storage["integrity"]["seconds"] >= 0


def test_given_writes_still_only_in_the_wal_when_exported_then_the_backup_has_them(vault, vault_path, master_key):
    from jupyter_keyvault.store.backup import export_backup, read_backup

    holder = sqlite3.connect(vault_path)  # keeps the WAL from being checkpointed away
    try:
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        holder.execute("SELECT COUNT(*) FROM meta").fetchone()
        vault.backend._conn().execute("PRAGMA wal_autocheckpoint = 0")
        vault.set("alice", "IN_WAL", "sk-only-in-the-wal-1234")
        alone = vault_path.with_name("alone.db")
        alone.write_bytes(vault_path.read_bytes())
        with raw_db(alone) as db:  # a copy of the file alone does not have it yet
            assert db.execute("SELECT COUNT(*) FROM credentials").fetchone()[0] == 0
        data = export_backup(vault, "alice", "a long passphrase")
    finally:
        holder.close()
    assert [(i["name"], i["value"]) for i in read_backup(data, "a long passphrase")] == [
        ("IN_WAL", "sk-only-in-the-wal-1234")]


def test_given_a_storage_problem_when_status_is_read_for_a_browser_then_no_server_path_is_in_it(vault, vault_path):
    vault.backend._wal_lost = True  # any reported storage problem; this one names both files
    status = vault.status()
    status.pop("location")  # as the server's status handler does
    browser = json.dumps(status)
    assert str(vault_path.parent) not in browser and "vault.db-wal was deleted" in browser
    terminal = vault.status(with_paths=True)
    assert any(str(vault_path) in p for p in terminal["storage"]["problems"])
