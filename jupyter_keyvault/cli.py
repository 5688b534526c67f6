"""`jupyter keyvault …`: manage the vault from a terminal.

Values are read without echo from a terminal, or from stdin when piped; never from
argv. Success exits 0; anything else prints one clear line on stderr and exits 1.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from jupyter_core.application import JupyterApp
from traitlets import Bool, Int, List, Unicode
from traitlets.config.loader import KVArgParseConfigLoader

from . import dotenv, providers
from ._version import __version__
from .settings import KeyVault
from .store import InvalidInput, VaultError
from .store.backup import export_backup, import_backup
from .store.masterkey import write_private_file


class CommandError(Exception):
    """A clear, one-line failure of a command."""


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


class _ArgLoader(KVArgParseConfigLoader):
    """Command-line mistakes are one line on stderr and exit 1, like every other error
    (argparse would print a usage block and exit 2; traitlets would ignore unknown options)."""

    class parser_class(KVArgParseConfigLoader.parser_class):  # type: ignore[name-defined,misc]
        def error(self, message):
            print(f"jupyter keyvault: error: {message}", file=sys.stderr)
            sys.exit(1)

    def _handle_unrecognized_alias(self, arg):
        self.parser.error(f"unknown option --{arg}")


class _OneLineErrors:
    def _create_loader(self, argv, aliases, flags, classes):
        return _ArgLoader(argv, aliases, flags, classes=classes, log=self.log, subcommands=self.subcommands)


class _Command(_OneLineErrors, JupyterApp, KeyVault):
    """Base of every subcommand: reads `c.KeyVault` from jupyter_server_config like the server."""

    version = __version__
    config_file_name = Unicode("jupyter_server_config")
    json_output = Bool(False, help="Print JSON instead of text.").tag(config=True)
    flags = {"json": ({"_Command": {"json_output": True}}, "Print JSON instead of text.")}
    aliases = {"owner": "KeyVault.owner", "vault-path": "KeyVault.vault_path"}
    min_args = max_args = 0
    usage = ""

    def start(self):
        try:
            if not self.min_args <= len(self.extra_args) <= self.max_args:
                raise CommandError(f"usage: jupyter keyvault {self.name.split()[-1]} {self.usage}".rstrip())
            code = self.run() or 0
        except (CommandError, VaultError, dotenv.DotenvError, ValueError) as exc:
            print(f"jupyter keyvault: error: {exc}", file=sys.stderr)
            self.exit(1)
        except OSError as exc:  # a file this command reads or writes itself (the store names its own)
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"jupyter keyvault: error: {where}{exc.strerror or exc}", file=sys.stderr)
            self.exit(1)
        except sqlite3.Error as exc:  # the store translates its own; never a traceback regardless
            print(f"jupyter keyvault: error: vault database error: {exc}", file=sys.stderr)
            self.exit(1)
        except KeyboardInterrupt:
            print("jupyter keyvault: interrupted; nothing changed", file=sys.stderr)
            self.exit(130)
        self.exit(code)

    def run(self) -> int | None:
        raise NotImplementedError

    def vault(self):
        if not hasattr(self, "_vault"):
            self._vault = self.open_vault()
        return self._vault

    def out(self, text: str = "") -> None:
        print(text, flush=True)

    def warn(self, text: str) -> None:
        print(f"jupyter keyvault: warning: {text}", file=sys.stderr, flush=True)


def read_secret(prompt: str, *, max_bytes: int) -> str:
    """From a terminal: no echo. From a pipe: all of stdin, one trailing newline dropped."""
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        raise CommandError("no value given: pipe it on stdin or run in a terminal")
    if stdin.isatty():
        value = getpass.getpass(prompt)
    else:
        raw = stdin.buffer.read(max_bytes + 3)
        if len(raw) > max_bytes + 2:
            raise CommandError(f"value on stdin is larger than {max_bytes} bytes")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError("value on stdin is not valid UTF-8 text") from None
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    if not value:
        raise CommandError("no value given (stdin was empty)")
    return value


def read_passphrase(confirm: bool) -> str:
    env = os.environ.get("KEYVAULT_BACKUP_PASSPHRASE")
    if env:
        return env
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass("Backup passphrase: ")
        if confirm and getpass.getpass("Repeat passphrase: ") != first:
            raise CommandError("passphrases do not match; nothing written")
        return first
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line.strip():
        raise CommandError("no backup passphrase: set KEYVAULT_BACKUP_PASSPHRASE or pipe it on stdin")
    return line.rstrip("\r\n")


class ListCommand(_Command):
    name = "jupyter keyvault list"
    description = ("List credentials (names, providers, timestamps, lifetimes; never values). --stale: only "
                   "those older than c.KeyVault.key_age_warning_days, or expired.")
    stale_only = Bool(False, help="Only credentials due for rotation: stale or expired.").tag(config=True)
    flags = {**_Command.flags, "stale": ({"ListCommand": {"stale_only": True}},
                                         "Only credentials older than key_age_warning_days, or expired.")}

    def run(self):
        from .store.pages import all_pages

        now, warn_after = time.time(), self.key_age_warning_days * 86400
        items = list(all_pages(self.vault(), self.owner))  # in pages: a hub listing never comes in one response
        if self.stale_only:
            items = [i for i in items if i.stale(now, warn_after) or i.expired(now)]
        if self.json_output:
            self.out(json.dumps([{**i.to_json(), "stale": i.stale(now, warn_after)} for i in items], indent=1))
            return
        if not items:
            self.out("No stale or expired credentials." if self.stale_only
                     else "No credentials yet. Add one with: jupyter keyvault set OPENAI_API_KEY")
            return
        rows = [("NAME", "PROVIDER", "TYPE", "SOURCE", "UPDATED", "LAST USED", "AGE", "LIFETIME")]
        rows += [(i.name, i.provider or "-", i.type, i.source, _fmt_time(i.updated_at if i.source == "vault" else None),
                  _fmt_time(i.last_used_at), f"{int((now - i.value_created_at) // 86400)}d" if i.source == "vault"
                  else "-", _lifetime(i, now, warn_after)) for i in items]
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        for r in rows:
            self.out("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _lifetime(info, now: float, warn_after: float) -> str:
    parts = ["session"] if info.session else []
    if info.expired(now):
        parts.append("EXPIRED")
    elif info.expires_at is not None:
        parts.append(f"expires {_fmt_time(info.expires_at)}")
    if info.stale(now, warn_after):
        parts.append("STALE: rotate")
    return ", ".join(parts) or "-"


SESSION_NOT_HERE = ("--session: a session-only value lives in a running Jupyter server's memory, and this command "
                    "ends at once; store it from the Key Vault sidebar, `%keyvault set --session NAME` or REST "
                    "PUT {\"session\": true}. Nothing was stored.")


class SetCommand(_Command):
    name = "jupyter keyvault set"
    description = "Store a credential. The value is read without echo, or from stdin when piped."
    usage = "NAME [--provider P] [--type api_key|oauth2|custom|oauth_client_secret] [--expires 8h|7d|2026-12-24]"
    min_args = max_args = 1
    provider = Unicode(None, allow_none=True, help="Provider id (openai, anthropic, …).").tag(config=True)
    credential_type = Unicode("api_key", help="Credential type.").tag(config=True)
    expires = Unicode(None, allow_none=True, help="When it expires: a duration (90m, 8h, 7d, 2w) or an ISO 8601 "
                      "date or time (2026-12-24, UTC). Expired credentials are refused, then destroyed.",
                      ).tag(config=True)
    session = Bool(False, help="Refused here (see SESSION_NOT_HERE).").tag(config=True)
    aliases = {**_Command.aliases, "provider": "SetCommand.provider", "type": "SetCommand.credential_type",
               "expires": "SetCommand.expires"}
    flags = {**_Command.flags, "session": ({"SetCommand": {"session": True}},
                                           "Session-only values are set in a running server, not here.")}

    def run(self):
        from .store.model import parse_expiry, validate_name

        if self.session:
            raise CommandError(SESSION_NOT_HERE)
        name = validate_name(self.extra_args[0])
        expires_at = parse_expiry(self.expires, time.time()) if self.expires is not None else None
        provider = self.provider
        if provider is not None:
            providers.get_provider(provider)
        vault = self.vault()  # fail on a locked vault before asking for the value
        value = read_secret(f"Value for {name} (input hidden): ", max_bytes=self.max_value_bytes)
        if provider is None:
            guess = providers.provider_for_env_var(name)
            provider = guess.id if guess else providers.detect_provider(value.strip())
        if self.credential_type == "api_key":
            for warning in providers.check_key_format(provider, value):
                self.warn(warning)
        _, created = vault.set(self.owner, name, value, provider=provider, type=self.credential_type,
                               expires_at=expires_at)
        self.out(f"{'Stored' if created else 'Replaced'} {name}" + (f" ({provider})" if provider else "")
                 + (f", expires {_fmt_time(expires_at)}" if expires_at is not None else ""))


class DeleteCommand(_Command):
    name = "jupyter keyvault delete"
    description = "Delete a credential."
    usage = "NAME"
    min_args = max_args = 1

    def run(self):
        from .store.model import validate_name

        name = validate_name(self.extra_args[0])
        vault = self.vault()
        revocation = self._revoke(vault, name)
        vault.delete(self.owner, name)
        self.out(f"Deleted {name}")
        if revocation is not None and revocation["ok"]:
            self.out(f"Revoked at the provider: {revocation['detail']}")
        elif revocation is not None:  # deleted here all the same; the tokens may still work there
            self.warn(f"{name}: tokens not revoked at the provider: {revocation['detail']}")

    def _revoke(self, vault, name: str) -> dict | None:
        """An OAuth credential's tokens are revoked at its provider first (RFC 7009), where configured."""
        import asyncio

        from .oauth import OAUTH_TYPE, OAuthManager, build_providers
        from .store import NotFound

        try:
            info = vault.info(self.owner, name)
        except NotFound:
            return None  # the delete says so
        if info.type != OAUTH_TYPE:
            return None
        manager = OAuthManager(vault, self.owner, build_providers(self.oauth_providers), timeout=self.test_timeout)
        return asyncio.run(manager.revoke(name, dict(info.metadata), actor=self.owner))


