"""A hostile upstream echoes the key the proxy injected through every channel a client decodes;
the client never receives it (single-user proxy here; the hub service proxy in test_backends.py).
A credential goes only to its own provider's API, and paths that a server could read as "..",
after another round of decoding or as path parameters, are refused before anything is sent."""

from __future__ import annotations

import json
import secrets

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_keyvault.testing.hostile_upstream import HostileUpstream

KEY = "sk-proj-HOSTILECANARY" + secrets.token_hex(20)
HF_TOKEN = "hf_HOSTILECANARY" + secrets.token_hex(16)



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


async def token_for(jp_fetch, *names: str) -> str:
    import json

    for name, value, provider in (("OPENAI_API_KEY", KEY, "openai"), ("HF_TOKEN", HF_TOKEN, "huggingface")):
        await jp_fetch("keyvault", "api", "credentials", name, method="PUT",
                       body=json.dumps({"value": value, "provider": provider}))
    resp = await jp_fetch("keyvault", "api", "tokens", method="POST",
                          body=json.dumps({"name": "hostile", "credentials": list(names)}))
    return json.loads(resp.body)["token"]


async def fetch(server_url: str, path: str, token: str, **headers) -> tuple[int, str, str]:
    """status, every header as text, body as text: all a client of the proxy receives."""
    resp = await AsyncHTTPClient().fetch(HTTPRequest(
        server_url.rstrip("/") + "/keyvault/proxy/openai/v1/" + path,
        headers={"Authorization": f"Bearer {token}", **headers}, decompress_response=True), raise_error=False)
    return resp.code, f"{resp.reason} " + repr(list(resp.headers.get_all())), resp.body.decode("utf-8", "replace")


@pytest.mark.parametrize("channel", HostileUpstream.CHANNELS)
async def test_given_an_upstream_that_echoes_the_injected_key_then_the_client_never_receives_it(
        jp_fetch, server_url, hostile, channel):
    token = await token_for(jp_fetch, "OPENAI_API_KEY")
    status, headers, body = await fetch(server_url, f"echo/{channel}", token)
    assert hostile.seen == [KEY]  # the upstream did get the key (so it could echo it)
    assert status == (400 if channel == "error" else 200)
    everything = headers + body
    assert KEY not in everything and KEY[len(KEY) // 2:] not in everything, everything
    assert "[REDACTED" in everything  # the echo was there, and was replaced
    if channel in ("body", "gzip", "escaped"):
        import json

        assert json.loads(body)["you_sent"] == "[REDACTED]"  # still valid, decodable JSON


async def test_given_a_credential_of_another_provider_when_sent_to_openai_then_403_and_nothing_leaves(
        jp_fetch, server_url, hostile):
    token = await token_for(jp_fetch, "HF_TOKEN")
    status, _, body = await fetch(server_url, "echo/body", token, **{"X-KeyVault-Credential": "HF_TOKEN"})
    assert status == 403 and "HF_TOKEN is a credential for Hugging Face" in body, body
    assert hostile.seen == [] and HF_TOKEN not in body
    audit = await jp_fetch("keyvault", "api", "audit")
    assert b'"denied"' in audit.body and HF_TOKEN.encode() not in audit.body


@pytest.mark.parametrize("path", ["..;/echo/body", "%252e%252e%252fecho/body", "%09../echo/body", "echo;x/body",
                                  "%2e%2e/echo/body", "echo/%00body"])
async def test_given_a_path_that_could_escape_after_more_decoding_then_400_and_no_upstream_call(
        jp_fetch, server_url, hostile, path):
    token = await token_for(jp_fetch, "OPENAI_API_KEY")
    status, _, body = await fetch(server_url, path, token)
    assert status == 400 and "must stay under the provider's base URL" in body, (path, body)
    assert hostile.seen == []


async def test_given_an_upstream_that_breaks_off_mid_answer_then_the_client_sees_it_broken_not_complete(
        jp_fetch, server_url, hostile):
    """An answer cut off upstream must not reach the client as a complete one (an SDK would show a
    truncated completion as the whole): the proxy cuts its own answer off too."""
    import httpx2

    token = await token_for(jp_fetch, "OPENAI_API_KEY")
    received = b""
    async with httpx2.AsyncClient(timeout=10) as client:
        with pytest.raises(httpx2.RemoteProtocolError):  # the body ended without its last chunk
            async with client.stream("GET", server_url.rstrip("/") + "/keyvault/proxy/openai/v1/echo/cut",
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status_code == 200
                async for data in resp.aiter_bytes():
                    received += data
    assert b"half an answer" in received  # what came before the break was relayed as it came
    # ... and then an error event, which the openai and anthropic SDKs raise on (behind JupyterHub's
    # proxy, which does not pass a dropped connection on, it is what the client sees).
    event = received.split(b"event: error\ndata: ", 1)[1].split(b"\n\n")[0]
    assert json.loads(event)["error"]["type"] == "keyvault_error", received
