"""Per-user mode end to end with a REAL JupyterHub (dummy authenticator, local-process
spawner, configurable-http-proxy): the hub's jupyterhub_config.py calls
configure_per_user_keys(c); two users each store a personal key through their own server's
REST API and use it from a kernel with keyvault.openai() against the local fake upstream.
Neither can see the other's credentials, and no master key or hub secret reaches a kernel
or a terminal."""

from __future__ import annotations

import json
import secrets
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from test_store_durability import assert_absent_from_text

from jupyter_keyvault.hub.peruser import derive_user_key, generate_secret, parse_hub_secret
from jupyter_keyvault.store import SQLiteBackend, Vault, WrongMasterKey
from jupyter_keyvault.store.crypto import encode_master_key
from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT, FakeUpstream
from jupyter_keyvault.testing.hub import JupyterHubHarness, missing_requirements
from jupyter_keyvault.testing.terminal_client import run_in_terminal

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or "")

USERS = ("alice", "bob")
CHAT = (
    "import keyvault\n"
    "client = keyvault.openai()\n"
    "r = client.chat.completions.create(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}])\n"
    "print('REPLY', r.choices[0].message.content)\n"
)


@pytest.fixture(scope="module")
def world():
    """A hub in per-user mode, a fake upstream accepting each user's personal key."""
    keys = {u: f"sk-proj-{u.upper()}CANARY" + secrets.token_hex(16) for u in USERS}
    secret = generate_secret()
    upstream = FakeUpstream(valid_keys=tuple(keys.values())).start()
    hub = JupyterHubHarness(
        hub_env={"KEYVAULT_HUB_SECRET": secret},
        load_roles=[{"name": "proxy-reader", "scopes": ["proxy"], "services": ["test-admin"]}],  # to find bob's port
        extra_config="""
            from jupyter_keyvault.peruser import configure_per_user_keys
            configure_per_user_keys(c)
        """,
        singleuser_config=f"c.KeyVault.provider_base_urls = {{'openai': {upstream.openai_base_url!r}}}",
    )
    try:
        hub.start()
        for user in USERS:
            hub.create_user(user)
            hub.start_server(user)
        raw = parse_hub_secret(secret)
        master = {u: encode_master_key(derive_user_key(raw, u)) for u in USERS}
        yield {"hub": hub, "keys": keys, "secret": secret, "master": master, "upstream": upstream}
    finally:
        hub.stop()
        upstream.stop()


def vault_file(hub, user: str):
    return hub.user_dir(user) / ".local" / "share" / "jupyter" / "keyvault" / "vault.db"


def forbidden_values(world) -> dict[str, str]:
    return {"hub secret": world["secret"], **{f"{u}'s master key": k for u, k in world["master"].items()}}


@pytest.fixture(scope="module")
def stored(world):
    """Each user stores their personal key through their own server; bob also stores a private extra."""
    hub, responses = world["hub"], []
    for user in USERS:
        resp = hub.user_api(user, "PUT", "keyvault/api/credentials/OPENAI_API_KEY",
                            {"value": world["keys"][user], "provider": "openai"})
        assert resp.status in (200, 201), resp.text
        responses.append(resp.text)
    resp = hub.user_api("bob", "PUT", "keyvault/api/credentials/BOB_ONLY_KEY", {"value": world["keys"]["bob"] + "x"})
    assert resp.status == 201, resp.text
    responses.append(resp.text)
    return responses


