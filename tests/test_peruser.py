"""Per-user mode: one hub secret, a distinct master key per user (HKDF over the user
name), validated at hub start, delivered through Spawner.environment only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from jupyter_keyvault.hub.peruser import (
    INFO_LABEL,
    WeakHubSecret,
    configure_per_user_keys,
    derive_user_key,
    generate_secret,
    parse_hub_secret,
)
from jupyter_keyvault.store import SQLiteBackend, Vault, WrongMasterKey
from jupyter_keyvault.store.crypto import encode_master_key

SECRET = bytes(range(32))


def rfc5869_hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF written out from RFC 5869 (no salt), to check the documented derivation independently."""
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def framed(*parts: str) -> bytes:
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)


# ---------------------------------------------------------------------- derivation
def test_the_documented_derivation_is_hkdf_sha256_over_a_framed_label_context_and_user_name():
    assert INFO_LABEL == "jupyter-keyvault/per-user-master-key/v1"
    expected = rfc5869_hkdf_sha256(SECRET, framed(INFO_LABEL, "", "alice"))
    assert derive_user_key(SECRET, "alice") == expected
    # Pinned: changing the derivation would lock every user out of their vault.
    assert expected.hex() == "7dbbc506c872eb1bfa0d1397fa9266f79ae05d149a45e29df5d5089f57952a79"


def test_the_same_user_always_gets_the_same_32_byte_key():
    assert derive_user_key(SECRET, "alice") == derive_user_key(bytes(SECRET), "alice")
    assert len(derive_user_key(SECRET, "alice")) == 32


def test_every_user_gets_a_distinct_key_including_look_alike_names():
    names = ["alice", "bob", "Alice", "alice ", "alice@example.org", "al", "ice", "ålice", "x" * 255]
    keys = {derive_user_key(SECRET, name) for name in names}
    assert len(keys) == len(names)


def test_another_secret_or_context_gives_other_keys_and_parts_cannot_be_shifted_between_fields():
    assert derive_user_key(SECRET, "alice") != derive_user_key(bytes(range(1, 33)), "alice")
    assert derive_user_key(SECRET, "alice", context="hub-a") != derive_user_key(SECRET, "alice", context="hub-b")
    assert derive_user_key(SECRET, "bc", context="a") != derive_user_key(SECRET, "c", context="ab")


def test_a_derived_key_reveals_neither_the_secret_nor_another_users_key():
    alice = derive_user_key(SECRET, "alice")
    assert SECRET not in alice and alice not in derive_user_key(SECRET, "bob")
    assert hmac.compare_digest(alice, derive_user_key(SECRET, "alice"))


def test_an_empty_user_name_is_refused():
    with pytest.raises(ValueError, match="non-empty user name"):
        derive_user_key(SECRET, "")


# ---------------------------------------------------------------------- the hub secret
@pytest.mark.parametrize(
    "text, message",
    [
        (None, "KEYVAULT_HUB_SECRET is not set"),
        ("", "KEYVAULT_HUB_SECRET is not set"),
        ("   ", "KEYVAULT_HUB_SECRET is not set"),
        ("changeme", "at least 32 random bytes"),
        ("correct horse battery staple, long enough for anyone!", "not hex or base64"),
        ("ab" * 20, "at least 32 random bytes"),  # 20 bytes of hex
        ("00" * 32, "does not look random"),
        ("0102" * 16, "does not look random"),
        (base64.urlsafe_b64encode(b"A" * 48).decode(), "does not look random"),
        (base64.b64encode(bytes(range(24))).decode(), "holds 24 bytes"),
    ],
)
def test_an_absent_or_weak_hub_secret_is_refused_with_a_clear_message(text, message):
    with pytest.raises(WeakHubSecret, match=message) as info:
        parse_hub_secret(text)
    assert "generate-secret" in str(info.value)
    if text and text.strip():
        assert text.strip() not in str(info.value)  # the message never echoes the secret


