"""The REST API under /keyvault/api, driven over HTTP against pytest-jupyter's in-process server.

Nothing here mocks the server: every check is a real request through jupyter_server's auth,
XSRF and authorization layers to the extension's handlers, the vault on disk and, for key
tests, a real (local) upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import sqlite3
import time
from http.cookies import SimpleCookie
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
from jupyter_server.utils import url_path_join
from tornado import web

import jupyter_keyvault
from jupyter_keyvault.server.rest import handlers as keyvault_handlers
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

API = ("keyvault", "api")
LISTED_FIELDS = {"name", "provider", "type", "present", "source", "created_at", "updated_at", "last_used_at"}
OPENAPI = json.loads(files("jupyter_keyvault").joinpath("openapi.json").read_text("utf-8"))


# --------------------------------------------------------------------------- configuration


@pytest.fixture
def kv_settings() -> dict:
    """Extra c.KeyVault settings for one test (override with `keyvault_settings(...)`)."""
    return {}


@pytest.fixture
def server_settings() -> dict:
    """Extra c.ServerApp settings for one test (override with `server_app_settings(...)`)."""
    return {}


@pytest.fixture
def authorizer_policy() -> dict | None:
    """What a custom authorizer allows ({"actions": [...], "resources": [...]}); None = default authorizer."""
    return None


def keyvault_settings(**settings):
    """Run a test against a server configured with these c.KeyVault settings."""
    return pytest.mark.parametrize("kv_settings", [settings], ids=[",".join(f"{k}={v}" for k, v in settings.items())])


def server_app_settings(**settings):
    return pytest.mark.parametrize("server_settings", [settings], ids=[",".join(settings)])


def authorizer_allowing(actions, resources=("keyvault",), *, id: str):
    return pytest.mark.parametrize("authorizer_policy", [{"actions": list(actions), "resources": list(resources)}],
                                   ids=[id])


@pytest.fixture
def keyvault_config(keyvault_config, kv_settings):
    return {**keyvault_config, **kv_settings}


@pytest.fixture
def jp_server_auth_resources(jp_server_auth_core_resources):
    """pytest-jupyter's URL → resource map, plus every route of this extension → 'keyvault'."""
    return {**jp_server_auth_core_resources, **{pattern: "keyvault" for pattern, *_ in keyvault_handlers}}


@pytest.fixture
def jp_server_config(jp_server_config, server_settings, authorizer_policy, jp_server_authorizer):
    jp_server_config.ServerApp.update(server_settings)
    if authorizer_policy is not None:
        policy = authorizer_policy

        class PolicyAuthorizer(jp_server_authorizer):
            """pytest-jupyter's test authorizer, applying `policy` and recording what it was asked.

            The parent asserts an action per HTTP method; this API's key test is a POST that
            (rightly) asks for "execute", so the check is recorded here and asserted by the test.
            """

            permissions = policy
            calls: list[tuple[str, str, str, str]] = []

            def is_authorized(self, handler, user, action, resource):
                url = self.normalize_url(handler.request.path)
                self.calls.append((handler.request.method, url, action, resource))
                return action in self.permissions["actions"] and resource in self.permissions["resources"]

        jp_server_config.ServerApp.authorizer_class = PolicyAuthorizer
    return jp_server_config


# --------------------------------------------------------------------------- a small client


class KeyVaultAPI:
    """Calls /keyvault/api through jp_fetch and keeps every response (for canary searches)."""

    def __init__(self, jp_fetch):
        self._fetch = jp_fetch
        self.responses = []
        self.rejected = None  # the last response put_rejected() checked

    async def call(self, method: str, *parts: str, body=None, headers=None, params=None):
        kwargs = {"method": method, "raise_error": False, "headers": dict(headers or {}), "params": params}
        if body is not None:
            kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
        elif method in ("PUT", "POST"):
            kwargs["body"] = b""
        response = await self._fetch(*API, *parts, **kwargs)
        self.responses.append(response)
        return response

    async def list(self):
        response = await self.call("GET", "credentials")
        assert response.code == 200, response.body
        return json.loads(response.body)["credentials"]

    async def names(self) -> list[str]:
        return [item["name"] for item in await self.list()]

    def get(self, name):
        return self.call("GET", "credentials", name)

    def put(self, name, body):
        return self.call("PUT", "credentials", name, body=body)

    def delete(self, name):
        return self.call("DELETE", "credentials", name)

    def test(self, name):
        return self.call("POST", "credentials", name, "test")

    def status(self):
        return self.call("GET", "status")

    def audit(self, **params):
        return self.call("GET", "audit", params={k: str(v) for k, v in params.items()})


@pytest.fixture
def api(jp_fetch, keyvault_app) -> KeyVaultAPI:
    return KeyVaultAPI(jp_fetch)


def body_of(response):
    return json.loads(response.body) if response.body else None


def error_message(response) -> str:
    return body_of(response)["message"]


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for components/schemas/<name> of the shipped OpenAPI document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}
    return jsonschema.Draft202012Validator(schema)


def assert_matches_schema(data, name: str) -> None:
    errors = sorted(schema_validator(name).iter_errors(data), key=str)
    assert not errors, f"{name}: " + "; ".join(e.message for e in errors)


