"""Unit tests of the kernel helper (`import keyvault`): auth, clients, Secret, env, local mode.

The server is replaced by an httpx2.MockTransport that records every request the kernel
sends, so the wire protocol is checked byte for byte; end-to-end tests with a real server
and kernel live elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import os
import pickle
import re
import secrets
import socket
import subprocess
import sys

import httpx2
import pytest

import keyvault
from jupyter_keyvault.kernel import clients, mode
from jupyter_keyvault.kernel import identity as identity_mod
from jupyter_keyvault.kernel.auth import KernelAuth
from jupyter_keyvault.kernel.identity import KernelIdentity, authorization_header, detect_identity, join_url
from jupyter_keyvault.kernel.magics import keyvault_magic
from jupyter_keyvault.kernel.remote import RemoteBackend
from jupyter_keyvault.scrub import default_scrubber
from keyvault import load_ipython_extension, unload_ipython_extension

SERVER = "http://127.0.0.1:8888/a%40b/"
KERNEL_ID = "2f3c5a6e-0000-4000-8000-0123456789ab"
CRED_RE = re.compile(r"^Bearer kvk1\.(?P<kid>[A-Za-z0-9_-]+)\.(?P<ts>\d+)\.(?P<nonce>[0-9a-f]{32})\.(?P<sig>[0-9a-f]{64})$")


@pytest.fixture
def session_key() -> bytes:
    return secrets.token_hex(32).encode()


@pytest.fixture
def kernel(session_key) -> KernelIdentity:
    return KernelIdentity(SERVER, KERNEL_ID, session_key)


def assert_valid_credential(header: str, key: bytes, kernel_id: str = KERNEL_ID) -> str:
    """Check a kvk1 header with our own HMAC; return its nonce."""
    m = CRED_RE.match(header)
    assert m, header
    assert m["kid"] == kernel_id
    import time

    assert abs(int(m["ts"]) - time.time()) < 60
    expected = hmac.new(key, f"kvk1|{kernel_id}|{m['ts']}|{m['nonce']}".encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, m["sig"])
    return m["nonce"]


class FakeServer:
    """Answers like the keyvault server's kernel endpoints and proxy; records every request."""

    def __init__(self, credentials=("OPENAI_API_KEY", "ANTHROPIC_API_KEY"), values=None):
        self.requests: list[httpx2.Request] = []
        self.credentials = list(credentials)
        self.values = dict(values or {})
        self.status_override: tuple[int, object] | None = None
        self.env_tokens: dict[str, str] = {}  # live kernel-bound tokens: id -> credential
        self.renewed: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.requests.append(request)
        if self.status_override:
            code, body = self.status_override
            return httpx2.Response(code, json=body) if not isinstance(body, str) else httpx2.Response(code, text=body)
        path = request.url.raw_path.decode()
        assert path.startswith("/a%40b/"), path
        path = path[len("/a%40b"):]
        if path == "/keyvault/kernel/credentials":
            return httpx2.Response(200, json={"credentials": [
                {"name": n, "provider": None, "type": "api_key", "present": True, "source": "vault"}
                for n in self.credentials]})
        if path.startswith("/keyvault/kernel/credentials/"):
            name = path.rsplit("/", 1)[1]
            if request.method == "GET":
                if name not in self.values:
                    return httpx2.Response(404, json={"message": f"No API key configured for {name}: add one"})
                return httpx2.Response(200, json={"name": name, "provider": "openai", "type": "api_key",
                                                  "value": self.values[name]})
            if request.method == "PUT":
                return httpx2.Response(201, json={"name": name, "provider": "openai", "created": True, "warnings": []})
        if path == "/keyvault/kernel/env-tokens" and request.method == "POST":
            name = json.loads(request.content)["name"]
            if name not in self.values:
                return httpx2.Response(404, json={"message": f"no credential named {name}"})
            token_id = secrets.token_hex(16)
            self.env_tokens[token_id] = name
            return httpx2.Response(201, json={"token": f"kvt1_{token_id}_{'0' * 64}", "id": token_id,
                                              "credential": name, "provider": "openai", "expires_in": 600})
        if path.startswith("/keyvault/kernel/env-tokens/"):
            token_id = path.rsplit("/", 1)[1]
            if token_id not in self.env_tokens:
                return httpx2.Response(404, json={"message": "no such kernel token"})
            if request.method == "DELETE":
                self.env_tokens.pop(token_id)
                return httpx2.Response(204)
            self.renewed.append(token_id)
            return httpx2.Response(200, json={"id": token_id, "expires_in": 600})
        if path == "/keyvault/kernel/status":
            return httpx2.Response(200, json={"mode": "server", "protection": {"source": "env", "strong": True},
                                              "allow_direct_access": True, "notebook_path": "a.ipynb"})
        if path.startswith("/keyvault/proxy/openai/v1/models") or path.startswith("/keyvault/proxy/groq/v1/models"):
            return httpx2.Response(200, json={"object": "list", "data": []})
        if path.startswith("/keyvault/proxy/anthropic/v1/models"):
            return httpx2.Response(200, json={"data": [], "has_more": False, "first_id": None, "last_id": None})
        return httpx2.Response(404, text="<html>not found</html>")

    def headers_text(self) -> str:
        return "\n".join(f"{k}: {v}" for r in self.requests for k, v in r.headers.items())

    def wire_text(self) -> str:
        return "\n".join(f"{r.method} {r.url} {dict(r.headers)} {r.content!r}" for r in self.requests)


