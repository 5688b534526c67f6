"""An upstream that gzips every response although the proxy asks for identity: clients of the
proxy get plain bytes they can read (no Content-Encoding relayed, the body decoded as it streams),
through the openai SDK and httpx, streaming and not, error bodies included.
"""

from __future__ import annotations

import json
import time

import httpx2
import openai
import pytest

from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT, FakeUpstream
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

MESSAGES = [{"role": "user", "content": "hi"}]



@pytest.fixture(params=["jupyter", "loopback"])
def server_url(request, server_url, loopback_url):
    """Each test on both fronts of the proxy: the Jupyter server's URL and the loopback lane's."""
    return server_url if request.param == "jupyter" else loopback_url

@pytest.fixture
def gzip_upstream():
    server = FakeUpstream(valid_keys=(VALID_OPENAI_KEY,), gzip=True, chunk_interval=0.1, n_chunks=5).start()
    yield server
    server.stop()


@pytest.fixture
def keyvault_config(keyvault_config, gzip_upstream):
    keyvault_config["provider_base_urls"] = {**keyvault_config["provider_base_urls"],
                                             "openai": gzip_upstream.openai_base_url}
    return keyvault_config


async def token_for(jp_fetch) -> str:
    await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                   body=json.dumps({"value": VALID_OPENAI_KEY, "provider": "openai"}))
    resp = await jp_fetch("keyvault", "api", "tokens", method="POST",
                          body=json.dumps({"name": "gzip", "credentials": ["OPENAI_API_KEY"]}))
    return json.loads(resp.body)["token"]


def test_given_the_gzipping_upstream_then_it_really_compresses_although_asked_for_identity(gzip_upstream):
    import urllib.request

    req = urllib.request.Request(gzip_upstream.openai_base_url + "/models", headers={
        "Authorization": f"Bearer {VALID_OPENAI_KEY}", "Accept-Encoding": "identity"})
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Content-Encoding"] == "gzip" and resp.read(2) == b"\x1f\x8b"


async def test_given_a_gzipping_upstream_when_the_openai_sdk_calls_then_replies_streams_and_errors_read_plainly(
        server_url, jp_fetch):
    token = await token_for(jp_fetch)
    client = openai.AsyncOpenAI(api_key=token, base_url=server_url + "keyvault/proxy/openai/v1", max_retries=0)
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == REPLY_TEXT
    models = await client.models.list()
    assert [m.id for m in models.data][:1] == ["gpt-4o-mini"]

    arrivals, text = [], ""
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    assert text == REPLY_TEXT and len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] > 0.3  # decoded as it streamed, with the upstream's spacing (4 x 0.1 s)

    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("no-such-model")
    assert "Unknown route" in caught.value.message  # the upstream's own (gzipped) error, read


async def test_given_a_gzipping_upstream_when_httpx_calls_then_no_content_encoding_and_the_body_is_plain(
        server_url, jp_fetch, gzip_upstream):
    token = await token_for(jp_fetch)
    url = server_url + "keyvault/proxy/openai/v1/"
    async with httpx2.AsyncClient(timeout=30) as http:
        ok = await http.get(url + "models", headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"})
        assert ok.status_code == 200 and "content-encoding" not in ok.headers
        assert ok.json()["object"] == "list"
        gzip_upstream.valid_keys = {"sk-proj-not-the-stored-one"}
        refused = await http.get(url + "models", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401 and "content-encoding" not in refused.headers
        assert refused.json()["error"]["code"] == "invalid_api_key"  # the upstream's error body, decoded
        assert VALID_OPENAI_KEY not in refused.text
        gzip_upstream.valid_keys = {VALID_OPENAI_KEY}
        async with http.stream("POST", url + "chat/completions", headers={"Authorization": f"Bearer {token}"},
                               json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}) as resp:
            assert "content-encoding" not in resp.headers
            raw = b"".join([chunk async for chunk in resp.aiter_raw()])
    assert raw.startswith(b"data: ") and raw.rstrip().endswith(b"data: [DONE]")