def assert_documented(response, method: str, path: str) -> None:
    """The response's status is documented for this operation and its body matches that status's schema."""
    responses = OPENAPI["paths"][path][method.lower()]["responses"]
    assert str(response.code) in responses, f"{method} {path}: {response.code} is not documented"
    spec = responses[str(response.code)]
    if "$ref" in spec:
        spec = OPENAPI["components"]["responses"][spec["$ref"].rsplit("/", 1)[-1]]
    if "content" not in spec:
        assert response.body == b"", f"{method} {path}: {response.code} documents no body"
        return
    assert response.headers["Content-Type"].startswith("application/json")
    schema = {**spec["content"]["application/json"]["schema"], "components": OPENAPI["components"]}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(body_of(response)))
    assert not errors, f"{method} {path} {response.code}: " + "; ".join(e.message for e in errors)


def new_canary() -> str:
    return "sk-proj-CANARY" + secrets.token_hex(20)


# --------------------------------------------------------------------------- happy paths


async def test_given_an_empty_vault_when_listing_then_no_credentials_are_returned(api):
    assert await api.list() == []


async def test_given_stored_credentials_when_listing_then_each_shows_presence_and_timestamps_but_never_a_value(api):
    assert (await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})).code == 201
    assert (await api.put("MY_GROQ", {"value": "gsk_" + "g" * 40, "provider": "groq"})).code == 201

    items = await api.list()

    assert [i["name"] for i in items] == ["MY_GROQ", "OPENAI_API_KEY"]
    for item in items:
        assert LISTED_FIELDS <= set(item)
        assert item["present"] is True and item["source"] == "vault" and item["type"] == "api_key"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["created_at"])
        assert item["updated_at"] >= item["created_at"]
        assert item["last_used_at"] is None
        assert "value" not in item and "hint" not in item and "hint" not in item.get("metadata", {})
    assert {i["name"]: i["provider"] for i in items} == {"MY_GROQ": "groq", "OPENAI_API_KEY": "openai"}
    raw = b"".join(r.body for r in api.responses)
    assert VALID_OPENAI_KEY.encode() not in raw and b"gsk_gggg" not in raw


@keyvault_settings(show_masked_hint=True)
async def test_given_masked_hints_enabled_when_listing_then_only_the_last_four_characters_are_hinted(api, canary):
    await api.put("OPENAI_API_KEY", {"value": canary})

    (item,) = await api.list()
    one = body_of(await api.get("OPENAI_API_KEY"))

    assert item["metadata"]["hint"] == "…" + canary[-4:]
    assert one["metadata"]["hint"] == "…" + canary[-4:]
    assert canary[:-4] not in json.dumps(item) + json.dumps(one)


async def test_given_a_stored_credential_when_getting_it_then_its_metadata_is_returned_without_the_value(api):
    await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY, "metadata": {"note": "course key"}})

    response = await api.get("OPENAI_API_KEY")

    assert response.code == 200
    item = body_of(response)
    assert item["name"] == "OPENAI_API_KEY" and item["provider"] == "openai" and item["present"] is True
    assert item["metadata"] == {"note": "course key"}
    assert VALID_OPENAI_KEY not in response.body.decode()
    assert_matches_schema(item, "Credential")


async def test_given_a_new_name_when_putting_then_201_with_a_location_under_the_base_url_and_no_value(
        api, jp_base_url):
    response = await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY, "provider": "openai"})

    assert response.code == 201
    assert response.headers["Location"] == url_path_join(jp_base_url, "keyvault/api/credentials/OPENAI_API_KEY")
    assert response.headers["Location"].startswith("/a%40b/")
    created = body_of(response)
    assert created["name"] == "OPENAI_API_KEY" and created["provider"] == "openai" and created["warnings"] == []
    assert "value" not in created and VALID_OPENAI_KEY not in response.body.decode()
    assert_matches_schema(created, "CreatedCredential")


async def test_given_a_value_unlike_its_providers_keys_when_putting_then_stored_with_the_warning_in_body_and_header(
        api):
    body = {"value": "not-an-openai-key", "provider": "openai"}

    created = await api.put("OPENAI_API_KEY", body)
    replaced = await api.put("OPENAI_API_KEY", body)

    assert created.code == 201 and replaced.code == 204
    (warning,) = body_of(created)["warnings"]
    assert "does not look like an OpenAI key" in warning
    for response in (created, replaced):
        (header,) = response.headers.get_list("X-KeyVault-Warning")
        assert header.isascii() and "does not look like an OpenAI key" in header
    assert await api.names() == ["OPENAI_API_KEY"]


async def test_given_an_existing_name_when_putting_again_then_204_with_an_empty_body_and_the_value_is_replaced(
        api, fake_upstream):
    await api.put("OPENAI_API_KEY", {"value": "sk-proj-" + "OLD" * 10})
    (before,) = await api.list()
    await asyncio.sleep(0.01)

    response = await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})

    assert response.code == 204 and response.body == b""
    (after,) = await api.list()
    assert after["created_at"] == before["created_at"] and after["updated_at"] > before["updated_at"]
    assert body_of(await api.test("OPENAI_API_KEY"))["ok"] is True
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY]


async def test_given_a_stored_credential_when_deleting_then_204_and_it_is_gone(api):
    await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})

    response = await api.delete("OPENAI_API_KEY")

    assert response.code == 204 and response.body == b""
    assert await api.list() == []
    assert (await api.get("OPENAI_API_KEY")).code == 404
    assert (await api.delete("OPENAI_API_KEY")).code == 404