@pytest.fixture
def server(kernel):
    fake = FakeServer()
    backend = RemoteBackend(kernel, transport=httpx2.MockTransport(fake))
    with mode.use_backend(backend):
        yield fake


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("KEYVAULT_SERVER_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_ADMIN_KEY",
                "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "GROQ_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


# -- the auth flow


def test_given_kernel_auth_when_two_requests_are_sent_then_each_has_a_fresh_valid_hmac(kernel, session_key):
    seen = []
    transport = httpx2.MockTransport(lambda r: (seen.append(r), httpx2.Response(200))[1])
    with httpx2.Client(auth=KernelAuth(kernel), transport=transport) as c:
        c.get("http://127.0.0.1/x", headers={"Authorization": "Bearer sk-placeholder", "x-api-key": "sk-ant-placeholder"})
        c.get("http://127.0.0.1/x")
    nonces = [assert_valid_credential(r.headers["Authorization"], session_key) for r in seen]
    assert nonces[0] != nonces[1]
    assert all("x-api-key" not in r.headers for r in seen)
    assert all(len(r.headers.get_list("authorization")) == 1 for r in seen)
    assert all("X-KeyVault-Credential" not in r.headers for r in seen)


def test_given_a_named_credential_when_signing_then_the_name_header_is_sent(kernel, session_key):
    seen = []
    transport = httpx2.MockTransport(lambda r: (seen.append(r), httpx2.Response(200))[1])
    with httpx2.Client(auth=KernelAuth(kernel, "WORK_OPENAI_KEY"), transport=transport) as c:
        c.get("http://127.0.0.1/x")
    assert seen[0].headers["X-KeyVault-Credential"] == "WORK_OPENAI_KEY"
    assert_valid_credential(seen[0].headers["Authorization"], session_key)


def test_given_an_async_client_when_signing_then_the_async_flow_also_signs_afresh(kernel, session_key):
    seen = []
    transport = httpx2.MockTransport(lambda r: (seen.append(r), httpx2.Response(200))[1])

    async def run():
        async with httpx2.AsyncClient(auth=KernelAuth(kernel), transport=transport) as c:
            await c.get("http://127.0.0.1/x", headers={"x-api-key": "placeholder"})
            await c.get("http://127.0.0.1/x", headers={"Authorization": "Bearer placeholder"})

    asyncio.run(run())
    nonces = {assert_valid_credential(r.headers["Authorization"], session_key) for r in seen}
    assert len(nonces) == 2 and all("x-api-key" not in r.headers for r in seen)


def test_given_the_plain_header_function_when_called_twice_then_credentials_differ(kernel, session_key):
    a, b = authorization_header(kernel, "MY_KEY"), authorization_header(kernel)
    assert assert_valid_credential(a["Authorization"], session_key) != assert_valid_credential(b["Authorization"], session_key)
    assert a["X-KeyVault-Credential"] == "MY_KEY" and "X-KeyVault-Credential" not in b


def test_given_the_servers_verifier_when_checking_our_credential_then_it_accepts_it_once(kernel, session_key):
    kernel_auth = pytest.importorskip("jupyter_keyvault.kernel_auth")
    verifier = kernel_auth.KernelAuthenticator(lambda kid: session_key if kid == KERNEL_ID else None)
    header = authorization_header(kernel)
    credential = verifier.credential_from_headers(header)
    assert verifier.verify(credential) == KERNEL_ID
    with pytest.raises(kernel_auth.KernelAuthError):
        verifier.verify(credential)  # a replay is refused


def test_given_an_identity_when_shown_or_pickled_then_the_session_key_stays_hidden(kernel, session_key):
    assert session_key.decode() not in repr(kernel)
    assert session_key.decode() not in repr(KernelAuth(kernel))
    with pytest.raises(TypeError):
        pickle.dumps(kernel)
    with pytest.raises(TypeError):
        pickle.dumps(KernelAuth(kernel))


# -- URLs and identity


def test_given_an_odd_base_url_when_joining_then_its_encoding_is_kept_and_names_are_one_segment():
    assert join_url(SERVER, "keyvault/proxy", "openai", "v1") == "http://127.0.0.1:8888/a%40b/keyvault/proxy/openai/v1"
    assert join_url(SERVER, "keyvault/proxy", "anthropic", "") == "http://127.0.0.1:8888/a%40b/keyvault/proxy/anthropic"
    assert join_url("http://h:1", "keyvault/kernel/credentials", "../x") == "http://h:1/keyvault/kernel/credentials/..%2Fx"
    with pytest.raises(ValueError):
        join_url("http://h:1", "keyvault/kernel/credentials", "..")
    assert KernelIdentity("http://h:1/base", "k1", b"k").server_url == "http://h:1/base/"


def test_given_no_server_url_when_detecting_then_local_mode_says_why(clean_env):
    found, reason = detect_identity({})
    assert found is None and "KEYVAULT_SERVER_URL is not set" in reason


def test_given_a_server_url_outside_a_kernel_when_detecting_then_local_mode_says_why(clean_env):
    clean_env.setattr(identity_mod, "_running_kernel_app", lambda: None)
    found, reason = detect_identity({"KEYVAULT_SERVER_URL": SERVER})
    assert found is None and "IPython kernel" in reason


def test_given_a_kernel_connection_file_when_detecting_then_id_and_key_come_from_the_kernel(clean_env, tmp_path):
    cf = tmp_path / f"kernel-{KERNEL_ID}.json"
    cf.write_text(json.dumps({"key": "from-the-file"}))

    class App:
        connection_file = str(cf)
        connection_dir = str(tmp_path)
        session = None

    clean_env.setattr(identity_mod, "_running_kernel_app", lambda: App())
    found, reason = detect_identity({"KEYVAULT_SERVER_URL": SERVER})
    assert reason == "" and found.kernel_id == KERNEL_ID and found.session_key == b"from-the-file"
    assert found.server_url == SERVER


# -- proxy-mode clients


def test_given_proxy_mode_when_building_openai_then_it_points_at_the_proxy_with_a_placeholder_key(
        server, kernel, session_key, clean_env, canary):
    clean_env.setenv("OPENAI_API_KEY", canary)  # even a stray key in the kernel's env must not leave
    clean_env.setenv("OPENAI_ADMIN_KEY", canary)
    client = keyvault.openai()
    assert str(client.base_url) == "http://127.0.0.1:8888/a%40b/keyvault/proxy/openai/v1/"
    assert client.api_key == clients.PLACEHOLDER_KEY and client.api_key != canary
    assert default_scrubber.scrub(client.api_key) == client.api_key  # not secret-shaped
    client.models.list()
    client.models.list()
    proxied = [r for r in server.requests if "/keyvault/proxy/" in r.url.raw_path.decode()]
    assert [r.url.raw_path.decode() for r in proxied] == ["/a%40b/keyvault/proxy/openai/v1/models"] * 2
    nonces = {assert_valid_credential(r.headers["Authorization"], session_key) for r in proxied}
    assert len(nonces) == 2
    assert canary not in server.wire_text() and clients.PLACEHOLDER_KEY not in server.headers_text()
    assert all("X-KeyVault-Credential" not in r.headers for r in proxied)


def test_given_a_chosen_name_when_building_then_every_proxied_request_names_it(server, kernel, clean_env):
    server.credentials.append("WORK_KEY")
    client = keyvault.openai("WORK_KEY")
    client.models.list()
    assert server.requests[-1].headers["X-KeyVault-Credential"] == "WORK_KEY"


def test_given_proxy_mode_when_building_anthropic_then_no_x_api_key_leaves(server, session_key, clean_env, canary):
    clean_env.setenv("ANTHROPIC_API_KEY", canary)
    client = keyvault.anthropic()
    assert str(client.base_url).rstrip("/") == "http://127.0.0.1:8888/a%40b/keyvault/proxy/anthropic"
    assert client.api_key == clients.PLACEHOLDER_KEY
    client.models.list()
    sent = server.requests[-1]
    assert sent.url.raw_path.decode() == "/a%40b/keyvault/proxy/anthropic/v1/models"
    assert "x-api-key" not in sent.headers
    assert_valid_credential(sent.headers["Authorization"], session_key)
    assert canary not in server.wire_text()


def test_given_proxy_mode_when_building_async_clients_then_they_are_signed_too(server, session_key, clean_env):
    import anthropic as anthropic_sdk
    import openai as openai_sdk

    async def run():
        oa = keyvault.async_openai()
        assert isinstance(oa, openai_sdk.AsyncOpenAI)
        await oa.models.list()
        an = keyvault.async_anthropic()
        assert isinstance(an, anthropic_sdk.AsyncAnthropic)
        await an.models.list()

    asyncio.run(run())
    proxied = [r for r in server.requests if "/keyvault/proxy/" in r.url.raw_path.decode()]
    assert len(proxied) == 2
    for r in proxied:
        assert_valid_credential(r.headers["Authorization"], session_key)
        assert "x-api-key" not in r.headers


def test_given_any_openai_compatible_provider_when_using_client_then_it_goes_through_its_proxy_path(server, clean_env):
    import openai as openai_sdk

    server.credentials.append("GROQ_API_KEY")
    c = keyvault.client("groq")
    assert isinstance(c, openai_sdk.OpenAI)
    assert str(c.base_url) == "http://127.0.0.1:8888/a%40b/keyvault/proxy/groq/v1/"
    c.models.list()
    assert server.requests[-1].url.raw_path.decode() == "/a%40b/keyvault/proxy/groq/v1/models"


def test_given_an_unknown_provider_when_building_then_the_error_lists_known_ones(server):
    with pytest.raises(keyvault.UnknownProvider) as err:
        keyvault.client("nope")
    assert "openai" in str(err.value) and "anthropic" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_given_a_missing_credential_when_building_a_proxy_client_then_the_error_is_clear(server, clean_env):
    server.credentials = []
    with pytest.raises(keyvault.NoCredentialError, match="No API key configured for OPENAI_API_KEY"):
        keyvault.openai()


def test_given_proxy_mode_when_passing_a_key_or_base_url_then_it_is_refused(server):
    with pytest.raises(TypeError, match="api_key"):
        keyvault.openai(api_key="sk-whatever")
    with pytest.raises(ValueError, match="proxy mode"):
        keyvault.openai(base_url="https://example.com/v1")


@pytest.mark.parametrize("bad", ["proxi", "", None, "local"])
def test_given_an_unknown_mode_when_building_then_value_error(bad):
    with pytest.raises(ValueError, match="mode must be 'proxy' or 'direct'"):
        keyvault.openai(mode=bad)
    with pytest.raises(ValueError, match="mode must be 'proxy' or 'direct'"):
        keyvault.client("anthropic", mode=bad)


# -- direct mode via the server


def test_given_direct_mode_when_building_then_the_value_is_fetched_and_learnt_by_the_scrubber(server, clean_env, canary):
    server.values["OPENAI_API_KEY"] = canary
    c = keyvault.openai(mode="direct")
    assert c.api_key == canary
    assert str(c.base_url) == "https://api.openai.com/v1/"
    assert default_scrubber.scrub(f"key={canary}") == "key=[REDACTED:OPENAI_API_KEY]"
    assert server.requests[-1].url.raw_path.decode() == "/a%40b/keyvault/kernel/credentials/OPENAI_API_KEY"
    secret = keyvault.get("OPENAI_API_KEY")
    assert secret.reveal() == canary and canary not in repr(secret)


def test_given_direct_mode_with_a_base_url_when_building_then_the_callers_url_wins(server, clean_env, canary):
    server.values["OPENAI_API_KEY"] = canary
    c = keyvault.openai(mode="direct", base_url="https://gateway.example/v1")
    assert str(c.base_url) == "https://gateway.example/v1/"


@pytest.mark.parametrize(("code", "body", "error"), [
    (401, {"message": "kernel not recognised by this server"}, keyvault.KernelNotRecognised),
    (403, {"message": "direct access is disabled on this server"}, keyvault.DirectAccessDisabled),
    (403, {"message": "access to X is not allowed from this notebook (a.ipynb)"}, keyvault.AccessDenied),
    (404, {"message": "No API key configured for OPENAI_API_KEY: add one"}, keyvault.NoCredentialError),
    (404, "<html>no such page</html>", keyvault.KeyVaultError),
    (422, {"message": "credential name must be usable"}, keyvault.InvalidRequest),
    (500, {"message": "boom"}, keyvault.KeyVaultError),
])
def test_given_an_error_answer_when_fetching_then_a_clear_exception_is_raised(server, code, body, error):
    server.status_override = (code, body)
    with pytest.raises(error) as err:
        keyvault.get("OPENAI_API_KEY")
    assert err.value.status == code
    if isinstance(body, dict):
        assert body["message"] in str(err.value)
    if code == 403 and "notebook" in body["message"]:
        assert not isinstance(err.value, keyvault.DirectAccessDisabled)


def test_given_no_server_listening_when_calling_then_server_unreachable_names_the_url(session_key):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a%40b/"
    with mode.use_backend(RemoteBackend(KernelIdentity(url, KERNEL_ID, session_key))):
        with pytest.raises(keyvault.ServerUnreachable) as err:
            keyvault.list()
        assert url in str(err.value)
        st = keyvault.status()
    assert st["mode"] == "server" and st["ok"] is False and st["reachable"] is False and url in st["error"]


def test_given_server_mode_when_asking_status_then_the_mode_is_explicit(server):
    st = keyvault.status()
    assert st["mode"] == "server" and st["ok"] is True and st["kernel_id"] == KERNEL_ID
    assert st["server_url"] == SERVER and st["allow_direct_access"] is True


def test_given_server_mode_when_setting_then_the_value_goes_only_in_the_put_body(server, clean_env, canary, capsys):
    clean_env.setattr("getpass.getpass", lambda prompt="": canary)
    keyvault_magic("set OPENAI_API_KEY --provider openai")
    put = server.requests[-1]
    assert put.method == "PUT" and put.url.raw_path.decode().endswith("/keyvault/kernel/credentials/OPENAI_API_KEY")
    assert json.loads(put.content) == {"value": canary, "provider": "openai"}
    assert canary not in put.url.raw_path.decode() and canary not in "".join(put.headers.values())
    out = capsys.readouterr()
    assert canary not in out.out + out.err and "Stored OPENAI_API_KEY" in out.out
    assert default_scrubber.scrub(canary) != canary


# -- Secret


def test_given_a_secret_when_shown_in_any_way_then_only_the_name_appears(canary):
    s = keyvault.Secret("OPENAI_API_KEY", canary)
    assert repr(s) == "Secret('OPENAI_API_KEY', '********')"
    for text in (repr(s), str(s), f"{s}", f"{s!r}", f"{s:>60}", "%s" % (s,), f"{s}", repr([s]), repr({"k": s})):  # noqa: UP031 - %-formatting is what is tested
        assert canary not in text
    assert s.reveal() == canary and s.name == "OPENAI_API_KEY"
    with pytest.raises(TypeError):
        json.dumps({"key": s})
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert copy.deepcopy(s) is s
    with pytest.raises(AttributeError):
        s._value = "other"


# -- env()


def test_given_direct_env_when_the_block_ends_then_the_environment_is_restored(server, clean_env, canary):
    other = "sk-proj-OTHER" + secrets.token_hex(20)
    server.values.update(OPENAI_API_KEY=canary, HF_TOKEN=other)
    clean_env.setenv("HF_TOKEN", "previous")
    with keyvault.env("OPENAI_API_KEY", "HF_TOKEN", mode="direct") as exported:
        assert os.environ["OPENAI_API_KEY"] == canary and os.environ["HF_TOKEN"] == other
        assert canary not in repr(exported)
    assert "OPENAI_API_KEY" not in os.environ and os.environ["HF_TOKEN"] == "previous"
    with pytest.raises(RuntimeError):
        with keyvault.env("OPENAI_API_KEY", mode="direct"):
            raise RuntimeError("inside")
    assert "OPENAI_API_KEY" not in os.environ


def test_given_proxy_env_when_entered_then_a_kernel_token_and_the_proxy_url_are_exported_and_revoked_on_exit(
        server, clean_env, canary):
    server.values.update(OPENAI_API_KEY=canary, DB_PASSWORD="pw-" + secrets.token_hex(8))
    clean_env.setenv("OPENAI_BASE_URL", "https://gateway.example/v1")
    with keyvault.env("OPENAI_API_KEY", "DB_PASSWORD"):
        token = os.environ["OPENAI_API_KEY"]
        assert token.startswith("kvt1_") and canary not in token
        assert os.environ["OPENAI_BASE_URL"] == SERVER + "keyvault/proxy/openai/v1"
        assert os.environ["DB_PASSWORD"] == server.values["DB_PASSWORD"]  # no provider: no proxy, the value
        assert list(server.env_tokens.values()) == ["OPENAI_API_KEY"]
        from jupyter_keyvault.kernel import envexport

        assert envexport._RENEWER.renew_now() == 1 and server.renewed == list(server.env_tokens)
    assert server.env_tokens == {}  # revoked
    assert os.environ["OPENAI_BASE_URL"] == "https://gateway.example/v1" and "OPENAI_API_KEY" not in os.environ
    assert "DB_PASSWORD" not in os.environ
    # Never a GET of the provider credential's value in proxy mode.
    assert not [r for r in server.requests if r.method == "GET" and r.url.path.endswith("/credentials/OPENAI_API_KEY")]


def test_given_the_env_magic_when_turned_on_and_off_then_the_export_lives_between(server, clean_env, canary, capsys):
    from jupyter_keyvault.kernel.magics import keyvault_magic

    server.values["OPENAI_API_KEY"] = canary
    keyvault_magic("env OPENAI_API_KEY")
    assert os.environ["OPENAI_API_KEY"].startswith("kvt1_") and len(server.env_tokens) == 1
    assert "kernel-bound" in capsys.readouterr().out
    keyvault_magic("env --off")
    assert "OPENAI_API_KEY" not in os.environ and server.env_tokens == {}
    keyvault_magic("env --bogus X")
    assert "unknown option" in capsys.readouterr().err


def test_given_env_with_a_missing_name_when_entering_then_nothing_is_exported(server, clean_env, canary):
    server.values["OPENAI_API_KEY"] = canary
    with pytest.raises(keyvault.NoCredentialError):
        with keyvault.env("OPENAI_API_KEY", "MISSING_KEY", mode="direct"):
            pass  # pragma: no cover
    assert "OPENAI_API_KEY" not in os.environ and "MISSING_KEY" not in os.environ
    with pytest.raises(keyvault.KeyVaultError):
        with keyvault.env("OPENAI_API_KEY", "MISSING_KEY"):
            pass  # pragma: no cover
    assert server.env_tokens == {}  # the one issued before the failure was revoked
    assert "OPENAI_API_KEY" not in os.environ and "MISSING_KEY" not in os.environ
    with pytest.raises(TypeError):
        with keyvault.env():
            pass  # pragma: no cover


# -- local mode (no server), against a real vault


@pytest.fixture
def local(clean_env, tmp_path):
    clean_env.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    clean_env.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    clean_env.setenv("KEYVAULT_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    mode.reset()
    yield mode.current_backend()
    mode.reset()


def _store(name, value, provider="openai"):
    from jupyter_keyvault.settings import KeyVault

    settings = KeyVault()
    vault = settings.open_vault()
    try:
        vault.set(settings.owner, name, value, provider=provider)
    finally:
        vault.close()


def test_given_no_server_when_asking_status_then_local_mode_is_explicit(local, tmp_path):
    st = keyvault.status()
    assert st["mode"] == "local" and "KEYVAULT_SERVER_URL" in st["reason"]
    assert st["vault_path"].startswith(str(tmp_path))


def test_given_a_configured_vault_path_when_in_local_mode_then_the_kernel_uses_it_like_the_cli(local, tmp_path, canary):
    configured = tmp_path / "elsewhere" / "my.db"
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"KeyVault": {"vault_path": str(configured)}}))
    mode.reset()
    assert keyvault.status()["vault_path"] == str(configured)
    mode.current_backend().put("OPENAI_API_KEY", canary, "openai")
    assert configured.exists() and keyvault.get("OPENAI_API_KEY").reveal() == canary


