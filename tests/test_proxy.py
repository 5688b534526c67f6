"""The streaming proxy and the kernel endpoints, over real HTTP against pytest-jupyter's in-process server.

Kernels are real (started by the server's own kernel manager); each request is signed with the
kernel's session key exactly as the kernel helper does. The upstream is the local FakeUpstream,
which records every request, so "nothing reached the upstream" is checked, not assumed.

The server runs on the test's event loop: only async clients are used here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import time
from dataclasses import dataclass

import httpx2
import openai
import pytest
from tornado.httpclient import AsyncHTTPClient

from jupyter_keyvault.kernel_auth import make_credential
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

OTHER_OPENAI_KEY = "sk-proj-" + "0THER" * 8
MESSAGES = [{"role": "user", "content": "hi"}]
PROXY = "keyvault/proxy/openai/v1"


# --------------------------------------------------------------------------- configuration


@pytest.fixture
def kv_settings() -> dict:
    """Extra c.KeyVault settings for one test (override with `keyvault_settings(...)`)."""
    return {}


def keyvault_settings(**settings):
    return pytest.mark.parametrize("kv_settings", [settings], ids=[",".join(settings)])


@pytest.fixture
def keyvault_config(keyvault_config, kv_settings):
    settings = dict(kv_settings)
    if settings.pop("openai_upstream_down", False):
        settings["provider_base_urls"] = {**keyvault_config["provider_base_urls"],
                                          "openai": f"http://127.0.0.1:{closed_port()}/v1"}
    return {**keyvault_config, **settings}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- kernels and clients


class KernelAuth(httpx2.Auth):
    """Signs every request with a fresh kernel credential, as the kernel helper does."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel

    def auth_flow(self, request):
        request.headers["Authorization"] = "Bearer " + self.kernel.credential()
        yield request


@dataclass
class Kernel:
    id: str
    key: bytes

    def credential(self, *, ts: int | None = None, key: bytes | None = None) -> str:
        return make_credential(self.id, self.key if key is None else key,
                               int(time.time()) if ts is None else ts, secrets.token_hex(16))

    def headers(self, **extra) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.credential(), **extra}


async def start_kernel(jp_serverapp) -> Kernel:
    km = jp_serverapp.kernel_manager
    kid = await km.start_kernel()
    return Kernel(kid, km.get_kernel(kid).session.key)


@pytest.fixture
def kernel(jp_serverapp, jp_asyncio_loop) -> Kernel:
    """A real kernel of the test server; every kernel of the test is killed at teardown."""
    yield jp_asyncio_loop.run_until_complete(start_kernel(jp_serverapp))
    # Graceful shutdown costs ~1 s per test; these kernels hold nothing worth saving.
    jp_asyncio_loop.run_until_complete(jp_serverapp.kernel_manager.shutdown_all(now=True))


@pytest.fixture
def server_url(http_server, jp_http_port, jp_base_url) -> str:
    """The test server's URL (requesting http_server makes it listen)."""
    return f"http://localhost:{jp_http_port}{jp_base_url}"


@pytest.fixture(params=["jupyter", "loopback"])
def proxy_url(request, server_url, loopback_url) -> str:
    """The proxy on both its fronts: the Jupyter server's URL and the loopback lane kernels are given."""
    return (server_url if request.param == "jupyter" else loopback_url) + PROXY


@pytest.fixture
def sdk(proxy_url):
    """openai.AsyncOpenAI for a kernel, pointed at the proxy (what keyvault.async_openai() builds)."""
    clients = []

    def make(kernel: Kernel, **kwargs) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=proxy_url, api_key="keyvault-proxy", max_retries=0,
                                    http_client=openai.DefaultAsyncHttpxClient(auth=KernelAuth(kernel)), **kwargs)
        clients.append(client)
        return client

    return make


@pytest.fixture
def raw_http(jp_asyncio_loop):
    """tornado's client: sends the URL path byte for byte (no `..` or `%2e` normalisation)."""
    client = AsyncHTTPClient(force_instance=True)
    yield client
    client.close()


