"""OAuth2 credentials against a real authorization server (authlib, on 127.0.0.1) and a real
Jupyter server: the browser is an HTTP client that follows redirects and keeps cookies; the
authorization server approves consent at once, requires PKCE S256 and rotates refresh tokens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from jupyter_keyvault.testing.oauth_server import OAuthTestServer

CLIENT_ID = "kv-client"
CLIENT_SECRET = "cs-" + secrets.token_hex(16)
PROVIDER = "testas"


@pytest.fixture
def oauth_as():
    server = OAuthTestServer().start()
    yield server
    server.stop()


@pytest.fixture
def keyvault_config(keyvault_config, oauth_as):
    return {**keyvault_config, "oauth_providers": {PROVIDER: oauth_as.provider_config(CLIENT_ID)},
            "oauth_refresh_skew": 30.0}


@pytest.fixture
def open_browser(server_url, jp_serverapp, jp_fetch, oauth_as, keyvault_app):
    """Factory: a logged-in browser (login cookie from a ?token= visit), the client secret stored via REST."""

    async def open_browser() -> httpx.AsyncClient:
        oauth_as.add_client(CLIENT_ID, CLIENT_SECRET, [server_url + "keyvault/oauth/callback"])
        await jp_fetch("keyvault", "api", "credentials", "OAUTH_TESTAS_CLIENT_SECRET", method="PUT",
                       body=json.dumps({"value": CLIENT_SECRET, "type": "oauth_client_secret"}))
        client = httpx.AsyncClient(follow_redirects=True, trust_env=False, timeout=30)
        login = await client.get(server_url + "api/status", params={"token": jp_serverapp.identity_provider.token})
        assert login.status_code == 200 and client.cookies
        return client

    return open_browser


def start_url(server_url: str) -> str:
    return server_url + f"keyvault/oauth/{PROVIDER}/start"


async def connect(browser, server_url, jp_base_url, name="DRIVE"):
    return await browser.get(start_url(server_url), params={"name": name, "next": jp_base_url + "api/status"})


async def credentials(jp_fetch) -> dict:
    data = json.loads((await jp_fetch("keyvault", "api", "credentials")).body)
    return {item["name"]: item for item in data["credentials"]}


async def audit(jp_fetch) -> list[dict]:
    return json.loads((await jp_fetch("keyvault", "api", "audit", params={"limit": 200})).body)["events"]


def issued_secrets(oauth_as) -> list[str]:
    return [t.access_token for t in oauth_as.tokens] + [t.refresh_token for t in oauth_as.tokens if t.refresh_token]


async def test_given_a_configured_provider_when_the_browser_connects_then_tokens_are_stored_encrypted_and_only_presence_is_listed(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_config):
    browser = await open_browser()
    status = json.loads((await jp_fetch("keyvault", "api", "status")).body)
    assert status["oauth_providers"] == [{"id": PROVIDER, "display_name": "Test AS"}]

    final = await connect(browser, server_url, jp_base_url)

    assert final.status_code == 200 and urlsplit(str(final.url)).path == jp_base_url + "api/status"
    hops = [str(r.url) for r in final.history]
    assert hops[0].startswith(start_url(server_url)) and hops[1].startswith(oauth_as.url + "/authorize")
    assert hops[2].startswith(server_url + "keyvault/oauth/callback")
    cookie = final.history[0].headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert f"Path={jp_base_url}keyvault/oauth/" in cookie
    authorize = oauth_as.authorize_requests[-1]
    assert authorize["code_challenge_method"] == "S256" and len(authorize["code_challenge"]) == 43
    assert oauth_as.token_requests == ["authorization_code"]

    item = (await credentials(jp_fetch))["DRIVE"]
    assert item["type"] == "oauth2"
    assert item["oauth"]["provider"] == PROVIDER and item["oauth"]["scopes"] == ["read", "write"]
    assert item["oauth"]["expires_at"] and item["oauth"]["needs_reauth"] is False
    listing = (await jp_fetch("keyvault", "api", "credentials")).body.decode()
    db = open(keyvault_config["vault_path"], "rb").read()
    for value in issued_secrets(oauth_as) + [CLIENT_SECRET]:
        assert value not in listing and value.encode() not in db


async def test_given_a_tampered_pkce_verifier_when_the_code_is_exchanged_then_the_as_refuses_and_nothing_is_stored(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app):
    browser = await open_browser()
    browser.follow_redirects = False
    start = await browser.get(start_url(server_url), params={"name": "DRIVE", "next": jp_base_url + "api/status"})
    assert start.status_code == 302
    flow = next(iter(keyvault_app.oauth._pending.values()))
    flow.verifier = secrets.token_urlsafe(48)  # not the one the challenge was made from
    to_callback = await browser.get(start.headers["location"])
    page = await browser.get(to_callback.headers["location"])

    assert page.status_code == 502 and "text/html" in page.headers["content-type"]
    assert "invalid_grant" in page.text and "Nothing was stored" in page.text
    assert "DRIVE" not in await credentials(jp_fetch)
    assert oauth_as.tokens == []
    assert any(e["action"] == "oauth_connect" and e["outcome"] == "error" for e in await audit(jp_fetch))


async def test_given_a_wrong_missing_or_replayed_state_when_the_callback_runs_then_a_clear_page_and_nothing_stored(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as):
    browser = await open_browser()
    browser.follow_redirects = False
    start = await browser.get(start_url(server_url), params={"name": "DRIVE", "next": jp_base_url + "api/status"})
    at_as = await browser.get(start.headers["location"])
    callback = at_as.headers["location"]
    query = parse_qs(urlsplit(callback).query)

    wrong = await browser.get(server_url + "keyvault/oauth/callback",
                              params={"code": query["code"][0], "state": "x" + query["state"][0]})
    assert wrong.status_code == 400 and "invalid, expired or was already used" in wrong.text
    # Any callback clears the state cookie: the right URL now arrives without it and is refused too.
    no_cookie = await browser.get(callback)
    assert no_cookie.status_code == 400
    assert "DRIVE" not in await credentials(jp_fetch)

    # A full, successful flow; then its callback URL replayed with a fresh cookie-less request.
    browser.follow_redirects = True
    ok = await connect(browser, server_url, jp_base_url, name="OTHER")
    assert ok.status_code == 200
    replay = await browser.get(str(ok.history[2].url))
    assert replay.status_code == 400
    assert oauth_as.token_requests == ["authorization_code"]  # neither refusal reached the token endpoint
    events = [e for e in await audit(jp_fetch) if e["action"] == "oauth_connect"]
    assert [e["outcome"] for e in events].count("refused") == 3


async def test_given_the_user_denies_consent_when_the_provider_redirects_back_then_the_page_says_so_and_nothing_is_stored(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as):
    browser = await open_browser()
    oauth_as.deny_consent = True
    page = await connect(browser, server_url, jp_base_url)
    assert page.status_code == 400 and "declined access" in page.text
    assert "DRIVE" not in await credentials(jp_fetch)
    assert any(e["action"] == "oauth_connect" and e["outcome"] == "denied" for e in await audit(jp_fetch))


@pytest.mark.parametrize("next_path", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "lab",
                                       "/elsewhere/lab"])
async def test_given_a_next_that_leaves_the_server_when_starting_then_it_is_refused_before_any_redirect(
        open_browser, server_url, oauth_as, next_path):
    browser = await open_browser()
    browser.follow_redirects = False
    page = await browser.get(start_url(server_url), params={"name": "DRIVE", "next": next_path})
    assert page.status_code == 400 and "location" not in page.headers
    assert oauth_as.authorize_requests == []


async def test_given_an_unknown_provider_or_bad_name_when_starting_then_400_and_no_redirect(
        open_browser, server_url, jp_base_url, oauth_as):
    browser = await open_browser()
    browser.follow_redirects = False
    unknown = await browser.get(server_url + "keyvault/oauth/nope/start", params={"name": "DRIVE"})
    bad_name = await browser.get(start_url(server_url), params={"name": "1 bad", "next": jp_base_url + "api/status"})
    assert unknown.status_code == 400 and "no OAuth provider" in unknown.text
    assert bad_name.status_code == 400 and oauth_as.authorize_requests == []


async def test_given_no_login_when_starting_then_the_user_is_sent_to_log_in(server_url, oauth_as, keyvault_app):
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as anonymous:
        page = await anonymous.get(start_url(server_url), params={"name": "DRIVE"})
    assert page.status_code == 302 and "/login" in page.headers["location"]
    assert oauth_as.authorize_requests == []


async def make_token(jp_fetch, *names: str) -> str:
    response = await jp_fetch("keyvault", "api", "tokens", method="POST",
                              body=json.dumps({"name": "t", "credentials": list(names), "expires_in_days": 1}))
    return json.loads(response.body)["token"]


def skip_clock(keyvault_app, seconds: float) -> None:
    keyvault_app.oauth._clock = lambda: time.time() + seconds


async def test_given_an_expired_access_token_when_the_credential_is_used_then_it_is_refreshed_once_and_stored(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app, keyvault_config):
    browser = await open_browser()
    await connect(browser, server_url, jp_base_url)
    token = await make_token(jp_fetch, "DRIVE")
    api = server_url + "keyvault/proxy/oauth/DRIVE/files"
    async with httpx.AsyncClient(trust_env=False, timeout=30) as tool:
        fresh = await tool.get(api, headers={"Authorization": f"Bearer {token}"})
        assert fresh.status_code == 200 and fresh.json()["user"] == "alice" and oauth_as.refresh_calls == 0
        first_access = oauth_as.tokens[0].access_token

        oauth_as.expire_access_tokens()
        skip_clock(keyvault_app, 3600)
        after = await tool.get(api, headers={"Authorization": f"Bearer {token}"})

    assert after.status_code == 200 and after.json()["path"] == "files"
    assert oauth_as.refresh_calls == 1
    seen = oauth_as.api_requests[-1]["headers"]["Authorization"]
    assert seen != f"Bearer {first_access}" and seen == f"Bearer {oauth_as.tokens[-1].access_token}"
    assert all(token not in str(r) for r in oauth_as.api_requests)  # the vault token never goes upstream
    db = open(keyvault_config["vault_path"], "rb").read()
    assert all(v.encode() not in db for v in issued_secrets(oauth_as))
    assert any(e["action"] == "refresh" for e in await audit(jp_fetch))


async def test_given_a_path_that_leaves_the_api_base_when_proxied_then_it_is_refused_before_any_token_is_used(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app):
    browser = await open_browser()
    await connect(browser, server_url, jp_base_url)
    token = await make_token(jp_fetch, "DRIVE")
    oauth_as.expire_access_tokens()
    skip_clock(keyvault_app, 3600)  # a use would refresh: a refused path must not
    before = len(oauth_as.api_requests)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as tool:
        for escape in ("..%2F..%2Ftoken", "%2e%2e/revoke", "a//evil.example/x", "files/..%2f..%2fadmin"):
            refused = await tool.get(server_url + f"keyvault/proxy/oauth/DRIVE/{escape}",
                                     headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code in (400, 404), (escape, refused.status_code)
        missing = await tool.get(server_url + "keyvault/proxy/oauth/NOPE/files",
                                 headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code in (403, 404)
    assert oauth_as.refresh_calls == 0 and len(oauth_as.api_requests) == before


async def test_given_20_concurrent_uses_of_an_expired_credential_then_the_as_sees_exactly_one_refresh(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app):
    browser = await open_browser()
    await connect(browser, server_url, jp_base_url)
    token = await make_token(jp_fetch, "DRIVE")
    oauth_as.expire_access_tokens()
    oauth_as.refresh_delay = 0.5
    skip_clock(keyvault_app, 3600)
    keyvault_app.token_failure_limiter.capacity = 100  # not under test here
    async with httpx.AsyncClient(trust_env=False, timeout=60) as tool:
        replies = await asyncio.gather(*[
            tool.get(server_url + f"keyvault/proxy/oauth/DRIVE/item/{i}", headers={"Authorization": f"Bearer {token}"})
            for i in range(20)])

    assert [r.status_code for r in replies] == [200] * 20
    assert oauth_as.refresh_calls == 1
    assert len({r.json()["user"] for r in replies}) == 1


async def test_given_a_revoked_refresh_token_when_refresh_is_needed_then_the_credential_needs_reauth(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app):
    browser = await open_browser()
    await connect(browser, server_url, jp_base_url)
    token = await make_token(jp_fetch, "DRIVE")
    async with httpx.AsyncClient(trust_env=False) as revoker:
        revoked = await revoker.post(oauth_as.url + "/revoke", data={"token": oauth_as.tokens[0].refresh_token},
                                     auth=(CLIENT_ID, CLIENT_SECRET))
    assert revoked.status_code == 200 and oauth_as.tokens[0].revoked
    skip_clock(keyvault_app, 3600)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as tool:
        refused = await tool.get(server_url + "keyvault/proxy/oauth/DRIVE/files",
                                 headers={"Authorization": f"Bearer {token}"})
        again = await tool.get(server_url + "keyvault/proxy/oauth/DRIVE/files",
                               headers={"Authorization": f"Bearer {token}"})

    assert refused.status_code == 401 and "connected again" in refused.json()["error"]["message"]
    assert "invalid_grant" in refused.json()["error"]["message"]
    assert again.status_code == 401 and oauth_as.refresh_calls == 1  # no more calls once marked
    item = (await credentials(jp_fetch))["DRIVE"]
    assert item["oauth"]["needs_reauth"] is True

    # Connecting again clears the flag.
    skip_clock(keyvault_app, 0)
    await connect(browser, server_url, jp_base_url)
    assert (await credentials(jp_fetch))["DRIVE"]["oauth"]["needs_reauth"] is False


@pytest.mark.keyvault(allow_direct_access=True)  # direct mode is off by default where kernels are isolated
async def test_given_a_connected_credential_when_a_kernel_uses_keyvault_http_then_the_server_injects_a_fresh_token(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app, server_kernel):
    browser = await open_browser()
    await connect(browser, server_url, jp_base_url)
    kernel = await server_kernel("oauth.ipynb")
    result = await kernel.execute(
        "import keyvault\n"
        "client = keyvault.http('DRIVE')\n"
        "r = client.get('files', params={'q': 'x'})\n"
        "print('HTTP', r.status_code, r.json()['user'], r.json()['path'])\n"
        "t = keyvault.token('DRIVE')\n"
        "print('TOKEN', repr(t), len(t.reveal()))\n"
        "import asyncio\n"
        "async def many():\n"
        "    async with keyvault.http('DRIVE', asynchronous=True) as c:\n"
        "        return [r.status_code for r in await asyncio.gather(*[c.get(f'a/{i}') for i in range(5)])]\n"
        "print('ASYNC', await many())\n"
    )
    assert result.error is None, result.text
    assert "HTTP 200 alice files" in result.stdout
    assert "ASYNC [200, 200, 200, 200, 200]" in result.stdout
    issued = oauth_as.tokens[0].access_token
    assert f"TOKEN {issued[:0]}" in result.stdout and f" {len(issued)}" in result.stdout.split("TOKEN", 1)[1]
    assert issued not in result.text  # the revealed token is masked in outputs
    assert oauth_as.api_requests[0]["query"] == "q=x"
    assert oauth_as.api_requests[0]["headers"]["Authorization"] == f"Bearer {issued}"


@pytest.mark.keyvault(allow_direct_access=False)
async def test_given_direct_access_disabled_when_a_kernel_asks_for_the_token_then_it_is_refused(
        open_browser, server_url, jp_base_url, server_kernel, keyvault_app):
    browser = await open_browser()
    keyvault_app.allow_direct_access = False
    await connect(browser, server_url, jp_base_url)
    kernel = await server_kernel("oauth2.ipynb")
    result = await kernel.execute("import keyvault\nkeyvault.token('DRIVE')")
    assert result.error is not None and "direct access is disabled" in result.text


@pytest.mark.parametrize("bad, message", [
    ({"authorize_url": "http://example.com/auth"}, "plain http"),
    ({"client_id": ""}, "client_id is required"),
    ({"client_secret": "x"}, "never put the client secret"),
    ({"scopes": [1]}, "scopes"),
    ({"bogus": 1}, "unknown key"),
])
def test_given_bad_provider_config_then_a_clear_trait_error(bad, message):
    from traitlets import TraitError

    from jupyter_keyvault.oauth import GOOGLE_EXAMPLE
    from jupyter_keyvault.settings import KeyVault

    conf = {**GOOGLE_EXAMPLE, **bad}
    with pytest.raises(TraitError, match=message):
        KeyVault(oauth_providers={"google": conf})
    assert KeyVault(oauth_providers={"google": GOOGLE_EXAMPLE}).oauth_providers["google"]["client_secret_credential"] \
        == "OAUTH_GOOGLE_CLIENT_SECRET"


async def test_given_a_connected_credential_when_deleted_then_its_tokens_are_revoked_at_the_provider_rfc7009(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app):
    browser = await open_browser()
    await connect(browser, server_url, jp_base_url)
    issued = oauth_as.tokens[0]
    api = oauth_as.url + "/api/me"
    async with httpx.AsyncClient(trust_env=False) as direct:
        assert (await direct.get(api, headers={"Authorization": f"Bearer {issued.access_token}"})).status_code == 200

        response = await jp_fetch("keyvault", "api", "credentials", "DRIVE", method="DELETE")

        assert response.code == 200
        body = json.loads(response.body)
        assert body["deleted"] is True and body["revocation"]["ok"] is True, body
        assert "revoked" in body["revocation"]["detail"]
        hints = [r.get("token_type_hint") for r in oauth_as.revoke_requests]
        assert hints == ["refresh_token", "access_token"] and issued.revoked
        assert (await direct.get(api, headers={"Authorization": f"Bearer {issued.access_token}"})).status_code == 401
    assert "DRIVE" not in await credentials(jp_fetch)
    for value in issued_secrets(oauth_as):
        assert value not in response.body.decode()
    revoke = [e for e in await audit(jp_fetch) if e["action"] == "revoke"]
    assert revoke and revoke[0]["target"] == "DRIVE" and revoke[0]["outcome"] == "ok"


async def test_given_the_provider_is_unreachable_when_an_oauth_credential_is_deleted_then_it_is_deleted_locally_and_the_failure_reported(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app):
    browser = await open_browser()
    await connect(browser, server_url, jp_base_url)
    oauth_as.stop()  # the authorization server is gone

    response = await jp_fetch("keyvault", "api", "credentials", "DRIVE", method="DELETE")

    body = json.loads(response.body)
    assert response.code == 200 and body["revocation"]["ok"] is False and body["revocation"]["attempted"] is True
    assert "unreachable" in body["revocation"]["detail"]
    assert "DRIVE" not in await credentials(jp_fetch)
    events = await audit(jp_fetch)
    assert any(e["action"] == "revoke" and e["outcome"] == "failed" and e["target"] == "DRIVE" for e in events)
    assert any(e["action"] == "delete" and e["outcome"] == "ok" and e["target"] == "DRIVE" for e in events)


async def test_given_no_revocation_endpoint_when_an_oauth_credential_is_deleted_then_the_outcome_says_so(
        open_browser, server_url, jp_base_url, jp_fetch, oauth_as, keyvault_app):
    browser = await open_browser()
    await connect(browser, server_url, jp_base_url)
    keyvault_app.oauth.providers[PROVIDER] = dataclasses.replace(keyvault_app.oauth.providers[PROVIDER],
                                                                 revoke_url=None)

    body = json.loads((await jp_fetch("keyvault", "api", "credentials", "DRIVE", method="DELETE")).body)

    assert body["revocation"] == {"ok": False, "attempted": False, "detail": body["revocation"]["detail"]}
    assert "no revocation endpoint" in body["revocation"]["detail"] and oauth_as.revoke_requests == []
    assert "DRIVE" not in await credentials(jp_fetch)


def test_given_revocation_endpoint_in_config_then_it_is_the_revoke_url_and_a_disagreement_is_refused():
    from jupyter_keyvault.oauth import validate_providers

    conf = {"authorize_url": "https://as.example/a", "token_url": "https://as.example/t", "client_id": "c",
            "api_base_url": "https://api.example"}
    out = validate_providers({"x": {**conf, "revocation_endpoint": "https://as.example/revoke"}})
    assert out["x"]["revoke_url"] == "https://as.example/revoke"
    with pytest.raises(ValueError, match="disagree"):
        validate_providers({"x": {**conf, "revocation_endpoint": "https://as.example/r1",
                                  "revoke_url": "https://as.example/r2"}})
