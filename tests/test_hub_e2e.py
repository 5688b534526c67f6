"""End to end on a real JupyterHub: the keyvault service, user servers with backend = "hub", real kernels,
the real openai SDK against the fake upstream.

Cast: alice and bob (personal keys), dave (member of group class-a, no personal key), erin (no group,
no key), carol (hub admin). The shared key's value is a canary searched for in every place a user sees.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

import pytest

from jupyter_keyvault.testing.hub import JupyterHubHarness, Response, http, missing_requirements
from jupyter_keyvault.testing.live_server import free_port

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or "")

SERVICE = "keyvault"
ALICE_KEY = "sk-proj-ALICE" + secrets.token_hex(20)
BOB_KEY = "sk-proj-BOB" + secrets.token_hex(20)
SHARED_CANARY = "sk-proj-SHAREDCANARY" + secrets.token_hex(20)


class KVHub:
    """The hub, the fake upstream, and every response body the users saw."""

    def __init__(self, hub: JupyterHubHarness, upstream, master_key: str):
        self.hub = hub
        self.upstream = upstream
        self.master_key = master_key
        self.seen: list[str] = []  # every body and header a user-side client received
        self.kernel_texts: list[str] = []

    def _record(self, resp: Response) -> Response:
        self.seen.append(resp.text)
        self.seen.append(json.dumps(list(resp.headers.get_all())))
        return resp

    def service(self, user: str, method: str, path: str, body=None, headers=None) -> Response:
        url = self.hub.service_url(SERVICE) + path.lstrip("/")
        return self._record(http(method, url, token=self.hub.user_token(user), body=body, headers=headers))

    def server(self, user: str, method: str, path: str, body=None, *, as_user: str | None = None) -> Response:
        token = self.hub.user_token(as_user or user)
        return self._record(self.hub.user_api(user, method, path, body, token=token))

    async def run(self, kernel, code: str):
        result = await kernel.execute(code, timeout=120)
        self.kernel_texts.append(result.text)
        return result


@pytest.fixture(scope="module")
def kvhub(tmp_path_factory):
    from jupyter_keyvault.hub.config import keyvault_service_config
    from jupyter_keyvault.testing.fake_upstream import FakeUpstream

    upstream = FakeUpstream(valid_keys=(ALICE_KEY, BOB_KEY, SHARED_CANARY)).start()
    master_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    data_dir = tmp_path_factory.mktemp("kv-service")
    service, roles, user_env = keyvault_service_config(
        port=free_port(), master_key=master_key, data_dir=str(data_dir), name=SERVICE,
        extra_args=[f"--KeyVaultHubService.provider_base_urls=openai={upstream.openai_base_url}",
                    "--KeyVaultHubService.groups_cache_seconds=0", "--log-level=INFO"])
    hub = JupyterHubHarness(services=[service], load_roles=roles, user_env=user_env, admin_users=["carol"],
                            # Direct mode is off by default where kernels are isolated; this hub opts in to test it.
                            singleuser_config='c.KeyVault.backend = "hub"\nc.KeyVault.allow_direct_access = True\n')
    hub.start()
    try:
        for user in ("alice", "bob", "dave", "erin", "carol"):
            hub.create_user(user)
        hub.create_group("class-a", ["dave"])
        wait_for_service(hub)
        yield KVHub(hub, upstream, master_key)
    finally:
        hub.stop()
        upstream.stop()


def wait_for_service(hub: JupyterHubHarness, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http("GET", hub.service_url(SERVICE) + "api/status", token=hub.user_token("carol")).status == 200:
            return
        time.sleep(0.3)
    raise RuntimeError("the keyvault service did not answer:\n" + hub.log_path.read_text()[-3000:])


CHAT = ('import keyvault\n'
        'client = keyvault.openai()\n'
        'reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])\n'
        'print("REPLY:", reply.choices[0].message.content)\n')


# -- personal keys
async def test_each_user_stores_a_personal_key_through_their_server_and_uses_it_from_a_kernel(kvhub):
    hub = kvhub.hub
    for user, key in (("alice", ALICE_KEY), ("bob", BOB_KEY)):
        hub.start_server(user)
        resp = kvhub.server(user, "PUT", "keyvault/api/credentials/OPENAI_API_KEY", {"value": key})
        assert resp.status == 201, resp.text
        assert key not in resp.text
        listing = kvhub.server(user, "GET", "keyvault/api/credentials").json()["credentials"]
        assert [(c["name"], c["source"]) for c in listing] == [("OPENAI_API_KEY", "vault")]
        before = kvhub.upstream.received_keys().count(key)
        kernel = await hub.start_kernel(user)
        try:
            result = await kvhub.run(kernel, CHAT)
            assert result.error is None, result.text
            assert "REPLY:" in result.stdout
            # Direct mode (allowed on this hub's servers) reaches the user's OWN personal value.
            result = await kernel.execute(f'import keyvault\nprint(keyvault.get("OPENAI_API_KEY").reveal() == "{key}")')
            assert result.stdout.strip() == "True", result.text
        finally:
            await kernel.stop()
        assert kvhub.upstream.received_keys().count(key) == before + 1  # the real key, injected by the service
    # The user's server never held the value: its vault is the service, its own data dir has no vault file.
    for user in ("alice", "bob"):
        assert not list(hub.user_dir(user).rglob("vault.db"))


async def test_personal_key_test_runs_in_the_service_and_reports_ok(kvhub):
    kvhub.hub.start_server("alice")
    resp = kvhub.server("alice", "POST", "keyvault/api/credentials/OPENAI_API_KEY/test")
    assert resp.status == 200, resp.text
    assert resp.json()["ok"] is True


# -- shared keys
async def test_admin_grants_a_shared_key_to_a_group_and_a_member_uses_it_from_a_kernel(kvhub):
    resp = kvhub.service("carol", "PUT", "api/admin/shared/COURSE_OPENAI",
                         {"value": SHARED_CANARY, "provider": "openai"})
    assert resp.status in (201, 204), resp.text
    resp = kvhub.service("carol", "PUT", "api/admin/shared/COURSE_OPENAI/grants/group/class-a")
    assert resp.status in (201, 204), resp.text

    hub = kvhub.hub
    hub.start_server("dave")
    listing = kvhub.server("dave", "GET", "keyvault/api/credentials").json()["credentials"]
    assert [(c["name"], c["source"], c["provider"]) for c in listing] == [("COURSE_OPENAI", "shared", "openai")]
    before = kvhub.upstream.received_keys().count(SHARED_CANARY)
    kernel = await hub.start_kernel("dave")
    try:
        result = await kvhub.run(kernel, CHAT)
        assert result.error is None, result.text
        assert "REPLY:" in result.stdout
        tokens_before_stream = kvhub.service("dave", "GET", "api/usage").json()["today"]["tokens"]
        assert tokens_before_stream > 0  # from the JSON reply's usage
        # Streaming is counted from the final chunk's usage (the service asks for it).
        result = await kvhub.run(kernel, (
            'import keyvault\n'
            'stream = keyvault.openai().chat.completions.create(model="m", stream=True,\n'
            '    messages=[{"role": "user", "content": "count me"}])\n'
            'print("CHUNKS:", sum(1 for _ in stream))\n'))
        assert result.error is None, result.text
        assert kvhub.service("dave", "GET", "api/usage").json()["today"]["tokens"] > tokens_before_stream
        # Direct mode cannot reach a shared value.
        result = await kvhub.run(kernel, 'import keyvault\nkeyvault.get("COURSE_OPENAI").reveal()\n')
        assert result.error is not None
        assert SHARED_CANARY not in result.text
    finally:
        await kernel.stop()
    assert kvhub.upstream.received_keys().count(SHARED_CANARY) == before + 2
    usage = kvhub.service("dave", "GET", "api/usage").json()
    shared_rows = [r for r in usage["usage"] if r["source"] == "shared" and r["credential"] == "COURSE_OPENAI"]
    assert shared_rows and shared_rows[0]["requests"] == 2
    assert shared_rows[0]["tokens"] > 0  # from the JSON reply's usage and the stream's final chunk
    assert {r["user"] for r in usage["usage"]} == {"dave"}


async def test_a_non_member_neither_sees_nor_can_use_the_shared_key(kvhub):
    hub = kvhub.hub
    hub.start_server("erin")
    assert kvhub.server("erin", "GET", "keyvault/api/credentials").json()["credentials"] == []
    kernel = await hub.start_kernel("erin")
    try:
        result = await kvhub.run(kernel, CHAT)
        assert result.error is not None and "No API key configured" in result.text
        result = await kvhub.run(kernel, 'import keyvault\nkeyvault.get("COURSE_OPENAI")\n')
        assert result.error is not None
    finally:
        await kernel.stop()
    # Straight to the service's proxy with erin's own token: refused too.
    resp = kvhub.service("erin", "POST", "proxy/openai/v1/chat/completions",
                         {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                         headers={"X-KeyVault-Credential": "COURSE_OPENAI"})
    assert resp.status == 401, resp.text


def test_a_flood_of_refused_requests_is_counted_in_a_few_audit_rows_not_a_row_each(kvhub):
    """The attack: erin, who has no key, sends 200 proxied requests for names that do not exist. No limit
    applies to requests that are refused, and each was an audit row: one user grew the table at will."""
    import concurrent.futures
    import time

    def one(i: int) -> int:
        return kvhub.service("erin", "POST", "proxy/openai/v1/chat/completions",
                             {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                             headers={"X-KeyVault-Credential": f"NOPE_{i}"}).status

    def audit() -> list[dict]:  # listing writes what is pending first
        return kvhub.service("carol", "GET", "api/admin/audit?limit=1000").json()["events"]

    before = max((e["id"] for e in audit()), default=0)  # earlier tests' refusals are written, and left out
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(200))) == {401}
    seconds = time.monotonic() - started
    mine = [e for e in audit() if e["id"] > before and e["actor"] == "erin" and e["outcome"] == "denied"]
    counted = sum(int(e["detail"].split(" requests since", 1)[0]) if " requests since" in (e["detail"] or "") else 1
                  for e in mine)
    assert counted == 200, mine[:3]
    assert len(mine) <= seconds + 2, (len(mine), seconds)  # a row a second (flush_interval), not one each


async def test_a_member_over_the_daily_request_quota_is_refused_with_429_and_a_clear_message(kvhub):
    used = kvhub.service("dave", "GET", "api/usage").json()["today"]["requests"]
    resp = kvhub.service("carol", "PUT", "api/admin/limits/user/dave", {"requests_per_day": used + 1})
    assert resp.status == 200, resp.text
    kernel = await kvhub.hub.start_kernel("dave")
    try:
        ok = await kvhub.run(kernel, CHAT)
        assert ok.error is None, ok.text
        refused = await kvhub.run(kernel, CHAT)
        assert refused.error is not None
        assert refused.error["ename"] == "RateLimitError"
        assert "daily request quota reached for user dave" in refused.text
    finally:
        await kernel.stop()
    resp = kvhub.service("dave", "POST", "proxy/openai/v1/chat/completions",
                         {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 429 and "resets at 00:00 UTC" in resp.text
    assert int(resp.headers.get("Retry-After", "0")) > 0
    audit = kvhub.service("carol", "GET", "api/admin/audit?limit=200").json()["events"]
    assert any(e["action"] == "use" and e["outcome"] == "refused" and e["actor"] == "dave" for e in audit)
    assert any(e["action"] == "grant" and e["actor"] == "carol" for e in audit)
    kvhub.service("carol", "PUT", "api/admin/limits/user/dave", {})


def test_a_daily_token_quota_refuses_the_request_after_the_one_that_used_it_up(kvhub):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    tokens = kvhub.service("dave", "GET", "api/usage").json()["today"]["tokens"]
    assert kvhub.service("carol", "PUT", "api/admin/limits/user/dave", {"tokens_per_day": tokens + 1}).status == 200
    assert kvhub.service("dave", "POST", "proxy/openai/v1/chat/completions", body).status == 200
    refused = kvhub.service("dave", "POST", "proxy/openai/v1/chat/completions", body)
    assert refused.status == 429
    assert "daily token quota reached for user dave" in refused.json()["error"]["message"]
    kvhub.service("carol", "PUT", "api/admin/limits/user/dave", {})


def test_a_realtime_session_counts_its_tokens_and_ends_when_they_use_up_the_daily_quota(kvhub):
    """The attack: limits were checked at the handshake only, so one open Realtime session spent the
    shared key's tokens without end. Each `response.done` now counts, and the session is closed
    (1008, after an `error` event) once the quota is used up."""
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    start = kvhub.service("dave", "GET", "api/usage").json()["today"]["tokens"]
    quota = start + 12  # a few responses: the fake upstream reports a growing count for each
    assert kvhub.service("carol", "PUT", "api/admin/limits/user/dave", {"tokens_per_day": quota}).status == 200
    url = kvhub.hub.service_url(SERVICE).replace("http://", "ws://") + "proxy/openai/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"token {kvhub.hub.user_token('dave')}", "X-KeyVault-Credential": "COURSE_OPENAI"}

    async def spend() -> tuple[list[int], list[dict], int | None]:
        reported, errors = [], []
        async with connect(url, additional_headers=headers) as ws:
            try:
                for _ in range(10):
                    try:
                        await ws.send(json.dumps({"type": "response.create"}))
                    except ConnectionClosed:
                        pass  # closed by the service: what it sent before the close is still read below
                    while True:
                        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if event["type"] == "error":
                            errors.append(event)
                        elif event["type"] == "response.done":
                            reported.append(event["response"]["usage"]["total_tokens"])
                            break
            except ConnectionClosed:
                pass
            return reported, errors, ws.close_code

    reported, errors, close_code = asyncio.run(spend())
    try:
        # Every response until the quota was reached, and not one after: nothing the client sent after the
        # response that reached it went upstream (it waited for the check, then was dropped).
        assert sum(reported[:-1]) < quota - start <= sum(reported), reported
        assert len(kvhub.upstream.realtime[-1].messages) == len(reported), kvhub.upstream.realtime[-1].messages
        assert close_code == 1008, (close_code, reported)
        assert len(errors) == 1 and "daily token quota reached for user dave" in errors[0]["error"]["message"], errors
        assert kvhub.service("dave", "GET", "api/usage").json()["today"]["tokens"] == start + sum(reported)
        # The quota now refuses the next HTTP request and the next session too.
        refused = kvhub.service("dave", "POST", "proxy/openai/v1/chat/completions",
                                {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                headers={"X-KeyVault-Credential": "COURSE_OPENAI"})
        assert refused.status == 429 and "daily token quota" in refused.text
        audit = kvhub.service("carol", "GET", "api/admin/audit?limit=200").json()["events"]
        assert any(e["actor"] == "dave" and e["outcome"] == "refused" and "realtime session closed" in e["detail"]
                   for e in audit)
    finally:
        kvhub.service("carol", "PUT", "api/admin/limits/user/dave", {})
    for text in [json.dumps(e) for e in errors]:
        assert SHARED_CANARY not in text


def test_a_shared_key_rate_limit_per_minute_refuses_the_burst_beyond_it(kvhub):
    assert kvhub.service("carol", "PUT", "api/admin/limits/shared/COURSE_OPENAI", {"rate_per_minute": 2}).status == 200
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    responses = [kvhub.service("dave", "POST", "proxy/openai/v1/chat/completions", body) for _ in range(3)]
    assert [r.status for r in responses] == [200, 200, 429]
    assert "rate limit of 2 requests/min reached for shared key COURSE_OPENAI" in responses[2].text
    kvhub.service("carol", "PUT", "api/admin/limits/shared/COURSE_OPENAI", {})
    assert kvhub.service("dave", "POST", "proxy/openai/v1/chat/completions", body).status == 200


async def test_the_shared_canary_is_absent_from_every_user_visible_place(kvhub):
    hub = kvhub.hub
    # Every browser-facing API of every user's server, and the service's user API.
    for user in ("alice", "bob", "dave", "erin"):
        hub.start_server(user)
        for path in ("keyvault/api/credentials", "keyvault/api/credentials/COURSE_OPENAI", "keyvault/api/status",
                     "keyvault/api/audit"):
            kvhub.server(user, "GET", path)
        for path in ("api/credentials", "api/credentials/COURSE_OPENAI", "api/credentials/COURSE_OPENAI/value",
                     "api/usage", "api/audit", "api/status"):
            kvhub.service(user, "GET", path)
        kvhub.service(user, "POST", "api/credentials/COURSE_OPENAI/test")
    # Kernel environment and outputs of a member.
    kernel = await hub.start_kernel("dave")
    try:
        env = await kvhub.run(kernel, "import os, json\nprint(json.dumps(dict(os.environ)))\n")
        assert kvhub.master_key not in env.stdout
        assert "KEYVAULT_MASTER_KEY" not in env.stdout
        assert "JUPYTERHUB_API_TOKEN" not in json.loads(env.stdout)  # the server's token stays in the server
        await kvhub.run(kernel, 'import keyvault\nprint(keyvault.list())\nprint(keyvault.status())\n')
    finally:
        await kernel.stop()
    assert kvhub.upstream.received_keys().count(SHARED_CANARY) >= 1  # it was really used upstream
    for text in kvhub.seen + kvhub.kernel_texts:
        assert SHARED_CANARY not in text
    # Logs of the hub, the service and every user server (they share the hub's output).
    assert SHARED_CANARY not in hub.log_path.read_text("utf-8", "replace")
    # Files of the users (home, notebooks, runtime, IPython history).
    for path in Path(hub.root, "users").rglob("*"):
        if path.is_file():
            assert SHARED_CANARY.encode() not in path.read_bytes(), path


# -- isolation
def test_a_proxy_request_refused_before_its_body_leaves_the_next_request_to_that_server_unharmed(kvhub):
    """The attack: anyone sends bob's server a proxy request it refuses before reading the body. tornado
    closed that connection without saying so, JupyterHub's proxy reused it, and the next request
    (bob's own, or anyone's) got JupyterHub's 503 page, a few times in 30. The refusal now says
    `Connection: close`, on the service's proxy too."""
    import http.client
    from collections import Counter
    from urllib.parse import urlsplit

    def call(method: str, url: str, body: dict, token: str | None = None) -> int:
        # http.client, not urllib: urllib asks for `Connection: close`, which JupyterHub's proxy passes
        # on, so the connection it keeps to the server would never be reused; SDKs and browsers keep alive.
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request(method, parts.path, json.dumps(body), {"Content-Type": "application/json",
                                                                **({"Authorization": f"token {token}"} if token else {})})
            return conn.getresponse().status
        finally:
            conn.close()

    kvhub.hub.start_server("bob")
    bob = kvhub.hub.user_token("bob")
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for proxy, credentials in ((kvhub.hub.user_url("bob") + "keyvault/proxy/openai/v1/chat/completions",
                                kvhub.hub.user_url("bob") + "keyvault/api/credentials/NOTE"),
                               (kvhub.hub.service_url(SERVICE) + "proxy/openai/v1/chat/completions",
                                kvhub.hub.service_url(SERVICE) + "api/credentials/NOTE")):
        outcomes = Counter()
        for _ in range(60):
            refused = call("POST", proxy, chat)  # no credential at all
            outcomes[(refused, call("PUT", credentials, {"value": "not a key"}, bob))] += 1
        assert set(outcomes) <= {(401, 201), (401, 204)}, (proxy, outcomes)


