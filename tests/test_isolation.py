"""Kernel isolation (Landlock): real attacks from real ipykernels started by jupyter_client.

Every attack runs twice: with isolation off it must succeed (so the test can see a leak), with
isolation on it must fail, while ordinary work (files in the notebook root and /tmp, TCP to
127.0.0.1, `%pip install` of a local wheel) keeps working.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

import pytest

from jupyter_keyvault.isolation import landlock as ll
from jupyter_keyvault.isolation.landlock import FORCE_NO_LANDLOCK_ENV
from jupyter_keyvault.isolation.launch import REFUSAL_EXIT
from jupyter_keyvault.isolation.policy import (
    ANCESTOR,
    FULL,
    READ,
    IsolationPolicy,
    PolicyError,
    build_policy,
    default_policy,
    plan_rules,
    writes_freely,
)
from jupyter_keyvault.isolation.provisioner import (
    PROVISIONER_NAME,
    KernelSpecNotWrappable,
    KeyVaultIsolatedProvisioner,
    wrap_kernel_cmd,
)
from jupyter_keyvault.testing.wheels import tiny_wheel

needs_landlock = pytest.mark.skipif(ll.abi_version() < 1, reason=f"Landlock unavailable: {ll.availability().reason}")


# ---------------------------------------------------------------- policy (pure)


def _tree(root: Path) -> dict[str, Path]:
    paths = {
        "home": root / "home",
        "vault": root / "home/.local/share/jupyter/keyvault",
        "data": root / "home/.local/share/jupyter",
        "docs": root / "home/docs",
        "config": root / "home/.jupyter",
    }
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    (root / "home/notes.txt").write_text("x")
    (root / "home/link-to-vault").symlink_to(paths["vault"])
    return paths


def test_given_a_vault_under_home_when_planned_then_ancestors_only_list_and_siblings_get_everything(tmp_path):
    t = _tree(tmp_path)
    policy = IsolationPolicy(deny=[str(t["vault"])], read_only=[str(t["data"]), str(t["config"])],
                             writable=[str(t["home"])])
    rules = dict(plan_rules(policy))
    assert rules["/"] == ANCESTOR and rules[str(t["home"])] == ANCESTOR and rules[str(t["data"])] == ANCESTOR
    assert rules[str(t["docs"])] == FULL and rules[str(tmp_path / "home/notes.txt")] == FULL
    assert rules[str(t["config"])] == READ
    assert str(t["vault"]) not in rules  # denied: no rule at all
    assert str(tmp_path / "home/link-to-vault") not in rules  # symlinks never get a rule


def test_given_a_writable_path_inside_the_vault_when_classified_then_it_is_refused(tmp_path):
    t = _tree(tmp_path)
    with pytest.raises(PolicyError, match="inside the protected"):
        plan_rules(IsolationPolicy(deny=[str(t["vault"])], writable=[str(t["vault"] / "x")]))


def test_given_a_policy_when_it_round_trips_json_then_bad_fields_give_clear_errors():
    policy = IsolationPolicy(deny=["/a"], mode="auto")
    assert IsolationPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(PolicyError, match="unknown field"):
        IsolationPolicy.from_json(json.dumps({"version": 1, "dney": []}))
    with pytest.raises(PolicyError, match="absolute"):
        IsolationPolicy.from_json(json.dumps({"version": 1, "deny": ["relative"]}))
    with pytest.raises(PolicyError, match="mode"):
        IsolationPolicy.from_json(json.dumps({"version": 1, "mode": "maybe"}))
    with pytest.raises(PolicyError, match="isolate_kernels"):
        build_policy(mode="yes")


def test_given_a_notebook_root_that_holds_the_vault_when_built_then_the_limitation_is_stated(tmp_path):
    t = _tree(tmp_path)
    policy = build_policy(vault_dir=t["vault"], notebook_root=t["home"], kernel_state_dir=tmp_path / "state",
                          protect_interpreter=False)
    assert any(str(t["home"]) in note and "cannot create" in note for note in policy.notes)


def test_given_empty_or_odd_argv_when_wrapped_then_the_error_names_the_kernelspec():
    with pytest.raises(KernelSpecNotWrappable, match="'broken-spec' has an empty argv"):
        wrap_kernel_cmd([], "/p.json", kernel_name="broken-spec")
    with pytest.raises(KernelSpecNotWrappable, match="'odd'"):
        wrap_kernel_cmd([" ", "x"], "/p.json", kernel_name="odd")
    cmd = wrap_kernel_cmd(["python", "-m", "ipykernel_launcher", "-f", "/r/k.json"], "/p.json", read_files=["/r/k.json"])
    assert cmd[:5] == [sys.executable, "-m", "jupyter_keyvault.isolation.launch", "--policy", "/p.json"]
    assert cmd[cmd.index("--") + 1:] == ["python", "-m", "ipykernel_launcher", "-f", "/r/k.json"]
    assert wrap_kernel_cmd(cmd, "/p.json") == cmd  # a restart does not wrap twice


@needs_landlock
def test_given_this_machine_then_landlock_abi_is_detected_with_scoping_and_the_dumpable_flag_round_trips():
    assert ll.abi_version() >= 1
    assert ll.scopes(ll.abi_version()) == (ll.SCOPE_SIGNAL | ll.SCOPE_ABSTRACT_UNIX_SOCKET if ll.abi_version() >= 6 else 0)
    code = ("from jupyter_keyvault.isolation import landlock as ll; assert ll.is_dumpable(); ll.set_non_dumpable(); "
            "assert not ll.is_dumpable(); print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_given_mode_on_and_no_landlock_when_launched_then_it_refuses_with_one_clear_line(tmp_path):
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(IsolationPolicy(mode="on").to_json())
    marker = tmp_path / "kernel-ran"
    env = {**os.environ, FORCE_NO_LANDLOCK_ENV: "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_keyvault.isolation.launch", "--policy", str(policy_file), "--",
         sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == REFUSAL_EXIT
    assert "isolate_kernels is 'on' but Landlock is unavailable" in proc.stderr
    assert FORCE_NO_LANDLOCK_ENV in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    # under "auto" the variable is ignored: it must never be a way to start a kernel unconfined
    policy_file.write_text(IsolationPolicy(mode="auto").to_json())
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_keyvault.isolation.launch", "--policy", str(policy_file), "--",
         sys.executable, "-c", "print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 0 and "WITHOUT isolation" not in proc.stderr
    assert proc.stdout.strip() == ("1" if ll.abi_version() else "0")


def test_given_a_bad_policy_file_when_launched_then_it_refuses(tmp_path):
    bad = tmp_path / "policy.json"
    bad.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "jupyter_keyvault.isolation.launch", "--policy", str(bad), "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == REFUSAL_EXIT and "not valid JSON" in proc.stderr


# ---------------------------------------------------------------- real kernels


class World:
    """A user's Jupyter dirs outside /tmp (so /tmp keeps full rights), with canaries in every secret place."""

    def __init__(self, base: Path, notebook_root: Path):
        self.base = base
        self.canary = "sk-proj-ISOLATION" + secrets.token_hex(16)
        self.home = base / "home"
        self.data = base / "data"
        self.config = base / "config"
        self.runtime = base / "runtime"
        self.ipython = base / "ipython"
        self.root = notebook_root
        for d in (self.home, self.data, self.config, self.runtime, self.ipython / "profile_default/startup"):
            d.mkdir(parents=True, exist_ok=True)
        self.vault = self.data / "keyvault"
        self.vault.mkdir(mode=0o700, exist_ok=True)
        (self.vault / "master.key").write_text(self.canary + "\n")
        (self.vault / "vault.db").write_bytes(b"SQLite format 3\x00" + self.canary.encode())
        (self.runtime / "jpserver-4242.json").write_text(json.dumps({"token": self.canary}))
        (self.runtime / "kernel-other.json").write_text(json.dumps({"key": self.canary}))
        self.server_config = self.config / "jupyter_server_config.py"
        self.server_config.write_text("# user config\n")
        (self.home / ".bashrc").write_text("# user bashrc\n")
        self.startup = self.ipython / "profile_default/startup"
        self.site_packages = Path(sysconfig.get_path("purelib"))
        self.env = {"HOME": str(self.home), "JUPYTER_DATA_DIR": str(self.data),
                    "JUPYTER_CONFIG_DIR": str(self.config), "JUPYTER_RUNTIME_DIR": str(self.runtime),
                    "IPYTHONDIR": str(self.ipython)}
        spec_dir = self.data / "kernels"
        for name, metadata in (("plain", {}),
                               ("isolated", {"kernel_provisioner": {"provisioner_name": PROVISIONER_NAME}})):
            (spec_dir / name).mkdir(parents=True, exist_ok=True)
            (spec_dir / name / "kernel.json").write_text(json.dumps({
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": name, "language": "python", "metadata": metadata,
            }))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = Path(tempfile.mkdtemp(prefix="keyvault-isolation-", dir="/var/tmp"))
    w = World(base, tmp_path_factory.mktemp("notebooks"))
    saved = {k: os.environ.get(k) for k in w.env}
    os.environ.update(w.env)
    KeyVaultIsolatedProvisioner.policy_factory = lambda prov, kw: default_policy(notebook_root=w.root)
    yield w
    KeyVaultIsolatedProvisioner.policy_factory = None
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    subprocess.run(["rm", "-rf", str(base)], check=False)


