"""Credential lifetimes through the in-process server's REST API and proxy: expiry refused
everywhere and purged by the background task, expiry edits, key age in listings and status,
and bad lifetime input refused with a 422 that changes nothing."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from jupyter_keyvault.store.errors import CredentialExpired
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY


@pytest.fixture
def rest(server_url, jp_serverapp):
    token = jp_serverapp.identity_provider.token

    async def call(method: str, path: str, body=None, bearer: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}" if bearer else f"token {token}"}
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            return await client.request(method, server_url + path, headers=headers, json=body)

    return call


async def listing(rest) -> dict[str, dict]:
    return {i["name"]: i for i in (await rest("GET", "keyvault/api/credentials")).json()["credentials"]}


async def mint(rest, *names: str) -> str:
    response = await rest("POST", "keyvault/api/tokens", {"name": "t", "credentials": list(names),
                                                          "expires_in_days": 1})
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def chat(rest, token: str) -> httpx.Response:
    return await rest("POST", "keyvault/proxy/openai/v1/chat/completions",
                      {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, bearer=token)


@pytest.mark.keyvault(expiry_check_seconds=3600)  # the purge is called by the test, not the loop
async def test_given_an_expired_credential_then_proxy_test_and_direct_refuse_it_as_expired_and_the_purge_destroys_it(
        rest, keyvault_app, fake_upstream):
    response = await rest("PUT", "keyvault/api/credentials/OPENAI_API_KEY",
                          {"value": VALID_OPENAI_KEY, "expires_in": "2s"})
    assert response.status_code == 201 and response.json()["expires_at"] and not response.json()["expired"]
    token = await mint(rest, "OPENAI_API_KEY")
    assert (await chat(rest, token)).status_code == 200  # fills the proxy's upstream cache too

    await asyncio.sleep(2.2)
    refused = await chat(rest, token)
    assert refused.status_code == 403 and "expired" in refused.text, refused.text
    tested = await rest("POST", "keyvault/api/credentials/OPENAI_API_KEY/test")
    assert tested.status_code == 403 and "expired" in tested.json()["message"]
    with pytest.raises(CredentialExpired):  # what the kernel's direct-mode handler calls
        keyvault_app.vault.resolve(keyvault_app.owner, "OPENAI_API_KEY", purpose="reveal")
    item = (await listing(rest))["OPENAI_API_KEY"]
    assert item["expired"] is True and item["lifetime"] == "stored"
    status = (await rest("GET", "keyvault/api/status")).json()
    assert status["lifetimes"]["expired"] == ["OPENAI_API_KEY"]
    assert any("OPENAI_API_KEY has expired" in w for w in status["warnings"])
    assert len(fake_upstream.requests) == 1  # the refused call never left the server

    assert await keyvault_app.purge_expired() == ["OPENAI_API_KEY"]
    assert "OPENAI_API_KEY" not in await listing(rest)
    assert keyvault_app.vault.backend.get_credential(keyvault_app.owner, "OPENAI_API_KEY") is None
    audit = (await rest("GET", "keyvault/api/audit?limit=100")).json()["events"]
    assert any(e["action"] == "expire" and e["target"] == "OPENAI_API_KEY" for e in audit)
    assert any(e["outcome"] == "expired" and e["target"] == "OPENAI_API_KEY" for e in audit)


@pytest.mark.keyvault(expiry_check_seconds=0.2)
async def test_given_the_background_task_when_a_session_credential_expires_then_it_is_purged_without_a_request(
        rest, keyvault_app):
    response = await rest("PUT", "keyvault/api/credentials/SHORT_KEY",
                          {"value": "short-lived-" + "x" * 20, "session": True, "expires_in": "1s"})
    assert response.status_code == 201 and response.json()["lifetime"] == "session"
    deadline = time.monotonic() + 10
    while "SHORT_KEY" in await listing(rest) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert "SHORT_KEY" not in await listing(rest)
    audit = (await rest("GET", "keyvault/api/audit?limit=100")).json()["events"]
    assert any(e["action"] == "expire" and e["target"] == "SHORT_KEY" for e in audit)


async def test_given_a_credential_when_its_expiry_is_patched_then_it_is_set_and_cleared_and_the_value_kept(
        rest, keyvault_app):
    await rest("PUT", "keyvault/api/credentials/OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})
    response = await rest("PATCH", "keyvault/api/credentials/OPENAI_API_KEY", {"expires_at": "2030-12-24"})
    assert response.status_code == 200 and response.json()["expires_at"].startswith("2030-12-24T00:00:00")
    response = await rest("PATCH", "keyvault/api/credentials/OPENAI_API_KEY",
                          {"metadata": {"note": "x"}, "expires_at": None})
    assert response.status_code == 200 and response.json()["expires_at"] is None
    assert response.json()["metadata"] == {"note": "x"}
    assert keyvault_app.vault.get_value(keyvault_app.owner, "OPENAI_API_KEY") == VALID_OPENAI_KEY


@pytest.mark.parametrize("body", [
    {"session": "yes"},
    {"session": 1},
    {"expires_at": "yesterday"},
    {"expires_at": "2001-01-01"},
    {"expires_at": 12345},
    {"expires_in": "8 hours"},
    {"expires_in": "0s"},
    {"expires_at": "2099-01-01", "expires_in": "8h"},
], ids=["session-string", "session-int", "words", "past", "number", "long-duration", "zero", "both"])
async def test_given_bad_lifetime_fields_when_put_then_422_and_nothing_is_stored(rest, keyvault_app, body, canary):
    response = await rest("PUT", "keyvault/api/credentials/OPENAI_API_KEY", {"value": canary, **body})
    assert response.status_code == 422, response.text
    assert canary not in response.text
    assert keyvault_app.vault.list(keyvault_app.owner) == []


async def test_given_an_old_key_then_it_is_stale_in_the_listing_and_status_and_a_new_value_is_not(
        rest, keyvault_app):
    await rest("PUT", "keyvault/api/credentials/OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})
    rec = keyvault_app.vault.backend.get_credential(keyvault_app.owner, "OPENAI_API_KEY")
    rec.metadata["value_set_at"] = time.time() - 91 * 86400  # as if set 91 days ago
    keyvault_app.vault.backend.upsert_credential(rec)

    item = (await listing(rest))["OPENAI_API_KEY"]
    assert item["stale"] is True and item["age_days"] == 91
    status = (await rest("GET", "keyvault/api/status")).json()
    assert status["lifetimes"]["stale"] == ["OPENAI_API_KEY"] and status["lifetimes"]["key_age_warning_days"] == 90
    assert any("older than 90 days" in w for w in status["warnings"])

    await rest("PUT", "keyvault/api/credentials/OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})  # rotated
    item = (await listing(rest))["OPENAI_API_KEY"]
    assert item["stale"] is False and item["age_days"] == 0


async def test_given_the_set_magic_with_session_and_expires_when_used_from_a_kernel_then_it_works_and_stays_off_disk(
        server_kernel, fake_upstream, keyvault_app, keyvault_config, canary):
    from pathlib import Path

    from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT

    fake_upstream.valid_keys.add(canary)
    kernel = await server_kernel("session.ipynb")
    result = await kernel.execute("%load_ext keyvault\n%keyvault set --session --expires 8h OPENAI_API_KEY",
                                  stdin=[canary])
    assert result.error is None and "for this session only, expires" in result.stdout, result.text
    listed = await kernel.execute("%keyvault list")
    assert "session, expires" in listed.stdout, listed.text
    chat = await kernel.execute(
        "import keyvault\nr = keyvault.openai().chat.completions.create(model='m', "
        "messages=[{'role': 'user', 'content': 'hi'}])\nprint('REPLY', r.choices[0].message.content)")
    assert f"REPLY {REPLY_TEXT}" in chat.stdout, chat.text
    assert fake_upstream.received_keys()[-1] == canary
    info = keyvault_app.vault.info(keyvault_app.owner, "OPENAI_API_KEY")
    assert info.session and info.expires_at is not None
    vault_dir = Path(keyvault_config["vault_path"]).parent
    assert all(canary.encode() not in p.read_bytes() for p in vault_dir.iterdir() if p.is_file())
    assert canary not in result.text + listed.text + chat.text
