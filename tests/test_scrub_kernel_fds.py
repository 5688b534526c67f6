"""Kernel output below Python's sys.stdout: a subprocess's echo, os.write to fds 1 and 2 and
sys.__stderr__ go to the server's own stdout/stderr (on JupyterHub: the spawner's logs). They pass
the server's scrubber first. A value the server does not store is the control: it does arrive."""

from __future__ import annotations

import secrets

import pytest

from jupyter_keyvault.testing.hub import http
from jupyter_keyvault.testing.kernel_client import ServerKernel
from jupyter_keyvault.testing.live_server import JupyterServer

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("isolation", ["on", "off"])
async def test_given_a_kernel_writing_stored_values_below_sys_stdout_then_the_server_log_never_holds_them(isolation):
    opaque, shaped, unknown = secrets.token_hex(20), "sk-proj-FDCANARY" + secrets.token_hex(20), secrets.token_hex(20)
    server = JupyterServer(f"--KeyVault.isolate_kernels={isolation}").start()
    try:
        for name, value, kind in (("DB_TOKEN", opaque, "custom"), ("OPENAI_API_KEY", shaped, "api_key")):
            resp = http("PUT", server.url + f"/keyvault/api/credentials/{name}", token=server.token,
                        body={"value": value, "type": kind})
            assert resp.status == 201, resp.text
        kernel = await ServerKernel(server.url + "/", server.token, path="fds.ipynb").start()
        try:
            code = (
                "import os, subprocess, sys\n"
                f"values = [{opaque!r}, {shaped!r}, {unknown!r}]\n"
                "for v in values:\n"
                "    subprocess.run(['echo', 'ECHO ' + v])\n"
                "    os.write(1, ('FD1 ' + v + '\\n').encode())\n"
                "    os.write(2, ('FD2 ' + v[:20]).encode()); os.write(2, (v[20:] + '\\n').encode())\n"
                "    print('DUNDER', v, file=sys.__stderr__, flush=True)\n"
            )
            result = await kernel.execute(code, timeout=120)
            assert result.error is None, result.text
        finally:
            await kernel.stop()
    finally:
        server.stop()
    log = server.log_path.read_text("utf-8", "replace")
    # Control: each channel reaches the server's output. The kernel's stdout and stderr are two pipes
    # pumped apart into one log file, so a line of one may land inside a line of the other (seen:
    # "FD2 <half>FD1 <value>\n<other half>"): each channel's start and the unknown value's halves are
    # looked for, not whole lines.
    for channel in ("ECHO", "FD1", "FD2", "DUNDER"):
        assert f"{channel} {unknown[:20]}" in log, channel
    assert log.count(unknown[20:]) >= 4
    for value in (opaque, shaped):
        assert value not in log and value[20:] not in log
    assert log.count("[REDACTED") >= 8


async def test_given_a_restarted_kernel_then_its_output_is_still_pumped_and_scrubbed():
    """Every launch gets its own pipes and pump: after a restart a kernel writing more than a pipe
    holds (64 KiB) does not block, and stored values are still redacted."""
    opaque = secrets.token_hex(20)
    server = JupyterServer().start()
    try:
        http("PUT", server.url + "/keyvault/api/credentials/DB_TOKEN", token=server.token,
             body={"value": opaque, "type": "custom"})
        kernel = await ServerKernel(server.url + "/", server.token, path="restart.ipynb").start()
        try:
            await kernel.restart()
            result = await kernel.execute(f"import os\nfor _ in range(3000): os.write(1, b'x' * 100 + b'\\n')\n"
                                          f"os.write(2, b'AFTER {opaque}\\n')\nprint('DONE')", timeout=60)
            assert "DONE" in result.stdout, result.text
        finally:
            await kernel.stop()
    finally:
        server.stop()
    log = server.log_path.read_text("utf-8", "replace")
    assert "AFTER [REDACTED" in log and opaque not in log