class Kernel:
    def __init__(self, world: World, isolated: bool, extra_env: dict[str, str] | None = None):
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="isolated" if isolated else "plain")
        self.km.start_kernel(cwd=str(world.root), env={**os.environ, **(extra_env or {})})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=90)

    def run(self, code: str) -> str:
        out: list[str] = []

        def hook(msg):
            c = msg["content"]
            if msg["msg_type"] == "stream":
                out.append(c["text"])
            elif msg["msg_type"] == "error":
                out.append(f"ERROR {c['ename']}: {c['evalue']}")

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=120)
        assert reply["content"]["status"] in ("ok", "error")
        return "".join(out)

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def _attempt(what: str) -> str:
    """Kernel code: run `what`, print OK:<result> or DENIED:<exception class>."""
    return (f"try:\n    _r = {what}\n    print('OK:' + repr(_r))\n"
            f"except OSError as _e:\n    print('DENIED:' + type(_e).__name__)\n")


def _canary_attacks(w: World, own_connection_file: str) -> dict[str, str]:
    site_file = w.site_packages / f"keyvault-isolation-{w.canary[-8:]}.txt"
    return {
        "master_key": f"open({str(w.vault / 'master.key')!r}).read()",
        "vault_db": f"open({str(w.vault / 'vault.db')!r}, 'rb').read()",
        "server_token": f"open({str(w.runtime / 'jpserver-4242.json')!r}).read()",
        "other_kernel": f"open({str(w.runtime / 'kernel-other.json')!r}).read()",
        "own_connection_file": f"len(open({own_connection_file!r}).read())",
        "server_config": f"open({str(w.server_config)!r}, 'a').write('c.ServerApp.token = \"\"\\n')",
        "new_config": f"open({str(w.config / 'jupyter_notebook_config.py')!r}, 'w').write('x = 1')",
        "ipython_startup": f"open({str(w.startup / '00-evil.py')!r}, 'w').write('print(1)')",
        "site_packages": f"open({str(site_file)!r}, 'w').write('x')",
        "bashrc": f"open({str(w.home / '.bashrc')!r}, 'a').write('export PYTHONPATH=/tmp/evil\\n')",
        "new_zshrc": f"open({str(w.home / '.zshrc')!r}, 'w').write('export PYTHONPATH=/tmp/evil\\n')",
        "delete_vault": f"__import__('os').unlink({str(w.vault / 'vault.db')!r})",
        "plant_journal": f"open({str(w.vault / 'vault.db-journal')!r}, 'w').write('x')",
    }


