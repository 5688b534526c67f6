"""The red team's routes to a stored key, run as notebook code in a real kernel of a real
`jupyter server` on the default set-up (key-file master key next to the vault).

Each route is tried with `c.KeyVault.isolate_kernels = "off"`, where it must succeed (so the
test can see a leak, and the README's threat-model table says it is possible), and with "on",
where it must be refused with the canary nowhere in the kernel's output. In the same isolated
kernel, the proxy (chat and streaming) still works.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys

import pytest

from jupyter_keyvault.isolation import abi_version
from jupyter_keyvault.testing.fake_upstream import FakeUpstream
from jupyter_keyvault.testing.hub import http
from jupyter_keyvault.testing.kernel_client import ServerKernel
from jupyter_keyvault.testing.live_server import JupyterServer

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not sys.platform.startswith("linux") or abi_version() < 1,
                                 reason="kernel isolation needs Linux with Landlock")]

CANARY = "sk-proj-ISOLATIONCANARY" + secrets.token_hex(20)
# Attacks print a digest of what they got (the output scrubber would redact the value itself, and
# an attacker would simply encode it); the digest proves the kernel held the value.
PROOF = hashlib.sha256(CANARY.encode()).hexdigest()


@pytest.fixture(scope="module")
def upstream():
    server = FakeUpstream(valid_keys=(CANARY,)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["off", "on"])
def server(request, upstream):
    # The default set-up: no master key in the environment, so the vault makes a key file beside itself.
    srv = JupyterServer(f"--KeyVault.isolate_kernels={request.param}", env={"KEYVAULT_MASTER_KEY": ""},
                        config={"KeyVault": {"provider_base_urls": {"openai": upstream.openai_base_url}}}).start()
    srv.mode = request.param
    resp = http("PUT", srv.url + "/keyvault/api/credentials/OPENAI_API_KEY", token=srv.token,
                body={"value": CANARY, "provider": "openai"})
    assert resp.status == 201, resp.text
    yield srv
    srv.stop()


async def run(server, code: str, path: str = "attack.ipynb") -> str:
    """`code` in a fresh kernel of `server` (a notebook session at `path`); its whole output."""
    kernel = await ServerKernel(server.url + "/", server.token, path=path).start()
    try:
        return (await kernel.execute(code, timeout=120)).text
    finally:
        await kernel.stop()


def leaked(server, text: str) -> bool:
    """On 'off' the attack must have worked; on 'on' it must not, and the canary is nowhere."""
    got = "LEAK:" + PROOF in text
    if server.mode == "on":
        assert CANARY not in text, text[-2000:]
    return got


async def test_route_key_file_and_vault_read_side_by_side(server):
    vault_dir = server.root / "data" / "keyvault"
    code = f"""
import getpass, hashlib
from jupyter_keyvault.store import SQLiteBackend, Vault
for name in ("master.key", "vault.db"):
    try:
        print("READ", name, len(open({str(vault_dir)!r} + "/" + name, "rb").read()))
    except OSError as exc:
        print("REFUSED", name, type(exc).__name__)
try:
    v = Vault(SQLiteBackend({str(vault_dir / 'vault.db')!r}), key_file={str(vault_dir / 'master.key')!r},
              env={{}}, use_keyring=False)
    print("LEAK:" + hashlib.sha256(v.get_value(getpass.getuser(), "OPENAI_API_KEY").encode()).hexdigest())
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
"""
    text = await run(server, code)
    assert leaked(server, text) == (server.mode == "off"), text[-2000:]
    if server.mode == "on":
        assert "REFUSED master.key PermissionError" in text and "REFUSED vault.db PermissionError" in text, text


async def test_route_server_memory_scan(server):
    code = f"""
import hashlib, os, re
pid, needle, found = os.getppid(), {CANARY.encode()!r}, False
try:
    with open(f"/proc/{{pid}}/maps") as maps, open(f"/proc/{{pid}}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (r...)", line)
            if not m or m.group(3)[0] != "r":
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if end - start > 1 << 28:
                continue
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    found = True
                    break
            except (OSError, ValueError, OverflowError):
                continue
    print("LEAK:" + hashlib.sha256(needle).hexdigest() if found else "NOT FOUND")
except OSError as exc:
    print("REFUSED", type(exc).__name__, exc)
"""
    text = await run(server, code)
    assert leaked(server, text) == (server.mode == "off"), text[-2000:]


async def test_route_runtime_dir_server_token_and_rest_api(server):
    runtime = server.root / "runtime"
    code = f"""
import glob, json, urllib.request
try:
    info = json.load(open(sorted(glob.glob({str(runtime)!r} + "/jpserver-*.json"))[0]))
    req = urllib.request.Request(info["url"].rstrip("/") + "/keyvault/api/credentials/OPENAI_API_KEY",
                                 data=json.dumps({{"metadata": {{"notebooks": ["*"]}}}}).encode(), method="PATCH",
                                 headers={{"Authorization": "token " + info["token"],
                                          "Content-Type": "application/json"}})
    print("TOKEN WORKS", urllib.request.urlopen(req).status)