def test_bob_can_never_list_read_test_use_delete_or_see_usage_of_alices_credentials(kvhub):
    assert kvhub.service("alice", "PUT", "api/credentials/ALICE_ONLY",
                         {"value": ALICE_KEY, "provider": "openai"}).status in (201, 204)
    alice_uses = kvhub.upstream.received_keys().count(ALICE_KEY)
    assert "ALICE_ONLY" not in kvhub.service("bob", "GET", "api/credentials").text
    for method, path in (("GET", "api/credentials/ALICE_ONLY"), ("GET", "api/credentials/ALICE_ONLY/value"),
                         ("POST", "api/credentials/ALICE_ONLY/test"), ("DELETE", "api/credentials/ALICE_ONLY")):
        resp = kvhub.service("bob", method, path)
        assert resp.status == 404, (method, path, resp.status, resp.text)
        assert ALICE_KEY not in resp.text
    resp = kvhub.service("bob", "POST", "proxy/openai/v1/chat/completions",
                         {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                         headers={"X-KeyVault-Credential": "ALICE_ONLY"})
    assert resp.status == 401
    assert kvhub.upstream.received_keys().count(ALICE_KEY) == alice_uses
    usage = kvhub.service("bob", "GET", "api/usage").json()
    assert usage["user"] == "bob" and {r["user"] for r in usage["usage"]} <= {"bob"}
    audit = kvhub.service("bob", "GET", "api/audit").json()["events"]
    assert all(e["owner"] == "user:bob" for e in audit)
    assert kvhub.service("alice", "GET", "api/credentials/ALICE_ONLY").status == 200  # still there


def test_non_admins_are_refused_every_admin_endpoint(kvhub):
    for user in ("bob", "dave"):
        for method, path, body in (
            ("GET", "api/admin/shared", None),
            ("PUT", "api/admin/shared/STOLEN", {"value": "sk-proj-x" + "0" * 30}),
            ("DELETE", "api/admin/shared/COURSE_OPENAI", None),
            ("POST", "api/admin/shared/COURSE_OPENAI/test", None),
            ("PUT", f"api/admin/shared/COURSE_OPENAI/grants/user/{user}", None),
            ("DELETE", "api/admin/shared/COURSE_OPENAI/grants/group/class-a", None),
            ("GET", "api/admin/limits", None),
            ("PUT", f"api/admin/limits/user/{user}", {"requests_per_day": 10**6}),
            ("GET", "api/admin/usage", None),
            ("GET", "api/admin/audit", None),
        ):
            resp = kvhub.service(user, method, path, body)
            assert resp.status == 403, (user, method, path, resp.status, resp.text)
    shared = kvhub.service("carol", "GET", "api/admin/shared").json()["shared"]
    assert [s["name"] for s in shared] == ["COURSE_OPENAI"]
    assert shared[0]["grants"] == [{"shared": "COURSE_OPENAI", "kind": "group", "subject": "class-a"}]


def test_another_users_token_is_refused_by_every_keyvault_endpoint_of_a_users_server(kvhub):
    kvhub.hub.start_server("alice")
    for method, path, body in (
        ("GET", "keyvault/api/credentials", None),
        ("GET", "keyvault/api/credentials/OPENAI_API_KEY", None),
        ("PUT", "keyvault/api/credentials/OPENAI_API_KEY", {"value": BOB_KEY}),
        ("DELETE", "keyvault/api/credentials/OPENAI_API_KEY", None),
        ("POST", "keyvault/api/credentials/OPENAI_API_KEY/test", None),
        ("GET", "keyvault/api/status", None),
        ("GET", "keyvault/api/audit", None),
        ("POST", "keyvault/proxy/openai/v1/chat/completions", {"model": "m", "messages": []}),
    ):
        resp = kvhub.server("alice", method, path, body, as_user="bob")
        assert resp.status in (401, 403), (method, path, resp.status, resp.text)
        assert ALICE_KEY not in resp.text
    listing = kvhub.server("alice", "GET", "keyvault/api/credentials").json()["credentials"]
    assert "OPENAI_API_KEY" in [c["name"] for c in listing]


def test_a_request_without_a_hub_token_is_refused_by_the_service(kvhub):
    resp = http("GET", kvhub.hub.service_url(SERVICE) + "api/credentials")
    assert resp.status in (401, 403)
    resp = http("GET", kvhub.hub.service_url(SERVICE) + "api/credentials", token="not-a-token")
    assert resp.status in (401, 403)


# -- the admin page (browser: hub login, OAuth to the service, cookie + XSRF)
def browser_login(hub: JupyterHubHarness, user: str):
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(hub.url + "/hub/login").read().decode()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": user, "password": "x", "_xsrf": xsrf}).encode()
    opener.open(hub.url + "/hub/login?next=%2Fhub%2Fhome", data=form).read()  # no spawn on login
    return opener


def test_the_admin_page_needs_a_hub_admin_and_an_xsrf_token_and_never_shows_a_value(kvhub):
    import re
    import urllib.error
    import urllib.parse

    kvhub.service("carol", "PUT", "api/admin/shared/COURSE_OPENAI", {"value": SHARED_CANARY, "provider": "openai"})
    kvhub.service("carol", "PUT", "api/admin/shared/COURSE_OPENAI/grants/group/class-a")
    page_url = kvhub.hub.service_url(SERVICE) + "admin"
    carol = browser_login(kvhub.hub, "carol")
    page = carol.open(page_url).read().decode()  # through the hub's OAuth flow
    assert "COURSE_OPENAI" in page and SHARED_CANARY not in page
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    grant = {"op": "grant", "name": "COURSE_OPENAI", "kind": "user", "subject": "erin"}
    with pytest.raises(urllib.error.HTTPError) as refused:  # a cross-site form post has no token
        carol.open(page_url, data=urllib.parse.urlencode(grant).encode())
    assert refused.value.code == 403
    assert kvhub.service("carol", "GET", "api/admin/shared").json()["shared"][0]["grants"] == [
        {"shared": "COURSE_OPENAI", "kind": "group", "subject": "class-a"}]
    carol.open(page_url, data=urllib.parse.urlencode({**grant, "_xsrf": xsrf}).encode()).read()
    grants = kvhub.service("carol", "GET", "api/admin/shared").json()["shared"][0]["grants"]
    assert {"shared": "COURSE_OPENAI", "kind": "user", "subject": "erin"} in grants
    revoke = {**grant, "op": "revoke", "_xsrf": xsrf}
    carol.open(page_url, data=urllib.parse.urlencode(revoke).encode()).read()

    bob = browser_login(kvhub.hub, "bob")
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        bob.open(page_url)
    assert forbidden.value.code == 403


# -- the admin CLI
def run_admin_cli(kvhub, user: str, *args: str, stdin: str = ""):
    import subprocess
    import sys

    env = {**os.environ, "JUPYTERHUB_API_TOKEN": kvhub.hub.user_token(user)}
    env.pop("KEYVAULT_HUB_URL", None)
    return subprocess.run([sys.executable, "-m", "jupyter_keyvault.hub", "admin",
                           "--url", kvhub.hub.service_url(SERVICE), *args],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_the_admin_cli_adds_grants_lists_and_deletes_a_shared_key_without_ever_printing_it(kvhub):
    value = "sk-proj-CLICANARY" + secrets.token_hex(16)
    done = run_admin_cli(kvhub, "carol", "set", "CLI_SHARED", "--provider", "openai", stdin=value + "\n")
    assert done.returncode == 0, done.stderr
    assert run_admin_cli(kvhub, "carol", "grant", "CLI_SHARED", "user:erin").returncode == 0
    listing = run_admin_cli(kvhub, "carol", "list")
    assert listing.returncode == 0
    shared = {s["name"]: s for s in json.loads(listing.stdout)["shared"]}
    assert shared["CLI_SHARED"]["grants"] == [{"shared": "CLI_SHARED", "kind": "user", "subject": "erin"}]
    erin_sees = kvhub.service("erin", "GET", "api/credentials").json()["shared"]
    assert [s["name"] for s in erin_sees] == ["CLI_SHARED"]
    refused = run_admin_cli(kvhub, "bob", "set", "CLI_SHARED", stdin="sk-proj-" + "b" * 40)
    assert refused.returncode != 0 and "403" in refused.stderr
    assert run_admin_cli(kvhub, "carol", "grant", "CLI_SHARED", "erin").returncode != 0  # group:/user: required
    assert run_admin_cli(kvhub, "carol", "delete", "CLI_SHARED").returncode == 0
    assert kvhub.service("erin", "GET", "api/credentials").json()["shared"] == []
    for out in (done, listing, refused):
        assert value not in out.stdout + out.stderr


def test_given_the_running_service_then_no_process_environment_block_holds_its_master_key(kvhub):
    """The service reads KEYVAULT_MASTER_KEY, then overwrites it in its own environment block; the hub
    never had it in its environment. A same-uid reader of /proc/<pid>/environ finds nothing."""
    from pathlib import Path

    service_pids = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                    and b"jupyter_keyvault.hub" in _read(p / "cmdline")]
    assert service_pids, "the keyvault service process was not found"
    for pid in [*service_pids, str(kvhub.hub.proc.pid)]:
        assert kvhub.master_key.encode() not in _read(Path("/proc") / pid / "environ"), pid


def _read(path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


# -- listing in pages
def test_erin_pages_through_personal_and_granted_shared_keys_each_once_via_the_service_and_her_server(kvhub):
    for name in ("E_01", "E_03", "E_05", "E_07"):
        assert kvhub.service("erin", "PUT", f"api/credentials/{name}",
                             {"value": "sk-proj-" + secrets.token_hex(20), "provider": "openai"}).status in (201, 204)
    for name in ("E_02", "E_03", "E_04", "E_06"):  # E_03 is also personal: listed once, as personal
        assert kvhub.service("carol", "PUT", f"api/admin/shared/{name}",
                             {"value": "sk-proj-" + secrets.token_hex(20), "provider": "openai"}).status in (201, 204)
        assert kvhub.service("carol", "PUT", f"api/admin/shared/{name}/grants/user/erin").status in (201, 204)
    kvhub.hub.start_server("erin")

    def pages(get) -> list[tuple[str, str]]:
        seen, cursor = [], None
        while True:
            page = get(f"limit=2&cursor={cursor}" if cursor else "limit=2")
            assert len(page["credentials"]) + len(page.get("shared", [])) <= 2
            seen += [(c["name"], "vault") for c in page["credentials"]]
            seen += [(c["name"], "shared") for c in page.get("shared", [])]
            cursor = page["next"]
            if cursor is None:
                return sorted(seen)

    def service_page(query: str) -> dict:
        resp = kvhub.service("erin", "GET", f"api/credentials?{query}")
        assert resp.status == 200, resp.text
        return resp.json()

    def server_page(query: str) -> dict:
        resp = kvhub.server("erin", "GET", f"keyvault/api/credentials?{query}")
        assert resp.status == 200, resp.text
        return {"credentials": [c for c in resp.json()["credentials"] if c["source"] != "shared"],
                "shared": [c for c in resp.json()["credentials"] if c["source"] == "shared"],
                "next": resp.json()["next"]}

    expected = [("E_01", "vault"), ("E_02", "shared"), ("E_03", "vault"), ("E_04", "shared"), ("E_05", "vault"),
                ("E_06", "shared"), ("E_07", "vault")]
    assert pages(service_page) == expected
    assert pages(server_page) == expected
    for bad in ("limit=0", "cursor=c1.%21"):
        assert kvhub.service("erin", "GET", f"api/credentials?{bad}").status == 400
        assert kvhub.server("erin", "GET", f"keyvault/api/credentials?{bad}").status == 400


def test_the_service_and_each_users_server_freeze_their_startup_heap(kvhub):
    """Full collections of a startup heap stalled every proxied stream (bench_peers); both processes
    that proxy, the service and a user's server, freeze theirs once started."""
    import time

    hub = kvhub.hub
    hub.start_server("erin")
    deadline = time.monotonic() + 30
    wanted = ("(c.KeyVaultHubService.freeze_startup_heap)", "(c.KeyVault.freeze_startup_heap)")
    while time.monotonic() < deadline and not all(w in hub.log_path.read_text() for w in wanted):
        time.sleep(0.3)
    log = hub.log_path.read_text()
    assert all(w in log for w in wanted), log[-3000:]
