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
