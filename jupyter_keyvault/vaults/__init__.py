"""The vault interface the server extension (and the CLI) use, and its two implementations:

- `LocalVault` (`vaults/local.py`): the embedded store; values are decrypted in this process.
- `HubVaultClient` (`vaults/hub.py`): the JupyterHub keyvault service; this process holds no
  master key and decrypts nothing, the service's proxy injects keys.

Which one runs is decided in one place, `KeyVault.open_vault()` (settings.py). Every caller
uses only the `ServerVault` protocol below; no caller asks which implementation it has.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NoReturn, Protocol, runtime_checkable

from ..providers import Provider
from ..store import AuditEvent, CredentialInfo, ResolvedCredential
from ..store.tokens import TokenInfo


@dataclass(frozen=True)
class Upstream:
    """Where the proxy sends a request and what it adds: `injected` is the secret value put in
    `headers` (None when another process injects it), scrubbed from whatever comes back."""

    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    injected: str | None = None
    expires_at: float | None = None  # epoch seconds: a cached Upstream is not reused past it

    def __repr__(self) -> str:
        return f"Upstream(base_url={self.base_url!r}, injected={'***' if self.injected else None})"


class AccessTokens(Protocol):
    def create(self, owner: str, name: str, credentials: list[str], expires_in_seconds: int, *,
               actor: str | None = None) -> tuple[str, TokenInfo]: ...
    def list(self, owner: str) -> list[TokenInfo]: ...
    def delete(self, owner: str, token_id: str, *, actor: str | None = None) -> None: ...
    def verify(self, owner: str, token: str, credential: str | None) -> TokenInfo: ...
    def touch(self, owner: str, token_ids: set[str]) -> None: ...


class RefusingTokens:
    """Access tokens where a vault has none (hub mode, a vault that failed to open): every call
    raises `error()`, a clear refusal, never a 500."""

    def __init__(self, error: Callable[[], Exception]):
        self._error = error

    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise self._error()

    create = list = delete = verify = _refuse

    def touch(self, owner: str, token_ids: set[str]) -> None:
        """No token was ever verified here, so none was used."""


@runtime_checkable
class ServerVault(Protocol):
    """Everything the server asks of a vault. Blocking: call it off the event loop.
    A call an implementation cannot serve raises `store.errors.NotAvailable` (a clear 403)."""

    kind: str  # "sqlite" or "hub", reported by status

    # -- credentials
    def list(self, owner: str, *, include_env: bool = True) -> list[CredentialInfo]: ...
    def list_page(self, owner: str, *, limit: int, after: str | None = None,
                  include_env: bool = True) -> tuple[builtins.list[CredentialInfo], bool]:
        """Up to `limit` of `list()`'s items named after `after` (name order), and whether more follow."""
    def info(self, owner: str, name: str) -> CredentialInfo: ...
    def set(self, owner: str, name: str, value: str, *, provider: str | None = None, type: str = "api_key",
            metadata: Mapping[str, Any] | None = None, actor: str | None = None,
            action: str = "set", session: bool = False,
            expires_at: float | None = None) -> tuple[CredentialInfo, bool]: ...
    def set_expiry(self, owner: str, name: str, expires_at: float | None, *,
                   actor: str | None = None) -> CredentialInfo: ...
    def update_metadata(self, owner: str, name: str, metadata: Mapping[str, Any], *,
                        actor: str | None = None) -> CredentialInfo: ...
    def replace_value(self, owner: str, name: str, expected: str, value: str, metadata: Mapping[str, Any], *,
                      actor: str | None = None, action: str = "refresh") -> CredentialInfo: ...
    def delete(self, owner: str, name: str, *, actor: str | None = None) -> None: ...
    def resolve(self, owner: str, name: str, *, actor: str | None = None, how_to_add: str | None = None,
                purpose: str = "use") -> ResolvedCredential: ...
    def get_value(self, owner: str, name: str, *, purpose: str = "use", actor: str | None = None,
                  touch: bool = True) -> str: ...

    # -- audit and status
    def audit(self, owner: str, action: str, target: str | None, outcome: str = "ok", *,
              actor: str | None = None, detail: str | None = None) -> None: ...
    def audit_events(self, owner: str | None, limit: int = 100, before_id: int | None = None) -> builtins.list[AuditEvent]: ...
    def record_uses(self, owner: str, uses: Mapping[tuple[str, str], int]) -> None:
        """Proxied uses served without a vault read, {(name, caller): requests}: audited and last-used set."""
    def status(self, *, check: bool = True, with_paths: bool = False) -> dict[str, Any]: ...
    def close(self) -> None: ...

    # -- what differs with where values live
    def learn_values(self, owner: str) -> None:
        """Decrypt every stored value once so this process's scrubber knows them (or nothing)."""
    def test(self, owner: str, name: str, *, actor: str) -> dict[str, Any]:
        """Run the provider's cheap test request: `{"ok": ..., "detail"|"error": ...}`, never the value."""
    def upstream(self, owner: str, provider: Provider, name: str, *, actor: str) -> Upstream:
        """Where the proxy sends a request for `name` and the headers that authenticate it."""
    def access_tokens(self) -> AccessTokens:
        """Vault access tokens (kvt1) for this vault."""

    # -- lifetimes
    def purge_expired(self, owner: str | None = None) -> builtins.list[tuple[str, str]]:
        """Destroy expired values (audit rows stay); (owner, name) of each one purged."""
    def end_session(self, owner: str, *, actor: str | None = None, reason: str = "session ended") -> builtins.list[str]:
        """This server stops: its owner's session-only credentials end."""
    def session_heartbeat(self, owner: str) -> None:
        """This server still runs (a hub service keeps session-only credentials while heartbeats come)."""