def test_each_users_server_stores_the_key_in_its_own_home_sealed_with_that_users_derived_key(world, stored):
    hub = world["hub"]
    for text in stored:
        for user in USERS:
            assert world["keys"][user] not in text  # no value in any response
    for user in USERS:
        path = vault_file(hub, user)
        assert path.is_file(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert not (path.parent / "master.key").exists()  # keyed by the env key, no key file
        status = hub.user_api(user, "GET", "keyvault/api/status").json()
        assert status["protection"]["source"] == "env" and status["protection"]["strong"] is True
        vault = Vault(SQLiteBackend(path), env={"KEYVAULT_MASTER_KEY": world["master"][user]})
        try:
            assert vault.get_value(user, "OPENAI_API_KEY", touch=False) == world["keys"][user]
        finally:
            vault.close()


def test_one_users_derived_key_cannot_open_the_other_users_vault_file(world, stored):
    for owner, intruder in (("alice", "bob"), ("bob", "alice")):
        backend = SQLiteBackend(vault_file(world["hub"], owner))
        try:
            with pytest.raises(WrongMasterKey, match="sealed with a different master key"):
                Vault(backend, env={"KEYVAULT_MASTER_KEY": world["master"][intruder]})
        finally:
            backend.close()


async def test_each_user_uses_their_own_key_from_a_kernel_and_never_the_other_ones(world, stored):
    hub, upstream = world["hub"], world["upstream"]
    for user in USERS:
        before = len(upstream.received_keys())
        kernel = await hub.start_kernel(user, path=f"chat-{user}.ipynb")
        try:
            result = await kernel.execute(CHAT + "print('LIST', sorted(c['name'] for c in keyvault.list()))")
            assert result.error is None, result.text
            assert f"REPLY {REPLY_TEXT}" in result.stdout
            for other in USERS:
                assert world["keys"][other] not in result.text
            if user == "alice":
                assert "BOB_ONLY_KEY" not in result.stdout
                refused = await kernel.execute("import keyvault\nkeyvault.openai(name='BOB_ONLY_KEY')")
                assert refused.error is not None and "BOB_ONLY_KEY" in refused.text
                assert world["keys"]["bob"] not in refused.text
                # Alice's kernel replays its own proxy credential straight at bob's server (not via the hub).
                routes = hub.api("GET", "proxy", expect=200).json()
                bob_server = routes["/user/bob/"]["target"].rstrip("/") + "/user/bob/keyvault/proxy/openai/v1"
                replay = await kernel.execute(
                    "import openai\n"
                    f"stolen = openai.OpenAI(base_url={bob_server!r}, api_key=client.api_key, max_retries=0)\n"
                    "try:\n"
                    "    stolen.chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'x'}])\n"
                    "    print('REPLAY ACCEPTED')\n"
                    "except openai.APIStatusError as exc:\n"
                    "    print('REPLAY REFUSED', exc.status_code)\n"
                )
                assert "REPLAY REFUSED 401" in replay.stdout, replay.text
            else:
                assert "BOB_ONLY_KEY" in result.stdout
        finally:
            await kernel.stop()
        assert upstream.received_keys()[before:] == [world["keys"][user]]


def test_alice_cannot_reach_bobs_credentials_through_any_rest_route(world, stored):
    hub = world["hub"]
    alice_token = hub.user_token("alice")
    mine = hub.user_api("alice", "GET", "keyvault/api/credentials").json()
    assert [c["name"] for c in mine["credentials"]] == ["OPENAI_API_KEY"]
    for method, path, body in (
        ("GET", "keyvault/api/credentials", None),
        ("GET", "keyvault/api/audit", None),
        ("GET", "keyvault/api/status", None),
        ("PUT", "keyvault/api/credentials/BOB_ONLY_KEY", {"value": "sk-overwrite-" + "z" * 20}),
        ("POST", "keyvault/api/credentials/BOB_ONLY_KEY/test", {}),
        ("DELETE", "keyvault/api/credentials/BOB_ONLY_KEY", None),
        ("POST", "keyvault/proxy/openai/v1/chat/completions", {"model": "m", "messages": []}),
    ):
        resp = hub.user_api("bob", method, path, body, token=alice_token)
        assert resp.status in (302, 401, 403, 404), (method, path, resp.status, resp.text[:200])
        assert "BOB_ONLY_KEY" not in resp.text and world["keys"]["bob"] not in resp.text
    bobs = hub.user_api("bob", "GET", "keyvault/api/credentials").json()
    assert sorted(c["name"] for c in bobs["credentials"]) == ["BOB_ONLY_KEY", "OPENAI_API_KEY"]


async def test_no_master_key_or_hub_secret_reaches_a_users_kernel_or_terminal(world, stored):
    hub = world["hub"]
    for user in USERS:
        # In a subfolder: isolated kernels cannot create entries directly in a home that holds protected dirs.
        (hub.user_dir(user) / "out").mkdir(exist_ok=True)
        kernel_dump = hub.user_dir(user) / "out" / "kernel-env.json"
        kernel = await hub.start_kernel(user, path=f"env-{user}.ipynb")
        try:
            result = await kernel.execute(textwrap.dedent(f"""
                import json, os, pathlib
                try:
                    proc = pathlib.Path(f"/proc/{{os.getppid()}}/environ").read_bytes().decode("utf-8", "replace")
                except PermissionError:  # an isolated kernel may not read its server at all
                    proc = "DENIED"
                pathlib.Path({str(kernel_dump)!r}).write_text(json.dumps({{"env": dict(os.environ), "proc": proc}}))
                print("JUPYTERHUB_USER" in os.environ, "JUPYTERHUB_USER=" in proc or proc == "DENIED")
            """))
            assert result.stdout.strip() == "True True", result.text
        finally:
            await kernel.stop()
        term_dump = hub.user_dir(user) / "terminal-env.txt"
        out = await run_in_terminal(
            hub.user_url(user), hub.user_token(user),
            f"env > {term_dump}; tr '\\0' '\\n' < /proc/$PPID/environ >> {term_dump}; echo user-$JUPYTERHUB_USER; "
            f"{Path(sys.executable).parent / 'jupyter-keyvault'} list",
        )
        assert f"user-{user}" in out
        # The CLI in a terminal has no key: it refuses to open the vault instead of making a new one.
        assert "sealed with a master key from KEYVAULT_MASTER_KEY, which is not set" in out
        kernel_data = json.loads(kernel_dump.read_text())
        for name in ("KEYVAULT_MASTER_KEY", "KEYVAULT_HUB_SECRET"):
            assert name not in kernel_data["env"]
            assert f"\n{name}=" not in "\n" + term_dump.read_text().split("JUPYTERHUB_USER=")[0]
        for what, value in forbidden_values(world).items():
            assert_absent_from_text(value, kernel_dump.read_text(), f"{user}'s kernel env ({what})")
            assert_absent_from_text(value, term_dump.read_text() + out, f"{user}'s terminal env ({what})")


def test_no_personal_key_master_key_or_hub_secret_is_in_the_hub_and_user_server_logs(world, stored):
    log = world["hub"].user_log("alice")
    assert "keyvault" in log.lower()  # the extension ran and logged in the servers
    for user in USERS:
        assert_absent_from_text(world["keys"][user], log, "hub and user-server logs")
    for what, value in forbidden_values(world).items():
        assert_absent_from_text(value, log, f"hub and user-server logs ({what})")


def test_given_the_running_hub_then_its_proc_environ_no_longer_holds_the_hub_secret(world):
    """configure_per_user_keys ran in the real hub's jupyterhub_config.py: the secret it read is gone
    from the environment block any process of the hub's uid can read."""
    from pathlib import Path

    block = Path(f"/proc/{world['hub'].proc.pid}/environ").read_bytes()
    assert b"KEYVAULT_HUB_SECRET" in block  # the variable was there: the check below can fail
    assert world["secret"].encode() not in block