def _run_attacks(kernel: Kernel, attacks: dict[str, str]) -> dict[str, str]:
    results = {}
    for name, expr in attacks.items():
        out = kernel.run(_attempt(expr)).strip()
        results[name] = out
    return results


def _cleanup_after_unconfined(w: World):
    for p in (w.site_packages.glob("keyvault-isolation-*.txt")):
        p.unlink()
    w.server_config.write_text("# user config\n")
    (w.home / ".bashrc").write_text("# user bashrc\n")
    for p in (w.home / ".zshrc", w.config / "jupyter_notebook_config.py", w.startup / "00-evil.py", w.vault / "vault.db-journal"):
        p.unlink(missing_ok=True)
    (w.vault / "vault.db").write_bytes(b"SQLite format 3\x00" + w.canary.encode())


@pytest.mark.e2e
@needs_landlock
def test_given_isolation_off_then_every_attack_succeeds_so_the_tests_can_see_a_leak(world):
    kernel = Kernel(world, isolated=False)
    try:
        results = _run_attacks(kernel, _canary_attacks(world, kernel.km.connection_file))
    finally:
        kernel.close()
        _cleanup_after_unconfined(world)
    for name in ("master_key", "vault_db", "server_token", "other_kernel"):
        assert results[name].startswith("OK:") and world.canary in results[name], (name, results[name])
    for name in ("server_config", "new_config", "ipython_startup", "site_packages", "delete_vault", "plant_journal",
                 "bashrc", "new_zshrc"):
        assert results[name].startswith("OK:"), (name, results[name])


@pytest.fixture(scope="module")
def isolated(world):
    kernel = Kernel(world, isolated=True)
    yield kernel
    kernel.close()


@pytest.mark.e2e
@needs_landlock
def test_given_isolation_on_then_vault_runtime_config_and_site_packages_are_out_of_reach(world, isolated):
    results = _run_attacks(isolated, _canary_attacks(world, isolated.km.connection_file))
    assert results.pop("own_connection_file").startswith("OK:")  # the one runtime file it needs
    for name, out in results.items():
        assert out == "DENIED:PermissionError", (name, out)
        assert world.canary not in out
    assert (world.vault / "vault.db").read_bytes().endswith(world.canary.encode())
    assert world.server_config.read_text() == "# user config\n"
    assert (world.home / ".bashrc").read_text() == "# user bashrc\n" and not (world.home / ".zshrc").exists()
    assert not list(world.site_packages.glob("keyvault-isolation-*.txt"))