@pytest.fixture
def store(jp_fetch):
    """Store a credential through the REST API (as the browser does)."""

    async def put(name: str, value: str, *, provider: str = "openai", metadata: dict | None = None):
        body = {"value": value, "provider": provider}
        if metadata is not None:
            body["metadata"] = metadata
        response = await jp_fetch("keyvault", "api", "credentials", name, method="PUT", body=json.dumps(body))
        assert response.code in (200, 201, 204), response.body

    return put


@pytest.fixture
def stored_key(store, jp_asyncio_loop):
    """VALID_OPENAI_KEY stored as OPENAI_API_KEY (the openai provider's default name)."""
    jp_asyncio_loop.run_until_complete(store("OPENAI_API_KEY", VALID_OPENAI_KEY))
    return VALID_OPENAI_KEY


def message_of(response) -> str:
    return response.json()["error"]["message"]


def kernel_api_message(response) -> str:
    return response.json()["message"]


# --------------------------------------------------------------------------- 1. kernel credentials


async def test_given_forged_expired_unknown_or_missing_kernel_credentials_when_calling_the_proxy_then_401_and_upstream_sees_nothing(
        jp_serverapp, stored_key, kernel, http, proxy_url, fake_upstream):
    other = await start_kernel(jp_serverapp)
    now = int(time.time())
    refused = {
        "forged HMAC": "Bearer " + kernel.credential(key=b"not-the-session-key" * 2),
        "unknown kernel": "Bearer " + make_credential("0" * 8 + "-0000-0000-0000-" + "0" * 12, kernel.key, now,
                                                      secrets.token_hex(16)),
        "ten minutes old": "Bearer " + kernel.credential(ts=now - 600),
        "from the future": "Bearer " + kernel.credential(ts=now + 600),
        "another kernel's key": "Bearer " + kernel.credential(key=other.key),
        "garbage kvk1": "Bearer kvk1.garbage",
        "garbage": "Bearer nonsense",
        "empty": "",
        "kvk1 under another scheme": "token " + kernel.credential(),
        "the upstream key itself": "Bearer " + VALID_OPENAI_KEY,
    }
    for label, authorization in refused.items():
        response = await http.get(proxy_url + "/models", headers={"Authorization": authorization})
        assert response.status_code == 401, label
        assert "kernel not recognised" in message_of(response), label
    response = await http.get(proxy_url + "/models")  # no Authorization header at all
    assert response.status_code == 401
    assert fake_upstream.requests == []

    # The other kernel's credential works for the other kernel: only the mix is refused.
    assert (await http.get(proxy_url + "/models", headers=other.headers())).status_code == 200
    assert len(fake_upstream.requests) == 1


async def test_given_a_kernel_credential_when_sent_twice_then_the_replay_is_401(
        stored_key, kernel, http, proxy_url, fake_upstream):
    headers = kernel.headers()

    first = await http.get(proxy_url + "/models", headers=headers)
    replay = await http.get(proxy_url + "/models", headers=headers)

    assert first.status_code == 200
    assert replay.status_code == 401
    assert len(fake_upstream.requests) == 1


async def test_given_a_kernel_credential_in_x_api_key_when_calling_the_proxy_then_it_is_accepted_once(
        stored_key, kernel, http, proxy_url, fake_upstream):
    headers = {"x-api-key": kernel.credential()}

    assert (await http.get(proxy_url + "/models", headers=headers)).status_code == 200
    assert (await http.get(proxy_url + "/models", headers=headers)).status_code == 401
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY]


