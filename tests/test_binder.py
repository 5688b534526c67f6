"""binder/: the scripts are valid executable bash, and binder/start really yields a working demo server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from jupyter_keyvault.testing.live_server import JupyterServer

BINDER = Path(__file__).resolve().parent.parent / "binder"
DEMO_KEY = "sk-demo-binder-not-a-real-key-000000000000"


@pytest.mark.parametrize("script", ["postBuild", "start"])
def test_given_a_binder_script_then_it_is_executable_bash_that_parses(script):
    path = BINDER / script
    assert os.access(path, os.X_OK), f"{script} must be executable (Binder runs it directly)"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_given_the_binder_environment_then_it_provides_node_python_and_widgets_and_postbuild_installs_this_repo():
    env = (BINDER / "environment.yml").read_text()
    for dependency in ("nodejs", "python=", "jupyterlab", "ipywidgets", "pip"):
        assert dependency in env
    post = (BINDER / "postBuild").read_text()
    assert 'pip install --no-cache-dir ".[openai,widgets]"' in post
    assert "KEYVAULT_MASTER_KEY" not in post  # the image is shared: no key is made at build time


def _request(server: JupyterServer, method: str, path: str, body: dict | None = None):
    req = urllib.request.Request(server.url + path, method=method, headers={**server.headers, "Content-Type": "application/json"},
                                 data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_given_binder_start_when_it_launches_a_jupyter_server_then_the_demo_key_can_be_stored_and_tested_against_the_fake_upstream(tmp_path):
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc to read the server's environment")
    server = JupyterServer()
    demo_dir = tmp_path / "demo"
    server.env.pop("KEYVAULT_MASTER_KEY")  # binder/start must make its own
    server.env["KEYVAULT_DEMO_DIR"] = str(demo_dir)
    server.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{server.env.get('PATH', '')}"
    server.args = ["bash", str(BINDER / "start"), *server.args]
    try:
        server.start()
        # binder/start exported a 32-byte key (44 urlsafe-base64 characters); the server then
        # overwrote it in its own environment block, so terminals cannot read it back.
        wiped = _environ_of(server.proc.pid)["KEYVAULT_MASTER_KEY"]
        assert wiped == "*" * 44, "the master key is still readable in /proc/<server>/environ"

        status, body = _request(server, "PUT", "/keyvault/api/credentials/OPENAI_API_KEY",
                                {"value": DEMO_KEY, "provider": "openai"})
        assert status in (200, 201, 204)
        status, result = _request(server, "POST", "/keyvault/api/credentials/OPENAI_API_KEY/test", {})
        assert result["ok"] is True, result
        status, st = _request(server, "GET", "/keyvault/api/status")
        # The vault is protected by the key binder/start put in the server's environment.
        assert st["protection"]["source"] == "env" and st["protection"]["strong"] is True, st

        assert (demo_dir / "vault.db").exists()
        written = [p for p in [*demo_dir.rglob("*"), *server.root.rglob("*")] if p.is_file()]
        for path in written:
            data = path.read_bytes()
            assert not path.name.endswith(".key"), f"a key file was written: {path}"
            assert DEMO_KEY.encode() not in data, f"the demo key is stored in clear in {path}"
    finally:
        server.stop()
        pid_file = demo_dir / "fake_upstream.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