class TestCommand(_Command):
    name = "jupyter keyvault test"
    description = "Check a credential with the provider's cheap test request."
    usage = "NAME"
    min_args = max_args = 1

    def run(self):
        from .store.model import validate_name

        name = validate_name(self.extra_args[0])
        vault = self.vault()
        try:
            resolved = vault.resolve(self.owner, name, purpose="test")
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        pid = resolved.provider or getattr(providers.provider_for_env_var(name), "id", None)
        if pid is None:
            raise CommandError(f"{name} has no provider; set it again with --provider to test it")
        provider = providers.get_provider(pid)
        result = providers.run_key_test(provider, resolved.value, self.base_url_for(provider), timeout=self.test_timeout)
        vault.audit(self.owner, "test", name, "ok" if result.ok else "failed")
        if self.json_output:
            self.out(json.dumps(result.to_json()))
        elif result.ok:
            self.out(f"ok: {result.detail}")
        if not result.ok:
            print(f"jupyter keyvault: test failed: {result.error}", file=sys.stderr)
        return 0 if result.ok else 1


class StatusCommand(_Command):
    name = "jupyter keyvault status"
    description = "Show how the vault is protected (never the key)."

    def run(self):
        from .isolation import isolation_status

        status = {**self.vault().status(with_paths=True), "owner": self.owner, "version": __version__,
                  "isolation": isolation_status(self.isolate_kernels), "allow_direct_access": self.allow_direct_access}
        status["lifetimes"] = self._lifetimes()
        status["warnings"] += [f"{n} has expired: it is refused until it gets a new value" for n in
                               status["lifetimes"]["expired"]]
        status["warnings"] += [f"{n} is older than {self.key_age_warning_days} days: rotate it" for n in
                               status["lifetimes"]["stale"]]
        if self.json_output:
            self.out(json.dumps(status, indent=1))
            return
        prot = status["protection"]
        self.out(f"Vault:       {status['location']} ({status['backend']})")
        self.out(f"Protection:  master key from {prot['source']}" + ("" if prot["strong"] else " (WEAK)"))
        self.out(f"Credentials: {'unknown (see below)' if status['credentials'] is None else status['credentials']}")
        integrity = status.get("storage", {}).get("integrity", {})
        if integrity.get("ok") is not None:
            self.out(f"Integrity:   {'ok' if integrity['ok'] else 'FAILED: ' + integrity['detail']}"
                     f" (quick_check {integrity['seconds'] * 1000:.2f} ms)")
        if not status.get("storage", {}).get("writable", True):
            self.out("Writes:      REFUSED until the problem below is fixed")
        isolation = status["isolation"]
        self.out(f"Kernels:     {'isolated' if isolation['enforced'] else 'NOT isolated'} "
                 f"(isolate_kernels = {isolation['mode']!r}): {isolation['detail']}")
        self.out(f"Direct mode: {'allowed' if status['allow_direct_access'] else 'off (proxy mode only)'}")
        for w in status["warnings"]:
            self.out(f"Warning:     {w}")


    def _lifetimes(self) -> dict:
        now, warn_after = time.time(), self.key_age_warning_days * 86400
        try:
            items = [i for i in self.vault().list(self.owner) if i.source == "vault"]
        except VaultError:  # a damaged vault is explained by the status itself
            items = []
        return {"expired": [i.name for i in items if i.expired(now)],
                "stale": [i.name for i in items if i.stale(now, warn_after)],
                "key_age_warning_days": self.key_age_warning_days}