async def test_given_the_jupyter_server_token_when_calling_the_proxy_or_kernel_endpoints_then_401_and_upstream_sees_nothing(
        stored_key, kernel, http, server_url, proxy_url, jp_auth_header, jp_serverapp, fake_upstream):
    server_token = jp_serverapp.identity_provider.token
    assert jp_auth_header == {"Authorization": f"token {server_token}"}
    as_the_server_user = [
        {"headers": jp_auth_header},
        {"headers": {"Authorization": f"Bearer {server_token}"}},
        {"params": {"token": server_token}},
    ]
    kernel_urls = [server_url + "keyvault/kernel/" + p
                   for p in ("status", "credentials", "credentials/OPENAI_API_KEY")]

    for kwargs in as_the_server_user:
        for url in (proxy_url + "/models", *kernel_urls):
            response = await http.get(url, **kwargs)
            assert response.status_code == 401, (url, kwargs)
            assert VALID_OPENAI_KEY not in response.text
        response = await http.post(server_url + "keyvault/kernel/credentials/OPENAI_API_KEY/test", **kwargs)
        assert response.status_code == 401, kwargs
        response = await http.put(server_url + "keyvault/kernel/credentials/OPENAI_API_KEY",
                                  json={"value": "sk-proj-" + "x" * 40}, **kwargs)
        assert response.status_code == 401, kwargs

    assert fake_upstream.requests == []
    # The same token still works where it belongs, and the stored key was not replaced.
    assert (await http.get(server_url + "keyvault/api/status", headers=jp_auth_header)).status_code == 200
    assert (await http.get(proxy_url + "/models", headers=kernel.headers())).status_code == 200
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY]


async def test_given_a_restarted_kernel_when_it_signs_with_its_session_key_then_the_proxy_still_serves_it(
        jp_serverapp, stored_key, kernel, sdk, fake_upstream):
    client = sdk(kernel)
    assert (await client.models.list()).data

    await jp_serverapp.kernel_manager.restart_kernel(kernel.id)

    assert (await client.models.list()).data
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY] * 2


# --------------------------------------------------------------------------- 2. injection and forwarding


async def test_given_browser_and_kernel_credentials_on_a_request_when_proxied_then_upstream_gets_only_the_real_key(
        stored_key, kernel, http, proxy_url, jp_serverapp, fake_upstream):
    server_token = jp_serverapp.identity_provider.token
    credential = kernel.credential()
    headers = {
        "Authorization": "Bearer " + credential,
        "Cookie": f"_xsrf=2|abc|def|123; username-localhost-8888=secret-cookie-{server_token}",
        "X-XSRFToken": "2|abc|def|123",
        "X-KeyVault-Credential": "OPENAI_API_KEY",
        "X-Custom-Header": "end-to-end",
        "OpenAI-Organization": "org-test",
        "User-Agent": "AsyncOpenAI/Python test",
    }

    response = await http.get(proxy_url + "/models",
                              params={"token": server_token, "_xsrf": "y", "limit": "5"}, headers=headers)

    assert response.status_code == 200
    [seen] = fake_upstream.requests
    assert seen.path == "/v1/models"
    assert seen.query == "limit=5"
    assert seen.headers["authorization"] == f"Bearer {VALID_OPENAI_KEY}"
    assert seen.api_keys == [VALID_OPENAI_KEY]
    for dropped in ("cookie", "x-xsrftoken", "x-keyvault-credential", "x-api-key"):
        assert dropped not in seen.headers
    assert seen.headers["x-custom-header"] == "end-to-end"  # end-to-end headers arrive (web/headers.py)
    assert seen.headers["openai-organization"] == "org-test"
    assert seen.headers["user-agent"] == "AsyncOpenAI/Python test"
    everything_sent = json.dumps(seen.headers) + seen.query + seen.path + seen.body.decode()
    for needle in (credential, "kvk1", server_token, "secret-cookie", "2|abc|def|123"):
        assert needle not in everything_sent


async def test_given_a_second_stored_key_when_selected_with_x_keyvault_credential_then_upstream_gets_that_key(
        store, stored_key, kernel, sdk, fake_upstream):
    await store("OTHER_KEY", OTHER_OPENAI_KEY)
    fake_upstream.valid_keys.add(OTHER_OPENAI_KEY)

    default_chat = await sdk(kernel).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    other = sdk(kernel, default_headers={"X-KeyVault-Credential": "OTHER_KEY"})
    other_chat = await other.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert default_chat.choices[0].message.content and other_chat.choices[0].message.content
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY, OTHER_OPENAI_KEY]
    assert "x-keyvault-credential" not in fake_upstream.requests[-1].headers