@pytest.mark.e2e
@needs_landlock
def test_given_two_isolated_kernels_then_neither_reads_the_others_connection_file(world, isolated):
    other = Kernel(world, isolated=True)
    try:
        # a bare KernelManager would use a tempfile in /tmp; the provisioner moves it into the runtime dir
        assert Path(other.km.connection_file).parent == world.runtime
        key = json.loads(Path(other.km.connection_file).read_text())["key"]
        out = isolated.run(_attempt(f"open({other.km.connection_file!r}).read()")).strip()
        assert out == "DENIED:PermissionError" and key not in out
        out = other.run(_attempt(f"open({isolated.km.connection_file!r}).read()")).strip()
        assert out == "DENIED:PermissionError"
        other_pid = other.km.provisioner.pid
        for name in ("mem", "environ"):  # nor its memory, where the key also lives
            out = isolated.run(_attempt(f"open('/proc/{other_pid}/{name}', 'rb').read(64)")).strip()
            assert out == "DENIED:PermissionError", (name, out)
    finally:
        other.close()
    policy_file = Path(other.km.connection_file[: -len(".json")] + "-isolation.json")
    assert not policy_file.exists()  # removed with the kernel


def _memory_attack(address: int, length: int) -> str:
    return _attempt(f"(lambda f: (f.seek({address}), f.read({length}))[1])(open(f'/proc/{{__import__(\"os\").getppid()}}/mem', 'rb', buffering=0))")


def _environ_attack() -> str:
    return _attempt("open(f'/proc/{__import__(\"os\").getppid()}/environ', 'rb').read()")


@pytest.mark.e2e
@needs_landlock
@pytest.mark.parametrize("parent_dumpable", [True, False], ids=["dumpable-parent", "non-dumpable-parent"])
def test_given_isolation_on_then_the_parent_memory_and_environ_are_out_of_reach(world, parent_dumpable):
    canary = ("MEMCANARY" + secrets.token_hex(16)).encode()
    buffer = ctypes.create_string_buffer(canary)  # lives in this (the kernel's parent) process
    own_environ = Path("/proc/self/environ").read_bytes()

    plain = Kernel(world, isolated=False)  # control: the same attack, unconfined, against a dumpable parent
    try:
        assert canary.decode() in plain.run(_memory_attack(ctypes.addressof(buffer), len(canary)))
        out = plain.run(_environ_attack())
        assert out.startswith("OK:") and repr(own_environ[:40])[2:-1] in out
    finally:
        plain.close()

    kernel = Kernel(world, isolated=True)
    try:
        if not parent_dumpable:
            ll.set_non_dumpable()  # what the server does to itself
        mem = kernel.run(_memory_attack(ctypes.addressof(buffer), len(canary))).strip()
        env = kernel.run(_environ_attack()).strip()
        others = [kernel.run(_attempt(f"open(f'/proc/{{__import__(\"os\").getppid()}}/{name}', 'rb').read(64)")).strip()
                  for name in ("maps", "auxv")]
        others.append(kernel.run(_attempt("__import__('os').readlink(f'/proc/{__import__(\"os\").getppid()}/cwd')")).strip())
    finally:
        if not parent_dumpable:
            ctypes.CDLL(None).prctl(ll.PR_SET_DUMPABLE, 1, 0, 0, 0)
        kernel.close()
    assert mem == "DENIED:PermissionError" and canary.decode() not in mem
    assert env == "DENIED:PermissionError"
    assert others == ["DENIED:PermissionError"] * 3


@pytest.mark.e2e
@needs_landlock
def test_given_isolation_on_then_the_kernel_has_no_capabilities_even_as_root(world, isolated):
    out = isolated.run("import os\nst = open('/proc/self/status').read()\n"
                       "print(os.geteuid(), [l.split()[1] for l in st.splitlines() if l.split()[0] in "
                       "('CapEff:', 'CapPrm:', 'CapBnd:', 'CapAmb:', 'NoNewPrivs:')])")
    uid, caps = out.split(" ", 1)
    assert uid == str(os.geteuid())
    assert caps.strip() == str(["0000000000000000"] * 3 + ["0000000000000000", "1"])


@pytest.mark.e2e
@needs_landlock
def test_given_isolation_on_then_the_kernel_cannot_signal_the_server(world, isolated):
    out = isolated.run(_attempt("__import__('os').kill(__import__('os').getppid(), 0)")).strip()
    assert out == "DENIED:PermissionError"
    assert isolated.run(_attempt("__import__('os').kill(__import__('os').getpid(), 0)")).strip() == "OK:None"


@pytest.mark.e2e
@needs_landlock
def test_given_isolation_on_then_abstract_unix_sockets_outside_the_sandbox_are_unreachable(world, isolated):
    name = "\0keyvault-isolation-" + secrets.token_hex(8)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(1)
    connect = f"(lambda s: s.connect({name!r}))(__import__('socket').socket(__import__('socket').AF_UNIX))"
    try:
        plain = Kernel(world, isolated=False)
        try:
            assert plain.run(_attempt(connect)).strip() == "OK:None"  # control: reachable unconfined
        finally:
            plain.close()
        assert isolated.run(_attempt(connect)).strip() == "DENIED:PermissionError"
    finally:
        listener.close()