def test_given_a_local_vault_when_getting_then_the_value_is_a_secret(local, canary):
    _store("OPENAI_API_KEY", canary)
    s = keyvault.get("OPENAI_API_KEY")
    assert s.reveal() == canary and canary not in repr(s)
    assert default_scrubber.scrub(canary) == "[REDACTED:OPENAI_API_KEY]"
    names = {i["name"]: i for i in keyvault.list()}
    assert names["OPENAI_API_KEY"]["provider"] == "openai" and names["OPENAI_API_KEY"]["present"] is True
    assert canary not in json.dumps(keyvault.list()) and canary not in json.dumps(keyvault.status())


def test_given_a_local_vault_when_building_openai_then_a_direct_client_with_the_real_url(local, canary):
    _store("OPENAI_API_KEY", canary)
    c = keyvault.openai()  # proxy is the default, but there is no server: direct
    assert c.api_key == canary and str(c.base_url) == "https://api.openai.com/v1/"
    a_key = "sk-ant-api03-" + secrets.token_hex(30)
    _store("ANTHROPIC_API_KEY", a_key, provider="anthropic")
    a = keyvault.anthropic()
    assert a.api_key == a_key and str(a.base_url).rstrip("/") == "https://api.anthropic.com"


def test_given_a_local_base_url_env_when_building_then_it_is_honoured(local, canary, clean_env):
    _store("OPENAI_API_KEY", canary)
    clean_env.setenv("OPENAI_BASE_URL", "https://gateway.example/v1")
    assert str(keyvault.openai().base_url) == "https://gateway.example/v1/"
    clean_env.setenv("OPENAI_BASE_URL", "http://gateway.example/v1")  # plain http off loopback: refused
    with pytest.raises(keyvault.InvalidRequest, match="plain http"):
        keyvault.openai()


