"""Vault access tokens: minted by REST or CLI, used from outside any kernel (a plain Python
process with the real openai SDK) against the real server proxy and the local fake upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

PROXY = "keyvault/proxy/openai/v1"


@pytest.fixture
def server_log(caplog, jp_serverapp):
    """Every log record of the server (all loggers, DEBUG and up), as text."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    keep = Keep(level=logging.DEBUG)
    logging.getLogger().addHandler(keep)
    jp_serverapp.log.addHandler(keep)
    caplog.set_level(logging.DEBUG)
    yield lambda: "\n".join([logging.Formatter("%(name)s %(message)s").format(r) for r in records] + [caplog.text])
    logging.getLogger().removeHandler(keep)
    jp_serverapp.log.removeHandler(keep)


async def setup_key(rest, name="OPENAI_API_KEY", value=VALID_OPENAI_KEY):
    assert (await rest("PUT", f"credentials/{name}", {"value": value, "provider": "openai"})).status_code == 201


async def mint(rest, *credentials, name="script", days=30) -> dict:
    response = await rest("POST", "tokens", {"name": name, "credentials": list(credentials), "expires_in_days": days})
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"].endswith(f"keyvault/api/tokens/{body['id']}")
    return body


OPENAI_SCRIPT = """
import openai, sys
client = openai.OpenAI(max_retries=0)
try:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    print("REPLY", r.choices[0].message.content)
except openai.APIStatusError as exc:
    print("STATUS", exc.status_code, exc.message)
"""


async def run_openai_script(server_url: str, token: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "OPENAI_"))}
    env.update(OPENAI_BASE_URL=server_url + PROXY, OPENAI_API_KEY=token)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", OPENAI_SCRIPT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_given_a_token_when_a_plain_python_process_uses_the_openai_sdk_then_the_real_key_is_injected_upstream(
        rest, server_url, fake_upstream, server_log, keyvault_config):
    await setup_key(rest)
    minted = await mint(rest, "OPENAI_API_KEY")
    token = minted["token"]
    assert re.fullmatch(r"kvt1_[0-9a-f]{32}_[0-9a-f]{64}", token)

    out = await run_openai_script(server_url, token)

    assert f"REPLY {REPLY_TEXT}" in out
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY]
    assert all(token not in json.dumps(r.headers) + r.body.decode("utf-8", "replace")
               for r in fake_upstream.requests)  # never forwarded upstream
    listed = await rest("GET", "tokens")
    item = listed.json()["tokens"][0]
    assert item["id"] == minted["id"] and item["credentials"] == ["OPENAI_API_KEY"] and item["last_used_at"]
    assert set(item) == {"id", "name", "credentials", "created_at", "last_used_at", "expires_at"}
    secret_part = token.rsplit("_", 1)[1]
    for where in (listed.text, (await rest("GET", "credentials")).text, (await rest("GET", "audit?limit=200")).text,
                  server_log()):
        assert secret_part not in where
    db = open(keyvault_config["vault_path"], "rb").read()
    assert secret_part.encode() not in db and token.encode() not in db


async def test_given_an_expired_deleted_or_forged_token_then_the_proxy_refuses_and_nothing_reaches_upstream(
        rest, server_url, fake_upstream, keyvault_app):
    await setup_key(rest)
    expired, deleted = await mint(rest, "OPENAI_API_KEY", name="old"), await mint(rest, "OPENAI_API_KEY", name="gone")
    rec_name = "KVT_" + expired["id"]
    rec = keyvault_app.vault.backend.get_credential(keyvault_app.owner, rec_name)
    rec.metadata = {**rec.metadata, "expires_at": time.time() - 1}  # as if its lifetime had passed
    keyvault_app.vault.backend.upsert_credential(rec)
    assert (await rest("DELETE", f"tokens/{deleted['id']}")).status_code == 204
    forged = expired["token"][:-4] + "0000"

    outs = [await run_openai_script(server_url, t) for t in (expired["token"], deleted["token"], forged)]

    assert all(o.startswith("STATUS 401") and "vault access token refused" in o for o in outs), outs
    assert fake_upstream.requests == []
    events = [e for e in (await rest("GET", "audit?limit=200")).json()["events"] if e["action"] == "token_auth"]
    assert {e["outcome"] for e in events} == {"refused"} and refused_attempts(events) == 3


async def test_given_a_token_for_another_credential_when_used_for_openai_then_403_and_nothing_upstream(
        rest, server_url, fake_upstream):
    await setup_key(rest)
    await setup_key(rest, "OTHER_KEY", VALID_OPENAI_KEY)
    minted = await mint(rest, "OTHER_KEY")
    out = await run_openai_script(server_url, minted["token"])
    assert out.startswith("STATUS 403") and "may not use OPENAI_API_KEY" in out
    assert fake_upstream.requests == []
    # The same token with the credential it was granted works.
    async with httpx.AsyncClient(trust_env=False, timeout=30) as tool:
        ok = await tool.get(server_url + PROXY + "/models", headers={"Authorization": f"Bearer {minted['token']}",
                                                                     "X-KeyVault-Credential": "OTHER_KEY"})
    assert ok.status_code == 200


