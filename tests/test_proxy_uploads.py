"""Request bodies stream through the proxy as they arrive, never held whole, up to a cap.

The fake upstream's /v1/files reads uploads as they come and records when its first and last
bytes arrived and their digest (it keeps none of them). A real `jupyter server` subprocess
relays a 128 MB `client.files.create` (openai SDK, kvt1 token, from this plain process) while
its RSS is sampled from /proc: the upstream sees bytes before the client has finished sending,
and the server's RSS grows far less than the body (benchmarks/bench_upload.py has the figure).
Over `c.KeyVault.proxy_max_body_size` the SDK shows a 413 with a clear message: before any body
is read when Content-Length says so, and as soon as a chunked body goes over.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from urllib.parse import urlsplit

import httpx2
import openai
import pytest

from jupyter_keyvault.testing.fake_upstream import FakeUpstream
from jupyter_keyvault.testing.live_server import JupyterServer
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY
from jupyter_keyvault.testing.uploads import PatternFile, RSSSampler

MB = 1024 * 1024
CAP = 4 * MB


async def token_for(jp_fetch) -> str:
    await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                   body=json.dumps({"value": VALID_OPENAI_KEY, "provider": "openai"}))
    resp = await jp_fetch("keyvault", "api", "tokens", method="POST",
                          body=json.dumps({"name": "uploads", "credentials": ["OPENAI_API_KEY"]}))
    return json.loads(resp.body)["token"]


def sdk(server_url: str, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=token, base_url=server_url + "keyvault/proxy/openai/v1", max_retries=0)



@pytest.fixture(params=["jupyter", "loopback"])
def server_url(request, server_url, loopback_url):
    """Each test on both fronts of the proxy: the Jupyter server's URL and the loopback lane's."""
    return server_url if request.param == "jupyter" else loopback_url

@pytest.mark.keyvault(proxy_max_body_size=CAP)
async def test_given_an_upload_under_the_cap_when_sent_then_the_upstream_gets_every_byte_intact(
        jp_fetch, server_url, fake_upstream):
    client = sdk(server_url, await token_for(jp_fetch))
    size = CAP - 64 * 1024  # the multipart framing fits in the rest
    created = await client.files.create(file=("data.bin", PatternFile(size)), purpose="assistants")
    [upload] = fake_upstream.uploads
    assert created.bytes == size and upload.bytes > size and upload.chunks > 1  # the file part, in its framing
    assert upload.headers["authorization"] == f"Bearer {VALID_OPENAI_KEY}"
    assert int(upload.headers["content-length"]) == upload.bytes  # sent with the client's length, not re-chunked
    raw = PatternFile(size).read(size)
    async with httpx2.AsyncClient() as http:  # a raw body is relayed byte for byte
        resp = await http.post(server_url + "keyvault/proxy/openai/v1/files", content=raw,
                               headers={"Authorization": f"Bearer {client.api_key}"})
    assert resp.status_code == 200 and fake_upstream.uploads[1].sha256 == PatternFile.sha256(size)


@pytest.mark.keyvault(proxy_max_body_size=CAP)
async def test_given_a_content_length_over_the_cap_then_413_the_sdk_shows_and_nothing_goes_upstream(
        jp_fetch, server_url, fake_upstream):
    client = sdk(server_url, await token_for(jp_fetch))
    with pytest.raises(openai.APIStatusError) as caught:
        await client.files.create(file=("big.bin", PatternFile(CAP + CAP // 2)), purpose="assistants")
    assert caught.value.status_code == 413
    assert "proxy_max_body_size" in caught.value.message and str(CAP) in caught.value.message
    assert fake_upstream.uploads == [] and fake_upstream.requests == []


@pytest.mark.keyvault(proxy_max_body_size=CAP)
async def test_given_a_chunked_body_that_runs_over_the_cap_then_it_is_cut_off_with_the_same_413(
        jp_fetch, server_url, fake_upstream):
    token = await token_for(jp_fetch)

    async def body():  # half as much again as the cap, in 256 KiB chunks
        for _ in range(3 * CAP // (2 * 256 * 1024)):
            yield b"x" * (256 * 1024)
            await asyncio.sleep(0)

    async with httpx2.AsyncClient(timeout=30) as http:
        resp = await http.post(server_url + "keyvault/proxy/openai/v1/files", content=body(),
                               headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 413, resp.text
    assert "proxy_max_body_size" in resp.json()["error"]["message"]
    assert all(u.bytes <= CAP for u in fake_upstream.uploads)  # what got upstream was cut off at the cap


@pytest.mark.keyvault(proxy_max_body_size=CAP)
async def test_given_a_chunked_body_far_over_the_cap_then_the_connection_is_cut_and_upstream_got_at_most_the_cap(
        jp_fetch, server_url, fake_upstream):
    token = await token_for(jp_fetch)
    sent = 0

    async def body():  # endless: the proxy must stop it, not read it all
        nonlocal sent
        while sent < 100 * CAP:
            sent += 256 * 1024
            yield b"x" * (256 * 1024)

    async with httpx2.AsyncClient(timeout=30) as http:
        try:
            resp = await http.post(server_url + "keyvault/proxy/openai/v1/files", content=body(),
                                   headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 413  # when the client reads the answer before the connection closes
        except httpx2.TransportError:
            pass  # the usual outcome: the answer is lost with the connection the proxy closed
    assert sent < 100 * CAP
    assert all(u.bytes <= CAP for u in fake_upstream.uploads)


async def test_given_no_credential_when_a_big_body_is_announced_then_401_before_any_is_read(
        server_url, fake_upstream):
    url = urlsplit(server_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(f"POST {url.path}keyvault/proxy/openai/v1/files HTTP/1.1\r\nHost: {url.netloc}\r\n"
                 f"Content-Length: {100 * MB}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # answered without sending a byte of body
    writer.close()
    assert head.startswith(b"HTTP/1.1 401"), head
    assert fake_upstream.requests == []


async def test_given_an_upstream_that_refuses_the_key_then_the_client_gets_its_401_not_a_hang(
        jp_fetch, server_url, fake_upstream):
    client = sdk(server_url, await token_for(jp_fetch))
    fake_upstream.valid_keys = {"sk-proj-some-other-key"}
    with pytest.raises(openai.AuthenticationError):
        await asyncio.wait_for(client.files.create(file=("a.bin", PatternFile(8 * MB)), purpose="assistants"), 30)


# -- a real server process: streaming and memory
def _rest(server: JupyterServer, method: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(server.url + path, method=method, data=json.dumps(body).encode(),
                                 headers={**server.headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


@pytest.fixture(scope="module")
def live():
    upstream = FakeUpstream(valid_keys=(VALID_OPENAI_KEY,)).start()
    server = JupyterServer(config={"KeyVault": {"provider_base_urls": {"openai": upstream.openai_base_url}}}).start()
    try:
        _rest(server, "PUT", "/keyvault/api/credentials/OPENAI_API_KEY",
              {"value": VALID_OPENAI_KEY, "provider": "openai"})
        token = _rest(server, "POST", "/keyvault/api/tokens", {"name": "upload", "credentials": ["OPENAI_API_KEY"]})
        yield server, upstream, token["token"]
    finally:
        server.stop()
        upstream.stop()


def test_given_a_128_mb_upload_through_a_real_server_then_it_streams_and_server_memory_stays_flat(live):
    server, upstream, token = live
    client = openai.OpenAI(api_key=token, base_url=server.url + "/keyvault/proxy/openai/v1", max_retries=0,
                           timeout=300)
    client.files.create(file=("warm.bin", PatternFile(MB)), purpose="assistants")  # the upstream pool, imports
    size = 128 * MB
    source = PatternFile(size)
    with RSSSampler(server.proc.pid) as rss:
        created = client.files.create(file=("big.bin", source), purpose="assistants")
    upload = upstream.uploads[-1]
    assert created.bytes == upload.bytes > size
    assert upload.first_byte_at is not None and source.finished_at is not None
    # Relayed as it arrived: the upstream had bytes long before the client read its last one.
    assert upload.first_byte_at < source.finished_at, (upload.first_byte_at, source.finished_at)
    assert upload.chunks > 100
    assert rss.growth < 64 * MB, f"server RSS grew {rss.growth / MB:.1f} MB for a {size // MB} MB upload"