def test_given_an_env_var_and_a_stored_value_when_resolving_locally_then_the_env_var_wins(local, canary, clean_env):
    _store("OPENAI_API_KEY", canary)
    env_value = "sk-proj-ENV" + secrets.token_hex(20)
    clean_env.setenv("OPENAI_API_KEY", env_value)
    assert keyvault.get("OPENAI_API_KEY").reveal() == env_value
    assert {i["name"]: i["source"] for i in keyvault.list()}["OPENAI_API_KEY"] == "env"


def test_given_nothing_configured_when_building_locally_then_the_error_says_how_to_add(local):
    with pytest.raises(keyvault.NoCredentialError, match=r"^No API key configured for OPENAI_API_KEY: "):
        keyvault.openai()
    with pytest.raises(keyvault.NoCredentialError, match="No API key configured for ANTHROPIC_API_KEY"):
        keyvault.anthropic()
    _store("SOMETHING_ELSE", "x" * 20, provider=None)
    with pytest.raises(keyvault.NoCredentialError, match="No API key configured for OPENAI_API_KEY"):
        keyvault.get("OPENAI_API_KEY")


def test_given_a_local_vault_when_using_env_then_values_are_exported_and_removed(local, canary):
    _store("OPENAI_API_KEY", canary)
    with keyvault.env("OPENAI_API_KEY"):
        assert os.environ["OPENAI_API_KEY"] == canary
    assert "OPENAI_API_KEY" not in os.environ


