"""Pieces of the hub service that need no hub: usage metering, the service's tables, limit parsing."""

from __future__ import annotations

import json
import os
import sys

import pytest
import sqlalchemy as sa

from jupyter_keyvault.hub.db import HubStore, Limits, SchemaTooNew, schema_version
from jupyter_keyvault.hub.usage import UsageMeter, realtime_tokens


def sse(*events) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_a_json_reply_is_counted_from_its_total_tokens():
    meter = UsageMeter("application/json")
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    for i in range(0, len(body), 5):
        meter.feed(body[i:i + 5].encode())
    assert meter.finish() == 7


def test_an_openai_stream_is_counted_from_the_usage_of_its_final_chunk_even_when_split_mid_line():
    data = sse({"choices": [{"delta": {"content": "hi"}}]}, {"choices": [], "usage": {"total_tokens": 42}})
    meter = UsageMeter("text/event-stream; charset=utf-8")
    for i in range(0, len(data), 3):
        meter.feed(data[i:i + 3])
    assert meter.finish() == 42


def test_an_anthropic_stream_adds_input_tokens_of_message_start_to_the_last_output_tokens():
    data = sse({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}},
               {"type": "message_delta", "usage": {"output_tokens": 25}})
    meter = UsageMeter("text/event-stream")
    meter.feed(data)
    assert meter.finish() == 35


def test_a_reply_without_usage_counts_zero_tokens_and_garbage_is_ignored():
    meter = UsageMeter("application/json")
    meter.feed(b"not json")
    assert meter.finish() == 0
    meter = UsageMeter("text/event-stream")
    meter.feed(b"data: {broken usage\n\n: comment\n\n")
    assert meter.finish() == 0


def test_a_realtime_response_done_counts_its_usage_and_every_other_event_counts_zero():
    done = {"type": "response.done", "response": {"id": "r", "usage": {"total_tokens": 42, "input_tokens": 30,
                                                                       "output_tokens": 12}}}
    assert realtime_tokens(json.dumps(done)) == 42
    done["response"]["usage"] = {"input_tokens": 30, "output_tokens": 12}
    assert realtime_tokens(json.dumps(done)) == 42
    for other in ({"type": "response.output_text.delta", "delta": "usage"}, {"type": "response.done", "response": {}},
                  {"type": "response.done", "response": {"usage": {"total_tokens": True}}},
                  {"type": "response.done", "response": {"usage": {"total_tokens": -5}}}, ["response.done", "usage"]):
        assert realtime_tokens(json.dumps(other)) == 0, other
    assert realtime_tokens('{"type": "response.done", "usage"') == 0


