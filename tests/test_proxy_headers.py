"""The proxy's header policy (web/headers.py), through pytest-jupyter's in-process server.

End-to-end headers a client sends (OpenRouter's HTTP-Referer / X-Title, trace context,
observability headers, SDK headers) arrive upstream; the server's own credentials (its token in
a header or the query string, cookies, the XSRF token, a Referer with the Jupyter URL, the vault
access token) and hop-by-hop headers never do: a hostile upstream records the raw bytes it was
sent and a unique canary is searched for in them. Provider defaults (`anthropic-version`) are set
only when the client sent none. A kernel's `%keyvault test` of a name not stored is a clear 404.
The hub service applies the same policy (tests/test_backends.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from urllib.parse import urlsplit

import anthropic
import httpx2
import pytest

from jupyter_keyvault.kernel_auth import make_credential
from jupyter_keyvault.testing.hostile_upstream import HostileUpstream

KEY = "sk-proj-HEADERPOLICY" + secrets.token_hex(20)
ANTHROPIC_KEY = "sk-ant-HEADERPOLICY" + secrets.token_hex(20)
CANARY = "HDRCANARY" + secrets.token_hex(12)



@pytest.fixture(params=["jupyter", "loopback"])
def server_url(request, server_url, loopback_url):
    """Each test on both fronts of the proxy: the Jupyter server's URL and the loopback lane's."""
    return server_url if request.param == "jupyter" else loopback_url

@pytest.fixture
def hostile():
    upstream = HostileUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def keyvault_config(keyvault_config, hostile):
    keyvault_config["provider_base_urls"] = {**keyvault_config["provider_base_urls"], "openai": hostile.base_url}
    return keyvault_config


async def token_for(jp_fetch, name: str, value: str, provider: str) -> str:
    await jp_fetch("keyvault", "api", "credentials", name, method="PUT",
                   body=json.dumps({"value": value, "provider": provider}))
    resp = await jp_fetch("keyvault", "api", "tokens", method="POST",
                          body=json.dumps({"name": "headers", "credentials": [name]}))
    return json.loads(resp.body)["token"]


async def raw_request(url: str, lines: list[str], body: bytes = b"") -> bytes:
    """Send exactly these header lines (no client rewrites them) and return the whole response."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [f"POST {parts.path}?{parts.query} HTTP/1.1", f"Host: {parts.netloc}",
            f"Content-Length: {len(body)}", *lines]
    writer.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
    await writer.drain()
    head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    if b"transfer-encoding: chunked" in head_bytes.lower():
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 30)
    else:
        length = int(head_bytes.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        rest = await asyncio.wait_for(reader.readexactly(length), 30)
    writer.close()
    return head_bytes + rest


async def test_given_custom_and_sdk_headers_when_proxied_then_each_arrives_upstream_unchanged(
        jp_fetch, server_url, hostile):
    token = await token_for(jp_fetch, "OPENAI_API_KEY", KEY, "openai")
    custom = {
        "HTTP-Referer": "https://my-app.example/notebook",  # OpenRouter's app attribution
        "X-Title": "My notebook",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=opaque",
        "baggage": "userId=alice",
        "Helicone-Property-Session": "s-42",
        "X-Stainless-Lang": "python",
        "OpenAI-Beta": "assistants=v2",
        "Idempotency-Key": "idem-1",
    }
    async with httpx2.AsyncClient() as client:
        resp = await client.post(server_url + "keyvault/proxy/openai/v1/echo/request", content=b"{}",
                                 headers={"Authorization": f"Bearer {token}", **custom})
    assert resp.status_code == 200, resp.text
    [raw] = hostile.raw
    for name, value in custom.items():  # (header names compared case-insensitively, as HTTP does)
        assert f"{name}: {value}".lower().encode() in raw.lower(), (name, raw)
    assert f"Authorization: Bearer {KEY}".encode() in raw  # the real key, injected server-side
    assert b"accept-encoding: identity" in raw.lower()


async def test_given_an_upstream_that_allows_any_origin_then_no_web_page_may_read_a_proxied_answer(
        jp_fetch, server_url, hostile):
    # The proxy is for kernels and token holders, never for pages: a page that got a request through
    # (with a token it was given) must not be able to read the answer, whatever the upstream allows.
    token = await token_for(jp_fetch, "OPENAI_API_KEY", KEY, "openai")
    async with httpx2.AsyncClient() as client:
        resp = await client.get(server_url + "keyvault/proxy/openai/v1/echo/cors",
                                headers={"Authorization": f"Bearer {token}", "Origin": "https://evil.example"})
    assert resp.status_code == 200, resp.text
    assert [name for name in resp.headers if name.lower().startswith("access-control-")] == []


async def test_given_the_servers_own_credentials_on_a_request_then_none_reach_a_hostile_upstream(
        jp_fetch, server_url, hostile, jp_serverapp):
    token = await token_for(jp_fetch, "OPENAI_API_KEY", KEY, "openai")
    server_token = jp_serverapp.identity_provider.token
    url = server_url + f"keyvault/proxy/openai/v1/echo/request?token={server_token}&_xsrf={CANARY}q&limit=5"
    response = await raw_request(url, [
        f"Authorization: Bearer {token}",
        f"Cookie: _xsrf={CANARY}c; username-localhost-8888={CANARY}session",
        f"X-XSRFToken: {CANARY}x",
        f"Referer: {server_url}lab/tree/n.ipynb?token={server_token}",
        f"Origin: http://evil.example/{CANARY}o",
        f"Forwarded: for=10.0.0.1;by={CANARY}f",
        f"X-Forwarded-For: {CANARY}xff",
        f"X-Forwarded-Host: {CANARY}xfh",
        f"Via: 1.1 {CANARY}via",
        f"X-Real-IP: {CANARY}rip",
        f"Proxy-Authorization: Basic {CANARY}pa",
        f"Connection: keep-alive, X-Hop-{CANARY[:8]}",
        f"X-Hop-{CANARY[:8]}: {CANARY}hop",
        "Keep-Alive: timeout=5",
        f"TE: {CANARY}te",
        f"X-KeyVault-Note: {CANARY}kv",
        f"x-api-key: {CANARY}xak",
        f"api-key: {CANARY}ak",
        f"x-goog-api-key: {CANARY}gk",
        "X-Kept: kept",
        "Content-Type: application/json",
    ], b'{"hello": "world"}')
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    [raw] = hostile.raw
    for secret in (CANARY, server_token, token, "kvt1"):
        assert secret.encode() not in raw, (secret, raw)
    assert b"x-kept: kept" in raw.lower() and b'{"hello": "world"}' in raw and b"limit=5" in raw
    assert f"Authorization: Bearer {KEY}".encode() in raw


async def test_given_a_kernel_credential_then_it_never_reaches_the_upstream(
        jp_fetch, server_url, hostile, jp_serverapp):
    await token_for(jp_fetch, "OPENAI_API_KEY", KEY, "openai")
    km = jp_serverapp.kernel_manager
    kernel_id = await km.start_kernel()
    try:
        credential = make_credential(kernel_id, km.get_kernel(kernel_id).session.key, int(time.time()),
                                     secrets.token_hex(16))
        async with httpx2.AsyncClient() as client:
            resp = await client.get(server_url + "keyvault/proxy/openai/v1/echo/request",
                                    headers={"Authorization": f"Bearer {credential}", "traceparent": "00-a-b-01"})
        assert resp.status_code == 200, resp.text
        [raw] = hostile.raw
        assert credential.encode() not in raw and b"kvk1" not in raw and b"traceparent: 00-a-b-01" in raw.lower()
    finally:
        await km.shutdown_all(now=True)


@pytest.mark.parametrize("sent, expected", [
    (None, "sdk"),  # the anthropic SDK's own version header arrives
    ("2099-01-01", "2099-01-01"),  # ... and so does one the user sets
])
async def test_given_the_anthropic_sdk_when_it_sends_its_version_header_then_the_upstream_gets_that_one(
        jp_fetch, server_url, fake_upstream, sent, expected):
    token = await token_for(jp_fetch, "ANTHROPIC_API_KEY", ANTHROPIC_KEY, "anthropic")
    extra = {"default_headers": {"anthropic-version": sent}} if sent else {}
    client = anthropic.AsyncAnthropic(api_key=token, base_url=server_url + "keyvault/proxy/anthropic",
                                      max_retries=0, **extra)
    with pytest.raises(anthropic.AuthenticationError):  # the fake upstream does not know this key; it records
        await client.models.list()
    await client.close()
    sdk_version = client.default_headers["anthropic-version"]
    [seen] = fake_upstream.requests
    assert seen.headers["anthropic-version"] == (sdk_version if expected == "sdk" else expected)
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY and token not in json.dumps(seen.headers)


async def test_given_a_client_without_an_anthropic_version_then_the_provider_default_is_added(
        jp_fetch, server_url, fake_upstream):
    from jupyter_keyvault.providers import PROVIDERS

    token = await token_for(jp_fetch, "ANTHROPIC_API_KEY", ANTHROPIC_KEY, "anthropic")
    async with httpx2.AsyncClient() as client:
        await client.get(server_url + "keyvault/proxy/anthropic/v1/models", headers={"x-api-key": token})
    [seen] = fake_upstream.requests
    assert seen.headers["anthropic-version"] == PROVIDERS["anthropic"].default_headers["anthropic-version"]


async def test_given_a_kernel_when_it_tests_a_name_not_stored_then_a_clear_404_never_a_500(
        http_server_client, jp_serverapp):
    server_url = jp_serverapp.connection_url  # the kernel API is served on the Jupyter URL only
    km = jp_serverapp.kernel_manager
    kernel_id = await km.start_kernel()
    try:
        credential = make_credential(kernel_id, km.get_kernel(kernel_id).session.key, int(time.time()),
                                     secrets.token_hex(16))
        async with httpx2.AsyncClient() as client:
            resp = await client.post(server_url + "keyvault/kernel/credentials/NOT_STORED_ANYWHERE/test",
                                     headers={"Authorization": f"Bearer {credential}"})
        assert resp.status_code == 404, resp.text
        assert "NOT_STORED_ANYWHERE" in resp.json()["message"] and "not" in resp.json()["message"].lower()
    finally:
        await km.shutdown_all(now=True)


async def test_given_keyvault_anthropic_in_a_kernel_then_the_sdks_and_the_users_version_headers_arrive(
        jp_fetch, server_kernel, fake_upstream):
    await token_for(jp_fetch, "ANTHROPIC_API_KEY", ANTHROPIC_KEY, "anthropic")
    kernel = await server_kernel("anthropic.ipynb")
    result = await kernel.execute(
        "%load_ext keyvault\n"
        "import anthropic\n"
        "for client in (keyvault.anthropic(), keyvault.anthropic(default_headers={'anthropic-version': '2099-01-01'})):\n"
        "    try:\n"
        "        client.models.list()\n"
        "    except anthropic.AuthenticationError:\n"
        "        pass  # the fake upstream does not know this key; it records the request\n"
        "print('SDK_VERSION', anthropic.Anthropic(api_key='x').default_headers['anthropic-version'])\n"
    )
    assert result.error is None, result.text
    sdk_version = result.stdout.split("SDK_VERSION ")[1].split()[0]
    assert [r.headers["anthropic-version"] for r in fake_upstream.requests] == [sdk_version, "2099-01-01"]
    assert all(r.headers["x-api-key"] == ANTHROPIC_KEY for r in fake_upstream.requests)


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:{port}", "192.168.1.7:{port}", ""])
async def test_given_a_page_that_rebinds_its_name_to_127_0_0_1_when_it_calls_the_proxy_then_403_and_nothing_upstream(
        jp_fetch, server_url, hostile, host):
    """DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 is same-origin with
    the proxy to its browser, so it could read answers; the proxy answers only requests addressed to a
    local name (jupyter_server's rule, c.ServerApp.allow_remote_access) or, on the lane, to its own."""
    token = await token_for(jp_fetch, "OPENAI_API_KEY", KEY, "openai")
    async with httpx2.AsyncClient() as client:
        resp = await client.get(server_url + "keyvault/proxy/openai/v1/models", headers={
            "Authorization": f"Bearer {token}", "Host": host.format(port=urlsplit(server_url).port)})
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["type"] == "keyvault_error" and "Host" in resp.json()["error"]["message"]
    assert hostile.seen == []
