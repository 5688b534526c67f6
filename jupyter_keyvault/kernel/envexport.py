"""`keyvault.env(*names)` and `%keyvault env`: credentials as environment variables, for libraries
that read them there (LangChain, LiteLLM, CrewAI, DSPy, plain `httpx`/`requests` code...).

Proxy mode (a kernel of a keyvault-enabled server, the default): for a provider credential the
key variable gets a short-lived token bound to this kernel and this credential, and the provider's
base-URL variable (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, ...) the server's proxy, so the library
talks to the proxy and the key never enters the kernel. The token is renewed in the background
while the block (or the magic's export) is active, revoked on exit, and dies with the kernel.
A credential without a provider (a database password, a W&B key) has no proxy: its value is
exported, as in direct mode, if the server allows direct access to it.

Direct mode (and local mode, no server): the values themselves, plus the base URL the server
sends that provider to (a gateway, an OpenAI-compatible endpoint).

On exit every variable gets its previous value back; a value we exported is first overwritten in
place in the C environment (`envguard`), so it does not linger in the process's memory.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from .. import envguard, providers
from .clients import check_mode
from .errors import KeyVaultError
from .httpauth import provider_of
from .mode import current_backend, valid_name
from .secret import Secret


@dataclass
class Export:
    """What one `env()` call put in the environment."""

    variables: dict[str, str] = field(default_factory=dict)  # name -> exported value
    secrets: dict[str, Secret] = field(default_factory=dict)  # what the `with` statement yields
    tokens: list[tuple[Any, str]] = field(default_factory=list)  # (backend, token id) to renew, then revoke
    proxied: list[str] = field(default_factory=list)  # credentials behind the proxy (no value here)
    lifetime: float = 0.0  # the shortest token lifetime the server granted, seconds


def plan(names: tuple[str, ...], mode: str = "proxy") -> Export:
    """Fetch everything first (values, or tokens), so a missing name changes nothing."""
    check_mode(mode)
    if not names:
        raise TypeError("keyvault.env() needs the names to export, e.g. keyvault.env('OPENAI_API_KEY')")
    names = tuple(dict.fromkeys(valid_name(n) for n in names))
    backend = current_backend()
    export = Export()
    try:
        for name in names:
            provider = provider_of(backend, name)
            if backend.mode == "server" and mode == "proxy" and provider is not None and provider.needs_key:
                grant = backend.issue_env_token(name)
                export.tokens.append((backend, grant["id"]))
                granted = float(grant.get("expires_in") or 600)
                export.lifetime = min(export.lifetime, granted) if export.lifetime else granted
                export.proxied.append(name)
                export.variables[name] = grant["token"]
                export.secrets[name] = Secret(name, grant["token"])
                if provider.base_url_env:
                    url = backend.proxy_root(provider) if provider.sdk == "azure" else backend.proxy_url(provider)
                    export.variables[provider.base_url_env] = url.rstrip("/")
                continue
            found = backend.reveal(name)
            export.variables[name] = found["value"]
            export.secrets[name] = Secret(name, found["value"])
            base_url = found.get("base_url") or (_local_base_url(backend, provider) if provider else None)
            if provider is not None and provider.base_url_env and base_url:
                export.variables[provider.base_url_env] = base_url
    except BaseException:
        _revoke(export)
        raise
    return export


def _local_base_url(backend, provider) -> str | None:
    """Local mode: the base URL this user's settings give the provider, if not the SDK's default."""
    if backend.mode != "local" or provider.base_url_env in os.environ:
        return None
    try:
        url = backend.base_url(provider)
    except (KeyVaultError, providers.InvalidInput):
        return None
    return None if url == provider.base_url else url


def apply(export: Export) -> dict[str, str | None]:
    """Put the export in os.environ; returns the previous values to restore."""
    previous = {var: os.environ.get(var) for var in export.variables}
    for var, value in export.variables.items():
        os.environ[var] = value
    if export.tokens:
        _RENEWER.add(export.tokens, export.lifetime)
    return previous


def restore(export: Export, previous: dict[str, str | None]) -> None:
    """Previous values back; ours overwritten in place first; the kernel tokens revoked."""
    for var, value in export.variables.items():
        if os.environ.get(var) == value:
            envguard.wipe_live_value(var, value)
        old = previous.get(var)
        if old is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old
    _revoke(export)


def _revoke(export: Export) -> None:
    _RENEWER.discard(export.tokens)
    for backend, token_id in export.tokens:
        with contextlib.suppress(KeyVaultError):  # an expired token, a server gone: it is useless anyway
            backend.revoke_env_token(token_id)


@contextlib.contextmanager
def env(*names: str, mode: str = "proxy") -> Iterator[dict[str, Secret]]:
    """Export credentials as environment variables inside the block; restore the old ones after.

    Proxy mode (default in a kernel of a keyvault-enabled server): a provider credential's variable
    holds a short-lived token bound to this kernel, and the provider's base-URL variable the server's
    proxy, so any library reading them works and the key never enters the kernel. Credentials
    without a provider, direct mode and local mode export the value (and the base URL the server
    uses for that provider). Everything is fetched before anything is exported."""
    export = plan(names, mode)
    previous = apply(export)
    try:
        yield dict(export.secrets)
    finally:
        restore(export, previous)


# -- `%keyvault env NAME...`: the same export, active until `%keyvault env --off`

_ACTIVE: dict[str, tuple[Export, dict[str, str | None]]] = {}


def activate(names: tuple[str, ...], mode: str = "proxy") -> Export:
    names = tuple(dict.fromkeys(valid_name(n) for n in names))
    deactivate(tuple(n for n in names if n in _ACTIVE))  # re-exporting a name replaces its export
    export = plan(names, mode)
    previous = apply(export)
    for name in names:
        _ACTIVE[name] = (export, previous)
    return export


def deactivate(names: tuple[str, ...] = ()) -> list[str]:
    """End the magic's exports of `names` (all when empty); returns the names ended."""
    chosen = set(names or _ACTIVE)
    ended: list[str] = []
    for export, previous in {id(e): (e, p) for n, (e, p) in _ACTIVE.items() if n in chosen}.values():
        restore(export, previous)
        for name, (other, _) in list(_ACTIVE.items()):
            if other is export:
                del _ACTIVE[name]
                ended.append(name)
    return sorted(ended)