@pytest.fixture
def store(tmp_path):
    s = HubStore(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    yield s
    s.close()


def test_grants_to_a_group_reach_its_members_only(store):
    store.grant("COURSE", "group", "class-a", "carol")
    store.grant("SOLO", "user", "erin", "carol")
    assert store.granted_to("dave", ["class-a"]) == ["COURSE"]
    assert store.granted_to("erin", []) == ["SOLO"]
    assert store.granted_to("bob", ["class-b"]) == []
    assert store.grant("COURSE", "group", "class-a", "carol") is False  # idempotent
    assert store.revoke("COURSE", "group", "class-a") is True
    assert store.granted_to("dave", ["class-a"]) == []


def test_usage_is_counted_per_day_user_and_shared_key(store):
    store.count_request("dave", "shared", "COURSE", day="2026-01-01")
    store.count_tokens("dave", "shared", "COURSE", 30, day="2026-01-01")
    store.count_request("erin", "shared", "COURSE", day="2026-01-01")
    store.count_request("dave", "personal", "OPENAI_API_KEY", day="2026-01-01")
    assert store.user_totals("dave", day="2026-01-01") == (2, 30)
    assert store.shared_totals("COURSE", day="2026-01-01") == (2, 30)
    assert store.user_totals("dave", day="2026-01-02") == (0, 0)
    assert {r["user"] for r in store.usage_rows("erin")} == {"erin"}


def test_empty_limits_remove_the_override(store):
    store.set_limits("user", "dave", Limits(requests_per_day=5))
    assert store.get_limits("user", "dave") == Limits(None, 5, None)
    store.set_limits("user", "dave", Limits())
    assert store.get_limits("user", "dave") is None


def test_a_database_from_a_newer_version_is_refused_and_left_unchanged(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    HubStore(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(schema_version.update().values(version=99))
    with pytest.raises(SchemaTooNew, match="schema version 99, newer than .* refuses to start"):
        HubStore(url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(schema_version.c.version)).scalar() == 99
    engine.dispose()


def test_limits_from_the_admin_api_reject_negative_fractional_and_unknown_values():
    from tornado.web import HTTPError

    from jupyter_keyvault.hub.apihandlers.admin import parse_limits

    assert parse_limits({"requests_per_day": 3, "rate_per_minute": 1.5}) == Limits(1.5, 3, None)
    for bad in ({"requests_per_day": -1}, {"tokens_per_day": 1.5}, {"requests_per_day": True}, {"nope": 1},
                {"rate_per_minute": "10"}):
        with pytest.raises(HTTPError) as info:
            parse_limits(bad)
        assert info.value.status_code == 422


def test_a_hub_client_reports_an_unreachable_service_in_its_status_instead_of_failing():
    from jupyter_keyvault.testing.live_server import free_port
    from jupyter_keyvault.vaults.hub import HubServiceError, HubVaultClient

    client = HubVaultClient(f"http://127.0.0.1:{free_port()}/services/keyvault/", "token", "alice", timeout=2)
    status = client.status()
    assert status["backend"] == "hub" and "unreachable" in status["warnings"][0]
    with pytest.raises(HubServiceError):
        client.list("alice")


def test_a_hub_client_without_a_url_or_token_says_what_to_configure():
    from jupyter_keyvault.store import VaultError
    from jupyter_keyvault.vaults.hub import HubVaultClient

    with pytest.raises(VaultError, match="hub_url"):
        HubVaultClient("", "token", "alice")
    with pytest.raises(VaultError, match="JUPYTERHUB_API_TOKEN"):
        HubVaultClient("http://127.0.0.1:1/", "", "alice")


SERVICE_CONFIG_RUN = """
import json, os, sys
from jupyter_keyvault.hub.config import keyvault_service_config
key = os.environ.pop("KEYVAULT_MASTER_KEY")  # as docs/jupyterhub.md shows
service, roles, user_env = keyvault_service_config(port=10101, master_key=key, db_url=os.environ["KEYVAULT_HUB_DB_URL"])
print(json.dumps({"service_env": service["environment"], "db_in_os_environ": "KEYVAULT_HUB_DB_URL" in os.environ}))
sys.stdout.flush()
open(sys.argv[1], "wb").write(open("/proc/self/environ", "rb").read())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/<pid>/environ is Linux's")
def test_given_the_service_key_popped_from_the_hubs_environment_then_its_proc_environ_no_longer_holds_it(tmp_path):
    """os.environ.pop() leaves the bytes in the block /proc/<hub pid>/environ shows; the helper wipes them."""
    import subprocess

    key, db_url = "k" * 43 + "=", "postgresql+psycopg://kv:pa55word-canary@db/keyvault"
    dump = tmp_path / "environ.bin"
    proc = subprocess.run([sys.executable, "-c", SERVICE_CONFIG_RUN, str(dump)], capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")},
                               "KEYVAULT_MASTER_KEY": key, "KEYVAULT_HUB_DB_URL": db_url}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["service_env"]["KEYVAULT_MASTER_KEY"] == key  # the service still gets it, through the hub
    assert result["service_env"]["KEYVAULT_HUB_DB_URL"] == db_url and result["db_in_os_environ"] is False
    block = dump.read_bytes()
    assert key.encode() not in block and b"pa55word-canary" not in block


def test_given_a_key_file_when_configuring_the_service_then_only_its_path_is_passed():
    from jupyter_keyvault.hub.config import keyvault_service_config

    service, _, _ = keyvault_service_config(port=10101, master_key_file="/srv/keyvault/master.key")
    assert service["environment"] == {"KEYVAULT_MASTER_KEY_FILE": "/srv/keyvault/master.key"}
    with pytest.raises(ValueError, match="exactly one of master_key= or master_key_file="):
        keyvault_service_config(port=10101)