async def test_given_repeated_bad_attempts_on_one_token_id_then_429_with_retry_after_and_every_failure_is_audited(
        rest, server_url, fake_upstream, keyvault_app):
    """The limit is per token id, not per client address: behind one proxy (one address) another
    user's good token keeps working while the failing id is blocked."""
    await setup_key(rest)
    good = (await mint(rest, "OPENAI_API_KEY"))["token"]
    limit = int(keyvault_app.token_failures_per_minute)
    bad = "kvt1_" + "0" * 32 + "_" + "1" * 64
    async with httpx.AsyncClient(trust_env=False, timeout=30) as tool:
        replies = [await tool.get(server_url + PROXY + "/models", headers={"Authorization": f"Bearer {bad}"})
                   for _ in range(limit + 2)]
        blocked_good = await tool.get(server_url + PROXY + "/models", headers={"Authorization": f"Bearer {good}"})

    codes = [r.status_code for r in replies]
    assert codes[:limit] == [401] * limit and codes[limit:] == [429, 429]
    assert int(replies[-1].headers["retry-after"]) >= 1
    assert blocked_good.status_code == 200  # another token id from the same address is not punished
    events = [e for e in (await rest("GET", "audit?limit=200")).json()["events"] if e["action"] == "token_auth"]
    assert refused_attempts(events) == limit + 1 and len(fake_upstream.requests) == 1


def refused_attempts(events: list[dict]) -> int:
    """Failed token attempts the audit rows stand for (one row per second, each saying how many)."""
    return sum(int(e["detail"].split(" failed attempt(s)", 1)[0]) for e in events if e["outcome"] == "refused")


async def test_given_a_flood_of_forged_token_ids_then_each_second_is_one_audit_row_that_counts_them(
        rest, server_url, fake_upstream):
    """The attack: anyone who reaches the proxy (any hub user through JupyterHub's proxy, any local user
    on the loopback lane) sent forged tokens, each a new id the failure limit does not know, and each
    wrote its own audit row: the owner's audit log and disk grew at the attacker's pace."""
    started = time.monotonic()
    async with httpx.AsyncClient(trust_env=False, timeout=30) as tool:
        replies = await asyncio.gather(*(
            tool.get(server_url + PROXY + "/models", headers={"Authorization": f"Bearer kvt1_{i:032x}_{'1' * 64}"})
            for i in range(300)))
    seconds = time.monotonic() - started
    assert {r.status_code for r in replies} == {401} and fake_upstream.requests == []
    events = [e for e in (await rest("GET", "audit?limit=1000")).json()["events"] if e["action"] == "token_auth"]
    assert refused_attempts(events) == 300
    assert 1 <= len(events) <= seconds + 2, (len(events), seconds)  # a row a second, not one each
    assert all(e["target"] == "OPENAI_API_KEY" and e["detail"].count(" from token:") == 5 for e in events[:1])


async def test_given_token_requests_with_bad_input_then_422_and_nothing_is_created(rest):
    bodies = [{"name": "x", "credentials": "OPENAI_API_KEY"}, {"name": "", "credentials": ["A"]},
              {"name": "x", "credentials": []}, {"name": "x", "credentials": ["1bad"]},
              {"name": "x", "credentials": ["A"], "expires_in_days": 0},
              {"name": "x", "credentials": ["A"], "expires_in_days": True},
              {"name": "x", "credentials": ["A"], "scope": "all"}]
    codes = [(await rest("POST", "tokens", b)).status_code for b in bodies]
    assert codes == [422] * len(bodies)
    assert (await rest("GET", "tokens")).json() == {"tokens": []}


async def test_given_a_credential_and_a_token_then_each_delete_route_only_touches_its_own_kind(rest, keyvault_app):
    await setup_key(rest)
    minted = await mint(rest, "OPENAI_API_KEY")
    record = "KVT_" + minted["id"]

    assert (await rest("DELETE", "tokens/OPENAI_API_KEY")).status_code == 404
    assert (await rest("DELETE", f"credentials/{record}")).status_code == 404
    assert (await rest("PUT", f"credentials/{record}", {"value": "x", "provider": "openai"})).status_code == 422
    assert (await rest("PUT", "credentials/NEW_ONE", {"value": "x", "type": "vault_token"})).status_code == 422
    names = [c["name"] for c in (await rest("GET", "credentials")).json()["credentials"]]
    assert names == ["OPENAI_API_KEY"]
    assert [t["id"] for t in (await rest("GET", "tokens")).json()["tokens"]] == [minted["id"]]
    assert (await rest("DELETE", f"tokens/{minted['id']}")).status_code == 204
    assert (await rest("DELETE", f"tokens/{minted['id']}")).status_code == 404


def test_given_the_cli_when_creating_listing_and_deleting_tokens_then_the_token_is_printed_once(tmp_path, master_key):
    env = {**os.environ, "KEYVAULT_MASTER_KEY": master_key}
    base = [sys.executable, "-m", "jupyter_keyvault.cli", "token"]
    vault = ["--vault-path", str(tmp_path / "v.db")]

    created = subprocess.run(base + ["create", "laptop", "--credential", "OPENAI_API_KEY", "--credential", "B",
                                     "--expires", "2w"] + vault, env=env, capture_output=True, text=True)
    listed = subprocess.run(base + ["list", "--json"] + vault, env=env, capture_output=True, text=True)
    text = subprocess.run(base + ["list"] + vault, env=env, capture_output=True, text=True)
    bad = subprocess.run(base + ["create", "x", "--expires", "forever"] + vault, env=env, capture_output=True,
                         text=True)

    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert re.fullmatch(r"kvt1_[0-9a-f]{32}_[0-9a-f]{64}", token) and "shown only now" in created.stderr
    items = json.loads(listed.stdout)
    assert [(i["name"], i["credentials"]) for i in items] == [("laptop", ["B", "OPENAI_API_KEY"])]
    assert token.rsplit("_", 1)[1] not in listed.stdout + text.stdout
    assert bad.returncode == 1 and "expiry must look like" in bad.stderr
    deleted = subprocess.run(base + ["delete", items[0]["id"]] + vault, env=env, capture_output=True, text=True)
    again = subprocess.run(base + ["delete", items[0]["id"]] + vault, env=env, capture_output=True, text=True)
    assert deleted.returncode == 0 and again.returncode == 1 and "no token with that id" in again.stderr

