"""`python -m jupyter_keyvault.hub admin ...`: shared keys, grants, limits, usage and audit over the service API.

Authenticates with a JupyterHub admin's API token ($JUPYTERHUB_API_TOKEN, or --token-file).
Values are read without echo from a terminal, or from stdin when piped; never from argv.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.request

from ..providers import secret_safe_opener


def _request(args, method: str, path: str, body=None):
    url = args.url.rstrip("/") + "/" + path.lstrip("/")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={  # noqa: S310 - http(s) URLs only, checked by validate_base_url / the service URL
        "Authorization": f"token {args.token}", "Content-Type": "application/json"})
    try:
        # Carries an admin token and, for `set`, a shared key: never via env proxies or a redirect.
        with secret_safe_opener().open(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw).get("message") or raw.decode()
        except ValueError:
            message = raw.decode("utf-8", "replace")
        raise SystemExit(f"error: {exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"error: cannot reach {url}: {exc.reason}") from None


def _subject(text: str) -> tuple[str, str]:
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("group", "user") or not name:
        raise SystemExit("error: give the grantee as group:NAME or user:NAME")
    return kind, name


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"Value for shared key {name}: ")
    else:
        value = sys.stdin.read().strip()
    if not value:
        raise SystemExit("error: empty value; nothing stored")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jupyter_keyvault.hub admin", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("KEYVAULT_HUB_URL", ""),
                        help="the service's URL, e.g. https://hub.example.org/services/keyvault/ ($KEYVAULT_HUB_URL)")
    parser.add_argument("--token-file", help="read the admin's JupyterHub API token from this file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="shared keys with their grants and limits")
    p = sub.add_parser("set", help="add or replace a shared key (value from the terminal or stdin)")
    p.add_argument("name")
    p.add_argument("--provider")
    p = sub.add_parser("delete", help="delete a shared key and its grants")
    p.add_argument("name")
    p = sub.add_parser("test", help="run the provider's test request with a shared key")
    p.add_argument("name")
    for cmd in ("grant", "revoke"):
        p = sub.add_parser(cmd, help=f"{cmd} a shared key to/from group:NAME or user:NAME")
        p.add_argument("name")
        p.add_argument("grantee")
    p = sub.add_parser("limits", help="set limits of user:NAME (user:* = default) or shared:NAME")
    p.add_argument("subject")
    p.add_argument("--rate-per-minute", type=float)
    p.add_argument("--requests-per-day", type=int)
    p.add_argument("--tokens-per-day", type=int)
    p = sub.add_parser("usage", help="usage counters of every user (or --user)")
    p.add_argument("--user")
    sub.add_parser("audit", help="the latest audit events")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.url:
        raise SystemExit("error: give the service URL with --url or $KEYVAULT_HUB_URL")
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as fh:
            args.token = fh.read().strip()
    else:
        args.token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not args.token:
        raise SystemExit("error: no token: set JUPYTERHUB_API_TOKEN to an admin's token or use --token-file")
    out = None
    if args.command == "list":
        out = _request(args, "GET", "api/admin/shared")[1]
    elif args.command == "set":
        body = {"value": _read_value(args.name)}
        if args.provider:
            body["provider"] = args.provider
        status, _ = _request(args, "PUT", f"api/admin/shared/{args.name}", body)
        print(f"{'added' if status == 201 else 'replaced'} shared key {args.name}")
    elif args.command == "delete":
        _request(args, "DELETE", f"api/admin/shared/{args.name}")
        print(f"deleted shared key {args.name}")
    elif args.command == "test":
        out = _request(args, "POST", f"api/admin/shared/{args.name}/test")[1]
    elif args.command in ("grant", "revoke"):
        kind, who = _subject(args.grantee)
        _request(args, "PUT" if args.command == "grant" else "DELETE",
                 f"api/admin/shared/{args.name}/grants/{kind}/{who}")
        print(f"{args.command}ed {args.name} {'to' if args.command == 'grant' else 'from'} {kind} {who}")
    elif args.command == "limits":
        kind, _, who = args.subject.partition(":")
        if kind not in ("user", "shared") or not who:
            raise SystemExit("error: give user:NAME, user:* or shared:NAME")
        out = _request(args, "PUT", f"api/admin/limits/{kind}/{who}", {
            "rate_per_minute": args.rate_per_minute, "requests_per_day": args.requests_per_day,
            "tokens_per_day": args.tokens_per_day})[1]
    elif args.command == "usage":
        out = _request(args, "GET", "api/admin/usage" + (f"?user={args.user}" if args.user else ""))[1]
    elif args.command == "audit":
        out = _request(args, "GET", "api/admin/audit")[1]
    if out is not None:
        print(json.dumps(out, indent=2))
    return 0