async def test_given_an_unknown_name_in_x_keyvault_credential_when_proxying_then_401_naming_it_and_no_upstream_call(
        stored_key, kernel, http, proxy_url, fake_upstream):
    response = await http.get(proxy_url + "/models", headers=kernel.headers(**{"X-KeyVault-Credential": "NOPE_KEY"}))

    assert response.status_code == 401
    assert "NOPE_KEY" in message_of(response)
    assert fake_upstream.requests == []


# --------------------------------------------------------------------------- 3. SSRF / open proxy


ESCAPING_PATHS = [
    "openai/v1/../../secret",
    "openai/v1/..",
    "openai/v1/models/../../../secret",
    "openai/v1/%2e%2e/%2e%2e/secret",
    "openai/v1/%2E%2E/secret",
    "openai/v1/.%2e/secret",
    "openai/v1/models%2F..%2F..%2Fsecret",
    "openai/v1/%2Fevil.example/x",
    "openai/v1//evil.example/",
    "openai/v1///evil.example/x",
    "openai/v1/@evil.example/x",
    "openai/v1/models@evil.example",
    "openai/v1/%5c%5cevil.example/x",
    "openai/v1/models%00",
    "openai/v1/./models",
    "openai/secret",
    "openai/v1..",
    "openai/v1evil/models",
    "openai/v2/models",
    "openai/",
    "openai",
    "anthropic/../openai/v1/models",
    "anthropic//evil.example/v1/models",
    "anthropic/v1/../../secret",
    "anthropic/@evil.example/v1/models",
    "evil/v1/models",
    "not_a_provider/v1/models",
    "OPENAI/v1/models",
]


async def test_given_paths_that_would_leave_the_provider_base_url_when_proxying_then_4xx_and_upstream_sees_nothing(
        store, stored_key, kernel, raw_http, server_url, jp_fetch, fake_upstream):
    await store("ANTHROPIC_API_KEY", "sk-ant-api03-" + "A" * 40, provider="anthropic")
    answers = {}
    for path in ESCAPING_PATHS:
        response = await raw_http.fetch(server_url + "keyvault/proxy/" + path, headers=kernel.headers(),
                                        raise_error=False, follow_redirects=False)
        answers[path] = response.code
        assert VALID_OPENAI_KEY.encode() not in response.body

    assert {p: c for p, c in answers.items() if not (400 <= c < 500 and c != 401)} == {}
    assert fake_upstream.requests == []
    # Refused before any key was decrypted: the audit records no use.
    audit = json.loads((await jp_fetch("keyvault", "api", "audit")).body)["events"]
    assert [e for e in audit if e["action"] == "use"] == []