def test_given_the_servers_own_interpreter_then_its_kernels_get_the_pip_target_and_others_do_not(tmp_path):
    from jupyter_keyvault.isolation.launch import kernel_env_changes

    policy = build_policy(kernel_state_dir=tmp_path / "state", notebook_root=tmp_path, create_missing=False)
    env = kernel_env_changes(policy, [sys.executable, "-m", "ipykernel_launcher"])
    assert env["PIP_TARGET"].startswith(str(tmp_path / "state" / "site-packages"))
    assert env["PYTHONPATH"].split(os.pathsep)[0] == env["PIP_TARGET"]
    other = kernel_env_changes(policy, ["/opt/some-other-env/bin/python", "-m", "ipykernel_launcher"])
    assert "PIP_TARGET" not in other and "PYTHONPATH" not in other


@pytest.mark.e2e
@needs_landlock
def test_given_isolation_on_then_ordinary_notebook_work_still_works(world, isolated, tmp_path):
    marker = secrets.token_hex(8)
    # /tmp, unless protected paths live in it (a checkout and its venv under /tmp, as on some CI): then
    # the kernels' own temp dir (the layout is reproduced on purpose in the temp-root test below)
    temp_dir = "/tmp" if writes_freely(default_policy(notebook_root=world.root), "/tmp") else \
        str(world.home / ".local/share/jupyter-keyvault-kernel/tmp")
    # files in the notebook root (the kernel's cwd) and the temp dir: create, read, delete
    out = isolated.run(
        f"import os, tempfile\nopen('made-by-kernel-{marker}.txt', 'w').write('{marker}')\nos.makedirs('sub-{marker}/deep')\n"
        f"t = os.path.join(tempfile.gettempdir(), 'kernel-{marker}')\nopen(t, 'w').write('{marker}')\n"
        f"print(open('made-by-kernel-{marker}.txt').read(), open(t).read(), tempfile.gettempdir())\nos.unlink(t)\n"
    )
    assert out.split() == [marker, marker, temp_dir]
    assert (world.root / f"made-by-kernel-{marker}.txt").read_text() == marker

    # TCP to a local server on 127.0.0.1
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = []

    def accept():
        conn, _ = server.accept()
        received.append(conn.recv(100))
        conn.close()

    thread = threading.Thread(target=accept)
    thread.start()
    port = server.getsockname()[1]
    out = isolated.run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\ns.sendall(b'{marker}')\n"
                       "s.close()\nprint('sent')")
    thread.join(10)
    server.close()
    assert "sent" in out and received == [marker.encode()]

    # %pip install of a local wheel lands in the kernels' own target and imports
    name = f"kvtiny{marker}"
    wheel = tiny_wheel(tmp_path, name, marker)
    out = isolated.run(f"%pip install --no-index --no-deps -q {wheel}\nimport os\nprint(os.environ['PIP_TARGET'])")
    target = out.strip().splitlines()[-1]
    assert target.startswith(str(world.home / ".local/share/jupyter-keyvault-kernel/site-packages/")), out
    out = isolated.run(f"import {name}\nprint({name}.MARKER, {name}.__file__)")
    assert out.split()[0] == marker and out.split()[1].startswith(target), out
    assert not list(world.site_packages.glob(f"{name}*"))  # the server's environment is untouched


def test_given_protected_paths_inside_a_temp_root_then_kernels_do_not_write_freely_there(tmp_path):
    """The layout CI met with its checkout under /tmp: the server's venv (read-only to kernels) and
    a runtime dir inside the temp root make the root an ancestor, where nothing can be created."""
    root = tmp_path / "temp-root"
    for d in ("venv", "runtime", "scratch"):
        (root / d).mkdir(parents=True)
    policy = build_policy(runtime_dir=root / "runtime", extra_read_only=[root / "venv"], extra_writable=[root],
                          kernel_state_dir=tmp_path / "state", protect_interpreter=False, create_missing=False)
    assert not writes_freely(policy, root)  # an ancestor of protected dirs: listing only
    assert not writes_freely(policy, root / "runtime") and not writes_freely(policy, root / "venv")
    assert not writes_freely(policy, root / "missing")  # nothing to write in
    assert writes_freely(policy, root / "scratch")
    (tmp_path / "state").mkdir()
    assert writes_freely(policy, tmp_path / "state")
    free = build_policy(extra_writable=[root / "scratch"], kernel_state_dir=tmp_path / "state",
                        protect_interpreter=False, create_missing=False)
    assert writes_freely(free, root)


