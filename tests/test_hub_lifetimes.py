"""Credential lifetimes on a real JupyterHub with the keyvault service: a session-only key set
through a user's server lives in the service's memory while that server runs (heartbeats), ends
when the server stops, and ends by itself when heartbeats stop; shared keys get the admins'
maximum lifetime."""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path

import pytest

from jupyter_keyvault.testing.hub import JupyterHubHarness, http, missing_requirements
from jupyter_keyvault.testing.live_server import free_port

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or "")

SERVICE = "keyvault"
SESSION_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from jupyter_keyvault.hub.config import keyvault_service_config

    master_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    data_dir = tmp_path_factory.mktemp("kv-service")
    service, roles, user_env = keyvault_service_config(
        port=free_port(), master_key=master_key, data_dir=str(data_dir), name=SERVICE,
        extra_args=[f"--KeyVaultHubService.session_timeout={SESSION_TIMEOUT}",
                    "--KeyVaultHubService.expiry_check_seconds=0.5",
                    "--KeyVaultHubService.shared_key_max_lifetime_days=30"])
    harness = JupyterHubHarness(services=[service], load_roles=roles, user_env=user_env, admin_users=["carol"],
                                singleuser_config='c.KeyVault.backend = "hub"\n'
                                                  'c.KeyVault.expiry_check_seconds = 0.5\n')
    harness.start()
    try:
        for user in ("alice", "bob", "carol"):
            harness.create_user(user)
        harness.data_dir = Path(data_dir)
        yield harness
    finally:
        harness.stop()


def service(hub, user: str, method: str, path: str, body=None):
    return http(method, hub.service_url(SERVICE) + path, token=hub.user_token(user), body=body)


def personal(hub, user: str) -> dict[str, dict]:
    resp = service(hub, user, "GET", "api/credentials")
    assert resp.status == 200, resp.text
    return {c["name"]: c for c in resp.json()["credentials"]}


def wait_until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


def test_a_session_key_set_through_a_users_server_lives_while_it_runs_and_ends_when_it_stops(hub):
    canary = "sk-proj-HUBSESSION" + secrets.token_hex(20)
    hub.start_server("alice")
    resp = hub.user_api("alice", "PUT", "keyvault/api/credentials/OPENAI_API_KEY", {"value": canary, "session": True},
                        token=hub.user_token("alice"))
    assert resp.status == 201, resp.text
    assert resp.json()["lifetime"] == "session"
    listed = hub.user_api("alice", "GET", "keyvault/api/credentials", token=hub.user_token("alice")).json()
    assert [(c["name"], c["lifetime"]) for c in listed["credentials"]] == [("OPENAI_API_KEY", "session")]

    time.sleep(SESSION_TIMEOUT * 2)  # longer than the timeout: the server's heartbeats keep it
    assert personal(hub, "alice")["OPENAI_API_KEY"]["lifetime"] == "session"
    db_bytes = b"".join(p.read_bytes() for p in hub.data_dir.rglob("*") if p.is_file())
    assert canary.encode() not in db_bytes

    hub.stop_server("alice")
    assert wait_until(lambda: "OPENAI_API_KEY" not in personal(hub, "alice")), personal(hub, "alice")
    events = service(hub, "alice", "GET", "api/audit?limit=50").json()["events"]
    assert any(e["action"] == "delete" and "server stopped" in (e["detail"] or "") for e in events), [
        (e["action"], e["detail"]) for e in events]


def test_a_session_key_whose_server_never_beats_ends_after_the_session_timeout(hub):
    resp = service(hub, "bob", "PUT", "api/credentials/BOB_SESSION", {"value": "bob-session-value-123456",
                                                                      "session": True})
    assert resp.status == 201, resp.text
    assert personal(hub, "bob")["BOB_SESSION"]["lifetime"] == "session"
    assert wait_until(lambda: "BOB_SESSION" not in personal(hub, "bob"), timeout=SESSION_TIMEOUT * 5)
    events = service(hub, "bob", "GET", "api/audit?limit=50").json()["events"]
    assert any(e["action"] == "delete" and "no heartbeat" in (e["detail"] or "") for e in events), events


def test_shared_keys_get_the_maximum_lifetime_and_cannot_outlive_it_or_be_session_only(hub):
    resp = service(hub, "carol", "PUT", "api/admin/shared/CLASS_KEY", {"value": "sk-proj-" + "C" * 40})
    assert resp.status == 201, resp.text
    expires = resp.json()["expires_at"]
    assert expires is not None
    from datetime import datetime

    days = (datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() - time.time()) / 86400
    assert 29.9 < days <= 30.0
    too_late = service(hub, "carol", "PUT", "api/admin/shared/CLASS_KEY",
                       {"value": "sk-proj-" + "D" * 40, "expires_in": "60d"})
    assert too_late.status == 422 and "at most 30 days" in too_late.json()["message"]
    session = service(hub, "carol", "PUT", "api/admin/shared/CLASS_KEY",
                      {"value": "sk-proj-" + "D" * 40, "session": True})
    assert session.status == 422 and "session-only" in session.json()["message"]