class RotateCommand(_Command):
    name = "jupyter keyvault rotate-master-key"
    description = "Re-wrap every data key under a new master key (KEYVAULT_NEW_MASTER_KEY for env-keyed vaults)."

    def run(self):
        vault = self.vault()
        count = vault.rotate_master_key(actor=self.owner)
        self.out(f"Rotated the master key: {count} data keys re-wrapped.")
        if vault.master.source == "env":
            self.out("Now set KEYVAULT_MASTER_KEY to the new key (the old one no longer opens the vault).")


class ImportEnvCommand(_Command):
    name = "jupyter keyvault import-env"
    description = "Import secrets from a .env file; --remove deletes the imported plaintext lines."
    usage = "FILE [--remove] [--all]"
    min_args = max_args = 1
    remove = Bool(False, help="Remove imported lines from the file.").tag(config=True)
    import_all = Bool(False, help="Import every entry, not only secret-looking ones.").tag(config=True)
    flags = {
        **_Command.flags,
        "remove": ({"ImportEnvCommand": {"remove": True}}, "Remove imported lines from the file."),
        "all": ({"ImportEnvCommand": {"import_all": True}}, "Import every entry."),
    }

    def run(self):
        from .store.model import validate_name, validate_value

        path = Path(self.extra_args[0])
        try:
            text = path.read_text("utf-8-sig")  # editors on Windows may add a byte-order mark
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path}: cannot read ({exc.__class__.__name__})") from None
        entries = dotenv.parse(text)
        chosen = []
        for entry in entries:
            provider = providers.provider_for_env_var(entry.name)
            pid = provider.id if provider else providers.detect_provider(entry.value)
            if not (self.import_all or pid or dotenv.SECRET_NAME.search(entry.name)):
                self.out(f"skipped {entry.name}: does not look like a secret (use --all)")
                continue
            if not entry.value.strip():
                self.out(f"skipped {entry.name}: empty placeholder")
                continue
            try:
                validate_name(entry.name)
                validate_value(entry.value, max_bytes=self.max_value_bytes)
                for warning in providers.check_key_format(pid, entry.value):
                    self.warn(f"{entry.name}: {warning}")
            except InvalidInput as exc:  # say which entry; import nothing
                raise CommandError(f"line {entry.line_index + 1} ({entry.name}): {exc}; nothing imported") from None
            chosen.append((entry, pid))
        if not chosen:
            self.out("Nothing to import.")
            return
        vault = self.vault()
        for entry, pid in chosen:
            vault.set(self.owner, entry.name, entry.value, provider=pid, action="import")
            self.out(f"imported {entry.name}" + (f" ({pid})" if pid else ""))
        if self.remove:
            target = path.resolve()  # rewrite the file a symlink points to, not replace the link
            mode = target.stat().st_mode & 0o777
            write_private_file(target, dotenv.remove_lines(text, {e.line_index for e, _ in chosen}).encode("utf-8"))
            os.chmod(target, mode)
            self.out(f"removed {len(chosen)} plaintext line(s) from {path}")
        else:
            self.out(f"The values are still in plaintext in {path}: re-run with --remove, or delete them.")


