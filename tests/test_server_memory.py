"""What a finished proxied request leaves in the server's memory: nothing of itself; and what callers
can make the server keep: bounded.

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
import secrets

import httpx2
import pytest

from jupyter_keyvault.ratelimit import RateLimiter
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


async def test_given_a_flood_of_forged_tokens_when_each_is_refused_then_the_failure_limiter_keeps_a_bounded_number_of_keys(
        jp_serverapp, http_server, jp_http_port, jp_base_url, http):
    # Every forged token has its own id, and failures are limited per id: one bucket per id ever seen
    # grew the server's memory with every request anyone on the network could send (the route is public).
    kv = jp_serverapp.web_app.settings["keyvault_manager"]
    kv.token_failure_limiter.max_keys = 16
    url = f"http://localhost:{jp_http_port}{jp_base_url}keyvault/proxy/openai/v1/models"
    statuses = set()
    for _ in range(60):
        forged = f"kvt1_{secrets.token_hex(16)}_{secrets.token_hex(32)}"
        statuses.add((await http.get(url, headers={"Authorization": f"Bearer {forged}"})).status_code)

    assert statuses == {401}
    assert len(kv.token_failure_limiter) <= 16
    assert len(kv._token_blocked_until) <= 16


def test_given_a_limiter_at_its_bound_when_a_flood_of_new_keys_comes_then_it_stays_bounded_and_a_hot_key_stays_limited():
    now = [0.0]
    limiter = RateLimiter(60, burst=2, clock=lambda: now[0], max_keys=8)
    assert limiter.take("hammering") == 0 and limiter.take("hammering") == 0
    assert limiter.take("hammering") > 0  # empty: limited
    for i in range(20):  # a flood of fresh keys, 0.8 s in all: the hot key's next token is 1 s away
        now[0] += 0.04
        limiter.take(f"flood-{i}")
        assert len(limiter) <= 8
        assert limiter.take("hammering") > 0
    now[0] = 1.1
    assert limiter.take("hammering") == 0  # refilled on time, as without the flood
    assert limiter.take("hammering") > 0


def test_given_keys_that_have_refilled_when_the_bound_is_reached_then_they_are_dropped_first():
    now = [0.0]
    limiter = RateLimiter(60, burst=1, clock=lambda: now[0], max_keys=4)
    for i in range(4):
        limiter.take(f"old-{i}")
    now[0] = 10.0  # every old bucket is full again: the same as no bucket
    limiter.take("new")
    assert len(limiter) == 1


async def test_given_a_cold_token_cache_when_a_burst_of_requests_presents_one_token_then_the_vault_verifies_it_once(
        jp_serverapp, proxy_token, http_server, jp_http_port, jp_base_url, http, monkeypatch):
    # Each request of a burst used to read, decrypt and hash the token in its own worker thread.
    token = await proxy_token("burst")
    kv = jp_serverapp.web_app.settings["keyvault_manager"]
    kv.forget_tokens()
    verifications = []
    original = kv.tokens.verify

    def counted(*args, **kwargs):
        verifications.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(kv.tokens, "verify", counted)
    url = f"http://localhost:{jp_http_port}{jp_base_url}keyvault/proxy/openai/v1/models"
    forged = f"kvt1_{secrets.token_hex(16)}_{secrets.token_hex(32)}"

    replies = await asyncio.gather(*(http.get(url, headers={"Authorization": f"Bearer {token}"})
                                     for _ in range(CONCURRENT)))
    refused = await http.get(url, headers={"Authorization": f"Bearer {forged}"})

    assert [r.status_code for r in replies] == [200] * CONCURRENT
    assert refused.status_code == 401  # a refusal is still each request's own
    assert len(verifications) == 2
    assert kv._verified_tokens.loads == 2  # the same count, seen from the cache