async def test_given_a_raw_socket_request_with_an_absolute_uri_when_proxying_then_4xx_and_upstream_sees_nothing(
        stored_key, kernel, jp_http_port, jp_base_url, fake_upstream):
    """Request targets a client library would never send: absolute-form and backslashes."""
    targets = [
        f"http://evil.example{jp_base_url}{PROXY}/models",
        f"{jp_base_url}{PROXY}/..\\..\\secret",
        f"{jp_base_url}{PROXY}/models/../../../secret",
        f"{jp_base_url}{PROXY}/models/%2e%2e/%2e%2e/secret",
    ]
    for target in targets:
        reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
        request = (f"GET {target} HTTP/1.1\r\nHost: localhost:{jp_http_port}\r\n"
                   f"Authorization: Bearer {kernel.credential()}\r\nConnection: close\r\n\r\n")
        writer.write(request.encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        await writer.wait_closed()
        status = int(status_line.split()[1])
        assert 400 <= status < 500, (target, status_line)
    assert fake_upstream.requests == []


async def test_given_a_benign_path_when_proxying_then_only_the_configured_base_url_is_contacted(
        stored_key, kernel, raw_http, proxy_url, fake_upstream):
    response = await raw_http.fetch(proxy_url + "/models?limit=2", headers=kernel.headers(), raise_error=False)

    assert response.code == 200
    assert [(r.method, r.path, r.query) for r in fake_upstream.requests] == [("GET", "/v1/models", "limit=2")]


# --------------------------------------------------------------------------- 4. streaming


async def test_given_a_slow_streaming_upstream_when_streaming_through_the_proxy_then_chunks_arrive_as_sent(
        stored_key, kernel, sdk, fake_upstream):
    fake_upstream.chunk_interval, fake_upstream.n_chunks = 0.2, 5

    stream = await sdk(kernel).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    arrivals, pieces = [], []
    async for chunk in stream:
        arrivals.append(time.monotonic())
        pieces.append(chunk.choices[0].delta.content or "")

    assert len(arrivals) == 5
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert all(gap >= 0.12 for gap in gaps), gaps  # not buffered and released at once
    assert arrivals[-1] - arrivals[0] >= 0.7, gaps
    assert "".join(pieces) == "Hello from fake upstream"
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    # The SDK asked for JSON; the upstream's own content type still reaches it.
    assert fake_upstream.requests[-1].headers["accept"] == "application/json"


# --------------------------------------------------------------------------- 5. cancellation


async def test_given_a_long_stream_when_the_client_closes_after_the_first_chunk_then_the_upstream_request_is_cut(
        stored_key, kernel, sdk, fake_upstream):
    fake_upstream.chunk_interval, fake_upstream.n_chunks = 0.3, 30
    stream = await sdk(kernel).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    iterator = stream.__aiter__()
    first = await iterator.__anext__()
    assert first.choices[0].delta.role == "assistant"

    await stream.close()
    deadline = time.monotonic() + 2.5
    while fake_upstream.client_disconnects < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    assert fake_upstream.client_disconnects == 1
    # 30 chunks would take ~9 s; the upstream stopped long before that.
    assert len(fake_upstream.requests) == 1


# --------------------------------------------------------------------------- 6. errors


async def test_given_a_wrong_stored_key_when_the_upstream_echoes_it_in_a_401_then_the_sdk_error_and_body_are_redacted(
        store, canary, kernel, sdk, http, proxy_url, fake_upstream):
    await store("OPENAI_API_KEY", canary)

    with pytest.raises(openai.AuthenticationError) as raised:
        await sdk(kernel).models.list()
    raw = await http.get(proxy_url + "/models", headers=kernel.headers())

    assert raised.value.status_code == 401
    assert raw.status_code == 401
    # The upstream did echo the key: the redaction, not luck, kept it out.
    assert fake_upstream.received_keys() == [canary, canary]
    assert "Incorrect API key provided" in message_of(raw)
    for text in (str(raised.value), json.dumps(raised.value.body), raised.value.response.text, raw.text,
                 json.dumps(dict(raw.headers))):
        assert canary not in text
        assert canary[8:] not in text


async def test_given_no_stored_key_when_proxying_then_401_saying_no_api_key_is_configured(
        kernel, sdk, fake_upstream):
    with pytest.raises(openai.AuthenticationError) as raised:
        await sdk(kernel).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert raised.value.status_code == 401
    assert "No API key configured for OPENAI_API_KEY" in str(raised.value)
    assert fake_upstream.requests == []


@keyvault_settings(openai_upstream_down=True)
async def test_given_the_upstream_is_down_when_proxying_then_502_with_a_clear_message(
        stored_key, kernel, sdk, http, proxy_url, fake_upstream):
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk(kernel).models.list()
    raw = await http.get(proxy_url + "/models", headers=kernel.headers())

    assert raised.value.status_code == 502
    assert "upstream unreachable" in str(raised.value)
    assert raw.status_code == 502
    assert message_of(raw).startswith("upstream unreachable")
    assert raw.headers["content-type"].startswith("application/json")
    assert VALID_OPENAI_KEY not in raw.text and "Traceback" not in raw.text


async def test_given_an_upstream_error_when_proxying_then_status_and_body_are_relayed(
        stored_key, kernel, http, proxy_url, fake_upstream):
    response = await http.post(proxy_url + "/chat/completions", headers=kernel.headers(),
                               json={"model": "gpt-4o-mini", "messages": []})

    assert response.status_code == 400
    assert "'messages' must be a non-empty array." == message_of(response)


# --------------------------------------------------------------------------- 7. per-notebook access


@keyvault_settings(allow_direct_access=True)  # off by default where kernels are isolated
async def test_given_a_credential_limited_to_some_notebooks_when_kernels_of_two_notebooks_use_it_then_only_the_allowed_one_can(
        store, jp_fetch, jp_root_dir, http, server_url, proxy_url, jp_serverapp, fake_upstream):
    scoped = "sk-proj-" + "SC0PE" * 8
    fake_upstream.valid_keys.add(scoped)
    await store("SCOPED_KEY", scoped, metadata={"notebooks": ["allowed/*.ipynb"]})
    kernels = {}
    for path in ("allowed/a.ipynb", "other/b.ipynb"):
        (jp_root_dir / path).parent.mkdir(exist_ok=True)
        response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(
            {"path": path, "name": path.split("/")[1], "type": "notebook", "kernel": {"name": "python3"}}))
        kid = json.loads(response.body)["kernel"]["id"]
        kernels[path] = Kernel(kid, jp_serverapp.kernel_manager.get_kernel(kid).session.key)
    allowed, other = kernels["allowed/a.ipynb"], kernels["other/b.ipynb"]
    select = {"X-KeyVault-Credential": "SCOPED_KEY"}
    direct_url = server_url + "keyvault/kernel/credentials/SCOPED_KEY"

    ok_proxy = await http.get(proxy_url + "/models", headers=allowed.headers(**select))
    ok_direct = await http.get(direct_url, headers=allowed.headers())
    denied_proxy = await http.get(proxy_url + "/models", headers=other.headers(**select))
    denied_direct = await http.get(direct_url, headers=other.headers())
    status = await http.get(server_url + "keyvault/kernel/status", headers=other.headers())

    assert ok_proxy.status_code == 200
    assert ok_direct.status_code == 200 and ok_direct.json()["value"] == scoped
    assert denied_proxy.status_code == 403
    assert denied_direct.status_code == 403
    for message in (message_of(denied_proxy), kernel_api_message(denied_direct)):
        assert "SCOPED_KEY" in message and "other/b.ipynb" in message and "allowed/*.ipynb" in message
    assert scoped not in denied_proxy.text + denied_direct.text
    assert status.json()["notebook_path"] == "other/b.ipynb"
    assert fake_upstream.received_keys() == [scoped]