@pytest.mark.parametrize("encode", [bytes.hex, lambda b: base64.b64encode(b).decode(),
                                    lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")])
def test_a_strong_secret_is_accepted_as_hex_or_base64(encode):
    raw = bytes(range(100, 148))
    assert parse_hub_secret(" " + encode(raw) + "\n") == raw


def test_the_generate_secret_command_prints_a_fresh_secret_that_is_accepted():
    out = [subprocess.run([sys.executable, "-m", "jupyter_keyvault.peruser", "generate-secret"],
                          capture_output=True, text=True, check=True).stdout.strip() for _ in range(2)]
    assert out[0] != out[1]
    assert len(parse_hub_secret(out[0])) == 32
    assert len(parse_hub_secret(generate_secret())) == 32


# ---------------------------------------------------------------------- jupyterhub_config.py
def spawner_env(config: Config, username: str) -> dict[str, str]:
    """What JupyterHub's simple local-process spawner puts in that user's server environment."""
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    user = SimpleNamespace(name=username, escaped_name=username, url=f"/user/{username}/", id=1, settings={},
                           base_url="/", server=None, spawner=None)
    hub = SimpleNamespace(public_host="", url="http://127.0.0.1:8081/hub/", api_url="http://127.0.0.1:8081/hub/api",
                          base_url="/hub/", host="")
    return SimpleLocalProcessSpawner(config=config, user=user, hub=hub).get_env()


def test_the_config_helper_gives_each_spawned_server_its_own_key_and_never_the_hub_secret(monkeypatch):
    pytest.importorskip("jupyterhub")
    secret = generate_secret()
    monkeypatch.setenv("KEYVAULT_HUB_SECRET", secret)
    c = Config()
    c.Spawner.env_keep = ["PATH", "KEYVAULT_HUB_SECRET"]  # a careless admin
    c.Spawner.environment = {"OTHER": "kept"}
    configure_per_user_keys(c)

    alice, bob = spawner_env(c, "alice"), spawner_env(c, "bob")

    raw = parse_hub_secret(secret)
    assert alice["KEYVAULT_MASTER_KEY"] == encode_master_key(derive_user_key(raw, "alice"))
    assert bob["KEYVAULT_MASTER_KEY"] == encode_master_key(derive_user_key(raw, "bob"))
    assert alice["OTHER"] == "kept"
    for env in (alice, bob):
        assert "KEYVAULT_HUB_SECRET" not in env
        assert all(secret not in value for value in env.values())
    assert "KEYVAULT_HUB_SECRET" not in c.Spawner.env_keep


def test_the_config_helper_refuses_to_start_the_hub_without_a_strong_secret():
    c = Config()
    with pytest.raises(WeakHubSecret, match="MY_SECRET is not set"):
        configure_per_user_keys(c, secret_env="MY_SECRET", environ={})
    with pytest.raises(WeakHubSecret, match="MY_SECRET holds"):
        configure_per_user_keys(c, secret_env="MY_SECRET", environ={"MY_SECRET": "c2hvcnQ="})
    assert "KEYVAULT_MASTER_KEY" not in c.Spawner.environment.to_dict().get("update", {})


def test_the_config_helper_refuses_a_config_that_hands_the_secret_to_user_servers():
    secret = generate_secret()
    c = Config()
    c.Spawner.environment = {"KEYVAULT_HUB_SECRET": secret}
    with pytest.raises(WeakHubSecret, match="passes KEYVAULT_HUB_SECRET to user servers"):
        configure_per_user_keys(c, environ={"KEYVAULT_HUB_SECRET": secret})


# ---------------------------------------------------------------------- isolation on a shared filesystem
def test_user_bs_key_cannot_open_user_as_vault_file_and_changes_nothing(tmp_path, canary):
    raw = parse_hub_secret(generate_secret())
    key = {u: encode_master_key(derive_user_key(raw, u)) for u in ("alice", "bob")}
    path = tmp_path / "shared" / "alice" / "keyvault" / "vault.db"
    vault = Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": key["alice"]})
    vault.set("alice", "OPENAI_API_KEY", canary)
    vault.close()
    before = path.read_bytes()

    backend = SQLiteBackend(path)
    try:
        with pytest.raises(WrongMasterKey, match="vault was sealed with a different master key") as info:
            Vault(backend, env={"KEYVAULT_MASTER_KEY": key["bob"]})
    finally:
        backend.close()

    assert canary not in str(info.value) and key["bob"] not in str(info.value)
    assert path.read_bytes() == before
    vault = Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": key["alice"]})
    try:
        assert vault.get_value("alice", "OPENAI_API_KEY") == canary
    finally:
        vault.close()


# ---------------------------------------------------------------------- re-keying
def run_peruser(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    return subprocess.run([sys.executable, "-m", "jupyter_keyvault.peruser", *args], env={**clean, **env},
                          capture_output=True, text=True)


def test_rotating_the_hub_secret_rekeys_a_users_vault_so_only_the_new_derived_key_opens_it(tmp_path, canary):
    old, new = generate_secret(), generate_secret()
    path = tmp_path / "alice" / "keyvault" / "vault.db"
    old_key = encode_master_key(derive_user_key(parse_hub_secret(old), "alice"))
    new_key = encode_master_key(derive_user_key(parse_hub_secret(new), "alice"))
    vault = Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": old_key})
    vault.set("alice", "OPENAI_API_KEY", canary)
    vault.close()

    done = run_peruser("rekey", str(path), "alice", env={"KEYVAULT_HUB_SECRET": old, "KEYVAULT_HUB_SECRET_NEW": new})

    assert done.returncode == 0, done.stderr
    assert "1 data key(s) re-wrapped" in done.stdout
    for stream in (done.stdout, done.stderr):
        assert old not in stream and new not in stream and canary not in stream and new_key not in stream
    vault = Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": new_key})
    try:
        assert vault.get_value("alice", "OPENAI_API_KEY") == canary
    finally:
        vault.close()
    backend = SQLiteBackend(path)
    try:
        with pytest.raises(WrongMasterKey):
            Vault(backend, env={"KEYVAULT_MASTER_KEY": old_key})
    finally:
        backend.close()


def test_renaming_a_user_rekeys_their_vault_and_a_wrong_secret_changes_nothing(tmp_path, canary):
    secret = generate_secret()
    path = tmp_path / "alice" / "keyvault" / "vault.db"
    key = {u: encode_master_key(derive_user_key(parse_hub_secret(secret), u)) for u in ("alice", "alice2")}
    vault = Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": key["alice"]})
    vault.set("alice", "OPENAI_API_KEY", canary)
    vault.close()
    before = path.read_bytes()

    wrong = run_peruser("rekey", str(path), "alice", "alice2", env={"KEYVAULT_HUB_SECRET": generate_secret()})
    assert wrong.returncode == 1 and "sealed with a different master key" in wrong.stderr
    assert wrong.stderr.count("\n") == 1  # one clear line
    assert path.read_bytes() == before
    nothing = run_peruser("rekey", str(path), "alice", env={"KEYVAULT_HUB_SECRET": secret})
    assert nothing.returncode == 2 and "nothing to do" in nothing.stderr

    done = run_peruser("rekey", str(path), "alice", "alice2", env={"KEYVAULT_HUB_SECRET": secret})
    assert done.returncode == 0, done.stderr
    vault = Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": key["alice2"]})
    try:
        assert vault.get_value("alice2", "OPENAI_API_KEY") == canary  # moved to the new owner name
        assert vault.list("alice", include_env=False) == []
    finally:
        vault.close()


# -- the hub's own process: no secret left in its environment block
HUB_CONFIG_RUN = """
import json, os, sys
from traitlets.config import Config
from jupyter_keyvault.peruser import configure_per_user_keys
c = Config()
c.Spawner.environment = {}
configure_per_user_keys(c)
key = c.Spawner.environment["KEYVAULT_MASTER_KEY"](type("S", (), {"user": type("U", (), {"name": "alice"})()})())
block = open("/proc/self/environ", "rb").read()
print(json.dumps({"in_os_environ": "KEYVAULT_HUB_SECRET" in os.environ, "alice_key": key}))
sys.stdout.flush()
open(sys.argv[1], "wb").write(block)
"""


def run_hub_config(tmp_path, env: dict[str, str]) -> tuple[dict, bytes]:
    dump = tmp_path / "environ.bin"
    proc = subprocess.run([sys.executable, "-c", HUB_CONFIG_RUN, str(dump)], capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}, **env},
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), dump.read_bytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/<pid>/environ is Linux's")
def test_given_the_hub_secret_in_the_hubs_environment_when_configured_then_its_proc_environ_no_longer_holds_it(
        tmp_path):
    """The red team read KEYVAULT_HUB_SECRET from /proc/<hub pid>/environ after os.environ.pop: the
    helper now overwrites the value in the environment block itself."""
    pytest.importorskip("jupyterhub")
    secret = generate_secret()
    result, block = run_hub_config(tmp_path, {"KEYVAULT_HUB_SECRET": secret})
    assert result["in_os_environ"] is False
    assert result["alice_key"] == encode_master_key(derive_user_key(parse_hub_secret(secret), "alice"))
    assert secret.encode() not in block
    # Control: the same process without the helper keeps it there (so the check above can fail).
    control = subprocess.run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(open('/proc/self/environ', "
                              "'rb').read())"], capture_output=True, env={"KEYVAULT_HUB_SECRET": secret}, timeout=30)
    assert secret.encode() in control.stdout


def test_given_the_hub_secret_in_a_private_file_when_configured_then_it_is_used_and_never_in_an_environment(tmp_path):
    pytest.importorskip("jupyterhub")
    secret = generate_secret()
    path = tmp_path / "hub-secret"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    result, block = run_hub_config(tmp_path, {"KEYVAULT_HUB_SECRET_FILE": str(path)})
    assert result["alice_key"] == encode_master_key(derive_user_key(parse_hub_secret(secret), "alice"))
    assert secret.encode() not in block


@pytest.mark.parametrize(("mode", "content", "message"), [
    (0o644, "x" * 64, "readable by other users: chmod 600"),
    (0o600, "\n", "is empty"),
])
def test_given_a_bad_secret_file_when_configured_then_the_hub_refuses_to_start_with_one_clear_line(
        tmp_path, mode, content, message):
    pytest.importorskip("jupyterhub")
    path = tmp_path / "hub-secret"
    path.write_text(content)
    path.chmod(mode)
    dump = tmp_path / "environ.bin"
    proc = subprocess.run([sys.executable, "-c", HUB_CONFIG_RUN, str(dump)], capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")},
                               "KEYVAULT_HUB_SECRET_FILE": str(path)}, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
