"""What a finished proxied request leaves in the server's memory: nothing of itself.

Real pieces: pytest-jupyter's in-process server with the extension, a vault access token, the local
FakeUpstream streaming answers, concurrent clients so the proxy's pool keeps several upstream
connections open afterwards. An idle pooled connection keeps the context it was opened in; that
context once held the whole finished request (handler, request, body stream, relay task) until the
connection closed, 60 s or more later (benchmarks/bench_rss.py).
"""

from __future__ import annotations

import asyncio
import gc
import json

import httpx2
import pytest

from jupyter_keyvault.server.proxy import ProxyHandler
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY
from jupyter_keyvault.web.relay import BodyStream

CONCURRENT = 8


@pytest.fixture
def http(jp_asyncio_loop):
    client = httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=CONCURRENT))
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


def alive(kind: type) -> int:
    gc.collect()
    return sum(isinstance(o, kind) for o in gc.get_objects())


def pooled_upstream_connections() -> int:
    from aiohttp.client_proto import ResponseHandler

    gc.collect()
    return sum(isinstance(o, ResponseHandler) and o.is_connected() for o in gc.get_objects())


async def test_given_streams_and_requests_proxied_concurrently_when_they_have_finished_then_no_handler_or_body_of_theirs_stays_alive(
        jp_serverapp, jp_fetch, http_server, jp_http_port, jp_base_url, http):
    await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                   body=json.dumps({"value": VALID_OPENAI_KEY, "provider": "openai"}))
    token = json.loads((await jp_fetch("keyvault", "api", "tokens", method="POST", body=json.dumps(
        {"name": "memory", "credentials": ["OPENAI_API_KEY"]}))).body)["token"]
    url = f"http://localhost:{jp_http_port}{jp_base_url}keyvault/proxy/openai/v1/chat/completions"
    headers = {"Authorization": f"Bearer {token}"}

    async def one(stream: bool) -> None:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        reply = await http.post(url, json=body, headers=headers)
        assert reply.status_code == 200, reply.text

    for _ in range(3):
        await asyncio.gather(*(one(stream=i % 2 == 0) for i in range(CONCURRENT)))
    await asyncio.sleep(0.2)  # the handlers' last callbacks

    assert pooled_upstream_connections() >= 2  # the pool holds connections these requests opened
    assert alive(ProxyHandler) == 0
    assert alive(BodyStream) == 0