async def test_given_a_valid_key_when_testing_then_ok_with_a_detail_and_it_is_marked_used(api, fake_upstream):
    await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})

    response = await api.test("OPENAI_API_KEY")

    assert response.code == 200
    result = body_of(response)
    assert result["ok"] is True and "OpenAI accepted the key" in result["detail"]
    assert_matches_schema(result, "TestResult")
    assert [r.path for r in fake_upstream.requests] == ["/v1/models"]
    assert (await api.list())[0]["last_used_at"] is not None


async def test_given_values_no_http_header_can_carry_when_testing_then_ok_false_and_upstream_is_not_called(
        api, fake_upstream):
    for name, body in (("UNICODE_KEY", {"value": "sk-ключ-1234", "provider": "openai"}),
                       ("NEWLINE_KEY", {"value": "line1\nline2", "provider": "openai", "type": "custom"})):
        assert (await api.put(name, body)).code == 201

        response = await api.test(name)

        assert response.code == 200, response.body
        result = body_of(response)
        assert result["ok"] is False and "HTTP header" in result["error"]
        assert body["value"] not in result["error"]
    assert fake_upstream.requests == []


async def test_given_the_env_master_key_when_getting_status_then_strong_env_protection_and_no_server_path(
        api, keyvault_config, tmp_path):
    response = await api.status()

    assert response.code == 200
    status = body_of(response)
    assert status["protection"]["source"] == "env" and status["protection"]["strong"] is True
    assert status["version"] == jupyter_keyvault.__version__
    assert status["backend"] == "sqlite"
    assert status["warnings"] == [] and status["credentials"] == 0
    assert "openai" in {p["id"] for p in status["providers"]}
    assert "location" not in status
    text = response.body.decode()
    for leak in (str(tmp_path), keyvault_config["vault_path"], "vault.db"):
        assert leak not in text
    assert_matches_schema(status, "Status")


async def test_given_several_writes_when_reading_the_audit_then_own_events_come_newest_first_in_pages(
        api, keyvault_app):
    for name in ("A_KEY", "B_KEY", "C_KEY"):
        await api.put(name, {"value": "v-" + name, "provider": "openai_compatible"})
    await api.delete("B_KEY")

    first = body_of(await api.audit(limit=2))
    second = body_of(await api.audit(limit=2, before=first["next_before"]))
    everything = body_of(await api.audit())

    assert [(e["action"], e["target"]) for e in everything["events"]] == [
        ("delete", "B_KEY"), ("set", "C_KEY"), ("set", "B_KEY"), ("set", "A_KEY")]
    assert everything["next_before"] is None
    assert {e["owner"] for e in everything["events"]} == {keyvault_app.owner}
    ids = [e["id"] for e in everything["events"]]
    assert ids == sorted(ids, reverse=True)
    assert first["events"] == everything["events"][:2] and first["next_before"] == ids[1]
    assert second["events"] == everything["events"][2:4]
    assert all(e["id"] < first["next_before"] for e in second["events"])
    for page in (first, second, everything):
        assert_matches_schema(page, "AuditPage")


