"""One REST contract, two vault backends: the embedded vault (`backend = "sqlite"`) and the
JupyterHub keyvault service (`backend = "hub"`, a real JupyterHub with configurable-http-proxy).

Every test below runs against both: same routes, same statuses, same error messages, no 5xx,
and the stored value in no response. Where a backend cannot serve a call (access tokens in hub
mode) the contract is a clear 403 that says why. Then schemathesis fuzzes the hub-backed server
as tests/test_openapi_fuzz.py fuzzes the local one.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from importlib.resources import files

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from jupyter_keyvault.testing.fake_upstream import FakeUpstream
from jupyter_keyvault.testing.fuzzing import schemathesis_config
from jupyter_keyvault.testing.hub import JupyterHubHarness, http, missing_requirements
from jupyter_keyvault.testing.live_server import JupyterServer, free_port

pytestmark = [pytest.mark.hub, pytest.mark.e2e,
              pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or "")]

VALID_KEY = "sk-proj-" + "C" * 40  # accepted by the fake upstream
CANARY = "sk-proj-BACKENDCANARY" + secrets.token_hex(20)
SERVICE = "keyvault"
HUB_BODY_CAP = 48 * 1024 * 1024


@dataclass
class Backend:
    """A running single-user server with one backend, and everything its clients were sent."""

    name: str
    base_url: str  # ends with "/"
    token: str
    seen: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body=None, *, raw: bytes | None = None):
        resp = http(method, self.base_url + path.lstrip("/"), token=self.token,
                    body=raw if raw is not None else body,
                    headers={"Content-Type": "application/json"} if raw is not None else None)
        self.seen.append(resp.text)
        self.seen.append(json.dumps(list(resp.headers.get_all())))
        assert resp.status < 500, (self.name, method, path, resp.status, resp.text)
        return resp


@pytest.fixture(scope="module")
def upstream():
    server = FakeUpstream(valid_keys=(VALID_KEY, CANARY)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local_backend(upstream):
    server = JupyterServer(config={"KeyVault": {
        "provider_base_urls": {"openai": upstream.openai_base_url}, "write_rate_per_minute": 10000.0}}).start()
    try:
        yield Backend("local", server.url + "/", server.token)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hostile():
    from jupyter_keyvault.testing.hostile_upstream import HostileUpstream

    server = HostileUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(upstream, hostile, tmp_path_factory):
    from jupyter_keyvault.hub.config import keyvault_service_config

    data_dir = tmp_path_factory.mktemp("kv-service")
    key_file = data_dir / "master.key"  # the service reads its key from a private file, not its environment
    key_file.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
    key_file.chmod(0o600)
    service, roles, user_env = keyvault_service_config(
        port=free_port(), master_key_file=str(key_file), name=SERVICE, data_dir=str(data_dir),
        extra_args=[f"--KeyVaultHubService.proxy_max_body_size={HUB_BODY_CAP}",
                    f"--KeyVaultHubService.provider_base_urls=openai={upstream.openai_base_url}",
                    f"--KeyVaultHubService.provider_base_urls=groq={hostile.base_url}"])
    harness = JupyterHubHarness(services=[service], load_roles=roles, user_env=user_env,
                                singleuser_config='c.KeyVault.backend = "hub"\n'
                                                  'c.KeyVault.write_rate_per_minute = 10000.0\n')
    harness.start()
    try:
        harness.create_user("alice")
        harness.start_server("alice")
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="module")
def hub_backend(hub):
    backend = Backend("hub", hub.user_url("alice"), hub.user_token("alice"))
    HubUserToken.token = backend.token  # before any fuzz case is generated
    return backend


@pytest.fixture(params=["local", "hub"])
def backend(request) -> Backend:
    return request.getfixturevalue(f"{request.param}_backend")


def names(backend: Backend) -> list[str]:
    return [c["name"] for c in backend.call("GET", "keyvault/api/credentials").json()["credentials"]]


def test_given_either_backend_when_a_credential_is_written_read_limited_and_deleted_then_the_contract_holds(backend):
    path = "keyvault/api/credentials/CONTRACT_KEY"
    created = backend.call("PUT", path, {"value": CANARY, "provider": "openai"})
    assert created.status == 201, created.text
    assert created.json()["name"] == "CONTRACT_KEY" and "value" not in created.json()
    assert backend.call("PUT", path, {"value": CANARY, "provider": "openai"}).status == 204
    assert "CONTRACT_KEY" in names(backend)
    one = backend.call("GET", path)
    assert one.status == 200 and one.json()["provider"] == "openai"
    patched = backend.call("PATCH", path, {"metadata": {"notebooks": ["course/*.ipynb"]}})
    assert patched.status == 200, patched.text
    assert patched.json()["metadata"]["notebooks"] == ["course/*.ipynb"]
    assert backend.call("GET", path).json()["metadata"]["notebooks"] == ["course/*.ipynb"]
    assert backend.call("DELETE", path).status == 204
    assert backend.call("GET", path).status == 404
    assert backend.call("DELETE", path).status == 404
    assert backend.call("PATCH", path, {"metadata": {}}).status == 404


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"value": "sk-proj-" + "A" * 40, "provider": ["openai"]}, 422, "unknown provider"),
    ({"value": "sk-proj-" + "A" * 40, "metadata": ["x"]}, 422, "field 'metadata' must be a JSON object"),
    ({"value": "sk-proj-" + "A" * 40, "type": ["api_key"]}, 422, "field 'type' must be a string"),
    ({"value": "sk-proj-" + "A" * 40, "metadata": {"notebooks": None}}, 422, "metadata.notebooks must be a list"),
    ({"provider": "openai"}, 422, "field 'value' is required"),
    ({"value": 12}, 422, "field 'value' is required"),
    ({"value": "sk-proj-" + "A" * 40, "colour": "red"}, 422, "unknown field(s): colour"),
    ({"value": "x" * 70000}, 413, "larger than"),
    (b"{", 400, "not valid JSON"),
    (b'{"value": NaN}', 400, "NaN and Infinity are not JSON"),
    (b'{"value": "x", "metadata": ' + b'{"a": ' * 20 + b'1' + b'}' * 20 + b'}', 400, "nested more than 16 levels"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"", 400, "request body is empty"),
])
def test_given_either_backend_when_a_bad_write_arrives_then_one_clear_4xx_and_nothing_stored(
        backend, body, status, message):
    before = names(backend)
    if isinstance(body, bytes):
        resp = backend.call("PUT", "keyvault/api/credentials/BAD_KEY", raw=body)
    else:
        resp = backend.call("PUT", "keyvault/api/credentials/BAD_KEY", body)
    assert resp.status == status, resp.text
    assert message in resp.json()["message"]
    assert names(backend) == before


def test_given_either_backend_when_names_or_patches_are_bad_then_4xx_never_5xx(backend):
    assert backend.call("PUT", "keyvault/api/credentials/9bad", {"value": "x"}).status == 422
    assert backend.call("GET", "keyvault/api/credentials/" + "A" * 300).status == 422
    backend.call("PUT", "keyvault/api/credentials/PATCH_ME", {"value": VALID_KEY, "provider": "openai"})
    for body in ({"metadata": []}, {"metadata": {"notebooks": "x"}}, {"metadata": {"notebooks": None}},
                 {"metadata": {"notebooks": [""]}}, {"other": 1}, {}):
        assert backend.call("PATCH", "keyvault/api/credentials/PATCH_ME", body).status == 422, body
    assert backend.call("DELETE", "keyvault/api/credentials/PATCH_ME").status == 204


def test_given_either_backend_when_testing_a_key_then_the_result_has_one_shape_and_no_value(backend):
    backend.call("PUT", "keyvault/api/credentials/OPENAI_API_KEY", {"value": VALID_KEY, "provider": "openai"})
    good = backend.call("POST", "keyvault/api/credentials/OPENAI_API_KEY/test")
    assert good.status == 200 and good.json()["ok"] is True, good.text
    missing = backend.call("POST", "keyvault/api/credentials/NOT_STORED_KEY/test")
    assert missing.status == 404 and "NOT_STORED_KEY" in missing.json()["message"]
    assert backend.call("DELETE", "keyvault/api/credentials/OPENAI_API_KEY").status == 204


def test_given_either_backend_when_status_and_audit_are_read_then_both_answer_with_their_documented_shape(backend):
    status = backend.call("GET", "keyvault/api/status")
    assert status.status == 200
    body = status.json()
    assert {"protection", "warnings", "version", "owner", "providers"} <= set(body)
    assert "location" not in body
    audit = backend.call("GET", "keyvault/api/audit?limit=5")
    assert audit.status == 200 and isinstance(audit.json()["events"], list)
    assert backend.call("GET", "keyvault/api/audit?limit=0").status == 400


def test_given_either_backend_when_access_tokens_are_used_then_they_work_or_are_refused_clearly(backend):
    listing = backend.call("GET", "keyvault/api/tokens")
    created = backend.call("POST", "keyvault/api/tokens", {"name": "ci", "credentials": ["OPENAI_API_KEY"]})
    deleted = backend.call("DELETE", "keyvault/api/tokens/" + "0" * 32)
    if backend.name == "local":
        assert listing.status == 200 and created.status == 201 and deleted.status == 404
        token_id = created.json()["id"]
        assert backend.call("DELETE", f"keyvault/api/tokens/{token_id}").status == 204
    else:
        for resp in (listing, created, deleted):
            assert resp.status == 403, resp.text
            assert "not available" in resp.json()["message"] and "hub" in resp.json()["message"]


def test_given_both_backends_when_the_suite_is_over_then_no_response_carried_the_stored_value(
        local_backend, hub_backend):
    for backend in (local_backend, hub_backend):
        backend.call("PUT", "keyvault/api/credentials/LAST_KEY", {"value": CANARY, "provider": "openai"})
        backend.call("GET", "keyvault/api/credentials")
        backend.call("POST", "keyvault/api/credentials/LAST_KEY/test")
        seen = "\n".join(backend.seen)
        assert seen and CANARY not in seen, backend.name


# -- the hub service's proxy: the key it injects never comes back to the user
GROQ_CANARY = "gsk_HUBHOSTILECANARY" + secrets.token_hex(20)


@pytest.mark.parametrize("channel", ["body", "header", "sse", "escaped", "gzip", "error"])
def test_given_the_hub_service_proxy_when_an_upstream_echoes_the_key_then_the_user_never_receives_it(
        hub, hub_backend, hostile, channel):
    service = hub.service_url(SERVICE)
    stored = http("PUT", service + "api/credentials/GROQ_API_KEY", token=hub_backend.token,
                  body={"value": GROQ_CANARY, "provider": "groq"})
    assert stored.status in (201, 204), stored.text
    resp = http("GET", service + f"proxy/groq/v1/echo/{channel}", token=hub_backend.token)
    assert GROQ_CANARY in hostile.seen, (resp.status, resp.text)  # the service did inject it upstream
    everything = resp.text + json.dumps(list(resp.headers.get_all()))
    assert resp.status == (400 if channel == "error" else 200), resp.text
    assert GROQ_CANARY not in everything and GROQ_CANARY[20:] not in everything, everything
    assert "[REDACTED" in everything


def test_given_the_hub_service_proxy_when_the_upstream_breaks_off_mid_answer_then_the_user_sees_it_broken(
        hub, hub_backend, hostile):
    """As on the server's proxy (test_proxy_hostile.py): a cut-off answer is not relayed as a complete one.
    Straight to the service the connection drops after an error event; through JupyterHub's proxy
    (configurable-http-proxy), which does not pass a dropped connection on, the error event arrives."""
    import urllib.request
    from http.client import IncompleteRead

    stored = http("PUT", hub.service_url(SERVICE) + "api/credentials/GROQ_API_KEY", token=hub_backend.token,
                  body={"value": GROQ_CANARY, "provider": "groq"})
    assert stored.status in (201, 204), stored.text
    direct = hub.services[0]["url"].rstrip("/") + f"/services/{SERVICE}/"
    for base in (direct, hub.service_url(SERVICE)):
        request = urllib.request.Request(base + "proxy/groq/v1/echo/cut",
                                         headers={"Authorization": f"token {hub_backend.token}"})
        received = b""
        with urllib.request.urlopen(request, timeout=10) as resp:  # nosec B310 - the test's own service
            assert resp.status == 200
            while b'"keyvault_error"' not in received:
                line = resp.readline()
                assert line, received  # the answer must not end before the error event
                received += line
            if base == direct:  # straight to the service, the connection then drops: no clean end
                with pytest.raises(IncompleteRead):
                    resp.read()
        assert b"half an answer" in received and b"event: error" in received, (base, received)


def test_given_the_hub_service_proxy_when_a_key_of_another_provider_is_named_then_403(hub, hub_backend, hostile):
    service = hub.service_url(SERVICE)
    http("PUT", service + "api/credentials/GROQ_API_KEY", token=hub_backend.token,
         body={"value": GROQ_CANARY, "provider": "groq"})
    before = len(hostile.seen)
    resp = http("GET", service + "proxy/openai/v1/models", token=hub_backend.token,
                headers={"X-KeyVault-Credential": "GROQ_API_KEY"})
    assert resp.status == 403 and "GROQ_API_KEY is a credential for Groq" in resp.text, resp.text
    assert len(hostile.seen) == before and GROQ_CANARY not in resp.text


def test_given_the_hub_service_proxy_then_the_same_header_policy_holds(hub, hub_backend, hostile):
    service = hub.service_url(SERVICE)
    http("PUT", service + "api/credentials/GROQ_API_KEY", token=hub_backend.token,
         body={"value": GROQ_CANARY, "provider": "groq"})
    canary = "HUBHDRCANARY" + secrets.token_hex(8)
    before = len(hostile.raw)
    resp = http("POST", service + f"proxy/groq/v1/echo/request?token={canary}q&x=1", token=hub_backend.token,
                body=b"{}", headers={
                    "HTTP-Referer": "https://app.example", "X-Title": "course", "traceparent": "00-ab-cd-01",
                    "Cookie": f"jupyterhub-session-id={canary}c", "X-XSRFToken": f"{canary}x",
                    "Referer": f"{hub.url}/hub/home?token={canary}r", "X-Forwarded-For": f"{canary}xff",
                    "X-KeyVault-Note": f"{canary}kv", "x-api-key": f"{canary}ak"})
    assert resp.status == 200, resp.text
    [raw] = hostile.raw[before:]
    for secret in (canary, hub_backend.token):
        assert secret.encode() not in raw, (secret, raw)
    for header in (b"http-referer: https://app.example", b"x-title: course", b"traceparent: 00-ab-cd-01"):
        assert header in raw.lower(), raw
    assert b"x=1" in raw and f"Bearer {GROQ_CANARY}".encode() in raw


def test_given_the_hub_service_proxy_when_a_file_is_uploaded_then_it_streams_and_over_the_cap_is_413(
        hub, hub_backend, upstream):
    import openai

    from jupyter_keyvault.testing.uploads import PatternFile

    service = hub.service_url(SERVICE)
    http("PUT", service + "api/credentials/OPENAI_API_KEY", token=hub_backend.token,
         body={"value": VALID_KEY, "provider": "openai"})
    client = openai.OpenAI(api_key=hub_backend.token, base_url=service + "proxy/openai/v1", max_retries=0)
    source = PatternFile(32 * 1024 * 1024)
    created = client.files.create(file=("data.bin", source), purpose="assistants")
    upload = upstream.uploads[-1]
    assert created.bytes == upload.bytes > source.size and upload.first_byte_at < source.finished_at
    assert upload.headers["authorization"] == f"Bearer {VALID_KEY}" and hub_backend.token not in json.dumps(
        upload.headers)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.bin", PatternFile(HUB_BODY_CAP + 1024 * 1024)), purpose="assistants")
    assert caught.value.status_code == 413 and "proxy_max_body_size" in caught.value.message


def test_given_the_hub_service_when_the_openai_sdk_opens_realtime_then_events_flow_and_the_key_stays_there(
        hub, hub_backend, upstream):
    import asyncio

    import openai
    import websockets
    from websockets.asyncio.client import connect

    from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT

    service = hub.service_url(SERVICE)
    http("PUT", service + "api/credentials/OPENAI_API_KEY", token=hub_backend.token,
         body={"value": VALID_KEY, "provider": "openai"})

    async def talk() -> str:
        client = openai.AsyncOpenAI(api_key=hub_backend.token, base_url=service + "proxy/openai/v1", max_retries=0)
        text = ""
        async with client.realtime.connect(model="gpt-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.response.create()
            async for event in conn:
                if event.type == "response.output_text.delta":
                    text += event.delta
                elif event.type == "response.done":
                    break
        return text

    assert asyncio.run(talk()) == REPLY_TEXT
    session = upstream.realtime[-1]
    assert session.headers["authorization"] == f"Bearer {VALID_KEY}" and hub_backend.token not in json.dumps(
        session.headers)

    async def refused(headers: dict) -> int:
        ws_url = service.replace("http://", "ws://") + "proxy/openai/v1/realtime"
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with connect(ws_url, additional_headers=headers):
                pass
        return caught.value.response.status_code

    before = len(upstream.realtime)
    assert asyncio.run(refused({})) in (401, 403)
    assert asyncio.run(refused({"Authorization": f"token {hub_backend.token}", "Origin": "https://evil.example"})) == 403
    assert len(upstream.realtime) == before


# -- schemathesis against the hub-backed server (the local one: tests/test_openapi_fuzz.py)
HUB_SCHEMA = schemathesis.openapi.from_path(
    str(files("jupyter_keyvault").joinpath("openapi.json")),
    config=schemathesis.config.SchemathesisConfig.from_dict(schemathesis_config()),
)


@HUB_SCHEMA.auth(refresh_interval=None)
class HubUserToken:
    """alice's JupyterHub token, known only once the hub runs (set by the hub_backend fixture)."""

    token = ""

    def get(self, case, context):
        return HubUserToken.token

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"token {data}"}


