"""`%load_ext keyvault`: puts `keyvault` in the namespace and adds the `%keyvault` line magic.

    %keyvault list
    %keyvault set NAME [--provider P] [--session] [--expires 8h|2026-12-24]
                                          (prompts for the value, hidden; --session: kept in the
                                          server's memory only, gone when it stops)
    %keyvault test NAME
    %keyvault delete NAME
    %keyvault status
    %keyvault env NAME... [--direct]      (export for env-reading libraries until `%keyvault env --off`)
    %keyvault env --off [NAME...]
"""

from __future__ import annotations

import shlex
import sys

from .. import providers
from . import api
from .errors import KeyVaultError

USAGE = ("usage: %keyvault list | set NAME [--provider P] [--session] [--expires 8h|2026-12-24] | test NAME | "
         "delete NAME | status | env NAME... [--direct] | env --off [NAME...]")


class _Usage(Exception):
    pass


def _err(message: str) -> None:
    print(f"keyvault: {message}", file=sys.stderr)


def keyvault_magic(line: str = "") -> None:
    """%keyvault list | set NAME [--provider P] [--session] [--expires WHEN] | test NAME | delete NAME | status |
    env NAME... [--direct] | env --off [NAME...]"""
    try:
        args = shlex.split(line or "")
    except ValueError as exc:
        return _err(f"{exc}\n{USAGE}")
    if not args or args[0] in ("help", "-h", "--help"):
        print(USAGE)
        return None
    command, rest = args[0], args[1:]
    try:
        if command == "list":
            _expect(rest, 0)
            _print_list(api.list_credentials())
        elif command == "set":
            name, provider, session, expires = _parse_set(rest)
            result = api.set_credential(name, provider=provider, session=session, expires=expires)
            for warning in result.get("warnings") or ():
                _err(f"warning: {warning}")
            lifetime = " for this session only" if session else ""
            lifetime += f", expires {result['expires_at']}" if result.get("expires_at") else ""
            print(f"Stored {name}" + (f" ({result['provider']})" if result.get("provider") else "") + f"{lifetime}.")
            refresh_history_fingerprints(_shell())
        elif command == "test":
            _expect(rest, 1)
            result = api.test_credential(rest[0])
            if result.get("ok"):
                print(f"{rest[0]} works: {result.get('detail') or 'accepted'}")
            else:
                _err(f"{rest[0]} failed: {result.get('error') or 'rejected'}")
        elif command == "delete":
            _expect(rest, 1)
            api.delete_credential(rest[0])
            print(f"Deleted {rest[0]}.")
        elif command == "status":
            _expect(rest, 0)
            _print_status(api.status())
        elif command == "env":
            _env(rest)
        else:
            raise _Usage(f"unknown command {command!r}")
    except _Usage as exc:
        _err(f"{exc}\n{USAGE}")
    except (KeyVaultError, ValueError, TypeError) as exc:
        _err(f"error: {exc}")
    return None


def _env(rest: list[str]) -> None:
    from . import envexport

    options = {item for item in rest if item.startswith("-")}
    names = tuple(item for item in rest if not item.startswith("-"))
    if options - {"--off", "--direct"} or options == {"--off", "--direct"}:
        raise _Usage(f"unknown option(s) {', '.join(sorted(options - {'--off', '--direct'})) or '--off with --direct'}")
    if "--off" in options:
        ended = envexport.deactivate(names)
        print(f"Ended the export of {', '.join(ended)}." if ended else "Nothing was exported by %keyvault env.")
        return
    if not names:
        active = envexport.active()
        print(f"Exported by %keyvault env: {', '.join(active)}" if active else
              "Nothing exported. %keyvault env NAME... exports credentials for libraries that read the environment.")
        return
    export = envexport.activate(names, "direct" if "--direct" in options else "proxy")
    proxied = [n for n in names if n in export.proxied]
    values = [n for n in names if n not in export.proxied]
    if proxied:
        bases = sorted(set(export.variables) - set(names))
        print(f"Exported {', '.join(proxied)} as kernel-bound tokens for the server's proxy"
              + (f" ({', '.join(bases)} point at it)" if bases else "") + "; the keys stay on the server.")
    if values:
        print(f"Exported the values of {', '.join(values)}.")
    print("End with %keyvault env --off")


def _expect(rest: list[str], count: int) -> None:
    if len(rest) != count:
        raise _Usage("wrong number of arguments")


