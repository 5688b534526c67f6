"""End-to-end tests of `jupyter keyvault …`.

Every test runs the real command in a subprocess (`python -m jupyter_keyvault.cli`, and
the `jupyter keyvault` entry point), with a private HOME, Jupyter dirs and vault, and no OS
keyring. Every run is checked for leaks: no registered secret (canary values, master keys)
may appear in any stdout or stderr, and tests check the vault files' raw bytes too.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import select
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from jupyter_keyvault import providers
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY, new_master_key

CLI = [sys.executable, "-m", "jupyter_keyvault.cli"]
BIN_DIR = Path(sys.executable).parent
ENTRY_POINT = BIN_DIR / "jupyter"
OWNER = "cli-tester"
ERROR = "jupyter keyvault: error: "
LIMIT = 16 * 1024
MODE_MASK = 0o777


def new_canary() -> str:
    return "sk-proj-CANARY" + secrets.token_hex(20)


def _base_env() -> dict[str, str]:
    """The caller's environment without anything that could reach or configure a vault."""
    drop = providers.credential_env_names()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop
        and not k.startswith(("KEYVAULT_", "JUPYTER", "IPYTHON", "PYTHON_KEYRING"))
        and not k.endswith(("_BASE_URL", "_API_KEY", "_TOKEN"))
    }
    env["PATH"] = os.pathsep.join([str(BIN_DIR), env.get("PATH", "")])
    return env


@dataclass
class Result:
    args: list[str]
    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def __str__(self) -> str:
        return f"{self.args} -> rc={self.rc}\n--- stdout\n{self.out}--- stderr\n{self.err}"


class Cli:
    """One isolated user: private HOME and Jupyter dirs, its own vault and master key."""

    def __init__(self, root: Path, master_key: str | None):
        self.root = root
        self.master_key = master_key
        env = _base_env()
        for var, sub in {
            "HOME": "home",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "IPYTHONDIR": "ipython",
        }.items():
            (root / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(root / sub)
        env.update(
            JUPYTER_PLATFORM_DIRS="1",
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            LOGNAME=OWNER,
            USER=OWNER,
        )
        if master_key:
            env["KEYVAULT_MASTER_KEY"] = master_key
        self.env = env
        # Values that must never show up in any output of any command.
        self.secrets: set[str] = {master_key} if master_key else set()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def vault_dir(self) -> Path:
        return self.data_dir / "keyvault"

    @property
    def vault_db(self) -> Path:
        return self.vault_dir / "vault.db"

    def command_env(self, env: dict[str, str | None] | None) -> dict[str, str]:
        merged = {**self.env, **(env or {})}
        return {k: v for k, v in merged.items() if v is not None}

    def run(self, *args: object, input: str | bytes | None = None, env: dict[str, str | None] | None = None,
            entry_point: bool = False, wrapper: list[str] | None = None) -> Result:
        argv = [str(a) for a in args]
        cmd = (wrapper or []) + ([str(ENTRY_POINT), "keyvault"] if entry_point else CLI) + argv
        if isinstance(input, str):
            input = input.encode("utf-8")
        proc = subprocess.run(
            cmd,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            env=self.command_env(env),
            cwd=self.root,
            timeout=60,
        )
        self.assert_no_secret(proc.stdout + b"\n" + proc.stderr, f"output of {argv}")
        return Result(argv, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                      proc.stderr.decode("utf-8", "replace"))

    def ok(self, *args: object, quiet: bool = True, **kw) -> Result:
        """Run a command that must succeed (exit 0; by default with nothing on stderr)."""
        res = self.run(*args, **kw)
        assert res.rc == 0, str(res)
        if quiet:
            assert res.err == "", str(res)
        return res

    def fail(self, *args: object, match: str, **kw) -> Result:
        """Run a command that must fail with exactly one clear `error:` line on stderr."""
        res = self.run(*args, **kw)
        assert res.rc == 1, str(res)
        assert len(res.err_lines) == 1, f"expected exactly one stderr line:\n{res}"
        line = res.err_lines[0]
        assert line.startswith(ERROR), str(res)
        assert match in line, f"{match!r} not in {line!r}"
        assert "Traceback" not in res.err + res.out
        return res

    def list_json(self, **kw) -> list[dict]:
        return json.loads(self.ok("list", "--json", **kw).out)

    def names(self, **kw) -> dict[str, str | None]:
        return {item["name"]: item["provider"] for item in self.list_json(**kw)}

    def audit_json(self, **kw) -> list[dict]:
        return json.loads(self.ok("audit", "--json", **kw).out)

    def assert_no_secret(self, data: bytes, where: str, only: set[str] | None = None) -> None:
        for secret in self.secrets if only is None else only:
            for form in _forms(secret):
                assert form not in data, f"a secret ({form[:12]!r}…) leaked into {where}"

    def assert_not_on_disk(self, directory: Path | None = None, only: set[str] | None = None) -> None:
        """No secret (or only these) in the raw bytes of any file under `directory` (the vault dir)."""
        directory = directory or self.vault_dir
        files = [p for p in directory.rglob("*") if p.is_file()]
        assert files, f"no files under {directory}"
        for path in files:
            self.assert_no_secret(path.read_bytes(), str(path), only)

    def files_bytes(self, directory: Path | None = None) -> dict[str, bytes]:
        directory = directory or self.vault_dir
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}

    def stored_value(self, name: str, master_key: str | None = None) -> str:
        """Read one value in-process (to prove what the CLI stored, byte for byte)."""
        from jupyter_keyvault.store import SQLiteBackend, Vault

        vault = Vault(SQLiteBackend(self.vault_db), env={"KEYVAULT_MASTER_KEY": master_key or self.master_key},
                      use_keyring=False)
        try:
            return vault.get_value(OWNER, name, touch=False)
        finally:
            vault.close()

    def write_server_config(self, text: str) -> None:
        (self.config_dir / "jupyter_server_config.py").write_text(text)


