"""The vault as the server holds it when opening the configured one failed (wrong master key,
damaged file, unreachable hub service): every call is refused with that reason (a 503), while the
server keeps every other protection in force (no secrets in kernel environments, isolation,
scrubbing) and shuts down normally."""

from __future__ import annotations

import builtins
from typing import Any, NoReturn

from ..store.errors import VaultError
from . import RefusingTokens


class VaultUnavailable(VaultError):
    """The vault could not be opened; the message says why and what to do."""


class UnavailableVault:
    kind = "unavailable"
    key_file = None

    def __init__(self, reason: str):
        self.reason = reason

    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise VaultUnavailable(f"the vault is not available: {self.reason}")

    list = list_page = info = set = update_metadata = replace_value = delete = resolve = get_value = _refuse
    audit_events = test = upstream = set_expiry = purge_expired = session_heartbeat = _refuse

    def end_session(self, *_: Any, **__: Any) -> builtins.list[str]:
        """Nothing was held."""
        return []

    def audit(self, *_: Any, **__: Any) -> None:
        """Nothing can be recorded; the refusals themselves are in the server log."""

    record_uses = audit

    def status(self, **_: Any) -> dict[str, Any]:
        return {"protection": {"source": "unavailable", "strong": False, "detail": self.reason},
                "backend": "unavailable", "location": "", "credentials": None,
                "warnings": [f"the vault is not available: {self.reason}"]}

    def learn_values(self, owner: str) -> None:
        """No values to learn; provider patterns still scrub."""

    def access_tokens(self) -> RefusingTokens:
        return RefusingTokens(lambda: VaultUnavailable(f"the vault is not available: {self.reason}"))

    def close(self) -> None:
        """Nothing was opened."""