def active() -> list[str]:
    return sorted(_ACTIVE)


class _Renewer:
    """One daemon thread renewing every active kernel token at a third of its lifetime."""

    INTERVAL = 120.0  # at most; a third of the shortest lifetime the server granted when that is less

    def __init__(self) -> None:
        self._tokens: dict[str, Any] = {}  # token id -> backend
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval = self.INTERVAL

    def add(self, tokens: list[tuple[Any, str]], lifetime: float) -> None:
        with self._lock:
            if lifetime and lifetime / 3 < self.interval:
                self.interval = lifetime / 3
                self._wake.set()  # a sleeping thread picks up the shorter interval
            for backend, token_id in tokens:
                self._tokens[token_id] = backend
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="keyvault-env-renewer", daemon=True)
                self._thread.start()

    def discard(self, tokens: list[tuple[Any, str]]) -> None:
        with self._lock:
            for _, token_id in tokens:
                self._tokens.pop(token_id, None)

    def renew_now(self) -> int:
        with self._lock:
            live = list(self._tokens.items())
        renewed = 0
        for token_id, backend in live:
            try:
                backend.renew_env_token(token_id)
                renewed += 1
            except KeyVaultError:
                self.discard([(backend, token_id)])  # revoked or expired: the library will get a clear 401
        return renewed

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                if not self._tokens:
                    self._thread = None
                    return
            self.renew_now()


_RENEWER = _Renewer()