async def test_given_bad_paging_arguments_when_reading_the_audit_then_400(api):
    for params in ({"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"before": "x"}, {"before": str(2**63)},
                   {"before": "-1"}):
        response = await api.call("GET", "audit", params=params)
        assert response.code == 400 and error_message(response), params


# --------------------------------------------------------------------------- bad input changes nothing


async def put_rejected(api, name, body, code) -> str:
    """PUT that must fail with `code`, a message, and no change to the listing; returns the message."""
    before = await api.list()
    response = await api.put(name, body)
    assert response.code == code, (response.code, response.body)
    assert await api.list() == before
    api.rejected = response
    message = error_message(response)
    assert message
    return message


async def test_given_malformed_json_when_putting_then_400_and_nothing_is_stored(api):
    message = await put_rejected(api, "OPENAI_API_KEY", '{"value": "sk-proj-abc",', 400)
    assert "JSON" in message


async def test_given_json_that_is_not_an_object_when_putting_then_400_and_nothing_is_stored(api):
    for body in ("[1, 2]", '"sk-proj-abc"', "null", "42"):
        message = await put_rejected(api, "OPENAI_API_KEY", body, 400)
        assert "object" in message, body


async def test_given_an_empty_body_when_putting_then_400_and_nothing_is_stored(api):
    await put_rejected(api, "OPENAI_API_KEY", "", 400)


async def test_given_no_string_value_when_putting_then_422_and_nothing_is_stored(api):
    for body in ({"provider": "openai"}, {"value": None}, {"value": 42}):
        message = await put_rejected(api, "OPENAI_API_KEY", body, 422)
        assert "value" in message, body


async def test_given_an_empty_or_blank_value_when_putting_then_422_and_nothing_is_stored(api):
    for value in ("", "   ", "sk-proj-\x00abc"):
        await put_rejected(api, "MY_KEY", {"value": value, "provider": "openai_compatible"}, 422)


async def test_given_an_unknown_field_when_putting_then_422_naming_it_and_nothing_is_stored(api):
    message = await put_rejected(api, "OPENAI_API_KEY", {"value": VALID_OPENAI_KEY, "colour": "red"}, 422)
    assert "colour" in message


INVALID_NAMES = ["bad-name", "1ABC", "A" * 65, "has.dot", "ÄPFEL"]


async def test_given_an_invalid_name_in_the_url_when_putting_then_422_with_a_clear_message_and_nothing_stored(api):
    for name in INVALID_NAMES:
        message = await put_rejected(api, name, {"value": VALID_OPENAI_KEY}, 422)
        assert "credential name" in message, name
        assert ("64" if len(name) > 64 else "environment variable") in message, name


async def test_given_an_invalid_name_in_the_url_when_reading_deleting_or_testing_then_422(api, fake_upstream):
    for name in INVALID_NAMES:
        for method, suffix in (("GET", ()), ("DELETE", ()), ("POST", ("test",))):
            response = await api.call(method, "credentials", name, *suffix)
            assert response.code == 422 and "credential name" in error_message(response), (method, name)
    assert fake_upstream.requests == []


async def test_given_a_value_over_max_value_bytes_when_putting_then_413_and_nothing_is_stored(api, keyvault_app):
    value = "sk-proj-" + "x" * keyvault_app.max_value_bytes
    message = await put_rejected(api, "OPENAI_API_KEY", {"value": value}, 413)
    assert str(keyvault_app.max_value_bytes) in message


@keyvault_settings(max_request_bytes=512)
async def test_given_a_body_over_max_request_bytes_when_putting_then_413_and_nothing_is_stored(api):
    message = await put_rejected(api, "OPENAI_API_KEY", {"value": "sk-proj-" + "x" * 600}, 413)
    assert "512" in message


async def raw_put(port: int, path: str, auth: dict, head_lines: list[str], body_parts: list[bytes]) -> tuple[bytes, dict]:
    """A PUT over a raw socket: the head and JSON of the reply, read while the body may be unsent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in auth.items()),
                 "Content-Type: application/json", *head_lines]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        for part in body_parts:
            writer.write(part)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        return head, json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
    finally:
        writer.close()


@keyvault_settings(max_request_bytes=512)
async def test_given_a_declared_length_over_the_cap_then_413_before_any_body_byte_is_sent(
        api, jp_http_port, jp_auth_header, jp_base_url):
    # 80 MB declared, nothing sent: the answer comes from the headers alone.
    status, reply = await raw_put(jp_http_port, f"{jp_base_url}keyvault/api/credentials/OPENAI_API_KEY",
                                  jp_auth_header, ["Content-Length: 80000000"], [])
    assert status.startswith(b"HTTP/1.1 413") and "512" in reply["message"], (status, reply)
    assert b"\r\nconnection: close\r\n" in status.lower()  # the unread body ends this connection
    assert await api.list() == []


@keyvault_settings(max_request_bytes=512)
async def test_given_a_body_a_little_over_the_cap_then_it_is_read_and_dropped_and_the_413_keeps_the_connection(
        api, jp_http_port, jp_auth_header, jp_base_url):
    # Clients read the answer only after sending; an answer and a close mid-body is lost to a reset
    # (behind JupyterHub's proxy: a 503 page). Up to twice the cap the body is drained first.
    body = json.dumps({"value": VALID_OPENAI_KEY, "metadata": {"pad": "x" * 500}}).encode()
    assert 512 < len(body) <= 1024
    path = f"{jp_base_url}keyvault/api/credentials/OPENAI_API_KEY"
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    replies = []
    try:
        for request in (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        f"Authorization: {jp_auth_header['Authorization']}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body,
                        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Authorization: {jp_auth_header['Authorization']}\r\n\r\n".encode()):
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            replies.append((head, await asyncio.wait_for(reader.readexactly(length), 10)))
    finally:
        writer.close()
    assert replies[0][0].startswith(b"HTTP/1.1 413") and b"512" in replies[0][1], replies
    assert replies[1][0].startswith(b"HTTP/1.1 404"), replies  # the same connection answered again
    assert await api.list() == []


@keyvault_settings(max_request_bytes=512)
async def test_given_a_chunked_body_passing_the_cap_then_413_and_nothing_is_stored(
        api, jp_http_port, jp_auth_header, jp_base_url):
    value = json.dumps({"value": VALID_OPENAI_KEY, "metadata": {"pad": "x" * 2000}}).encode()
    chunks = [b"%x\r\n%s\r\n" % (len(value[i:i + 100]), value[i:i + 100]) for i in range(0, len(value), 100)]
    status, reply = await raw_put(jp_http_port, f"{jp_base_url}keyvault/api/credentials/OPENAI_API_KEY",
                                  jp_auth_header, ["Transfer-Encoding: chunked"], chunks + [b"0\r\n\r\n"])
    assert status.startswith(b"HTTP/1.1 413") and "512" in reply["message"], (status, reply)
    assert await api.list() == []


async def test_given_a_refused_small_put_then_the_reply_follows_the_body_and_the_connection_stays_usable(
        api, jp_http_port, jp_auth_header, jp_base_url):
    # A reply sent before the body is read makes tornado close the connection, which a reverse proxy
    # (JupyterHub's) reports as a 503 page instead of this 403.
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    body = json.dumps({"value": VALID_OPENAI_KEY}).encode()
    path = f"{jp_base_url}keyvault/api/credentials/OPENAI_API_KEY"
    try:
        writer.write(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.3)  # the headers alone: no reply yet
        writer.write(body)
        replies = []
        for request in (b"", f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"Authorization: {jp_auth_header['Authorization']}\r\n\r\n".encode()):
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            replies.append((head.split(b"\r\n", 1)[0], await asyncio.wait_for(reader.readexactly(length), 10)))
    finally:
        writer.close()
    assert replies[0][0].startswith(b"HTTP/1.1 403"), replies
    assert replies[1][0].startswith(b"HTTP/1.1 404"), replies  # the same connection answered again
    assert await api.list() == []


@keyvault_settings(max_request_bytes=512)
async def test_given_a_chunked_body_under_the_cap_then_it_is_stored(api, jp_http_port, jp_auth_header, jp_base_url):
    value = json.dumps({"value": VALID_OPENAI_KEY}).encode()
    chunks = [b"%x\r\n%s\r\n" % (len(value[i:i + 10]), value[i:i + 10]) for i in range(0, len(value), 10)]
    status, reply = await raw_put(jp_http_port, f"{jp_base_url}keyvault/api/credentials/OPENAI_API_KEY",
                                  jp_auth_header, ["Transfer-Encoding: chunked"], chunks + [b"0\r\n\r\n"])
    assert status.startswith(b"HTTP/1.1 201"), (status, reply)
    assert [c["name"] for c in await api.list()] == ["OPENAI_API_KEY"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
async def test_given_a_body_not_labelled_json_when_writing_then_415_and_nothing_changes(api, content_type):
    # What a cross-site page can send without a preflight (and curl -d without -H): never a write.
    headers = {"Content-Type": content_type} if content_type else {}
    await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})
    for method, parts, body in (("PUT", ("credentials", "OTHER_KEY"), {"value": VALID_OPENAI_KEY}),
                                ("PATCH", ("credentials", "OPENAI_API_KEY"), {"metadata": {"notebooks": ["a/*"]}}),
                                ("POST", ("tokens",), {"name": "ci", "credentials": ["OPENAI_API_KEY"]})):
        before = await api.list()
        if content_type is None:  # tornado's client labels nothing itself; send the bytes bare
            response = await api.call(method, *parts, body=json.dumps(body).encode(), headers={"Content-Type": ""})
        else:
            response = await api.call(method, *parts, body=body, headers=headers)
        assert response.code == 415, (method, response.code, response.body)
        assert "Content-Type: application/json" in error_message(response)
        assert await api.list() == before
    assert (await api.call("GET", "tokens")).code == 200 and json.loads(
        (await api.call("GET", "tokens")).body)["tokens"] == []


async def test_given_json_with_a_charset_when_putting_then_it_is_accepted(api):
    response = await api.call("PUT", "credentials", "OPENAI_API_KEY", body={"value": VALID_OPENAI_KEY},
                              headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.code == 201, response.body


async def test_given_an_unknown_provider_when_putting_then_422_and_nothing_is_stored(api):
    message = await put_rejected(api, "MY_KEY", {"value": VALID_OPENAI_KEY, "provider": "skynet"}, 422)
    assert "unknown provider" in message and "openai" in message


async def test_given_an_anthropic_key_under_provider_openai_when_putting_then_422_and_nothing_is_stored(api):
    key = "sk-ant-api03-" + "a" * 40
    message = await put_rejected(api, "OPENAI_API_KEY", {"value": key, "provider": "openai"}, 422)
    assert "Anthropic" in message and key not in message


async def test_given_an_unknown_type_when_putting_then_422_and_nothing_is_stored(api):
    await put_rejected(api, "MY_KEY", {"value": "abc", "type": "password"}, 422)


async def test_given_an_unknown_credential_when_getting_deleting_or_testing_then_404(api, fake_upstream):
    for response in (await api.get("NOPE_KEY"), await api.delete("NOPE_KEY"), await api.test("NOPE_KEY")):
        assert response.code == 404, response.body
        assert "NOPE_KEY" in error_message(response)
    assert fake_upstream.requests == []


@keyvault_settings(write_rate_per_minute=2)
async def test_given_a_low_write_rate_when_one_more_put_comes_then_429_with_retry_after_and_nothing_stored(api):
    assert (await api.put("A_KEY", {"value": "sk-proj-aaaa", "provider": "openai"})).code == 201
    assert (await api.put("B_KEY", {"value": "sk-proj-bbbb", "provider": "openai"})).code == 201

    message = await put_rejected(api, "C_KEY", {"value": "sk-proj-cccc", "provider": "openai"}, 429)

    assert int(api.rejected.headers["Retry-After"]) >= 1
    assert "too many" in message
    assert await api.names() == ["A_KEY", "B_KEY"]
    delete = await api.delete("A_KEY")
    assert delete.code == 429 and "Retry-After" in delete.headers
    assert await api.names() == ["A_KEY", "B_KEY"]


@keyvault_settings(test_rate_per_minute=1)
async def test_given_a_low_test_rate_when_one_more_test_comes_then_429_with_retry_after_and_no_upstream_call(
        api, fake_upstream):
    await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})
    assert body_of(await api.test("OPENAI_API_KEY"))["ok"] is True

    response = await api.test("OPENAI_API_KEY")

    assert response.code == 429 and int(response.headers["Retry-After"]) >= 1
    assert "too many" in error_message(response)
    assert len(fake_upstream.requests) == 1
    assert [(e["action"], e["outcome"]) for e in body_of(await api.audit())["events"]].count(("test", "ok")) == 1


# --------------------------------------------------------------------------- authorization


async def seed(keyvault_app, name="OPENAI_API_KEY", value=VALID_OPENAI_KEY, provider="openai"):
    """Store a credential server-side, past the (possibly denying) REST authorizer."""
    await asyncio.to_thread(keyvault_app.vault.set, keyvault_app.owner, name, value, provider=provider)


@authorizer_allowing(["read", "execute"], id="deny-write")
async def test_given_an_authorizer_denying_write_when_putting_or_deleting_then_403_while_reads_and_tests_work(
        api, keyvault_app, jp_serverapp, fake_upstream):
    await seed(keyvault_app)

    put = await api.put("NEW_KEY", {"value": VALID_OPENAI_KEY})
    delete = await api.delete("OPENAI_API_KEY")

    assert put.code == 403 and delete.code == 403
    assert await api.names() == ["OPENAI_API_KEY"]
    assert (await api.get("OPENAI_API_KEY")).code == 200
    assert (await api.status()).code == 200 and (await api.audit()).code == 200
    assert body_of(await api.test("OPENAI_API_KEY"))["ok"] is True
    calls = jp_serverapp.authorizer.calls
    assert ("PUT", "/keyvault/api/credentials/NEW_KEY", "write", "keyvault") in calls
    assert ("DELETE", "/keyvault/api/credentials/OPENAI_API_KEY", "write", "keyvault") in calls
    assert ("POST", "/keyvault/api/credentials/OPENAI_API_KEY/test", "execute", "keyvault") in calls


@authorizer_allowing(["read", "write"], id="deny-execute")
async def test_given_an_authorizer_denying_execute_when_testing_then_403_and_upstream_is_never_called(
        api, jp_serverapp, fake_upstream):
    assert (await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})).code == 201

    response = await api.test("OPENAI_API_KEY")

    assert response.code == 403
    assert fake_upstream.requests == []
    assert (await api.get("OPENAI_API_KEY")).code == 200
    assert (await api.delete("OPENAI_API_KEY")).code == 204
    assert ("POST", "/keyvault/api/credentials/OPENAI_API_KEY/test", "execute", "keyvault") in \
        jp_serverapp.authorizer.calls


@authorizer_allowing(["read", "write", "execute"], resources=("contents", "kernels", "sessions", "api", "kernelspecs"),
                     id="every-resource-but-keyvault")
async def test_given_every_jupyter_resource_but_keyvault_allowed_when_calling_the_api_then_each_action_is_403(
        api, jp_fetch, jp_serverapp, keyvault_app):
    await seed(keyvault_app)

    responses = [await api.call("GET", "credentials"), await api.status(), await api.audit(),
                 await api.get("OPENAI_API_KEY"), await api.put("NEW_KEY", {"value": VALID_OPENAI_KEY}),
                 await api.delete("OPENAI_API_KEY"), await api.test("OPENAI_API_KEY"),
                 await api.call("GET", "openapi.json")]

    assert [r.code for r in responses] == [403] * len(responses)
    assert (await jp_fetch("api", "contents", method="GET")).code == 200
    authorizer = jp_serverapp.authorizer
    keyvault_calls = [c for c in authorizer.calls if c[1].startswith("/keyvault/")]
    assert len(keyvault_calls) == len(responses)
    for _method, url, _action, resource in keyvault_calls:
        assert resource == "keyvault" == authorizer.match_url_to_resource(url)
    assert {c[3] for c in authorizer.calls if c[1].startswith("/api/contents")} == {"contents"}
    stored = await asyncio.to_thread(keyvault_app.vault.list, keyvault_app.owner)
    assert [i.name for i in stored] == ["OPENAI_API_KEY"]


# --------------------------------------------------------------------------- XSRF


async def test_given_a_cookie_session_when_putting_without_the_xsrf_token_then_403_and_nothing_is_stored(
        api, http_server_client, jp_serverapp, jp_base_url):
    token = jp_serverapp.identity_provider.token
    status_url = url_path_join(jp_base_url, "keyvault/api/status") + f"?token={token}"
    login = await http_server_client.fetch(status_url, raise_error=False)
    assert login.code == 200
    cookies = SimpleCookie()
    for header in login.headers.get_list("Set-Cookie"):
        cookies.load(header)
    assert cookies, "token login set no cookie"
    login_cookie = "; ".join(f"{k}={m.value}" for k, m in cookies.items())
    url = url_path_join(jp_base_url, "keyvault/api/credentials/OPENAI_API_KEY")
    body = json.dumps({"value": VALID_OPENAI_KEY})

    # The cookie alone authenticates a read...
    read = await http_server_client.fetch(url_path_join(jp_base_url, "keyvault/api/credentials"),
                                          headers={"Cookie": login_cookie}, raise_error=False)
    assert read.code == 200
    # ...but a write without the XSRF token is refused before the handler runs.
    refused = await http_server_client.fetch(url, method="PUT", body=body, headers={"Cookie": login_cookie},
                                             raise_error=False)
    assert refused.code == 403
    assert await api.names() == []
    mismatched = await http_server_client.fetch(
        url, method="PUT", body=body, raise_error=False,
        headers={"Cookie": f"{login_cookie}; _xsrf=2|aaaa|bbbb|1", "X-XSRFToken": "2|cccc|dddd|1"})
    assert mismatched.code == 403
    assert await api.names() == []

    # With the XSRF cookie the server issues and the matching header, the same write is accepted.
    xsrf = SimpleCookie()
    login_page = await http_server_client.fetch(url_path_join(jp_base_url, "login"), raise_error=False,
                                                follow_redirects=False)
    for header in login_page.headers.get_list("Set-Cookie"):
        xsrf.load(header)
    assert "_xsrf" in xsrf, "no _xsrf cookie issued"
    xsrf_token = xsrf["_xsrf"].value
    accepted = await http_server_client.fetch(
        url, method="PUT", body=body, raise_error=False,
        headers={"Cookie": f"{login_cookie}; _xsrf={xsrf_token}", "X-XSRFToken": xsrf_token,
                 "Content-Type": "application/json"})
    assert accepted.code == 201, accepted.body
    assert await api.names() == ["OPENAI_API_KEY"]


# --------------------------------------------------------------------------- canary


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

    def text() -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        lines = [formatter.format(r) for r in records] + [caplog.text]
        return "\n".join(lines)

    yield text
    logging.getLogger().removeHandler(keep)
    jp_serverapp.log.removeHandler(keep)


def vault_files(keyvault_config) -> list[Path]:
    db = Path(keyvault_config["vault_path"])
    return [p for p in db.parent.iterdir() if p.is_file()]


def audit_table_text(keyvault_config) -> str:
    db = sqlite3.connect(f"file:{keyvault_config['vault_path']}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT * FROM audit").fetchall()
    finally:
        db.close()
    assert rows
    return json.dumps(rows)


@server_app_settings(log_level="DEBUG")
async def test_given_canaries_when_put_listed_read_tested_and_deleted_then_they_appear_in_no_response_log_audit_or_file(
        api, canary, fake_upstream, server_log, keyvault_config, keyvault_app, jp_serverapp):
    wrong = new_canary()
    fake_upstream.valid_keys.add(canary)
    assert jp_serverapp.log_level == logging.DEBUG

    assert (await api.put("OPENAI_API_KEY", {"value": canary, "provider": "openai"})).code == 201
    assert (await api.put("WRONG_KEY", {"value": wrong, "provider": "openai"})).code == 201
    assert (await api.put("WRONG_KEY", {"value": wrong, "provider": "openai"})).code == 204
    await api.list()
    assert (await api.get("OPENAI_API_KEY")).code == 200
    assert body_of(await api.test("OPENAI_API_KEY"))["ok"] is True
    failed = body_of(await api.test("WRONG_KEY"))
    assert (await api.status()).code == 200
    audit = await api.audit()
    assert (await api.delete("WRONG_KEY")).code == 204
    assert (await api.test("WRONG_KEY")).code == 404

    # The upstream really saw both keys, and echoed the wrong one in its 401 body.
    assert fake_upstream.received_keys() == [canary, wrong]
    assert failed["ok"] is False and "rejected" in failed["error"] and "401" in failed["error"]
    assert wrong not in failed["error"]
    for secret in (canary, wrong):
        for needle in (secret, secret[8:]):  # the whole value, and its distinctive tail
            for response in api.responses:
                assert needle not in response.body.decode("utf-8", "replace"), response.effective_url
                assert needle not in str(list(response.headers.get_all())), response.effective_url
            assert needle not in server_log()
            assert needle not in audit.body.decode()
            assert needle not in audit_table_text(keyvault_config)
            files_checked = vault_files(keyvault_config)
            assert {p.name for p in files_checked} >= {"vault.db"}
            for path in files_checked:
                assert needle.encode() not in path.read_bytes(), path.name
    # The search covered the server's DEBUG output (the access log of a 2xx is DEBUG).
    assert "201 PUT /a%40b/keyvault/api/credentials/OPENAI_API_KEY" in server_log()
    assert "200 POST /a%40b/keyvault/api/credentials/WRONG_KEY/test" in server_log()


# --------------------------------------------------------------------------- slow upstream


@keyvault_settings(test_timeout=1.0)
async def test_given_a_slow_upstream_when_testing_then_it_times_out_while_status_stays_fast(api, fake_upstream):
    await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY})
    fake_upstream.delay = 3

    async def status_while_pending():
        while not fake_upstream.requests:  # the key test is now in flight
            await asyncio.sleep(0.02)
        started = time.monotonic()
        response = await api.status()
        return response, time.monotonic() - started

    started = time.monotonic()
    test_response, (status_response, status_seconds) = await asyncio.gather(
        api.test("OPENAI_API_KEY"), status_while_pending())
    test_seconds = time.monotonic() - started

    result = body_of(test_response)
    assert test_response.code == 200 and result["ok"] is False
    assert "timeout" in result["error"] and "1 s" in result["error"]
    assert test_seconds < 2.9
    assert status_response.code == 200 and status_seconds < 0.5


# --------------------------------------------------------------------------- kernel environment


class TestKernelEnvironment:
    """A server started with secrets in its environment hands none of them to kernels."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config, canary, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", canary)  # KEYVAULT_MASTER_KEY is set by the plugin fixture
        return jp_server_config

    async def kernel_environ(self, jp_fetch, jp_serverapp) -> dict[str, str]:
        response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
        kernel_id = json.loads(response.body)["id"]
        client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
            out: list[str] = []

            def collect(msg):
                if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                    out.append(msg["content"]["text"])

            reply = await client.execute_interactive(
                "import json, os; print(json.dumps(dict(os.environ)))", output_hook=collect, timeout=60)
            assert reply["content"]["status"] == "ok"
        finally:
            client.stop_channels()
            await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        return json.loads("".join(out))

    async def test_given_secrets_in_the_server_env_when_a_kernel_starts_then_its_environ_has_none_but_the_server_url(
            self, jp_fetch, jp_serverapp, canary, master_key):
        environ = await self.kernel_environ(jp_fetch, jp_serverapp)

        assert "OPENAI_API_KEY" not in environ and "KEYVAULT_MASTER_KEY" not in environ
        dumped = json.dumps(environ)
        assert canary not in dumped and master_key not in dumped
        assert environ["KEYVAULT_SERVER_URL"] == jp_serverapp.connection_url
        assert environ["KEYVAULT_SERVER_URL"].endswith("/a%40b/")
        assert f":{jp_serverapp.port}/" in environ["KEYVAULT_SERVER_URL"]

    async def test_given_secrets_in_the_server_env_when_started_then_the_server_environ_no_longer_holds_them(
            self, jp_serverapp, keyvault_app, canary, master_key):
        import os

        assert "OPENAI_API_KEY" not in os.environ and "KEYVAULT_MASTER_KEY" not in os.environ
        assert canary not in json.dumps(dict(os.environ)) and master_key not in json.dumps(dict(os.environ))

    async def test_given_an_env_sourced_key_when_listing_and_testing_then_it_shows_as_env_and_works(
            self, api, fake_upstream, canary):
        fake_upstream.valid_keys.add(canary)

        items = await api.list()
        result = body_of(await api.test("OPENAI_API_KEY"))

        assert [(i["name"], i["source"], i["present"]) for i in items] == [("OPENAI_API_KEY", "env", True)]
        assert result["ok"] is True
        assert fake_upstream.received_keys() == [canary]
        assert all(canary not in r.body.decode() for r in api.responses)


