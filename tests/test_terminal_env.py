"""The master key and secret env vars reach neither the kernels nor the terminals
(jupyter_server_terminals) of a real `jupyter server` with the extension -- not in their
environment, and not through /proc/<server pid>/environ, which the same user can read."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from jupyter_keyvault.testing.kernel_client import ServerKernel
from jupyter_keyvault.testing.live_server import JupyterServer
from jupyter_keyvault.testing.terminal_client import run_in_terminal

pytest.importorskip("jupyter_server_terminals", reason="jupyter_server_terminals is not installed")
pytest.importorskip("terminado", reason="terminado is not installed")

SECRET_NAMES = ("KEYVAULT_MASTER_KEY", "KEYVAULT_PASSPHRASE", "KEYVAULT_HUB_SECRET", "OPENAI_API_KEY")


@pytest.fixture(scope="module")
def server():
    canary = "sk-proj-TERMCANARY" + secrets.token_hex(16)
    srv = JupyterServer(env={
        "KEYVAULT_PASSPHRASE": canary + "-passphrase",
        "KEYVAULT_HUB_SECRET": canary + "-hub-secret",
        "OPENAI_API_KEY": canary + "-openai",
    })
    srv.canary = canary
    with srv:
        yield srv


def isolation_enforced(server) -> bool:
    import urllib.request

    req = urllib.request.Request(server.url + "/keyvault/api/status", headers=server.headers)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the test's own loopback server
        return json.load(resp)["isolation"]["enforced"]


def assert_no_secret(server, text: str, where: str) -> None:
    assert server.master_key not in text, f"master key in {where}"
    assert server.canary not in text, f"secret env value in {where}"


async def test_a_terminal_of_the_server_has_no_secret_in_its_env_nor_in_its_parents_proc_environ(server):
    dump = server.root / "home" / "terminal-env.txt"
    out = await run_in_terminal(
        server.url, server.token,
        f"env > {dump}; echo PROC >> {dump}; tr '\\0' '\\n' < /proc/$PPID/environ >> {dump}; echo ok-$((6*7))",
    )
    assert "ok-42" in out  # the command really ran in a shell
    text = dump.read_text()
    env_part, proc_part = text.split("\nPROC\n")
    assert "JUPYTER_SERVER_URL=" in env_part and "KEYVAULT_" not in env_part.replace("KEYVAULT_SERVER_URL", "")
    for name in SECRET_NAMES:
        assert f"\n{name}=" not in "\n" + env_part
    assert "JUPYTER_DATA_DIR=" in proc_part  # we did read the server's original environment block
    assert_no_secret(server, text, "the terminal")
    assert_no_secret(server, out, "the terminal output")


async def test_a_kernel_of_the_server_has_no_secret_in_its_env_nor_in_its_servers_proc_environ(server):
    # In a subfolder: isolated kernels cannot create entries directly in $HOME, which holds protected dirs.
    (server.root / "home" / "out").mkdir(exist_ok=True)
    dump = server.root / "home" / "out" / "kernel-env.json"
    kernel = await ServerKernel(server.url, server.token, path="env.ipynb").start()
    try:
        result = await kernel.execute(textwrap.dedent(f"""
            import json, os, pathlib
            server_pid = os.getppid()
            try:
                proc = pathlib.Path(f"/proc/{{server_pid}}/environ").read_bytes().decode("utf-8", "replace")
            except PermissionError:  # an isolated kernel may not read its server at all
                proc = "DENIED"
            pathlib.Path({str(dump)!r}).write_text(json.dumps({{"env": dict(os.environ), "proc": proc}}))
            print("written", len(proc) > 0)
        """))
        assert "written True" in result.stdout, result.error
    finally:
        await kernel.stop()
    data = json.loads(dump.read_text())
    for name in SECRET_NAMES:
        assert name not in data["env"]
    if isolation_enforced(server):
        assert data["proc"] == "DENIED"  # kernel isolation: the server's memory and environ are off limits
    else:
        assert "JUPYTER_DATA_DIR=" in data["proc"]  # we did read the server's environment block
    assert_no_secret(server, dump.read_text(), "the kernel")


def test_the_server_still_opened_its_vault_with_the_key_it_removed(server):
    import urllib.request

    req = urllib.request.Request(server.url + "/keyvault/api/status", headers=server.headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        status = json.loads(resp.read())
    assert status["protection"]["source"] == "env"


def test_wiping_a_variable_overwrites_it_in_the_proc_environ_block_and_leaves_others_intact():
    code = textwrap.dedent("""
        import os
        from jupyter_keyvault.envguard import wipe_process_env_value
        assert wipe_process_env_value("KV_WIPE_ME") is True
        assert wipe_process_env_value("KV_WIPE_ME") is False  # already wiped
        assert wipe_process_env_value("KV_NOT_SET") is False
        del os.environ["KV_WIPE_ME"]
        print(open("/proc/self/environ", "rb").read().decode())
    """)
    value = "wipe-canary-" + secrets.token_hex(8)
    env = {**os.environ, "KV_WIPE_ME": value, "KV_KEEP_ME": "kept-value",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert value not in out
    assert "KV_WIPE_ME=" + "*" * len(value) in out
    assert "KV_KEEP_ME=kept-value" in out
