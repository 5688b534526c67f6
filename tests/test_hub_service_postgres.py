"""The hub service on a real PostgreSQL (db_url from the environment), under a real JupyterHub:
personal and shared keys, grants, quotas, and no value in clear anywhere in the database."""

from __future__ import annotations

import base64
import os
import secrets
import time

import pytest

from jupyter_keyvault.testing.hub import JupyterHubHarness, http, missing_requirements
from jupyter_keyvault.testing.live_server import free_port

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or "")

SERVICE = "keyvault"
PERSONAL = "sk-proj-PGPERSONAL" + secrets.token_hex(20)
SHARED = "sk-proj-PGSHARED" + secrets.token_hex(20)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def pg_hub(postgres_cluster, tmp_path_factory):
    from jupyter_keyvault.hub.config import keyvault_service_config
    from jupyter_keyvault.testing.fake_upstream import FakeUpstream

    db_url = postgres_cluster.create_database()
    upstream = FakeUpstream(valid_keys=(PERSONAL, SHARED)).start()
    service, roles, user_env = keyvault_service_config(
        port=free_port(), master_key=base64.urlsafe_b64encode(os.urandom(32)).decode(), name=SERVICE,
        data_dir=str(tmp_path_factory.mktemp("kv-pg-service")), db_url=db_url,
        extra_args=[f"--KeyVaultHubService.provider_base_urls=openai={upstream.openai_base_url}"])
    hub = JupyterHubHarness(services=[service], load_roles=roles, user_env=user_env, admin_users=["carol"])
    hub.start()
    try:
        for user in ("alice", "dave", "erin", "carol"):
            hub.create_user(user)
        hub.create_group("class-a", ["dave"])
        deadline = time.monotonic() + 60
        while http("GET", hub.service_url(SERVICE) + "api/status", token=hub.user_token("carol")).status != 200:
            assert time.monotonic() < deadline, hub.log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield hub, upstream, db_url
    finally:
        hub.stop()
        upstream.stop()
        postgres_cluster.drop_database(db_url)


def call(hub, user, method, path, body=None, headers=None):
    return http(method, hub.service_url(SERVICE) + path, token=hub.user_token(user), body=body, headers=headers)


def test_the_service_keeps_personal_and_shared_keys_in_postgresql_and_enforces_grants_and_quotas(pg_hub):
    hub, upstream, db_url = pg_hub
    assert call(hub, "carol", "GET", "api/status").json()["backend"] == "sql-postgresql"
    assert call(hub, "alice", "PUT", "api/credentials/OPENAI_API_KEY", {"value": PERSONAL}).status == 201
    assert call(hub, "alice", "POST", "proxy/openai/v1/chat/completions", CHAT).status == 200
    assert upstream.received_keys()[-1] == PERSONAL

    assert call(hub, "carol", "PUT", "api/admin/shared/COURSE", {"value": SHARED, "provider": "openai"}).status == 201
    assert call(hub, "carol", "PUT", "api/admin/shared/COURSE/grants/group/class-a").status == 201
    assert call(hub, "dave", "POST", "proxy/openai/v1/chat/completions", CHAT).status == 200
    assert upstream.received_keys()[-1] == SHARED
    refused = call(hub, "erin", "POST", "proxy/openai/v1/chat/completions", CHAT)
    assert refused.status == 401

    assert call(hub, "carol", "PUT", "api/admin/limits/shared/COURSE", {"requests_per_day": 2}).status == 200
    assert call(hub, "dave", "POST", "proxy/openai/v1/chat/completions", CHAT).status == 200
    over = call(hub, "dave", "POST", "proxy/openai/v1/chat/completions", CHAT)
    assert over.status == 429 and "daily request quota reached for shared key COURSE" in over.text
    usage = call(hub, "carol", "GET", "api/admin/usage").json()["usage"]
    assert {(r["user"], r["source"], r["credential"], r["requests"]) for r in usage} == {
        ("alice", "personal", "OPENAI_API_KEY", 1), ("dave", "shared", "COURSE", 2)}
    assert all(r["tokens"] > 0 for r in usage)


def test_no_value_is_stored_in_clear_in_any_postgresql_table(pg_hub):
    import psycopg

    hub, _, db_url = pg_hub
    call(hub, "alice", "PUT", "api/credentials/OPENAI_API_KEY", {"value": PERSONAL})
    dump = []
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        assert "keyvault_credentials" in tables and "keyvault_hub_usage" in tables
        for table in tables:
            for row in conn.execute(f'SELECT t::text FROM "{table}" t').fetchall():  # noqa: S608 - names from pg
                dump.append(row[0])
    text = "\n".join(dump)
    assert PERSONAL not in text and SHARED not in text
    assert PERSONAL.encode().hex() not in text and SHARED.encode().hex() not in text  # bytea is shown as hex


def test_the_database_password_never_reaches_the_hubs_log_or_a_command_line(pg_hub):
    from sqlalchemy.engine import make_url

    hub, _, db_url = pg_hub
    password = make_url(db_url).password
    assert password and password not in hub.log_path.read_text("utf-8", "replace")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    assert password.encode() not in fh.read()
            except OSError:
                continue  # the process ended meanwhile
