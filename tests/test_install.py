"""The installed package: the extension is enabled and valid, and starts with no auth warnings."""

import os
import subprocess
import sys

from jupyter_keyvault.testing.live_server import JupyterServer


def test_given_the_package_installed_when_extensions_are_listed_then_keyvault_is_enabled_and_ok():
    out = subprocess.run([sys.executable, "-m", "jupyter_server", "extension", "list"], capture_output=True,
                         text=True, timeout=120, env=os.environ)
    text = out.stdout + out.stderr
    lines = [line for line in text.splitlines() if "jupyter_keyvault" in line]
    assert any("enabled" in line for line in lines), text
    assert any("OK" in line for line in lines), text


def test_given_unauthenticated_access_disallowed_when_the_server_starts_then_keyvault_causes_no_auth_warning():
    server = JupyterServer()
    with server:
        pass
    log = server.log_path.read_text()
    assert "jupyter_keyvault | extension was successfully loaded" in log
    # Other extensions may warn (e.g. terminals' websocket); each warning lists the routes it means.
    warnings = [block for block in log.split("JupyterServerAuthWarning")[1:] if "/keyvault/" in block[:2000]]
    assert warnings == []


def test_given_a_plain_wheel_installed_into_a_fresh_venv_when_labextensions_are_listed_then_the_sidebar_is_enabled_and_ok(
        tmp_path):
    import glob
    import shutil
    from pathlib import Path

    import pytest

    if not shutil.which("npm"):
        pytest.skip("building the wheel needs npm (the wheel's users do not)")
    repo = Path(__file__).resolve().parent.parent
    lock = repo / "labextension" / "package-lock.json"
    lock_before = lock.read_bytes()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(repo)],
                   check=True, timeout=900)
    # The build installs with npm ci: it never rewrites the lock file of the source checkout.
    assert lock.read_bytes() == lock_before
    wheel = glob.glob(str(tmp_path / "dist" / "jupyter_keyvault-*.whl"))[0]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", wheel, "jupyterlab"], check=True,
                   timeout=900)
    # No npm or node on the PATH of the user: nothing is built at install or list time.
    env = {**os.environ, "PATH": str(venv / "bin")}
    out = subprocess.run([str(venv / "bin" / "jupyter"), "labextension", "list"], capture_output=True, text=True,
                         timeout=300, env=env)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "jupyter-keyvault" in line]
    assert any("enabled" in line and "OK" in line for line in lines), out.stdout + out.stderr


def test_given_a_started_server_when_it_settles_then_its_startup_heap_is_frozen_unless_configured_not_to():
    """Full collections of the startup heap stalled every proxied stream for 100-200 ms
    (benchmarks/bench_peers.py); frozen, they skip it. A setting turns it off."""
    import re
    import time

    for setting, expect_frozen in (("True", True), ("False", False)):
        server = JupyterServer(f"--KeyVault.freeze_startup_heap={setting}")
        with server:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "startup objects frozen" not in server.log_path.read_text():
                if not expect_frozen and "jupyter_keyvault | extension was successfully loaded" in \
                        server.log_path.read_text():
                    time.sleep(2)  # time enough for a freeze that should not happen
                    break
                time.sleep(0.2)
        frozen = re.search(r"jupyter-keyvault: (\d+) startup objects frozen", server.log_path.read_text())
        if expect_frozen:
            assert frozen and int(frozen.group(1)) > 50_000, server.log_path.read_text()[-2000:]
        else:
            assert frozen is None


def test_given_each_log_level_when_proxying_then_the_access_log_writes_what_that_level_shows(fake_upstream):
    """The proxy's access log records a request only at a level a handler writes: nothing for a
    success at the default level (jupyter_server made a debug record per request that nobody wrote),
    the success line with --debug, and refusals at every level."""
    import urllib.error
    import urllib.request

    from jupyter_keyvault.store import SQLiteBackend, Vault
    from jupyter_keyvault.store.tokens import TokenStore
    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    for level in ("INFO", "DEBUG"):
        server = JupyterServer(f"--ServerApp.log_level={level}", "--KeyVault.owner=logs",
                               f"--KeyVault.provider_base_urls=openai={fake_upstream.openai_base_url}")
        vault = Vault(SQLiteBackend(server.vault_path), env={"KEYVAULT_MASTER_KEY": server.master_key})
        vault.set("logs", "OPENAI_API_KEY", VALID_OPENAI_KEY, provider="openai")
        token, _ = TokenStore(vault).create("logs", "ci", ["OPENAI_API_KEY"], 3600)
        vault.close()
        with server:
            url = server.url + "/keyvault/proxy/openai/v1/models"
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})):
                pass
            try:
                urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer kvt1_nope"}))
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
        log = server.log_path.read_text()
        assert "401 GET /keyvault/proxy/openai/v1/models" in log
        assert ("200 GET /keyvault/proxy/openai/v1/models" in log) is (level == "DEBUG"), log[-3000:]
        assert token not in log