def test_given_a_kernel_temp_root_with_protected_paths_then_the_launcher_sets_a_private_tmpdir_and_status_says_so(
        tmp_path, monkeypatch):
    from jupyter_keyvault.isolation.launch import kernel_env_changes

    root = tmp_path / "temp-root"
    (root / "runtime").mkdir(parents=True)
    state = tmp_path / "state"
    monkeypatch.setenv("TMPDIR", str(root))
    policy = build_policy(runtime_dir=root / "runtime", kernel_state_dir=state, protect_interpreter=False)
    assert any(f"TMPDIR={state / 'tmp'}" in note and str(root) in note for note in policy.notes), policy.notes
    env = kernel_env_changes(policy, ["/opt/other-env/bin/python", "-m", "ipykernel_launcher"])
    assert env["TMPDIR"] == str(state / "tmp") and (state / "tmp").stat().st_mode & 0o777 == 0o700
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))  # a temp root that does not exist is no better
    assert kernel_env_changes(policy, ["/opt/other-env/bin/python"])["TMPDIR"] == str(state / "tmp")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "state"))  # a usable one is left as it is
    assert "TMPDIR" not in kernel_env_changes(policy, ["/opt/other-env/bin/python"])
    assert not any("TMPDIR" in note for note in build_policy(kernel_state_dir=state, protect_interpreter=False).notes)


@pytest.mark.e2e
@needs_landlock
def test_given_a_temp_root_that_holds_protected_dirs_then_the_kernel_gets_a_private_temp_dir_and_they_stay_protected(world):
    """A kernel whose temp root (TMPDIR, else /tmp) holds the runtime dir or the server's venv could
    create nothing there: no cell ran ("No usable temporary directory"). The launcher then gives it
    TMPDIR in the kernels' own state dir; the protected dirs in the old root stay out of reach."""
    marker = secrets.token_hex(8)
    temp_root = world.base / f"temp-root-{marker}"
    runtime = temp_root / "jupyter-runtime"  # denied, as a runtime dir under /tmp is
    venv = temp_root / "venv"  # read-only, as a checkout's .venv under /tmp is
    runtime.mkdir(parents=True)
    (runtime / "jpserver-1.json").write_text(json.dumps({"token": world.canary}))
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "sitecustomize.py").write_text("# server's\n")
    private = world.home / ".local/share/jupyter-keyvault-kernel/tmp"

    def start() -> Kernel:
        KeyVaultIsolatedProvisioner.policy_factory = lambda prov, kw: default_policy(
            notebook_root=world.root, extra_denied=[runtime], extra_read_only=[venv])
        try:
            return Kernel(world, isolated=True, extra_env={"TMPDIR": str(temp_root)})
        finally:
            KeyVaultIsolatedProvisioner.policy_factory = lambda prov, kw: default_policy(notebook_root=world.root)

    kernel = start()
    try:
        out = kernel.run(
            "import os, subprocess, tempfile\n"
            "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n"
            f"    f.write('{marker}')\n"
            "made = subprocess.run(['mktemp'], capture_output=True, text=True).stdout.strip()\n"
            "print(tempfile.gettempdir(), os.environ['TMPDIR'], open(f.name).read(), os.path.dirname(made))\n"
            "os.unlink(f.name); os.unlink(made)\n").split()
        assert out == [str(private), str(private), marker, str(private)], out
        attacks = {
            "read_runtime": f"open({str(runtime / 'jpserver-1.json')!r}).read()",
            "plant_in_runtime": f"open({str(runtime / 'kernel-planted.json')!r}, 'w').write('x')",
            "plant_in_venv": f"open({str(venv / 'lib' / 'usercustomize.py')!r}, 'w').write('x')",
            "edit_venv": f"open({str(venv / 'lib' / 'sitecustomize.py')!r}, 'a').write('x')",
            "new_entry_in_old_root": f"open({str(temp_root / 'new.txt')!r}, 'w').write('x')",
        }
        results = _run_attacks(kernel, attacks)
        # the temp dir is the kernels' to write: one points it at the protected runtime dir for the next
        out = kernel.run(f"import os, shutil\nshutil.rmtree({str(private)!r})\nos.symlink({str(runtime)!r}, {str(private)!r})\n"
                         "print('planted')")
        assert out.strip() == "planted" and private.is_symlink()
    finally:
        kernel.close()
    assert results == dict.fromkeys(attacks, "DENIED:PermissionError"), results
    kernel = start()  # the launcher (unconfined) replaces the link, never follows it
    try:
        out = kernel.run("import tempfile\nwith tempfile.NamedTemporaryFile() as f:\n    print(f.name)").strip()
    finally:
        kernel.close()
    assert not private.is_symlink() and private.is_dir() and out.startswith(str(private) + "/")
    assert sorted(p.name for p in temp_root.iterdir()) == ["jupyter-runtime", "venv"]
    assert sorted(p.name for p in runtime.iterdir()) == ["jpserver-1.json"]
    assert (venv / "lib" / "sitecustomize.py").read_text() == "# server's\n" and len(list(venv.rglob("*"))) == 2
    assert private.stat().st_mode & 0o777 == 0o700