FUZZ_RESULTS: list[tuple[str, str, bool]] = []  # method, path, answered by the handler for alice


@HUB_SCHEMA.parametrize()
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_given_generated_requests_when_sent_to_a_hub_backed_server_then_no_5xx_and_responses_match_the_schema(
        case, hub_backend, hub):
    response = case.call(base_url=hub_backend.base_url.rstrip("/"), timeout=30)
    sent_token = response.request.headers.get("Authorization") == f"token {hub_backend.token}"
    # Past the login check: any answer but 401/403, or the hub mode's own 403 for access tokens.
    handled = response.status_code not in (401, 403) or "not available" in response.text
    FUZZ_RESULTS.append((case.method, case.path, sent_token and handled))
    if response.status_code >= 500:
        print(hub.user_log("alice")[-6000:])
    case.validate_response(response)


def test_given_the_generated_hub_fuzzing_when_it_is_over_then_every_operation_was_reached_and_nothing_crashed(hub):
    # The fuzz reached the backend: every documented operation got a 2xx for some request carrying
    # alice's token (schemathesis also sends requests with missing or mangled credentials on purpose;
    # only 403s would mean the fuzz tested the login check and nothing behind it).
    reached = {(m, p) for m, p, handled in FUZZ_RESULTS if handled}
    documented = {(method.upper(), path) for path, ops in HUB_SCHEMA.raw_schema["paths"].items()
                  for method in ops if method in ("get", "put", "patch", "post", "delete")}
    assert documented - reached == set(), sorted(reached)
    for log in (hub.user_log("alice"), hub.log_path.read_text("utf-8", "replace")):
        assert "Uncaught exception" not in log and "Traceback" not in log, log[-6000:]
