"""The Realtime API websocket through the proxy: `/keyvault/proxy/openai/v1/realtime`.

The fake upstream serves a Realtime websocket (jupyter_keyvault/testing/fake_upstream.py) that
records every handshake and message. `client.realtime.connect()` works from `keyvault.openai()` in
a real kernel and with a kvt1 token from this plain process; frames go both ways (text, binary,
close codes); the handshake is refused without a credential, with a bad one, and from another
site's page, before the upstream is contacted; the key the proxy injected never comes back in a
frame, even from an upstream that echoes it.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import openai
import pytest
import websockets
from websockets.asyncio.client import connect

from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

MODEL = "gpt-realtime"


async def token_for(jp_fetch) -> str:
    await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                   body=json.dumps({"value": VALID_OPENAI_KEY, "provider": "openai"}))
    resp = await jp_fetch("keyvault", "api", "tokens", method="POST",
                          body=json.dumps({"name": "realtime", "credentials": ["OPENAI_API_KEY"]}))
    return json.loads(resp.body)["token"]


def ws_url(server_url: str) -> str:
    return server_url.replace("http://", "ws://") + f"keyvault/proxy/openai/v1/realtime?model={MODEL}"


async def test_given_a_token_when_the_openai_sdk_connects_then_events_flow_both_ways_and_the_key_is_injected(
        jp_fetch, server_url, fake_upstream):
    token = await token_for(jp_fetch)
    client = openai.AsyncOpenAI(api_key=token, base_url=server_url + "keyvault/proxy/openai/v1", max_retries=0)
    async with client.realtime.connect(model=MODEL) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.response.create()
        text = ""
        async for event in conn:
            if event.type == "response.output_text.delta":
                text += event.delta
            elif event.type == "response.done":
                break
        await conn.send_raw(b"\x00\x01binary\xff")
        assert await conn.recv_bytes() == b"\x00\x01binary\xff"
    assert text == REPLY_TEXT
    [session] = fake_upstream.realtime
    assert session.headers["authorization"] == f"Bearer {VALID_OPENAI_KEY}" and f"model={MODEL}" in session.query
    assert token not in json.dumps(session.headers) and "kvt1" not in json.dumps(session.headers)
    assert any(isinstance(m, str) and "response.create" in m for m in session.messages)
    assert b"\x00\x01binary\xff" in session.messages


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer kvt1.not-a-real-token"},
                                     {"Authorization": f"Bearer {VALID_OPENAI_KEY}"}], ids=["none", "bad", "raw-key"])
async def test_given_no_valid_credential_then_the_handshake_is_refused_and_the_upstream_never_contacted(
        jp_fetch, server_url, fake_upstream, headers):
    await token_for(jp_fetch)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(ws_url(server_url), additional_headers=headers):
            pass
    assert refused.value.response.status_code == 401
    assert fake_upstream.realtime == []


async def test_given_a_page_of_another_site_when_it_opens_the_websocket_then_403_even_with_a_token(
        jp_fetch, server_url, fake_upstream):
    token = await token_for(jp_fetch)
    auth = {"Authorization": f"Bearer {token}"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(ws_url(server_url), additional_headers=auth, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403 and fake_upstream.realtime == []
    parts = urlsplit(server_url)
    same_site = f"{parts.scheme}://{parts.netloc}"  # this server's own origin is allowed
    async with connect(ws_url(server_url), additional_headers=auth, origin=same_site) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_given_an_upstream_that_echoes_the_key_in_frames_then_the_client_never_receives_it(
        jp_fetch, server_url, fake_upstream):
    token = await token_for(jp_fetch)
    async with connect(ws_url(server_url), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()  # session.created
        await ws.send(json.dumps({"type": "keyvault.test.echo_key"}))
        frames = [await ws.recv() for _ in range(3)]
    everything = b"".join(f if isinstance(f, bytes) else f.encode() for f in frames)
    assert VALID_OPENAI_KEY.encode() not in everything and VALID_OPENAI_KEY[12:].encode() not in everything
    assert everything.count(b"[REDACTED]") == 3, everything
    assert json.loads(frames[1])["error"]["message"] == "[REDACTED]"  # still valid JSON after the escaped echo


async def test_given_either_side_closes_with_a_code_then_the_other_side_gets_that_code(
        jp_fetch, server_url, fake_upstream):
    token = await token_for(jp_fetch)
    auth = {"Authorization": f"Bearer {token}"}
    async with connect(ws_url(server_url), additional_headers=auth) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "keyvault.test.close", "code": 4001, "reason": "upstream says bye"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4001 and closed.value.rcvd.reason == "upstream says bye"

    async with connect(ws_url(server_url), additional_headers=auth) as ws:
        await ws.recv()
        await ws.close(4002, "client says bye")
    for _ in range(100):
        if fake_upstream.realtime[-1].close_code is not None:
            break
        await asyncio.sleep(0.05)
    assert fake_upstream.realtime[-1].close_code == 4002


async def test_given_a_kernel_when_keyvault_openai_connects_to_realtime_then_it_works_without_the_key(
        jp_fetch, server_kernel, fake_upstream):
    await token_for(jp_fetch)
    kernel = await server_kernel("realtime.ipynb")
    result = await kernel.execute(
        "%load_ext keyvault\n"
        "client = keyvault.openai()\n"
        f"with client.realtime.connect(model={MODEL!r}) as conn:\n"
        "    first = conn.recv().type\n"
        "    conn.response.create()\n"
        "    text = ''\n"
        "    for event in conn:\n"
        "        if event.type == 'response.output_text.delta':\n"
        "            text += event.delta\n"
        "        elif event.type == 'response.done':\n"
        "            break\n"
        "print('REALTIME', first, text)\n"
        "print('KEY', client.api_key)\n"
    )
    assert result.error is None, result.text
    assert f"REALTIME session.created {REPLY_TEXT}" in result.stdout
    assert VALID_OPENAI_KEY not in result.text
    session = fake_upstream.realtime[-1]
    assert session.headers["authorization"] == f"Bearer {VALID_OPENAI_KEY}" and "kvk1" not in json.dumps(
        session.headers)