@pytest.mark.e2e
def test_given_mode_on_and_no_landlock_then_the_kernel_manager_start_fails_and_nothing_runs(world):
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="isolated")
    stderr_file = world.base / "refusal.err"
    with open(stderr_file, "wb") as err:
        km.start_kernel(cwd=str(world.root), env={**os.environ, FORCE_NO_LANDLOCK_ENV: "1"}, stderr=err)
        try:
            assert km.provisioner.process.wait(timeout=60) == REFUSAL_EXIT
        finally:
            km.cleanup_resources()
    assert "isolate_kernels is 'on' but Landlock is unavailable" in stderr_file.read_text()


@pytest.mark.e2e
@needs_landlock
def test_given_isolation_on_then_user_startup_files_run_and_a_planted_one_is_dropped_at_next_start(world):
    marker = secrets.token_hex(8)
    real_startup = world.startup / f"10-user-{marker}.py"
    real_startup.write_text(f"USER_STARTUP = {marker!r}\n")
    first = Kernel(world, isolated=True)
    try:
        assert first.run("print(USER_STARTUP)").strip() == marker  # the user's own startup file ran
        out = first.run("import os\nfrom IPython.paths import get_ipython_dir\nd = get_ipython_dir()\n"
                        "open(os.path.join(d, 'profile_default/startup/00-planted.py'), 'w').write('PLANTED = 1')\n"
                        "print(d)")
        assert out.strip() == str(world.home / ".local/share/jupyter-keyvault-kernel/ipython")
    finally:
        first.close()
        real_startup.unlink()
    second = Kernel(world, isolated=True)
    try:
        assert "NameError" in second.run("print(PLANTED)")
        assert "NameError" in second.run("print(USER_STARTUP)")  # removed from the real dir, gone here too
    finally:
        second.close()


@pytest.mark.e2e
@needs_landlock
def test_given_a_notebook_root_that_holds_protected_dirs_then_only_new_top_level_entries_are_refused(world):
    """The documented limitation: the root is an ancestor of the vault, so it keeps listing only."""
    marker = secrets.token_hex(8)
    (world.base / "existing.txt").write_text("before")
    (world.base / "project").mkdir(exist_ok=True)
    KeyVaultIsolatedProvisioner.policy_factory = lambda prov, kw: default_policy(notebook_root=world.base)
    try:
        from jupyter_client import KernelManager

        km = KernelManager(kernel_name="isolated")
        km.start_kernel(cwd=str(world.base), env=dict(os.environ))
        kernel = Kernel.__new__(Kernel)
        kernel.km, kernel.kc = km, km.client()
        kernel.kc.start_channels()
        kernel.kc.wait_for_ready(timeout=90)
        try:
            assert kernel.run(_attempt(f"open('project/{marker}.txt', 'w').write('x')")).strip() == "OK:1"
            assert kernel.run(_attempt("open('existing.txt', 'a').write('+after')")).strip() == "OK:6"
            assert kernel.run(_attempt(f"open('new-{marker}.txt', 'w')")).strip() == "DENIED:PermissionError"
            assert kernel.run(_attempt("open('data/keyvault/master.key').read()")).strip() == "DENIED:PermissionError"
            assert sorted(kernel.run("import os; print(sorted(os.listdir('.')))").strip()[1:-1].split(", "))
        finally:
            kernel.close()
    finally:
        KeyVaultIsolatedProvisioner.policy_factory = lambda prov, kw: default_policy(notebook_root=world.root)
    assert (world.base / "existing.txt").read_text() == "before+after"
    assert (world.base / "project" / f"{marker}.txt").exists() and not (world.base / f"new-{marker}.txt").exists()


def test_given_kernelspecs_when_handed_out_for_isolation_then_each_starts_through_the_launcher_or_is_refused():
    from jupyter_client.kernelspec import KernelSpec

    from jupyter_keyvault.isolation.provisioner import isolated_spec

    plain = KernelSpec(argv=["python", "-f", "{connection_file}"], display_name="p", language="python")
    assert isolated_spec(plain, "p", "on").metadata["kernel_provisioner"]["provisioner_name"] == PROVISIONER_NAME
    remote = KernelSpec(argv=["x"], display_name="r", language="python",
                        metadata={"kernel_provisioner": {"provisioner_name": "k8s-provisioner"}})
    with pytest.raises(KernelSpecNotWrappable, match="kernelspec 'remote-k8s' names its own kernel provisioner"):
        isolated_spec(remote, "remote-k8s", "on")
    assert isolated_spec(remote, "remote-k8s", "auto") is remote  # left as it is
    with pytest.raises(KernelSpecNotWrappable, match="kernelspec 'empty' has an empty argv"):
        isolated_spec(KernelSpec(argv=[], display_name="e", language="python"), "empty", "on")
    assert "kernel_provisioner" not in isolated_spec(KernelSpec(argv=["x"]), "x", "off").metadata