def _parse_set(rest: list[str]) -> tuple[str, str | None, bool, str | None]:
    name = provider = expires = None
    session = False
    items = iter(rest)
    for item in items:
        if item == "--provider":
            provider = next(items, None)
            if provider is None:
                raise _Usage("--provider needs a value")
        elif item.startswith("--provider="):
            provider = item.split("=", 1)[1]
        elif item == "--session":
            session = True
        elif item == "--expires":
            expires = next(items, None)
            if expires is None:
                raise _Usage("--expires needs a value: a duration (8h, 7d) or a date (2026-12-24)")
        elif item.startswith("--expires="):
            expires = item.split("=", 1)[1]
        elif item.startswith("-"):
            raise _Usage(f"unknown option {item}; the value is prompted for, never given on the line")
        elif name is None:
            name = item
        else:
            raise _Usage("set takes one NAME; the value is prompted for, never given on the line")
    if name is None:
        raise _Usage("set needs a NAME")
    if provider is not None and provider not in providers.PROVIDERS:
        raise _Usage(f"unknown provider {provider!r}; known: {', '.join(providers.PROVIDERS)}")
    return name, provider, session, expires


def _print_list(items: list[dict]) -> None:
    if not items:
        print("No credentials stored. Add one with %keyvault set NAME")
        return
    rows = [("NAME", "PROVIDER", "SOURCE", "UPDATED", "LIFETIME")]
    for item in items:
        rows.append((str(item.get("name", "")), str(item.get("provider") or "-"), str(item.get("source") or "-"),
                     str(item.get("updated_at") or "-"), lifetime_label(item)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def lifetime_label(item: dict) -> str:
    """session / EXPIRED / expires … / stale (N days): what a listing says about a credential's lifetime."""
    parts = []
    if item.get("lifetime") == "session":
        parts.append("session")
    if item.get("expired"):
        parts.append("EXPIRED")
    elif item.get("expires_at"):
        parts.append(f"expires {item['expires_at']}")
    if item.get("stale"):
        parts.append(f"stale ({item.get('age_days')} days)")
    return ", ".join(parts) or "-"


def _print_status(st: dict) -> None:
    if st.get("mode") == "server":
        print(f"mode: server ({st.get('server_url')}, kernel {st.get('kernel_id')})")
        if st.get("proxy_url") and st.get("proxy_url") != st.get("server_url"):
            print(f"proxy: {st.get('proxy_url')} (the server's loopback lane)")
    else:
        print(f"mode: local ({st.get('reason') or 'no Jupyter server'})")
        print(f"vault: {st.get('vault_path')}")
    if not st.get("ok", True):
        print(f"error: {st.get('error')}")
    protection = st.get("protection") or {}
    if protection:
        strength = "strong" if protection.get("strong") else "WEAK"
        print(f"protection: {protection.get('source')} ({strength}) {protection.get('detail') or ''}".rstrip())
    if "allow_direct_access" in st:
        print(f"direct access: {'allowed' if st['allow_direct_access'] else 'disabled'}")
    if st.get("notebook_path"):
        print(f"notebook: {st['notebook_path']}")
    for warning in st.get("warnings") or ():
        print(f"warning: {warning}")


def load_ipython_extension(ip, module=None) -> None:
    """Register `%keyvault` and the scrubbing hooks. `module` is what the name `keyvault` means in
    the user's namespace: the public `keyvault` module passes itself (this package never imports it)."""
    if module is not None:
        ip.push({"keyvault": module})
    ip.register_magic_function(keyvault_magic, magic_kind="line", magic_name="keyvault")
    # Scrub every message the kernel sends and what IPython's history keeps (outputs.py, history.py).
    from . import history, outputs

    for hooks in (outputs, history):
        try:
            hooks.install(ip)
        except Exception as exc:  # noqa: BLE001 - the extension must still load; say so, loudly
            _err(f"warning: output scrubbing ({hooks.__name__.rsplit('.', 1)[-1]}) is not active: "
                 f"{type(exc).__name__}: {exc}")
    refresh_history_fingerprints(ip)


def refresh_history_fingerprints(ip) -> None:
    """Let the history hook redact stored values this kernel was never given (a value pasted into a
    cell): the server sends salted hashes of them, never the values. Only in server mode."""
    from . import history
    from .mode import current_backend

    if ip is None:
        return
    backend = current_backend()
    fetch = getattr(backend, "history_fingerprints", None)
    if fetch is None:  # local mode: the kernel holds the vault itself, its scrubber knows the values
        return
    try:
        history.set_fingerprints(ip, fetch())
    except (KeyVaultError, ValueError, RuntimeError) as exc:
        _err(f"warning: history cannot redact values this kernel never fetched: {exc}")


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - magics only run in IPython
        return None
    return get_ipython()


def unload_ipython_extension(ip, module=None) -> None:
    from . import history, outputs

    for hooks in (outputs, history):
        try:
            hooks.uninstall(ip)
        except Exception as exc:  # noqa: BLE001
            _err(f"warning: could not remove the {hooks.__name__.rsplit('.', 1)[-1]} hook: {type(exc).__name__}")
    ip.magics_manager.magics["line"].pop("keyvault", None)
    if module is not None and ip.user_ns.get("keyvault") is module:
        ip.user_ns.pop("keyvault", None)