def test_given_local_mode_when_using_the_magic_then_set_list_delete_work_without_echo(local, canary, capsys,
                                                                                       clean_env):
    clean_env.setattr("getpass.getpass", lambda prompt="": canary + "\n")
    keyvault_magic("set OPENAI_API_KEY")
    assert keyvault.get("OPENAI_API_KEY").reveal() == canary
    keyvault_magic("list")
    keyvault_magic("status")
    keyvault_magic("delete OPENAI_API_KEY")
    keyvault_magic("set")
    keyvault_magic("set OPENAI_API_KEY sk-on-the-line")
    keyvault_magic("frobnicate")
    out = capsys.readouterr()
    assert canary not in out.out + out.err
    assert "OPENAI_API_KEY" in out.out and "mode: local" in out.out and "Deleted OPENAI_API_KEY" in out.out
    assert "never given on the line" in out.err and "unknown command" in out.err
    with pytest.raises(keyvault.NoCredentialError):
        keyvault.get("OPENAI_API_KEY")


def test_given_an_ipython_shell_when_loading_the_extension_then_magic_and_namespace_work(local, canary, clean_env):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    clean_env.setattr("getpass.getpass", lambda prompt="": canary)
    ip.run_line_magic("load_ext", "keyvault")
    try:
        assert ip.user_ns["keyvault"] is keyvault
        assert "keyvault" in ip.magics_manager.magics["line"]
        ip.run_cell("%keyvault set OPENAI_API_KEY", store_history=True)
        ip.run_cell("k = keyvault.get('OPENAI_API_KEY')", store_history=True)
        assert ip.user_ns["k"].reveal() == canary
        history = "\n".join(src for _, _, src in ip.history_manager.get_range(output=False))
        assert "%keyvault set OPENAI_API_KEY" in history or "run_line_magic('keyvault'" in history
        assert canary not in history
    finally:
        unload_ipython_extension(ip)
    assert "keyvault" not in ip.magics_manager.magics["line"] and "keyvault" not in ip.user_ns


def test_given_a_fake_shell_when_loading_then_the_module_is_pushed():
    class Shell:
        def __init__(self):
            self.user_ns, self.registered = {}, {}

        def push(self, ns):
            self.user_ns.update(ns)

        def register_magic_function(self, fn, magic_kind, magic_name):
            self.registered[(magic_kind, magic_name)] = fn

    shell = Shell()
    load_ipython_extension(shell)
    assert shell.user_ns["keyvault"] is keyvault and ("line", "keyvault") in shell.registered


# -- layering


def test_given_a_fresh_interpreter_when_importing_keyvault_then_no_server_code_is_loaded(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KEYVAULT_SERVER_URL"}
    code = ("import sys, keyvault; keyvault.status(); "
            "bad = [m for m in ('tornado', 'jupyter_server', 'openai', 'anthropic') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=120)
