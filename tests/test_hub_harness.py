"""The real-JupyterHub harness: a hub starts, users get servers, tokens and kernels."""

from __future__ import annotations

import pytest

from jupyter_keyvault.testing.hub import JupyterHubHarness, missing_requirements

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or "")


@pytest.fixture(scope="module")
def hub():
    with JupyterHubHarness() as h:
        yield h


def test_a_user_created_through_the_api_gets_a_running_server_and_a_token_that_reaches_it(hub):
    hub.create_user("alice")
    server = hub.start_server("alice")
    assert server["ready"]
    resp = hub.user_api("alice", "GET", "api/status")
    assert resp.status == 200, resp.text


def test_another_users_token_is_refused_by_alices_server(hub):
    hub.create_user("alice")
    hub.create_user("bob")
    hub.start_server("alice")
    resp = hub.user_api("alice", "GET", "api/status", token=hub.user_token("bob"))
    assert resp.status == 403


def test_groups_are_created_with_their_members(hub):
    hub.create_user("carol")
    group = hub.create_group("class-a", ["carol"])
    assert group["users"] == ["carol"]


async def test_a_kernel_started_on_the_users_server_runs_code(hub):
    hub.create_user("alice")
    hub.start_server("alice")
    kernel = await hub.start_kernel("alice")
    try:
        result = await kernel.execute("import os; print(os.environ['JUPYTERHUB_USER'])")
        assert result.stdout.strip() == "alice"
    finally:
        await kernel.stop()