class ExportCommand(_Command):
    name = "jupyter keyvault export"
    description = "Write an encrypted backup (passphrase from KEYVAULT_BACKUP_PASSPHRASE, prompt, or stdin)."
    usage = "FILE"
    min_args = max_args = 1
    force = Bool(False, help="Overwrite an existing file.").tag(config=True)
    flags = {**_Command.flags, "force": ({"ExportCommand": {"force": True}}, "Overwrite an existing file.")}

    def run(self):
        path = Path(self.extra_args[0])
        if path.exists() and not self.force:
            raise CommandError(f"{path} exists; use --force to overwrite")
        vault = self.vault()
        data = export_backup(vault, self.owner, read_passphrase(confirm=True))
        try:
            write_private_file(path.absolute(), data)
        except OSError as exc:
            raise CommandError(f"{path}: cannot write ({exc.strerror})") from None
        self.out(f"Wrote an encrypted backup of {json.loads(data)['count']} credential(s) to {path}")


class BackupCommand(_Command):
    name = "jupyter keyvault backup"
    description = ("Copy the whole vault database (still encrypted; opens with the same master key), "
                   "including writes not yet checkpointed out of vault.db-wal.")
    usage = "FILE [--force]"
    min_args = max_args = 1
    force = Bool(False, help="Overwrite an existing file.").tag(config=True)
    flags = {**_Command.flags, "force": ({"BackupCommand": {"force": True}}, "Overwrite an existing file.")}

    def run(self):
        path = Path(self.extra_args[0])
        if path.exists() and not self.force:
            raise CommandError(f"{path} exists; use --force to overwrite")
        if path.absolute() == Path(self.vault_path).absolute():
            raise CommandError(f"{path} is the vault itself; choose another file")
        size = self.vault().backup_database(path)
        self.out(f"Wrote a copy of the vault ({size} bytes) to {path}. It needs the same master key; "
                 "restore it by replacing the vault file (and removing its -wal and -shm) while no server runs.")


