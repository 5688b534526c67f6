"""Credential lifetimes through a real `jupyter server` subprocess: a session-only canary is used
through the proxy, never reaches any file (vault, WAL, backup, export, logs) and is gone after a
restart; delete_on_exit deletes after a clean stop and, after a SIGKILL, at the next start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jupyter_keyvault.store import SQLiteBackend
from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT, FakeUpstream
from jupyter_keyvault.testing.live_server import JupyterServer


def call(server: JupyterServer, method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else dict(server.headers)
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode("latin-1")}


def names(server: JupyterServer) -> dict[str, dict]:
    status, body = call(server, "GET", "/keyvault/api/credentials")
    assert status == 200, body
    return {item["name"]: item for item in body["credentials"]}


def chat(server: JupyterServer, token: str) -> tuple[int, dict]:
    return call(server, "POST", "/keyvault/proxy/openai/v1/chat/completions",
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, token=token)


def every_file_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def cli(server: JupyterServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**server.env, "KEYVAULT_BACKUP_PASSPHRASE": "a long backup passphrase"}
    return subprocess.run([sys.executable, "-m", "jupyter_keyvault.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def upstream(canary):
    fake = FakeUpstream(valid_keys=(canary,)).start()
    yield fake
    fake.stop()


@pytest.fixture
def servers():
    started: list[JupyterServer] = []

    def make(**config) -> JupyterServer:
        server = JupyterServer("--debug", config={"KeyVault": config})
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_given_a_session_only_canary_when_used_through_the_proxy_then_no_file_holds_it_and_a_restart_forgets_it(
        servers, upstream, canary):
    server = servers(provider_base_urls={"openai": upstream.openai_base_url}).start()
    assert call(server, "PUT", "/keyvault/api/credentials/KEPT_KEY", {"value": "kept-" + "k" * 30})[0] == 201
    status, created = call(server, "PUT", "/keyvault/api/credentials/OPENAI_API_KEY",
                           {"value": canary, "session": True})
    assert status == 201 and created["lifetime"] == "session"
    assert names(server)["OPENAI_API_KEY"]["lifetime"] == "session"
    assert names(server)["KEPT_KEY"]["lifetime"] == "stored"
    status, token = call(server, "POST", "/keyvault/api/tokens",
                         {"name": "script", "credentials": ["OPENAI_API_KEY"], "expires_in_days": 1})
    assert status == 201

    status, reply = chat(server, token["token"])
    assert status == 200 and reply["choices"][0]["message"]["content"] == REPLY_TEXT
    assert upstream.received_keys() == [canary]  # the session value is the one injected

    # Exports and backups a user can make while the server runs: neither holds it.
    exported = cli(server, "export", str(server.root / "export.kvb"))
    assert exported.returncode == 0, exported.stderr
    listed = cli(server, "list", "--json")
    assert listed.returncode == 0 and "OPENAI_API_KEY" not in listed.stdout  # another process: not its session
    files = every_file_under(server.root)
    assert any(p.name == "vault.db" for p in files) and any(p.name == "server.log" for p in files)
    assert any(p.name.endswith("-wal") for p in files)  # the WAL was searched too
    assert [str(p) for p, data in files.items() if canary.encode() in data] == []

    server.stop()
    server.start()
    assert "OPENAI_API_KEY" not in names(server) and "KEPT_KEY" in names(server)
    status, body = chat(server, token["token"])
    assert status in (401, 404), body
    assert upstream.received_keys() == [canary]  # nothing more reached the upstream
    files = every_file_under(server.root)
    assert [str(p) for p, data in files.items() if canary.encode() in data] == []


def stored_names(server: JupyterServer) -> set[str]:
    """The credentials the vault file holds, read by another process (no master key needed for names)."""
    backend = SQLiteBackend(server.vault_path)
    try:
        return {rec.name for rec in backend.iter_all_credentials() if rec.type != "vault_token"}
    finally:
        backend.close()


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_given_delete_on_exit_when_the_server_stops_cleanly_then_the_named_keys_are_deleted(servers):
    server = servers(delete_on_exit=["TEMP_KEY"]).start()
    for name in ("TEMP_KEY", "KEEP_KEY"):
        assert call(server, "PUT", f"/keyvault/api/credentials/{name}", {"value": "v-" + name * 3})[0] == 201
    status, body = call(server, "GET", "/keyvault/api/status")
    assert body["lifetimes"]["delete_on_exit"] == ["TEMP_KEY"]

    server.proc.terminate()  # SIGTERM: jupyter_server's clean shutdown
    assert server.proc.wait(30) is not None
    assert stored_names(server) == {"KEEP_KEY"}
    server.start()
    assert set(names(server)) == {"KEEP_KEY"}
    status, audit = call(server, "GET", "/keyvault/api/audit?limit=50")
    assert any(e["action"] == "delete" and e["target"] == "TEMP_KEY" and "server stopped" in e["actor"]
               for e in audit["events"])


def test_given_delete_on_exit_all_when_the_server_is_killed_then_the_next_start_deletes_them(servers):
    server = servers(delete_on_exit="all").start()
    for name in ("TEMP_KEY", "OTHER_KEY"):
        assert call(server, "PUT", f"/keyvault/api/credentials/{name}", {"value": "v-" + name * 3})[0] == 201

    server.proc.kill()  # SIGKILL: no clean-up ran
    server.proc.wait(30)
    assert stored_names(server) == {"TEMP_KEY", "OTHER_KEY"}
    assert (server.vault_path.parent / "delete-on-exit.lock").exists()

    server.start()
    assert wait_for(lambda: names(server) == {}), names(server)
    assert stored_names(server) == set()
    status, audit = call(server, "GET", "/keyvault/api/audit?limit=50")
    assert {e["target"] for e in audit["events"] if e["action"] == "delete"
            and "unclean stop" in e["actor"]} == {"TEMP_KEY", "OTHER_KEY"}
    # The next clean stop finds a marker it owns: it deletes what was stored since, and removes the marker.
    assert call(server, "PUT", "/keyvault/api/credentials/LATER_KEY", {"value": "later-value-xyz"})[0] == 201
    server.proc.terminate()
    server.proc.wait(30)
    assert stored_names(server) == set() and not (server.vault_path.parent / "delete-on-exit.lock").exists()
    assert os.path.exists(server.vault_path)