except (OSError, IndexError) as exc:
    print("REFUSED", type(exc).__name__, exc)
"""
    text = await run(server, code)
    assert ("TOKEN WORKS 200" in text) == (server.mode == "off"), text[-2000:]
    if server.mode == "on":
        assert "REFUSED" in text and server.token not in text


async def test_route_another_kernels_connection_file_signs_as_that_kernel(server):
    other = await ServerKernel(server.url + "/", server.token, path="other.ipynb").start()
    try:
        runtime = server.root / "runtime"
        code = f"""
import glob, json, secrets, time, urllib.request
from jupyter_keyvault.kernel_auth import make_credential
try:
    path = glob.glob({str(runtime)!r} + "/kernel-{other.kernel_id}*.json")[0]
    key = json.load(open(path))["key"].encode()
    cred = make_credential({other.kernel_id!r}, key, int(time.time()), secrets.token_hex(8))
    req = urllib.request.Request({server.url!r} + "/keyvault/kernel/status", headers={{"Authorization": "Bearer " + cred}})
    print("SIGNED AS", json.load(urllib.request.urlopen(req))["kernel_id"])
except (OSError, IndexError) as exc:
    print("REFUSED", type(exc).__name__, exc)
"""
        text = await run(server, code)
        assert (f"SIGNED AS {other.kernel_id}" in text) == (server.mode == "off"), text[-2000:]
    finally:
        await other.stop()


async def test_route_config_rewrite_for_the_next_start(server):
    target = server.root / "config" / "jupyter_server_config.py"
    code = f"""
try:
    with open({str(target)!r}, "a") as f:
        f.write("c.KeyVault.allow_direct_access = True  # planted\\n")
    print("PLANTED")
except OSError as exc:
    print("REFUSED", type(exc).__name__, exc)
"""
    text = await run(server, code)
    planted = target.exists() and "planted" in target.read_text()
    assert planted == ("PLANTED" in text) == (server.mode == "off"), text[-2000:]


async def test_route_direct_mode_reveal(server):
    text = await run(server, 'import hashlib, keyvault\ntry:\n'
                             '    value = keyvault.get("OPENAI_API_KEY").reveal().encode()\n'
                             '    print("LEAK:" + hashlib.sha256(value).hexdigest())\n'
                             'except keyvault.KeyVaultError as exc:\n    print("REFUSED", exc)\n')
    assert leaked(server, text) == (server.mode == "off"), text[-2000:]
    if server.mode == "on":
        assert "direct access is disabled" in text


async def test_given_an_isolated_kernel_then_the_proxy_chat_and_stream_still_work(server):
    code = """
import keyvault
client = keyvault.openai()
reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
print("CHAT", bool(reply.choices[0].message.content))
chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
print("STREAM", len(chunks) > 1)
"""
    text = await run(server, code)
    assert "CHAT True" in text and "STREAM True" in text, text[-2000:]
    assert CANARY not in text


def test_given_each_mode_then_status_reports_whether_kernels_are_isolated(server):
    status = http("GET", server.url + "/keyvault/api/status", token=server.token).json()
    assert status["isolation"]["mode"] == server.mode
    assert status["isolation"]["enforced"] is (server.mode == "on")
    assert status["allow_direct_access"] is (server.mode == "off")
    assert CANARY not in json.dumps(status)


@pytest.mark.parametrize("isolate_terminals", [False, True])
async def test_given_isolate_terminals_then_a_terminal_cannot_read_the_key_file_and_otherwise_can(
        upstream, isolate_terminals):
    """A terminal is the user's own shell (it can, by default); isolate_terminals confines it like a kernel."""
    from jupyter_keyvault.testing.terminal_client import run_in_terminal

    srv = JupyterServer(f"--KeyVault.isolate_terminals={isolate_terminals}", env={"KEYVAULT_MASTER_KEY": ""}).start()
    try:
        resp = http("PUT", srv.url + "/keyvault/api/credentials/OPENAI_API_KEY", token=srv.token,
                    body={"value": CANARY, "provider": "openai"})
        assert resp.status == 201, resp.text
        key_file = srv.root / "data" / "keyvault" / "master.key"
        out = await run_in_terminal(srv.url + "/", srv.token,
                                    f"wc -c < {key_file} && echo READ-''OK || echo READ-''REFUSED; echo shell-''ok")
    finally:
        srv.stop()
    assert "shell-ok" in out  # the terminal itself works either way
    assert ("READ-REFUSED" in out) is isolate_terminals and ("READ-OK" in out) is not isolate_terminals, out