async def test_given_a_limited_credential_when_a_kernel_without_a_notebook_uses_it_then_403(
        store, kernel, http, proxy_url, fake_upstream):
    await store("SCOPED_KEY", "sk-proj-" + "SC0PE" * 8, metadata={"notebooks": ["allowed/*.ipynb"]})

    response = await http.get(proxy_url + "/models", headers=kernel.headers(**{"X-KeyVault-Credential": "SCOPED_KEY"}))

    assert response.status_code == 403
    assert "no notebook" in message_of(response)
    assert fake_upstream.requests == []


# --------------------------------------------------------------------------- 8. direct mode and kernel endpoints


@keyvault_settings(allow_direct_access=True)  # off by default where kernels are isolated
async def test_given_direct_access_allowed_when_a_kernel_gets_a_credential_then_the_value_is_returned(
        stored_key, kernel, http, server_url):
    response = await http.get(server_url + "keyvault/kernel/credentials/OPENAI_API_KEY", headers=kernel.headers())

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("name", "provider", "type", "value")} == {
        "name": "OPENAI_API_KEY", "provider": "openai", "type": "api_key", "value": VALID_OPENAI_KEY}
    assert response.headers["cache-control"] == "no-store"


@keyvault_settings(allow_direct_access=False)
async def test_given_direct_access_disabled_when_a_kernel_gets_a_credential_then_403_while_the_proxy_still_works(
        stored_key, kernel, http, server_url, sdk, fake_upstream):
    response = await http.get(server_url + "keyvault/kernel/credentials/OPENAI_API_KEY", headers=kernel.headers())
    status = await http.get(server_url + "keyvault/kernel/status", headers=kernel.headers())
    models = await sdk(kernel).models.list()

    assert response.status_code == 403
    assert "direct access is disabled" in kernel_api_message(response)
    assert "allow_direct_access" in kernel_api_message(response)
    assert VALID_OPENAI_KEY not in response.text
    assert status.json()["allow_direct_access"] is False
    assert models.data
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY]


