"""What the proxy pays once per key instead of once per request, and what that must never cost.

Real pieces: pytest-jupyter's in-process server with the extension, real kernels signing each
request with their session key, the real openai SDK, the local FakeUpstream recording every key
it receives. Covered here: the decrypted-key cache never serves a replaced or deleted key once
the write returned (also for reads that were in flight during the write), verified vault access
tokens are cached and forgotten at revocation, and every proxied use reaches the audit log and
the last-used time, off the request path, even when the server stops right after the request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from dataclasses import dataclass

import httpx2
import pytest

from jupyter_keyvault.kernel_auth import make_credential
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

MESSAGES = [{"role": "user", "content": "hi"}]
PROXY = "keyvault/proxy/openai/v1"


@dataclass
class Kernel:
    id: str
    key: bytes

    def headers(self) -> dict[str, str]:
        credential = make_credential(self.id, self.key, int(time.time()), secrets.token_hex(16))
        return {"Authorization": "Bearer " + credential}


@pytest.fixture
def kernel(jp_serverapp, jp_asyncio_loop) -> Kernel:
    km = jp_serverapp.kernel_manager
    kid = jp_asyncio_loop.run_until_complete(km.start_kernel())
    yield Kernel(kid, km.get_kernel(kid).session.key)
    jp_asyncio_loop.run_until_complete(km.shutdown_all(now=True))


@pytest.fixture
def proxy_url(http_server, jp_http_port, jp_base_url) -> str:
    return f"http://localhost:{jp_http_port}{jp_base_url}{PROXY}"


@pytest.fixture
def store(jp_fetch):
    async def put(name: str, value: str):
        response = await jp_fetch("keyvault", "api", "credentials", name, method="PUT",
                                  body=json.dumps({"value": value, "provider": "openai"}))
        assert response.code in (201, 204), response.body

    return put


def manager(jp_serverapp):
    return jp_serverapp.web_app.settings["keyvault_manager"]


async def proxied(http, proxy_url: str, headers: dict, tag: str = "") -> httpx2.Response:
    return await http.post(proxy_url + "/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES},
                           headers={**headers, "Idempotency-Key": tag or secrets.token_hex(8)})


def key_of(fake_upstream, tag: str) -> str:
    [request] = [r for r in fake_upstream.requests if r.headers.get("idempotency-key") == tag]
    return request.api_keys[0]


async def test_given_reads_in_flight_when_a_key_is_replaced_then_no_request_sent_after_the_put_returned_gets_the_old_key(
        jp_serverapp, kernel, proxy_url, http, store, fake_upstream):
    # Each round replaces the key while cache misses (decryptions of the old value) are in flight;
    # a miss that finishes after the write must not put the old value back in the cache.
    keys = [f"sk-proj-R3PLACED{i:03d}" + secrets.token_hex(20) for i in range(25)]
    fake_upstream.valid_keys = {VALID_OPENAI_KEY, *keys}
    await store("OPENAI_API_KEY", VALID_OPENAI_KEY)
    for key in keys:
        in_flight = [asyncio.ensure_future(proxied(http, proxy_url, kernel.headers())) for _ in range(6)]
        await asyncio.sleep(0)
        await store("OPENAI_API_KEY", key)
        tag = secrets.token_hex(8)

        after = await proxied(http, proxy_url, kernel.headers(), tag)

        assert after.status_code == 200, after.text
        assert key_of(fake_upstream, tag) == key  # the old value never left after the PUT returned
        await asyncio.gather(*in_flight)


async def test_given_a_decryption_that_ends_after_a_replace_returned_then_its_old_value_is_never_served_again(
        jp_serverapp, kernel, proxy_url, http, store, fake_upstream, monkeypatch):
    # The same race, made certain: the vault read of the old value is held until the PUT has returned.
    kv = manager(jp_serverapp)
    new_key = "sk-proj-N3WKEY" + secrets.token_hex(20)
    fake_upstream.valid_keys = {VALID_OPENAI_KEY, new_key}
    await store("OPENAI_API_KEY", VALID_OPENAI_KEY)
    read_old, release = threading.Event(), threading.Event()
    original = kv.vault.upstream

    def held_upstream(*args, **kwargs):
        result = original(*args, **kwargs)
        read_old.set()
        release.wait(10)
        return result

    monkeypatch.setattr(kv.vault, "upstream", held_upstream)
    slow = asyncio.ensure_future(proxied(http, proxy_url, kernel.headers()))
    assert await asyncio.to_thread(read_old.wait, 10)
    monkeypatch.setattr(kv.vault, "upstream", original)
    await store("OPENAI_API_KEY", new_key)
    release.set()
    assert (await slow).status_code == 200  # began before the PUT: the old key is allowed here
    tag = secrets.token_hex(8)

    after = await proxied(http, proxy_url, kernel.headers(), tag)

    assert after.status_code == 200, after.text
    assert key_of(fake_upstream, tag) == new_key


async def test_given_a_cached_key_when_it_is_deleted_then_the_next_request_is_refused_and_reaches_no_upstream(
        jp_serverapp, kernel, proxy_url, http, store, jp_fetch, fake_upstream):
    await store("OPENAI_API_KEY", VALID_OPENAI_KEY)
    assert (await proxied(http, proxy_url, kernel.headers())).status_code == 200  # now cached
    seen = len(fake_upstream.requests)

    await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="DELETE")
    refused = await proxied(http, proxy_url, kernel.headers())

    assert refused.status_code == 401
    assert len(fake_upstream.requests) == seen


async def test_given_a_token_used_once_when_it_is_revoked_then_the_next_request_is_401_at_once(
        jp_serverapp, proxy_url, http, store, jp_fetch, fake_upstream):
    await store("OPENAI_API_KEY", VALID_OPENAI_KEY)
    created = json.loads((await jp_fetch("keyvault", "api", "tokens", method="POST", body=json.dumps(
        {"name": "ci", "credentials": ["OPENAI_API_KEY"]}))).body)
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert (await proxied(http, proxy_url, headers)).status_code == 200
    assert (await proxied(http, proxy_url, headers)).status_code == 200  # served from the verified-token cache
    seen = len(fake_upstream.requests)

    await jp_fetch("keyvault", "api", "tokens", created["id"], method="DELETE")
    refused = await proxied(http, proxy_url, headers)

    assert refused.status_code == 401
    assert len(fake_upstream.requests) == seen


async def test_given_a_token_when_it_asks_for_a_credential_outside_its_scope_after_a_cached_use_then_403(
        jp_serverapp, proxy_url, http, store, jp_fetch, fake_upstream):
    await store("OPENAI_API_KEY", VALID_OPENAI_KEY)
    await store("OTHER_KEY", VALID_OPENAI_KEY[::-1])
    created = json.loads((await jp_fetch("keyvault", "api", "tokens", method="POST", body=json.dumps(
        {"name": "ci", "credentials": ["OPENAI_API_KEY"]}))).body)
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert (await proxied(http, proxy_url, headers)).status_code == 200
    seen = len(fake_upstream.requests)

    denied = await proxied(http, proxy_url, {**headers, "X-KeyVault-Credential": "OTHER_KEY"})

    assert denied.status_code == 403
    assert len(fake_upstream.requests) == seen


async def test_given_proxied_requests_when_the_server_stops_right_after_then_every_use_is_audited_and_last_used_set(
        jp_serverapp, kernel, proxy_url, http, store, jp_fetch, master_key, keyvault_config):
    from jupyter_keyvault.store import SQLiteBackend, Vault
    from jupyter_keyvault.store.tokens import TokenStore

    await store("OPENAI_API_KEY", VALID_OPENAI_KEY)
    created = json.loads((await jp_fetch("keyvault", "api", "tokens", method="POST", body=json.dumps(
        {"name": "ci", "credentials": ["OPENAI_API_KEY"]}))).body)
    for _ in range(7):
        assert (await proxied(http, proxy_url, kernel.headers())).status_code == 200
    for _ in range(5):
        response = await proxied(http, proxy_url, {"Authorization": f"Bearer {created['token']}"})
        assert response.status_code == 200

    await manager(jp_serverapp).close()  # what a clean stop does: nothing waits for the next batch

    vault = Vault(SQLiteBackend(keyvault_config["vault_path"]), env={"KEYVAULT_MASTER_KEY": master_key})
    try:
        owner = manager(jp_serverapp).owner
        uses = [e for e in vault.audit_events(owner, 1000) if e.action == "use" and e.target == "OPENAI_API_KEY"]
        counted = {}
        for event in uses:
            assert event.outcome == "ok"
            counted[event.actor.split(":")[0]] = counted.get(event.actor.split(":")[0], 0) + requests_in(event)
        [info] = [i for i in vault.list(owner) if i.name == "OPENAI_API_KEY"]
        [token] = TokenStore(vault).list(owner)
    finally:
        vault.close()
    assert counted == {"kernel": 7, "token": 5}
    assert info.last_used_at is not None
    assert token.last_used_at is not None


def requests_in(event) -> int:
    """An audited use row counts one request, or the `requests=N` it says it stands for."""
    for part in (event.detail or "").split():
        if part.startswith("requests="):
            return int(part.partition("=")[2])
    return 1


async def test_given_a_cold_cache_when_a_burst_of_requests_arrives_then_the_key_is_read_once_and_every_use_counted(
        jp_serverapp, kernel, proxy_url, http, store, master_key, keyvault_config, monkeypatch):
    # 60 concurrent requests on a cache that has just been emptied (what happens every few seconds
    # under load): one vault read between them, not 60 decryptions queued on worker threads.
    from jupyter_keyvault.store import SQLiteBackend, Vault

    kv = manager(jp_serverapp)
    await store("OPENAI_API_KEY", VALID_OPENAI_KEY)
    reads = []
    original = kv.vault.upstream

    def counted_upstream(*args, **kwargs):
        reads.append(1)
        time.sleep(0.05)  # a slow disk: the burst arrives while the first read runs
        return original(*args, **kwargs)

    monkeypatch.setattr(kv.vault, "upstream", counted_upstream)
    kv.invalidate("OPENAI_API_KEY")

    answers = await asyncio.gather(*(proxied(http, proxy_url, kernel.headers()) for _ in range(60)))

    assert [a.status_code for a in answers] == [200] * 60
    assert len(reads) == 1
    await kv.close()
    vault = Vault(SQLiteBackend(keyvault_config["vault_path"]), env={"KEYVAULT_MASTER_KEY": master_key})
    try:
        uses = [e for e in vault.audit_events(kv.owner, 1000) if e.action == "use" and e.target == "OPENAI_API_KEY"]
    finally:
        vault.close()
    assert sum(requests_in(e) for e in uses) == 60  # the read's own use plus 59 served from it