class ImportCommand(_Command):
    name = "jupyter keyvault import"
    description = "Restore an encrypted backup; existing names are kept unless --overwrite."
    usage = "FILE [--overwrite]"
    min_args = max_args = 1
    overwrite = Bool(False, help="Replace credentials that already exist.").tag(config=True)
    flags = {**_Command.flags, "overwrite": ({"ImportCommand": {"overwrite": True}}, "Replace existing credentials.")}

    def run(self):
        path = Path(self.extra_args[0])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"{path}: cannot read ({exc.strerror})") from None
        imported, skipped = import_backup(self.vault(), self.owner, data, read_passphrase(confirm=False),
                                          overwrite=self.overwrite)
        for name in imported:
            self.out(f"imported {name}")
        for name in skipped:
            self.out(f"skipped {name}: already exists (use --overwrite)")


class AuditCommand(_Command):
    name = "jupyter keyvault audit"
    description = "Show the audit log (newest first; never values)."
    limit = Int(50, help="How many events.").tag(config=True)
    aliases = {**_Command.aliases, "limit": "AuditCommand.limit"}

    def run(self):
        events = self.vault().audit_events(self.owner, self.limit)
        if self.json_output:
            self.out(json.dumps([e.to_json() for e in events], indent=1))
            return
        for e in events:
            self.out(f"{_fmt_time(e.at)}  {e.actor:<12} {e.action:<8} {e.target or '-':<24} {e.outcome}"
                     + (f"  {e.detail}" if e.detail else ""))


SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__", ".ipynb_checkpoints", ".tox"}
MAX_SCAN_BYTES = 50 * 1024 * 1024


class ScanCommand(_Command):
    name = "jupyter keyvault scan"
    description = "Find secrets in notebooks and files (outputs, sources, metadata); --fix redacts them in place."
    usage = "PATH… [--fix] [--no-vault]"
    min_args, max_args = 1, 10_000
    fix = Bool(False, help="Redact what is found, in place (atomic, file mode kept).").tag(config=True)
    use_vault = Bool(True, help="Also look for the exact values stored in your vault.").tag(config=True)
    flags = {
        **_Command.flags,
        "fix": ({"ScanCommand": {"fix": True}}, "Redact what is found, in place."),
        "no-vault": ({"ScanCommand": {"use_vault": False}}, "Patterns only; do not open the vault."),
    }

    def scrubber(self):
        from .scrub import Scrubber

        scrubber = Scrubber(extra_patterns=self.extra_secret_patterns)
        if self.use_vault and Path(self.vault_path).exists():  # never create a vault just to scan
            try:
                vault = self.vault()
                for info in vault.list(self.owner, include_env=False):
                    scrubber.add_known(vault.get_value(self.owner, info.name, purpose="scan", touch=False), info.name)
            except VaultError as exc:
                self.warn(f"vault not used ({exc}); scanning for provider patterns only")
        return scrubber

    def files(self):
        for arg in self.extra_args:
            root = Path(arg)
            if not root.exists():
                raise CommandError(f"{root}: no such file or directory")
            if root.is_file():
                yield root
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
                for filename in sorted(filenames):
                    yield Path(dirpath) / filename

    def run(self):
        from .nbscrub import scrub_notebook

        scrubber = self.scrubber()
        found_total = fixed_files = 0
        for path in self.files():
            try:
                if path.is_symlink() or path.stat().st_size > MAX_SCAN_BYTES:
                    continue
                raw = path.read_bytes()
            except OSError as exc:
                self.warn(f"{path}: cannot read ({exc.strerror})")
                continue
            if b"\0" in raw[:8192]:
                continue  # binary
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if path.suffix == ".ipynb":
                try:
                    nb = json.loads(text)
                except ValueError:
                    nb = None
                if isinstance(nb, dict) and "cells" in nb:
                    report = scrub_notebook(nb, scrubber, sources="redact" if self.fix else "warn")
                    if report.hits:
                        found_total += report.hits
                        for line in report.describe():
                            self.out(f"{path}: {line}")
                        if self.fix:
                            self._rewrite(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
                            fixed_files += 1
                    continue
            hits = 0
            for lineno, line in enumerate(text.splitlines(), 1):
                labels = sorted({label for *_, label in scrubber.find(line)})
                if labels:
                    hits += 1
                    self.out(f"{path}:{lineno}: {', '.join(labels)}")
            if hits:
                found_total += hits
                if self.fix:
                    self._rewrite(path, scrubber.scrub(text))
                    fixed_files += 1
        if not found_total:
            self.out("No secrets found.")
            return 0
        if self.fix:
            self.out(f"Redacted secrets in {fixed_files} file(s). Rotate any key that was committed or shared.")
            return 0
        print(f"jupyter keyvault: error: found {found_total} secret(s); run with --fix to redact them",
              file=sys.stderr)
        return 1

    def _rewrite(self, path: Path, text: str) -> None:
        target = path.resolve()
        mode = target.stat().st_mode & 0o777
        write_private_file(target, text.encode("utf-8"))
        os.chmod(target, mode)


class TokenCommand(_Command):
    name = "jupyter keyvault token"
    description = "Vault access tokens for tools outside notebooks: token create NAME | list | delete ID."
    usage = "create NAME [--credential C ...] [--expires 30d] | list [--json] | delete ID"
    min_args, max_args = 1, 2
    credentials = List(Unicode(), help="Credential names the token may use (repeat the option).").tag(config=True)
    expires = Unicode("30d", help="Lifetime: e.g. 30d, 2w, 12h.").tag(config=True)
    aliases = {**_Command.aliases, "credential": "TokenCommand.credentials", "expires": "TokenCommand.expires"}

    def run(self):
        from .store.tokens import TokenStore, parse_expiry

        action, rest = self.extra_args[0], self.extra_args[1:]
        tokens = TokenStore(self.vault())
        if action == "create" and len(rest) == 1:
            token, info = tokens.create(self.owner, rest[0], self.credentials, parse_expiry(self.expires))
            if self.json_output:
                self.out(json.dumps({"token": token, **info.to_json()}))
                return
            self.out(token)
            print(f"Created token {info.id} ({info.name}) for {', '.join(info.credentials)}, expires "
                  f"{_fmt_time(info.expires_at)}. It is shown only now.", file=sys.stderr)
        elif action == "list" and not rest:
            items = tokens.list(self.owner)
            if self.json_output:
                self.out(json.dumps([t.to_json() for t in items], indent=1))
                return
            rows = [("ID", "NAME", "CREDENTIALS", "CREATED", "LAST USED", "EXPIRES")]
            rows += [(t.id, t.name, ",".join(t.credentials), _fmt_time(t.created_at), _fmt_time(t.last_used_at),
                      _fmt_time(t.expires_at)) for t in items]
            widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
            for r in rows:
                self.out("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        elif action == "delete" and len(rest) == 1:
            tokens.delete(self.owner, rest[0].strip())
            self.out(f"Deleted token {rest[0].strip()}")
        else:
            raise CommandError(f"usage: jupyter keyvault token {self.usage}")


SUBCOMMANDS = {
    "list": ListCommand,
    "set": SetCommand,
    "delete": DeleteCommand,
    "test": TestCommand,
    "status": StatusCommand,
    "rotate-master-key": RotateCommand,
    "import-env": ImportEnvCommand,
    "export": ExportCommand,
    "backup": BackupCommand,
    "import": ImportCommand,
    "audit": AuditCommand,
    "scan": ScanCommand,
    "token": TokenCommand,
}


class KeyVaultCLI(_OneLineErrors, JupyterApp):
    name = "jupyter keyvault"
    version = __version__
    description = "Manage jupyter-keyvault: encrypted API keys for Jupyter."
    subcommands = {name: (cls, cls.description) for name, cls in SUBCOMMANDS.items()}

    def start(self):
        if self.subapp is None and self.extra_args:
            print(f"jupyter keyvault: error: unknown command {self.extra_args[0]!r}; choose one of: "
                  + ", ".join(SUBCOMMANDS), file=sys.stderr)
            self.exit(1)
        if self.subapp is None:
            print("usage: jupyter keyvault {" + "|".join(SUBCOMMANDS) + "} …  (--help for details)", file=sys.stderr)
            self.exit(2)
        return super().start()


main = launch_new_instance = KeyVaultCLI.launch_instance

if __name__ == "__main__":
    main()
