"""Kernels started through the server inherit no secret, and learn where the vault is."""

import json

import pytest


@pytest.fixture
def jp_server_config(jp_server_config, canary, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary + "x")
    monkeypatch.setenv("MY_SERVICE_SECRET", canary + "y")
    return jp_server_config


async def test_given_secrets_in_the_server_env_when_a_kernel_starts_then_its_environ_has_none_of_them(
    keyvault_app, server_kernel, jp_base_url, canary
):
    kernel = await server_kernel("env.ipynb")
    result = await kernel.execute("import os, json; print(json.dumps(dict(os.environ)))")
    env = json.loads(result.stdout)
    assert canary not in result.stdout
    for name in ("KEYVAULT_MASTER_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MY_SERVICE_SECRET"):
        assert name not in env
    assert env["KEYVAULT_SERVER_URL"].endswith(jp_base_url)
    await kernel.restart()
    result = await kernel.execute("import os; print(sorted(os.environ))")
    assert "KEYVAULT_MASTER_KEY" not in result.stdout and canary not in result.stdout
    assert "KEYVAULT_SERVER_URL" in result.stdout