def _port_in_my_range() -> int:
    for port in range(21000 + secrets.randbelow(900), 22000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 21000-21999")


def _server(*args: str):
    from jupyter_keyvault.testing.live_server import JupyterServer

    server = JupyterServer(*args)
    server.port = _port_in_my_range()
    server.url = f"http://127.0.0.1:{server.port}"
    server.args = [f"--port={server.port}" if a.startswith("--port=") else a for a in server.args]
    return server


@pytest.mark.e2e
@needs_landlock
@pytest.mark.parametrize("isolated_server", [False, True], ids=["plain-server", "isolating-server"])
async def test_given_a_real_jupyter_server_then_its_kernels_cannot_read_its_token_env_or_vault(isolated_server):
    """The deployment path: jupyter_server's own kernel manager, REST session, websocket. The
    extension isolates kernels by default (isolate_kernels = "auto"); "off" is the control."""
    from jupyter_keyvault.testing.kernel_client import ServerKernel

    args = [] if isolated_server else ["--KeyVault.isolate_kernels=off"]
    server = _server(*args)
    with server:
        runtime = server.root / "runtime"
        kernel = await ServerKernel(server.url, server.token, path="attack.ipynb").start()
        try:
            code = (
                "import glob, os\nfound = []\n"
                f"for p in glob.glob({str(runtime)!r} + '/jpserver-*.json') + [{str(server.vault_path)!r}]:\n"
                "    try:\n        found.append(open(p, 'rb').read())\n"
                "    except OSError as e:\n        print('DENIED', type(e).__name__)\n"
                "try:\n    found.append(open(f'/proc/{os.getppid()}/environ', 'rb').read())\n"
                "except OSError as e:\n    print('DENIED', type(e).__name__)\n"
                "print('LEAK' if any(%r.encode() in f or %r.encode() in f for f in found) else 'NOLEAK')\n"
                % (server.token, server.master_key)
            )
            result = await kernel.execute(code, timeout=120)
        finally:
            await kernel.stop()
    out = result.text
    if isolated_server:
        assert out.count("DENIED PermissionError") == 3 and "NOLEAK" in out, out
        assert server.token not in out and server.master_key not in out
    else:
        assert "LEAK" in out.replace("NOLEAK", "") and "DENIED" not in out, out


def test_given_a_missing_system_config_dir_when_built_then_it_is_not_created_but_still_cannot_be_created(tmp_path):
    system_dir = tmp_path / "etc" / "jupyter"
    (tmp_path / "etc" / "hosts").parent.mkdir()
    (tmp_path / "etc" / "hosts").write_text("x")
    user_dir = tmp_path / "home" / ".jupyter"
    policy = build_policy(config_dirs=[system_dir], user_config_dir=user_dir, kernel_state_dir=tmp_path / "state",
                          protect_interpreter=False)
    assert not system_dir.exists() and user_dir.is_dir()  # only the user's own dir is made
    rules = dict(plan_rules(policy))
    assert rules[str(tmp_path / "etc")] == ANCESTOR  # so a kernel cannot create etc/jupyter
    assert rules[str(tmp_path / "etc" / "hosts")] == FULL and rules[str(user_dir)] == READ


@pytest.mark.e2e
@needs_landlock
def test_given_a_kernel_plants_symlinks_in_its_ipython_dir_then_the_next_launch_removes_them_unfollowed(world):
    config_files = sorted(p.name for p in world.config.iterdir())
    first = Kernel(world, isolated=True)
    try:
        out = first.run(
            "import os\nfrom IPython.paths import get_ipython_dir\nd = get_ipython_dir()\n"
            "os.rename(os.path.join(d, 'profile_default'), os.path.join(d, 'moved-away'))\n"
            f"os.symlink({str(world.config)!r}, os.path.join(d, 'profile_default'))\n"
            f"os.symlink({str(world.vault)!r}, os.path.join(d, 'profile_evil'))\nprint('planted')")
        assert "planted" in out
    finally:
        first.close()
    second = Kernel(world, isolated=True)  # the launcher (unconfined) syncs the mirror before confining
    try:
        assert second.run("print(1 + 1)").strip() == "2"
    finally:
        second.close()
    assert sorted(p.name for p in world.config.iterdir()) == config_files  # nothing deleted or copied there
    assert (world.config / "jupyter_server_config.py").read_text() == "# user config\n"
    assert sorted(p.name for p in world.vault.iterdir()) == ["master.key", "vault.db"]
    mirror = world.home / ".local/share/jupyter-keyvault-kernel/ipython"
    assert not (mirror / "profile_default").is_symlink() and not (mirror / "profile_evil").is_symlink()


def test_given_each_mode_then_status_says_whether_kernels_are_confined(tmp_path):
    from jupyter_keyvault.isolation import isolation_status

    available = ll.abi_version() > 0
    assert isolation_status("on")["enforced"] is available
    assert isolation_status("auto")["enforced"] is available
    off = isolation_status("off")
    assert off["enforced"] is False and "can read the vault" in off["detail"]
    t = _tree(tmp_path)
    policy = build_policy(vault_dir=t["vault"], notebook_root=t["home"], kernel_state_dir=tmp_path / "state",
                          protect_interpreter=False)
    assert isolation_status("on", policy)["limitations"] == policy.notes != []