async def test_given_stored_credentials_when_a_kernel_lists_them_then_names_are_listed_without_values(
        store, stored_key, kernel, http, server_url):
    await store("OTHER_KEY", OTHER_OPENAI_KEY)

    response = await http.get(server_url + "keyvault/kernel/credentials", headers=kernel.headers())

    assert response.status_code == 200
    names = {item["name"] for item in response.json()["credentials"]}
    assert {"OPENAI_API_KEY", "OTHER_KEY"} <= names
    assert VALID_OPENAI_KEY not in response.text and OTHER_OPENAI_KEY not in response.text
    assert all("value" not in item for item in response.json()["credentials"])


@keyvault_settings(allow_direct_access=True)  # off by default where kernels are isolated
async def test_given_a_kernel_when_it_asks_for_status_then_mode_direct_access_and_notebook_path_are_reported(
        kernel, http, server_url):
    response = await http.get(server_url + "keyvault/kernel/status", headers=kernel.headers())

    assert response.status_code == 200
    status = response.json()
    assert status["mode"] == "server"
    assert status["allow_direct_access"] is True
    assert status["notebook_path"] is None  # started without a session
    assert status["kernel_id"] == kernel.id


# --------------------------------------------------------------------------- 9. concurrency and pooling


async def test_given_fifty_concurrent_streams_when_proxied_then_all_complete_intact(
        stored_key, kernel, sdk, fake_upstream):
    client = sdk(kernel)
    fake_upstream.chunk_interval, fake_upstream.n_chunks = 0.02, 5

    async def one_stream() -> str:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    texts = await asyncio.gather(*(one_stream() for _ in range(50)))

    assert texts == ["Hello from fake upstream"] * 50
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY] * 50


async def test_given_a_hundred_sequential_requests_when_proxied_then_upstream_connections_are_reused(
        stored_key, kernel, sdk, fake_upstream):
    client = sdk(kernel)
    await client.models.list()
    opened = fake_upstream.connections_opened

    for _ in range(100):
        await client.models.list()

    assert fake_upstream.connections_opened - opened <= 2
    assert len(fake_upstream.requests) == 101


# --------------------------------------------------------------------------- 10. canary


@pytest.fixture
def captured_logs(jp_serverapp, keyvault_app):
    """Every log record at DEBUG and above, from the root logger and the server's own logger."""
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(self.format(record) + " " + repr(record.args))

    handler = Capture(level=logging.DEBUG)
    loggers = {logging.getLogger(), jp_serverapp.log, keyvault_app.log, logging.getLogger("tornado.access")}
    levels = {lg: lg.level for lg in loggers}
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield records
    for lg, level in levels.items():
        lg.removeHandler(handler)
        lg.setLevel(level)


async def test_given_a_canary_key_used_through_the_proxy_then_it_appears_in_no_response_or_log_line(
        store, canary, kernel, http, proxy_url, server_url, captured_logs, fake_upstream):
    fake_upstream.valid_keys.add(canary)
    await store("OPENAI_API_KEY", canary)
    requests = [
        ("GET", "/models", None),
        ("POST", "/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES}),
        ("POST", "/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}),
        ("POST", "/embeddings", {"model": "text-embedding-3-small", "input": "hi"}),
        ("POST", "/chat/completions", {"model": "gpt-4o-mini", "messages": []}),  # upstream 400
        ("GET", "/no/such/route", None),  # upstream 404
    ]
    seen = []
    for method, path, body in requests:
        response = await http.request(method, proxy_url + path, headers=kernel.headers(), json=body)
        seen.append(response)
    seen.append(await http.get(proxy_url + "/models"))  # refused kernel: logged as a warning
    seen.append(await http.get(server_url + "keyvault/kernel/credentials", headers=kernel.headers()))

    assert [r.status_code for r in seen] == [200, 200, 200, 200, 400, 404, 401, 200]
    assert fake_upstream.received_keys() == [canary] * 6  # the canary really went upstream
    assert captured_logs, "the log capture saw nothing"
    for needle in (canary, canary[8:]):
        for response in seen:
            assert needle not in response.text, response.url
            assert needle not in json.dumps(list(response.headers.multi_items())), response.url
        for line in captured_logs:
            assert needle not in line