# --------------------------------------------------------------------------- OpenAPI in sync


def openapi_path(pattern: str) -> str:
    path = pattern.removesuffix("/?")
    path = re.sub(r"\(\?P<raw_name>\[\^/\]\+\)", "{name}", path)
    return re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", path)


def implemented_methods(handler_class) -> set[str]:
    return {m for m in ("get", "put", "post", "delete", "patch")
            if getattr(handler_class, m) is not getattr(web.RequestHandler, m)}


def test_given_the_registered_routes_when_compared_with_openapi_json_then_every_path_and_method_is_documented():
    documented = {path: {m for m in ops if m in ("get", "put", "post", "delete", "patch")}
                  for path, ops in OPENAPI["paths"].items()}
    registered = {}
    rest_routes = keyvault_handlers
    for pattern, handler_class, *_ in rest_routes:
        path = openapi_path(pattern)
        if path == "/keyvault/api/openapi.json":  # the document itself, not an operation it describes
            continue
        registered[path] = implemented_methods(handler_class)

    assert all("(" not in p and "?" not in p for p in registered), registered
    assert registered == documented


async def test_given_real_responses_when_validated_against_openapi_json_then_each_matches_its_documented_schema(
        api, fake_upstream):
    one, named, test = "/keyvault/api/credentials/{name}", "/keyvault/api/credentials", \
        "/keyvault/api/credentials/{name}/test"
    checks = [
        (await api.put("OPENAI_API_KEY", {"value": VALID_OPENAI_KEY}), "PUT", one),
        (await api.put("OTHER_KEY", {"value": "not-a-key", "provider": "openai"}), "PUT", one),
        (await api.put("OTHER_KEY", {"value": "not-a-key", "provider": "openai"}), "PUT", one),
        (await api.put("BAD_KEY", {"value": "x", "provider": "skynet"}), "PUT", one),
        (await api.put("BAD_KEY", "{"), "PUT", one),
        (await api.call("GET", "credentials"), "GET", named),
        (await api.get("OPENAI_API_KEY"), "GET", one),
        (await api.get("NOPE_KEY"), "GET", one),
        (await api.test("OPENAI_API_KEY"), "POST", test),
        (await api.test("NOPE_KEY"), "POST", test),
        (await api.status(), "GET", "/keyvault/api/status"),
        (await api.audit(limit=2), "GET", "/keyvault/api/audit"),
        (await api.audit(limit=0), "GET", "/keyvault/api/audit"),
        (await api.delete("OTHER_KEY"), "DELETE", one),
        (await api.delete("OTHER_KEY"), "DELETE", one),
    ]
    fake_upstream.valid_keys.discard(VALID_OPENAI_KEY)
    checks.append((await api.test("OPENAI_API_KEY"), "POST", test))

    assert [r.code for r, *_ in checks] == [201, 201, 204, 422, 400, 200, 200, 404, 200, 404, 200, 200, 400,
                                            204, 404, 200]
    assert body_of(checks[-1][0])["ok"] is False and body_of(checks[8][0])["ok"] is True
    for response, method, path in checks:
        assert_documented(response, method, path)
    served = await api.call("GET", "openapi.json")
    assert served.code == 200 and body_of(served) == OPENAPI