def _forms(secret: str) -> list[bytes]:
    """The secret as raw UTF-8 and base64 (standard and urlsafe), which would just be an encoding."""
    raw = secret.encode("utf-8")
    forms = [raw]
    if len(raw) >= 16:
        for shift in range(3):  # base64 of the secret at any alignment inside a larger blob
            chunk = raw[shift:]
            chunk = chunk[: len(chunk) - len(chunk) % 3]
            forms.append(base64.b64encode(chunk))
            forms.append(base64.urlsafe_b64encode(chunk))
    return forms


@pytest.fixture
def master_key() -> str:
    return new_master_key()


@pytest.fixture
def cli(tmp_path, master_key) -> Cli:
    return Cli(tmp_path / "user", master_key)


@pytest.fixture
def make_cli(tmp_path):
    def make(label: str, master_key: str | None) -> Cli:
        return Cli(tmp_path / label, master_key)

    return make


# --------------------------------------------------------------------------------------
# The everyday commands
# --------------------------------------------------------------------------------------


def test_given_piped_values_when_set_list_status_audit_delete_then_they_work_and_never_show_a_value(cli, canary):
    cli.secrets.add(canary)
    plain = "sk-proj-" + secrets.token_hex(16)
    crlf = "sk-proj-" + secrets.token_hex(16)
    cli.secrets.update({plain, crlf})

    # Given values piped on stdin, with and without a trailing newline
    res = cli.ok("set", "OPENAI_API_KEY", input=canary + "\n")
    assert res.out.strip() == "Stored OPENAI_API_KEY (openai)"
    assert cli.ok("set", "SECOND_KEY", "--provider", "openai", input=plain).out.strip() == "Stored SECOND_KEY (openai)"
    assert cli.ok("set", "WINDOWS_KEY", input=crlf + "\r\n").out.strip() == "Stored WINDOWS_KEY (openai)"

    # Then exactly the value is stored: one trailing newline dropped, nothing else
    assert cli.stored_value("OPENAI_API_KEY") == canary
    assert cli.stored_value("SECOND_KEY") == plain
    assert cli.stored_value("WINDOWS_KEY") == crlf

    # When listing as a table
    table = cli.ok("list").out.splitlines()
    assert table[0].split() == ["NAME", "PROVIDER", "TYPE", "SOURCE", "UPDATED", "LAST", "USED", "AGE", "LIFETIME"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == {"OPENAI_API_KEY", "SECOND_KEY", "WINDOWS_KEY"}
    assert rows["OPENAI_API_KEY"][1:4] == ["openai", "api_key", "vault"]

    # When listing as JSON: names and providers, presence, never a value
    items = cli.list_json()
    assert [(i["name"], i["provider"], i["present"], i["source"]) for i in items] == [
        ("OPENAI_API_KEY", "openai", True, "vault"),
        ("SECOND_KEY", "openai", True, "vault"),
        ("WINDOWS_KEY", "openai", True, "vault"),
    ]
    for item in items:
        assert "value" not in item and "payload" not in item

    # When asking for the status (text and JSON): the source, never the key
    text = cli.ok("status").out
    assert "Protection:  master key from env" in text
    assert "WEAK" not in text and "Warning" not in text
    assert "Credentials: 3" in text
    assert str(cli.vault_db) in text
    status = json.loads(cli.ok("status", "--json").out)
    assert status["protection"] == {"source": "env", "strong": True, "detail": "KEYVAULT_MASTER_KEY"}
    assert status["warnings"] == [] and status["credentials"] == 3
    assert status["owner"] == OWNER and status["location"] == str(cli.vault_db)

    # When deleting one
    assert cli.ok("delete", "SECOND_KEY").out.strip() == "Deleted SECOND_KEY"
    assert set(cli.names()) == {"OPENAI_API_KEY", "WINDOWS_KEY"}

    # Then the audit log has every event, and no value (checked on every output above)
    events = cli.audit_json()
    seen = {(e["action"], e["target"], e["outcome"], e["detail"]) for e in events}
    assert {
        ("set", "OPENAI_API_KEY", "ok", "created"),
        ("set", "SECOND_KEY", "ok", "created"),
        ("set", "WINDOWS_KEY", "ok", "created"),
        ("delete", "SECOND_KEY", "ok", None),
    } <= seen
    assert all(e["owner"] == OWNER and e["actor"] == OWNER for e in events)
    audit_text = cli.ok("audit").out
    assert "delete" in audit_text and "OPENAI_API_KEY" in audit_text

    # And nothing on disk holds a value in plaintext
    cli.assert_not_on_disk()


def test_given_the_jupyter_entry_point_when_managing_a_key_then_it_behaves_like_the_module(cli, canary):
    cli.secrets.add(canary)
    res = cli.ok("set", "ANTHROPIC_API_KEY", input="sk-ant-" + canary, entry_point=True)
    assert res.out.strip() == "Stored ANTHROPIC_API_KEY (anthropic)"
    assert cli.names(entry_point=True) == {"ANTHROPIC_API_KEY": "anthropic"}
    cli.fail("frobnicate", match="unknown command 'frobnicate'", entry_point=True)
    cli.assert_not_on_disk()


def test_given_no_strong_master_key_source_when_status_then_the_key_file_fallback_is_reported_loudly(make_cli, canary):
    cli = make_cli("nokey", master_key=None)
    cli.secrets.add(canary)

    # Given a vault created without KEYVAULT_MASTER_KEY, keyring or passphrase
    res = cli.ok("set", "OPENAI_API_KEY", input=canary, quiet=False)
    assert res.out.strip() == "Stored OPENAI_API_KEY (openai)"
    assert "no strong master-key source" in res.err  # said loudly when the key file is created
    key_file = cli.vault_dir / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    cli.secrets.add(key_file.read_text().strip())  # the generated key must never be printed either
    cli.assert_no_secret((res.out + res.err).encode(), "the output of the first set")

    # When asking for the status
    text = cli.ok("status").out
    assert "Protection:  master key from file (WEAK)" in text
    warnings = [line for line in text.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "key file" in warnings[0]

    status = json.loads(cli.ok("status", "--json").out)
    assert status["protection"]["source"] == "file"
    assert status["protection"]["strong"] is False
    assert len(status["warnings"]) == 1 and "no strong master-key source" in status["warnings"][0]

    # Then later commands stay quiet about it (status reports it) and the value is not on disk in clear
    assert cli.names() == {"OPENAI_API_KEY": "openai"}
    cli.assert_not_on_disk(only={canary})  # (master.key holds the generated key, by design)


def test_given_a_passphrase_when_status_then_the_source_is_passphrase_and_strong(make_cli, canary):
    passphrase = "correct horse battery " + secrets.token_hex(4)
    cli = make_cli("passphrase", master_key=None)
    cli.env["KEYVAULT_PASSPHRASE"] = passphrase
    cli.secrets.update({canary, passphrase})
    cli.ok("set", "OPENAI_API_KEY", input=canary)
    status = json.loads(cli.ok("status", "--json").out)
    assert status["protection"]["source"] == "passphrase" and status["protection"]["strong"] is True
    assert status["warnings"] == []
    cli.assert_not_on_disk()


# --------------------------------------------------------------------------------------
# `set` never takes the value from argv; on a terminal it does not echo
# --------------------------------------------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_in_pty(cli: Cli, args: list[str], steps: list[tuple[bytes, object]], timeout: float = 30.0):
    """Run the CLI with stdin/stdout/stderr on a pseudo-terminal.

    `steps` are (text to wait for in the terminal output, action): the action is bytes to
    type, or a signal number to deliver. Returns (exit code, everything the terminal showed).
    """
    master, slave = os.openpty()
    # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &` in a script)
    # inherits SIGINT ignored, which the CLI would inherit too and never act on.
    proc = subprocess.Popen(CLI + args, stdin=slave, stdout=slave, stderr=slave, env=cli.env, cwd=cli.root,
                            start_new_session=True, preexec_fn=_default_sigint)
    os.close(slave)
    output = bytearray()
    searched = 0
    pending = list(steps)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the terminal showed {bytes(output)!r}")
            if pending and pending[0][0] in output[searched:]:
                wait_for, action = pending.pop(0)
                searched = output.index(wait_for, searched) + len(wait_for)
                time.sleep(0.05)  # let getpass finish setting up the terminal, as a person's reaction time does
                if isinstance(action, bytes):
                    os.write(master, action)
                else:
                    proc.send_signal(action)
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every slave end is closed, the command has exited
                chunk = b""
            if not chunk:
                break
            output += chunk
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    cli.assert_no_secret(bytes(output), f"terminal output of {args}")
    assert not pending, f"never saw {pending[0][0]!r}; the terminal showed {bytes(output)!r}"
    return rc, bytes(output)


def test_given_a_terminal_when_typing_the_value_at_the_prompt_then_it_is_stored_and_never_echoed(cli, canary):
    cli.secrets.add(canary)
    prompt = b"Value for TYPED_KEY (input hidden): "
    rc, shown = run_in_pty(cli, ["set", "TYPED_KEY", "--provider", "openai"], [(prompt, canary.encode() + b"\r")])
    # The terminal showed the prompt and the result, not what was typed (asserted by run_in_pty)
    assert rc == 0, shown
    assert prompt in shown
    assert b"Stored TYPED_KEY (openai)" in shown
    assert canary.encode() not in shown
    assert cli.stored_value("TYPED_KEY") == canary
    cli.assert_not_on_disk()


def test_given_a_terminal_prompt_when_interrupted_then_nothing_is_stored(cli):
    prompt = b"Value for TYPED_KEY (input hidden): "
    rc, shown = run_in_pty(cli, ["set", "TYPED_KEY"], [(prompt, signal.SIGINT)])
    assert rc == 130, shown
    assert b"jupyter keyvault: interrupted; nothing changed" in shown
    assert b"Traceback" not in shown
    assert cli.names() == {}


def test_given_a_value_on_argv_when_set_then_it_is_a_usage_error_and_not_stored(cli):
    argv_value = "sk-proj-" + secrets.token_hex(16)
    cli.secrets.add(argv_value)  # a rejected value must not be echoed back either
    cli.ok("set", "KEPT_KEY", input="sk-proj-" + secrets.token_hex(16))
    before = cli.list_json()
    cli.fail("set", "NEW_KEY", argv_value, match="usage: jupyter keyvault set NAME",
             input="sk-proj-" + secrets.token_hex(16))
    cli.fail("set", f"NEW_KEY={argv_value}", match="usable as an environment variable",
             input="sk-proj-" + secrets.token_hex(16))
    assert cli.list_json() == before


# --------------------------------------------------------------------------------------
# `test` against a fake upstream that echoes presented keys in its 401 bodies
# --------------------------------------------------------------------------------------


def test_given_keys_when_tested_against_the_provider_then_good_is_ok_and_bad_fails_without_leaking(
    cli, canary, fake_upstream
):
    cli.secrets.add(canary)
    cli.ok("set", "OPENAI_API_KEY", input=VALID_OPENAI_KEY)
    cli.ok("set", "WRONG_OPENAI_KEY", "--provider", "openai", input=canary)

    # Given the base URL as a Dict trait on the command line
    res = cli.ok("test", "OPENAI_API_KEY", f"--KeyVault.provider_base_urls=openai={fake_upstream.openai_base_url}")
    assert res.out.startswith("ok: OpenAI accepted the key")
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY]

    # Given it in jupyter_server_config.py, as the server reads it
    cli.write_server_config(f"c.KeyVault.provider_base_urls = {{'openai': {fake_upstream.openai_base_url!r}}}\n")
    res = cli.ok("test", "OPENAI_API_KEY")
    assert res.out.strip() == "ok: OpenAI accepted the key (3 models available)"

    # When a wrong key is tested: exit 1, one line, and not the key the upstream echoed back
    res = cli.run("test", "WRONG_OPENAI_KEY")
    assert res.rc == 1, str(res)
    assert res.out == ""
    assert len(res.err_lines) == 1, str(res)
    assert res.err_lines[0].startswith("jupyter keyvault: test failed: the provider rejected the key (HTTP 401")
    assert canary not in res.err + res.out
    assert fake_upstream.received_keys()[-1] == canary  # the upstream did get (and echo) it
    last = fake_upstream.requests[-1]
    assert last.path == "/v1/models"

    res = cli.run("test", "WRONG_OPENAI_KEY", "--json")
    assert res.rc == 1, str(res)
    result = json.loads(res.out)
    assert result["ok"] is False and "HTTP 401" in result["error"]

    events = [(e["action"], e["target"], e["outcome"]) for e in cli.audit_json()]
    assert ("test", "OPENAI_API_KEY", "ok") in events
    assert ("test", "WRONG_OPENAI_KEY", "failed") in events
    cli.assert_not_on_disk()


# --------------------------------------------------------------------------------------
# Bad input: one clear line on stderr, exit 1, and the vault unchanged
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A vault made once through the CLI: (root, master key, canary, `list --json`)."""
    key = new_master_key()
    canary = new_canary()
    cli = Cli(tmp_path_factory.mktemp("pristine"), key)
    cli.secrets.add(canary)
    cli.ok("set", "OPENAI_API_KEY", input=canary)
    cli.ok("set", "OTHER_TOKEN", input="tok-" + secrets.token_hex(8))
    return cli.root, key, canary, cli.list_json()


@pytest.fixture
def seeded(pristine, tmp_path):
    """A private copy of the pristine vault, and its `list --json`."""
    root, key, canary, listing = pristine
    shutil.copytree(root, tmp_path / "user")
    cli = Cli(tmp_path / "user", key)
    cli.secrets.add(canary)
    cli.canary = canary
    return cli, listing


BAD_INPUT = [
    pytest.param(["set", "bad-name"], "sk-proj-abcdefabcdef", "usable as an environment variable", id="name-with-dash"),
    pytest.param(["set", "1X"], "sk-proj-abcdefabcdef", "not starting with a digit", id="name-starting-with-digit"),
    pytest.param(["set", "A" * 65], "sk-proj-abcdefabcdef", "longer than 64 characters", id="name-of-65-chars"),
    pytest.param(["set", ""], "sk-proj-abcdefabcdef", "credential name is empty", id="empty-name"),
    pytest.param(["set", "NEW_KEY"], b"", "no value given", id="empty-stdin"),
    pytest.param(["set", "NEW_KEY"], "\n", "no value given", id="only-a-newline"),
    pytest.param(["set", "NEW_KEY"], "   \t\n", "value is only whitespace", id="only-whitespace"),
    pytest.param(["set", "NEW_KEY"], "x" * (LIMIT + 1), f"value is {LIMIT + 1} bytes; the limit is {LIMIT} bytes",
                 id="value-of-16KiB-plus-1"),
    pytest.param(["set", "NEW_KEY"], "x" * (LIMIT + 1) + "\n", "the limit is 16384 bytes",
                 id="value-of-16KiB-plus-1-and-newline"),
    pytest.param(["set", "NEW_KEY"], b"y" * (1024 * 1024), "larger than 16384 bytes", id="value-of-1MiB"),
    pytest.param(["set", "NEW_KEY"], b"sk-proj-\xff\xfe\x80abc", "not valid UTF-8", id="non-utf8-stdin"),
    pytest.param(["set", "NEW_KEY"], "sk-proj-abc\x00def", "NUL byte", id="nul-byte"),
    pytest.param(["set", "OPENAI_API_KEY"], "sk-ant-api03-" + "a" * 40,
                 "looks like it is for Anthropic", id="anthropic-key-for-openai"),
    pytest.param(["set", "OPENAI_API_KEY"], "sk-proj-aaaaaaaaaaaa\nsk-proj-bbbbbbbbbbbb\n",
                 "whitespace or a line break", id="two-keys-pasted"),
    pytest.param(["set", "NEW_KEY", "--provider", "nope"], "sk-proj-abcdefabcdef", "unknown provider 'nope'",
                 id="unknown-provider"),
    pytest.param(["set", "NEW_KEY", "--type", "password"], "sk-proj-abcdefabcdef", "credential type must be one of",
                 id="unknown-type"),
    pytest.param(["set", "NEW_KEY", "--provder=openai"], "sk-proj-abcdefabcdef", "unknown option --provder",
                 id="misspelt-option"),
    pytest.param(["set", "NEW_KEY", "sk-proj-fromargv1234"], "sk-proj-abcdefabcdef", "usage: jupyter keyvault set",
                 id="value-on-argv"),
    pytest.param(["delete", "MISSING_KEY"], None, "no credential named MISSING_KEY", id="delete-missing"),
    pytest.param(["delete", "bad-name"], None, "usable as an environment variable", id="delete-invalid-name"),
    pytest.param(["delete"], None, "usage: jupyter keyvault delete NAME", id="delete-without-name"),
    pytest.param(["test", "MISSING_KEY"], None, "No API key configured for MISSING_KEY", id="test-missing"),
    pytest.param(["frobnicate"], None, "unknown command 'frobnicate'", id="unknown-subcommand"),
    pytest.param(["--frobnicate=1"], None, "unknown option --frobnicate", id="unknown-top-level-option"),
    pytest.param(["list", "--limit=3"], None, "unknown option --limit", id="option-of-another-command"),
    pytest.param(["audit", "--limit=0"], None, "limit must be between 1 and 1000", id="audit-limit-0"),
    pytest.param(["import-env", "missing.env"], None, "missing.env: no such file", id="import-env-missing-file"),
    pytest.param(["import", "missing.json"], None, "missing.json: cannot read", id="import-missing-file"),
]


@pytest.mark.parametrize(("args", "stdin", "message"), BAD_INPUT)
def test_given_bad_input_when_running_a_command_then_one_error_line_and_the_vault_is_unchanged(
    seeded, args, stdin, message
):
    cli, listing = seeded
    before = cli.files_bytes()
    res = cli.fail(*args, match=message, input=stdin)
    assert res.out == ""
    if isinstance(stdin, str) and len(stdin.strip()) >= 8:
        assert stdin.strip()[:16] not in res.err  # the rejected value is not echoed
    # Identical vault bytes prove nothing changed; if the failure was audited (bytes differ),
    # the credentials as `list --json` shows them must still be the same.
    if cli.files_bytes() != before:
        assert cli.list_json() == listing
        assert cli.stored_value("OPENAI_API_KEY") == cli.canary


def test_given_values_at_the_edges_when_set_then_16KiB_is_accepted_and_an_odd_shape_only_warns(seeded):
    cli, listing = seeded
    biggest = "z" * LIMIT
    assert cli.ok("set", "BIG_VALUE", input=biggest + "\n").out.strip() == "Stored BIG_VALUE"
    assert cli.stored_value("BIG_VALUE") == biggest
    wide = "é" * (LIMIT // 2)  # 16 KiB of UTF-8 in 8 Ki characters
    cli.ok("set", "WIDE_VALUE", input=wide)
    assert cli.stored_value("WIDE_VALUE") == wide
    cli.fail("set", "WIDE_VALUE", match="the limit is 16384 bytes", input=wide + "x")

    odd = "not-an-openai-looking-key-" + secrets.token_hex(4)
    res = cli.ok("set", "OPENAI_API_KEY", input=odd, quiet=False)
    assert res.out.strip() == "Replaced OPENAI_API_KEY (openai)"
    assert res.err_lines == ["jupyter keyvault: warning: this does not look like an OpenAI key "
                             "(starts with sk- (sk-proj-… for project keys))"]
    assert odd not in res.err
    assert cli.stored_value("OPENAI_API_KEY") == odd
    assert set(cli.names()) == {i["name"] for i in listing} | {"BIG_VALUE", "WIDE_VALUE"}


def test_given_the_vault_directory_is_a_file_when_running_commands_then_a_clear_error(cli):
    # Tests may run as root, where permission bits do not stop reads: a file where a directory
    # is expected fails for every user.
    cli.vault_dir.parent.mkdir(parents=True, exist_ok=True)
    cli.vault_dir.write_text("not a directory\n")
    for args, stdin in ((["list"], None), (["set", "NEW_KEY"], "sk-proj-" + "a" * 20), (["status", "--json"], None)):
        res = cli.fail(*args, match=f"cannot open vault at {cli.vault_db}", input=stdin)
        assert res.out == ""
    assert cli.vault_dir.read_text() == "not a directory\n"

    blocker = cli.root / "blocker"
    blocker.write_text("x")
    cli.fail("list", f"--vault-path={blocker / 'sub' / 'vault.db'}", match="Not a directory")
    cli.fail("list", f"--KeyVault.vault_path={blocker / 'vault.db'}", match="cannot open vault")
    assert blocker.read_text() == "x"


# Root reads through permission bits: as root (CI), run the CLI without the DAC capabilities.
AS_UNPRIVILEGED = (["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                    "--inh-caps=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else [])


def test_given_an_unreadable_vault_directory_when_listing_then_a_clear_error_naming_the_file(seeded):
    cli, _ = seeded
    os.chmod(cli.vault_dir, 0)
    try:
        res = cli.fail("list", match="permission denied", wrapper=AS_UNPRIVILEGED)
        assert f"vault file {cli.vault_db}: its directory {cli.vault_dir} (owner uid" in res.err
        assert "mode 0000" in res.err
    finally:
        os.chmod(cli.vault_dir, 0o700)


def test_given_a_vault_directory_this_user_may_not_write_when_creating_the_vault_then_a_clear_error(cli):
    cli.vault_dir.mkdir(parents=True)
    os.chmod(cli.vault_dir, 0o500)
    try:
        res = cli.fail("list", match="permission denied", wrapper=AS_UNPRIVILEGED)
        assert f"cannot create vault file {cli.vault_db}: its directory {cli.vault_dir}" in res.err
        assert list(cli.vault_dir.iterdir()) == []
    finally:
        os.chmod(cli.vault_dir, 0o700)


def test_given_a_malformed_master_key_when_running_commands_then_a_clear_error_without_the_key(seeded):
    cli, listing = seeded
    before = cli.files_bytes()
    malformed = {
        "not base64": "K" + secrets.token_hex(12),  # 25 characters: no base64 string has that length
        "junk characters": "not*a*key*" + secrets.token_hex(12),
        "too short": base64.urlsafe_b64encode(os.urandom(16)).decode(),
        "too long": base64.urlsafe_b64encode(os.urandom(48)).decode(),
    }
    cli.secrets.update(malformed.values())
    for label, bad in malformed.items():
        res = cli.fail("list", match="KEYVAULT_MASTER_KEY", env={"KEYVAULT_MASTER_KEY": bad})
        assert bad not in res.err and bad[:10] not in res.err, label
    cli.fail("set", "NEW_KEY", match="KEYVAULT_MASTER_KEY is not urlsafe base64", input="sk-proj-" + "b" * 20,
             env={"KEYVAULT_MASTER_KEY": malformed["not base64"]})
    assert cli.files_bytes() == before
    assert cli.list_json() == listing


def test_given_the_wrong_master_key_when_running_commands_then_refused_and_the_vault_bytes_are_unchanged(seeded):
    cli, listing = seeded
    wrong = new_master_key()
    cli.secrets.add(wrong)
    before = cli.files_bytes()
    for args, stdin in (
        (["list"], None),
        (["set", "OPENAI_API_KEY"], "sk-proj-" + "c" * 20),
        (["delete", "OPENAI_API_KEY"], None),
    ):
        cli.fail(*args, match="vault was sealed with a different master key", input=stdin,
                 env={"KEYVAULT_MASTER_KEY": wrong})
    assert cli.files_bytes() == before
    # And without any key the env-keyed vault says what is missing
    cli.fail("list", match="KEYVAULT_MASTER_KEY, which is not set", env={"KEYVAULT_MASTER_KEY": None})
    assert cli.files_bytes() == before
    assert cli.list_json() == listing


# --------------------------------------------------------------------------------------
# rotate-master-key
# --------------------------------------------------------------------------------------


def test_given_an_env_keyed_vault_when_rotating_then_only_the_new_key_opens_it(cli, canary, fake_upstream):
    cli.secrets.add(canary)
    cli.write_server_config(f"c.KeyVault.provider_base_urls = {{'openai': {fake_upstream.openai_base_url!r}}}\n")
    cli.ok("set", "OPENAI_API_KEY", input=VALID_OPENAI_KEY)
    cli.ok("set", "CANARY_KEY", input=canary)
    listing = cli.list_json()

    # Without KEYVAULT_NEW_MASTER_KEY: a clear error, nothing rotated
    cli.fail("rotate-master-key", match="put the new key in KEYVAULT_NEW_MASTER_KEY")
    bad_new = "nope-" + secrets.token_hex(8)
    cli.secrets.add(bad_new)
    cli.fail("rotate-master-key", match="KEYVAULT_NEW_MASTER_KEY",
             env={"KEYVAULT_NEW_MASTER_KEY": bad_new})
    cli.fail("rotate-master-key", match="the same as the current one", env={"KEYVAULT_NEW_MASTER_KEY": cli.master_key})
    assert cli.list_json() == listing

    # With it
    new_key = new_master_key()
    cli.secrets.add(new_key)
    res = cli.ok("rotate-master-key", env={"KEYVAULT_NEW_MASTER_KEY": new_key})
    assert "Rotated the master key: 1 data keys re-wrapped." in res.out
    assert "set KEYVAULT_MASTER_KEY to the new key" in res.out

    # Then the old key is refused, the new one lists the same credentials and `test` still works
    cli.fail("list", match="vault was sealed with a different master key")
    cli.env["KEYVAULT_MASTER_KEY"], cli.master_key = new_key, new_key
    assert cli.list_json() == listing
    assert cli.ok("test", "OPENAI_API_KEY").out.startswith("ok: OpenAI accepted the key")
    assert cli.stored_value("CANARY_KEY") == canary
    cli.assert_not_on_disk()


# --------------------------------------------------------------------------------------
# import-env
# --------------------------------------------------------------------------------------

DOTENV = """\
# API keys for the notebook
OPENAI_API_KEY={openai}
ANTHROPIC_API_KEY="{anthropic}"
DEBUG=1

export X_TOKEN={token}   # the X service
MY_SECRET='{quoted}'
"""


def test_given_a_dotenv_file_when_imported_then_secrets_move_to_the_vault_and_remove_rewrites_it(cli, canary):
    anthropic = "sk-ant-api03-" + secrets.token_hex(16)
    token = "xt-" + secrets.token_hex(12)
    quoted = "two words # not a comment " + secrets.token_hex(6)
    cli.secrets.update({canary, anthropic, token, quoted})
    dotenv = cli.root / "project.env"
    dotenv.write_text(DOTENV.format(openai=canary, anthropic=anthropic, token=token, quoted=quoted))
    os.chmod(dotenv, 0o640)
    original = dotenv.read_bytes()

    # When importing without --remove: the secrets are imported, DEBUG is skipped (and said so)
    res = cli.ok("import-env", dotenv)
    lines = res.out.splitlines()
    assert "skipped DEBUG: does not look like a secret (use --all)" in lines
    assert {"imported OPENAI_API_KEY (openai)", "imported ANTHROPIC_API_KEY (anthropic)",
            "imported X_TOKEN", "imported MY_SECRET"} <= set(lines)
    assert "still in plaintext" in lines[-1]
    assert cli.names() == {"ANTHROPIC_API_KEY": "anthropic", "MY_SECRET": None, "OPENAI_API_KEY": "openai",
                           "X_TOKEN": None}
    assert cli.stored_value("OPENAI_API_KEY") == canary
    assert cli.stored_value("ANTHROPIC_API_KEY") == anthropic
    assert cli.stored_value("X_TOKEN") == token
    assert cli.stored_value("MY_SECRET") == quoted
    assert dotenv.read_bytes() == original
    assert ("import", "OPENAI_API_KEY", "ok") in {(e["action"], e["target"], e["outcome"]) for e in cli.audit_json()}

    # When importing with --remove: the imported lines go, comments and the rest stay, mode kept
    res = cli.ok("import-env", dotenv, "--remove")
    assert "removed 4 plaintext line(s)" in res.out
    assert dotenv.read_text() == "# API keys for the notebook\nDEBUG=1\n\n"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o640
    assert not list(cli.root.glob("project.env*.tmp"))

    # When importing with --all: DEBUG is imported too
    res = cli.ok("import-env", dotenv, "--all")
    assert "imported DEBUG" in res.out
    assert "DEBUG" in cli.names()
    assert cli.stored_value("DEBUG") == "1"

    # And no secret is in the vault files in clear
    cli.assert_not_on_disk()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("OPENAI_API_KEY={canary}\nthis line is not an assignment\n", "line 2 is not NAME=VALUE",
                     id="not-an-assignment"),
        pytest.param("OPENAI_API_KEY={canary}\nMY_TOKEN=\"unterminated\n", "line 2 has an unterminated quote",
                     id="unterminated-quote"),
        pytest.param("OPENAI_API_KEY={canary}\nBAD-NAME=1\n", "line 2 is not NAME=VALUE", id="invalid-name"),
        pytest.param("OPENAI_API_KEY={canary}\nBIG_TOKEN=" + "x" * (LIMIT + 1) + "\n",
                     "line 2 (BIG_TOKEN): value is 16385 bytes; the limit is 16384 bytes", id="value-too-large"),
    ],
)
def test_given_a_malformed_dotenv_file_when_imported_then_a_clear_error_and_nothing_imported(
    cli, canary, content, message
):
    cli.secrets.add(canary)
    dotenv = cli.root / ".env"
    dotenv.write_text(content.format(canary=canary))
    original = dotenv.read_bytes()
    res = cli.fail("import-env", dotenv, "--remove", match=message)
    assert "imported" not in res.out
    assert cli.names() == {}
    assert dotenv.read_bytes() == original


# --------------------------------------------------------------------------------------
# export / import
# --------------------------------------------------------------------------------------


def test_given_an_encrypted_backup_when_restored_into_another_vault_then_values_round_trip(make_cli, canary):
    passphrase = "backup passphrase " + secrets.token_hex(6)
    anthropic = "sk-ant-api03-" + secrets.token_hex(16)
    source = make_cli("source", new_master_key())
    source.secrets.update({canary, passphrase, anthropic})
    source.ok("set", "OPENAI_API_KEY", input=canary)
    source.ok("set", "ANTHROPIC_API_KEY", input=anthropic)
    source.ok("set", "SERVICE_CONFIG", "--type", "custom", input='{"user": "me"}')
    backup = source.root / "keys.backup"

    # Export: without a passphrase, a clear error and no file
    source.fail("export", backup, match="no backup passphrase")
    assert not backup.exists()

    with_passphrase = {"KEYVAULT_BACKUP_PASSPHRASE": passphrase}
    res = source.ok("export", backup, env=with_passphrase)
    assert res.out.strip() == f"Wrote an encrypted backup of 3 credential(s) to {backup}"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    data = backup.read_bytes()
    source.assert_no_secret(data, "the backup file")  # not in clear, nor base64 of it
    assert json.loads(data)["format"] == "jupyter-keyvault-backup"

    # Refuses to overwrite without --force
    source.fail("export", backup, match="exists; use --force to overwrite", env=with_passphrase)
    assert backup.read_bytes() == data
    source.ok("export", backup, "--force", env=with_passphrase)
    assert backup.read_bytes() != data and stat.S_IMODE(backup.stat().st_mode) == 0o600

    # The passphrase may also be piped on stdin
    piped_backup = source.root / "piped.backup"
    source.ok("export", piped_backup, input=passphrase + "\n")
    assert stat.S_IMODE(piped_backup.stat().st_mode) == 0o600

    # Given a fresh vault with a different master key
    target = make_cli("target", new_master_key())
    target.secrets.update(source.secrets)
    target.ok("set", "UNRELATED_KEY", input="sk-proj-" + secrets.token_hex(10))
    listing = target.list_json()

    # A wrong passphrase: a clear error, nothing imported
    target.fail("import", backup, match="wrong passphrase or damaged file",
                env={"KEYVAULT_BACKUP_PASSPHRASE": "not the passphrase"})
    assert target.list_json() == listing

    # The right passphrase, piped on stdin: everything restored, values and metadata intact
    res = target.ok("import", piped_backup, input=passphrase + "\n")
    assert set(res.out.splitlines()) == {"imported OPENAI_API_KEY", "imported ANTHROPIC_API_KEY",
                                         "imported SERVICE_CONFIG"}
    assert {i["name"]: (i["provider"], i["type"]) for i in target.list_json()} == {
        "ANTHROPIC_API_KEY": ("anthropic", "api_key"),
        "OPENAI_API_KEY": ("openai", "api_key"),
        "SERVICE_CONFIG": (None, "custom"),
        "UNRELATED_KEY": ("openai", "api_key"),
    }
    assert target.stored_value("OPENAI_API_KEY") == canary
    assert target.stored_value("ANTHROPIC_API_KEY") == anthropic
    assert target.stored_value("SERVICE_CONFIG") == '{"user": "me"}'

    # Existing names are skipped without --overwrite, replaced with it
    changed = "sk-proj-" + secrets.token_hex(10)
    target.ok("set", "OPENAI_API_KEY", input=changed)
    res = target.ok("import", backup, env=with_passphrase)
    assert "skipped OPENAI_API_KEY: already exists (use --overwrite)" in res.out.splitlines()
    assert target.stored_value("OPENAI_API_KEY") == changed
    res = target.ok("import", backup, "--overwrite", env=with_passphrase)
    assert "imported OPENAI_API_KEY" in res.out.splitlines()
    assert target.stored_value("OPENAI_API_KEY") == canary

    for cli in (source, target):
        cli.assert_not_on_disk()


def test_given_a_crafted_backup_file_when_imported_then_a_clear_error_fast_and_nothing_imported(seeded):
    cli, listing = seeded
    passphrase = {"KEYVAULT_BACKUP_PASSPHRASE": "backup passphrase " + secrets.token_hex(4)}
    good = cli.root / "good.backup"
    cli.ok("export", good, env=passphrase)
    doc = json.loads(good.read_bytes())
    kdf = doc["kdf"]
    crafted = {
        # A file from anywhere must not make the importer burn memory or crash with a traceback.
        "kdf-not-an-object": ({**doc, "kdf": "scrypt"}, "bad key-derivation parameters"),
        "kdf-without-salt": ({**doc, "kdf": {k: v for k, v in kdf.items() if k != "salt"}},
                             "bad key-derivation parameters"),
        "kdf-cost-as-text": ({**doc, "kdf": {**kdf, "n": "32768"}}, "bad key-derivation parameters"),
        "kdf-salt-not-base64": ({**doc, "kdf": {**kdf, "salt": 5}}, "bad key-derivation parameters"),
        # 512 MiB of scrypt memory: refused up front (cheap enough if the cap ever regresses)
        "kdf-too-expensive": ({**doc, "kdf": {**kdf, "n": 2**22, "r": 1}}, "bad key-derivation parameters"),
        "header-tampered": ({**doc, "count": doc["count"] + 1}, "wrong passphrase or damaged file"),
        "not-an-object": ([doc], "not a jupyter-keyvault backup file"),
    }
    before = cli.files_bytes()
    for label, (content, message) in crafted.items():
        path = cli.root / f"{label}.backup"
        path.write_text(json.dumps(content))
        started = time.monotonic()
        cli.fail("import", path, "--overwrite", match=message, env=passphrase)
        assert time.monotonic() - started < 20, label
    assert cli.files_bytes() == before
    assert cli.list_json() == listing


def test_given_a_symlinked_dotenv_when_imported_with_remove_then_the_real_file_loses_the_secrets(cli, canary):
    cli.secrets.add(canary)
    real = cli.root / "shared" / "real.env"
    real.parent.mkdir()
    real.write_text(f"# shared\nOPENAI_API_KEY={canary}\nDEBUG=1\n")
    os.chmod(real, 0o600)
    link = cli.root / ".env"
    link.symlink_to(real)
    res = cli.ok("import-env", link, "--remove")
    assert "imported OPENAI_API_KEY (openai)" in res.out
    assert link.is_symlink() and link.resolve() == real
    assert real.read_text() == "# shared\nDEBUG=1\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert cli.stored_value("OPENAI_API_KEY") == canary


# ====================================================================== backup (SQLite backup API)
def test_given_writes_still_only_in_the_wal_when_backed_up_then_the_copy_has_them_and_opens_with_the_same_key(
    cli, make_cli
):
    canary = new_canary()
    cli.secrets.add(canary)
    cli.ok("list")  # creates the vault
    holder = sqlite3.connect(cli.vault_db)  # another open connection: nobody checkpoints on exit
    try:
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        holder.execute("SELECT COUNT(*) FROM credentials").fetchone()
        cli.ok("set", "IN_WAL_ONLY", input=canary, quiet=False)
        assert (cli.vault_dir / "vault.db-wal").stat().st_size > 0
        plain_copy = cli.vault_db.read_bytes()
        backup = cli.root / "vault-backup.db"
        res = cli.ok("backup", backup)
        assert "Wrote a copy of the vault" in res.out and stat.S_IMODE(backup.stat().st_mode) == 0o600
    finally:
        holder.close()
    restored = make_cli("restored", cli.master_key)
    restored.secrets |= cli.secrets
    restored.vault_dir.mkdir(parents=True)
    restored.vault_db.write_bytes(plain_copy)
    assert "IN_WAL_ONLY" not in restored.ok("list").out  # why a plain file copy is not a backup
    restored.vault_db.write_bytes(backup.read_bytes())
    assert [i["name"] for i in restored.list_json()] == ["IN_WAL_ONLY"]
    restored.assert_not_on_disk(restored.root)
    cli.fail("backup", backup, match="exists; use --force")
    cli.ok("backup", backup, "--force")
    cli.fail("backup", cli.vault_db, "--force", match="is the vault itself")


# --------------------------------------------------------------------------------------
# Lifetimes: --expires, --session (refused here), list --stale
# --------------------------------------------------------------------------------------


def test_given_expires_when_set_then_listed_with_its_expiry_and_a_past_or_bad_one_is_refused(cli, canary):
    cli.secrets.add(canary)
    res = cli.ok("set", "OPENAI_API_KEY", "--expires", "8h", input=canary)
    assert "expires" in res.out
    item = cli.list_json()[0]
    assert item["lifetime"] == "stored" and item["expires_at"] and item["expired"] is False
    cli.fail("set", "OTHER_KEY", "--expires", "2001-01-01", input="other-value-123456", match="past")
    cli.fail("set", "OTHER_KEY", "--expires", "someday", input="other-value-123456", match="expiry")
    assert [i["name"] for i in cli.list_json()] == ["OPENAI_API_KEY"]


def test_given_session_on_the_cli_then_it_is_refused_with_where_to_do_it_and_nothing_is_stored(cli, canary):
    cli.secrets.add(canary)
    cli.fail("set", "OPENAI_API_KEY", "--session", input=canary, match="running Jupyter server")
    assert cli.list_json() == []


def test_given_an_old_key_when_listing_stale_then_only_it_is_shown_and_status_warns(cli):
    import sqlite3

    cli.ok("set", "OLD_KEY", input="old-value-123456789")
    cli.ok("set", "NEW_KEY", input="new-value-123456789")
    with sqlite3.connect(cli.vault_db) as db:  # as if OLD_KEY's value were set 200 days ago
        row = db.execute("SELECT metadata FROM credentials WHERE name = 'OLD_KEY'").fetchone()
        meta = json.loads(row[0])
        meta["value_set_at"] -= 200 * 86400
        db.execute("UPDATE credentials SET metadata = ? WHERE name = 'OLD_KEY'", (json.dumps(meta),))

    stale = cli.ok("list", "--stale")
    assert "OLD_KEY" in stale.out and "NEW_KEY" not in stale.out and "STALE" in stale.out
    assert [i["name"] for i in cli.list_json()] == ["NEW_KEY", "OLD_KEY"]
    status = json.loads(cli.ok("status", "--json").out)
    assert status["lifetimes"]["stale"] == ["OLD_KEY"]
    assert any("OLD_KEY is older than 90 days" in w for w in status["warnings"])