def test_given_isolation_on_without_landlock_when_a_kernel_is_started_then_one_clear_refusal():
    srv = JupyterServer("--KeyVault.isolate_kernels=on", env={"KEYVAULT_TEST_FORCE_NO_LANDLOCK": "1"}).start()
    try:
        kernels = http("POST", srv.url + "/api/kernels", token=srv.token, body={"name": "python3"})
        # jupyter_server's sessions API wraps every start failure in a 500; the message is ours.
        session = http("POST", srv.url + "/api/sessions", token=srv.token,
                       body={"path": "a.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
        running = http("GET", srv.url + "/api/kernels", token=srv.token).json()
        status = http("GET", srv.url + "/keyvault/api/status", token=srv.token).json()
    finally:
        srv.stop()
    assert kernels.status == 503
    message = "no kernel started: 'on' but Landlock is unavailable"
    assert message in kernels.json()["message"] and message in session.json()["message"]
    assert running == []  # nothing started
    assert status["isolation"]["mode"] == "on" and status["isolation"]["enforced"] is False


def test_given_a_kernelspec_isolation_cannot_wrap_when_started_then_the_error_names_it():
    srv = JupyterServer()
    spec = srv.root / "data" / "kernels" / "broken"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [], "display_name": "broken", "language": "python"}))
    srv.start()
    try:
        resp = http("POST", srv.url + "/api/kernels", token=srv.token, body={"name": "broken"})
        running = http("GET", srv.url + "/api/kernels", token=srv.token).json()
    finally:
        srv.stop()
    assert resp.status == 400 and running == []
    assert "kernelspec 'broken' has an empty argv" in resp.json()["message"]


async def test_given_isolation_on_then_notebooks_save_and_pip_install_work_the_documented_way(upstream, tmp_path):
    """In the set-up where every attack above is refused: the server opens, edits and saves a notebook
    in the root dir while an isolated kernel runs, the kernel reads files of a project folder, and
    `%pip install` works from the kernel."""
    from jupyter_keyvault.testing.wheels import tiny_wheel

    server = JupyterServer("--KeyVault.isolate_kernels=on", env={"KEYVAULT_MASTER_KEY": ""}).start()
    (server.root / "home" / "project").mkdir()  # a project folder, as users keep one
    marker = secrets.token_hex(6)
    name = f"kvtiny{marker}"
    wheel = tiny_wheel(tmp_path, name, marker)
    kernel = await ServerKernel(server.url + "/", server.token, path="work.ipynb").start()
    try:
        out = (await kernel.execute(f"%pip install --no-index --no-deps -q {wheel}\nimport {name}\n"
                                    f"print('IMPORTED', {name}.MARKER)", timeout=180)).text
        nb = {"type": "notebook", "content": {"cells": [{"cell_type": "markdown", "metadata": {}, "source": marker}],
                                              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
        saved = http("PUT", server.url + "/api/contents/work.ipynb", token=server.token, body=nb)
        nb["content"]["cells"][0]["source"] = marker + " edited"
        edited = http("PUT", server.url + "/api/contents/work.ipynb", token=server.token, body=nb)
        opened = http("GET", server.url + "/api/contents/work.ipynb", token=server.token)
        http("PUT", server.url + "/api/contents/project/data.ipynb", token=server.token, body=nb)
        read_back = (await kernel.execute(
            "import json; print(json.load(open('project/data.ipynb'))['cells'][0]['source'])", timeout=60)).text
    finally:
        await kernel.stop()
        server.stop()
    assert f"IMPORTED {marker}" in out, out
    assert saved.status in (200, 201) and edited.status == 200
    assert opened.json()["content"]["cells"][0]["source"] == marker + " edited"
    assert f"{marker} edited" in read_back


async def test_given_isolation_on_when_one_credential_allows_direct_mode_then_only_that_one_is_revealed(upstream):
    """Direct mode is off by default under isolation; an admin re-enables it for one credential
    (metadata allow_direct, through REST, which isolated kernels cannot reach)."""
    other = "sk-proj-OTHERCANARY" + secrets.token_hex(20)
    srv = JupyterServer("--KeyVault.isolate_kernels=on").start()
    try:
        for name, value in (("OPENAI_API_KEY", CANARY), ("OTHER_KEY", other)):
            http("PUT", srv.url + f"/keyvault/api/credentials/{name}", token=srv.token,
                 body={"value": value, "provider": "openai"})
        patched = http("PATCH", srv.url + "/keyvault/api/credentials/OPENAI_API_KEY", token=srv.token,
                       body={"metadata": {"allow_direct": True}})
        assert patched.status == 200, patched.text
        text = await run(srv, "import hashlib, keyvault\nfor n in ('OPENAI_API_KEY', 'OTHER_KEY'):\n"
                              "    try:\n"
                              "        print(n, 'LEAK:' + hashlib.sha256(keyvault.get(n).reveal().encode()).hexdigest())\n"
                              "    except keyvault.KeyVaultError as exc:\n        print(n, 'REFUSED', exc)\n")
    finally:
        srv.stop()
    assert f"OPENAI_API_KEY LEAK:{PROOF}" in text, text
    assert "OTHER_KEY REFUSED direct access is disabled" in text and other not in text
