"""A vault that cannot be opened (here a damaged, 0-byte file) never turns the extension off: the
REST API answers 503 with the reason, kernels still get no secret in their environment and stay
isolated, and the server shuts down with its kernels on SIGTERM."""

from __future__ import annotations

import os
import signal
import time

import pytest

from jupyter_keyvault.testing.hub import http
from jupyter_keyvault.testing.kernel_client import ServerKernel
from jupyter_keyvault.testing.live_server import JupyterServer

pytestmark = pytest.mark.e2e


async def test_given_a_damaged_vault_then_503_with_the_reason_protections_stay_and_sigterm_stops_everything():
    server = JupyterServer()
    vault = server.root / "data" / "keyvault" / "vault.db"
    vault.parent.mkdir(parents=True)
    vault.write_bytes(b"")
    server.start()
    try:
        listing = http("GET", server.url + "/keyvault/api/credentials", token=server.token)
        put = http("PUT", server.url + "/keyvault/api/credentials/OPENAI_API_KEY", token=server.token,
                   body={"value": "sk-proj-" + "x" * 40})
        status = http("GET", server.url + "/keyvault/api/status", token=server.token)
        kernel = await ServerKernel(server.url + "/", server.token, path="k.ipynb").start()
        probe = await kernel.execute(
            "import os\nprint('MASTER' in ''.join(os.environ))\n"
            f"try:\n    open({str(vault)!r}, 'rb').read(); print('READ')\nexcept OSError as e:\n    print('REFUSED')\n")
        kernel_pid = int((await kernel.execute("import os; print(os.getpid())")).stdout.strip())
        server.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        server.proc.wait(30)
        stopped_in = time.monotonic() - started
    finally:
        server.stop()
    assert listing.status == 503 and put.status == 503
    assert "vault.db" in listing.json()["message"] and "not available" in listing.json()["message"]
    assert not vault.read_bytes()  # refused, never replaced by a new empty vault
    assert status.status == 200 and any("not available" in w for w in status.json()["warnings"])
    assert probe.stdout.split() == ["False", "REFUSED"], probe.text  # no master key in env; isolated
    assert stopped_in < 30
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # the kernel is shut down with the server
            os.kill(kernel_pid, 0)
            time.sleep(0.1)
