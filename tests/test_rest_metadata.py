"""PATCH /keyvault/api/credentials/{name}: metadata-only updates (the sidebar's per-notebook access)."""

from __future__ import annotations

import json
import secrets
from importlib.resources import files

import jsonschema
import pytest

OPENAPI = json.loads(files("jupyter_keyvault").joinpath("openapi.json").read_text("utf-8"))
PATH = "/keyvault/api/credentials/{name}"


@pytest.fixture
def call(jp_fetch, keyvault_app):
    async def call(method, name, body=None):
        kwargs = {"method": method, "raise_error": False}
        if body is not None:
            kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return await jp_fetch("keyvault", "api", "credentials", name, **kwargs)
    return call


def documented(response, method):
    spec = OPENAPI["paths"][PATH][method]["responses"][str(response.code)]
    if "$ref" in spec:
        spec = OPENAPI["components"]["responses"][spec["$ref"].rsplit("/", 1)[-1]]
    schema = {**spec["content"]["application/json"]["schema"], "components": OPENAPI["components"]}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(json.loads(response.body)))
    assert not errors, errors


async def test_given_a_stored_key_when_its_notebook_list_is_patched_then_metadata_changes_and_the_value_does_not(
        call, keyvault_app):
    canary = "sk-proj-CANARY" + secrets.token_hex(20)
    assert (await call("PUT", "OPENAI_API_KEY", {"value": canary, "provider": "openai"})).code == 201

    response = await call("PATCH", "OPENAI_API_KEY", {"metadata": {"notebooks": ["course/*.ipynb"], "note": "x"}})

    assert response.code == 200, response.body
    documented(response, "patch")
    item = json.loads(response.body)
    assert item["metadata"]["notebooks"] == ["course/*.ipynb"] and item["metadata"]["note"] == "x"
    assert canary.encode() not in response.body
    resolved = keyvault_app.vault.resolve(keyvault_app.owner, "OPENAI_API_KEY")
    assert resolved.value == canary and resolved.metadata["notebooks"] == ["course/*.ipynb"]
    listed = json.loads((await call("GET", "OPENAI_API_KEY")).body)
    assert listed["metadata"]["notebooks"] == ["course/*.ipynb"] and listed["provider"] == "openai"


async def test_given_a_masked_hint_when_metadata_is_patched_then_the_server_made_hint_is_kept_and_cannot_be_forged(
        call, keyvault_app):
    keyvault_app.show_masked_hint = True
    value = "sk-proj-" + "H1NT" * 10
    await call("PUT", "OPENAI_API_KEY", {"value": value})

    response = await call("PATCH", "OPENAI_API_KEY", {"metadata": {"hint": "…fake", "notebooks": []}})

    assert response.code == 200
    assert json.loads(response.body)["metadata"]["hint"] == "…" + value[-4:]


@pytest.mark.parametrize("body", [
    {"metadata": {"notebooks": "a/*.ipynb"}},
    {"metadata": {"notebooks": [1]}},
    {"metadata": {"notebooks": [""]}},
    {"metadata": []},
    {"metadata": {"big": "x" * 5000}},
    {"metadata": {}, "value": "sk-proj-" + "V" * 40},
    {"provider": "groq"},
    {},
], ids=["string-not-list", "non-string-glob", "empty-glob", "metadata-not-object", "too-big", "value-smuggled",
        "no-metadata", "empty"])
async def test_given_bad_patch_bodies_when_sent_then_422_and_nothing_changes(call, keyvault_app, body):
    await call("PUT", "OPENAI_API_KEY", {"value": "sk-proj-" + "A" * 40, "metadata": {"notebooks": ["keep/*.ipynb"]}})

    response = await call("PATCH", "OPENAI_API_KEY", body)

    assert response.code == 422, response.body
    documented(response, "patch")
    resolved = keyvault_app.vault.resolve(keyvault_app.owner, "OPENAI_API_KEY")
    assert resolved.value == "sk-proj-" + "A" * 40 and resolved.metadata == {"notebooks": ["keep/*.ipynb"]}


async def test_given_no_such_credential_when_patched_then_404_and_nothing_is_created(call, keyvault_app):
    response = await call("PATCH", "MISSING_KEY", {"metadata": {"notebooks": ["*"]}})

    assert response.code == 404
    documented(response, "patch")
    assert [i.name for i in keyvault_app.vault.list(keyvault_app.owner)] == []


async def test_given_invalid_json_when_patched_then_400(call, keyvault_app):
    await call("PUT", "OPENAI_API_KEY", {"value": "sk-proj-" + "A" * 40})
    response = await call("PATCH", "OPENAI_API_KEY", "{not json")
    assert response.code == 400
