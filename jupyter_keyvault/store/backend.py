"""The storage interface. Backends store opaque blobs and plaintext metadata only:
they never see a key or a value, so every backend is equally safe to swap in."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterable

from .model import AuditEvent, CredentialRecord


class StorageBackend(ABC):
    """Persistence for one vault. Implementations must be thread-safe and process-safe."""

    name: str = "abstract"
    location: str = ""

    # -- vault metadata (schema version, vault id, recorded key source, KDF salt, KEK check)
    @abstractmethod
    def meta_get(self, key: str) -> str | None: ...

    @abstractmethod
    def meta_init(self, key: str, value: str) -> str:
        """Set `key` only if it is absent; return the value now stored (race-safe)."""

    @abstractmethod
    def meta_set(self, key: str, value: str) -> None: ...

    # -- creation and health
    def is_new(self) -> bool:
        """True while no vault exists at this location (nothing to protect yet). Data
        without a vault id is not new: the vault refuses it as damaged."""
        return self.meta_get("vault_id") is None and self.count_credentials() == 0 and self.count_owners() == 0

    def create_vault(self, meta: dict[str, str]) -> bool:
        """Create the vault with its identity `meta` (vault id, key check, key source) in
        ONE transaction. False, changing nothing, if another process created it first."""
        raise NotImplementedError

    def health(self) -> dict:
        """Integrity-check result, whether writes are accepted, and problems to show the user."""
        return {"integrity": {"ok": None, "detail": "not checked by this backend", "seconds": None},
                "writable": True, "problems": []}

    def backup_to(self, dest: str | os.PathLike) -> int:
        """Write a consistent copy of the whole store to `dest`; returns its size in bytes."""
        from .errors import InvalidInput

        raise InvalidInput(f"the {self.name} backend has no database backup; use `export` or the database's own tools")

    # -- per-owner wrapped data keys
    @abstractmethod
    def get_owner_key(self, owner: str) -> tuple[bytes, str] | None:
        """(wrapped data key, id of the KEK that wrapped it), or None."""

    @abstractmethod
    def init_owner_key(self, owner: str, wrapped: bytes, kek_id: str) -> bytes:
        """Store a wrapped data key unless one exists; return the stored one (race-safe).
        Raises StaleMasterKey if meta 'kek_id' names another KEK (checked in the same transaction)."""

    @abstractmethod
    def rewrap_owner_keys(self, rewrap: Callable[[str, bytes], bytes], new_kek_id: str, meta: dict[str, str]) -> int:
        """Replace every wrapped key with rewrap(owner, blob) and set `meta`, in ONE transaction."""

    @abstractmethod
    def count_owners(self) -> int: ...

    # -- credentials
    @abstractmethod
    def upsert_credential(self, rec: CredentialRecord, audit: AuditEvent | None = None) -> tuple[CredentialRecord, bool]:
        """Insert or replace by (owner, name); keeps id and created_at on replace.
        `audit` (its detail set to "created"/"replaced") is appended in the same transaction.
        Returns the stored record and whether it was created."""

    @abstractmethod
    def get_credential(self, owner: str, name: str) -> CredentialRecord | None: ...

    @abstractmethod
    def list_credentials(self, owner: str) -> list[CredentialRecord]: ...

    def list_credentials_page(self, owner: str, after: str | None, limit: int) -> list[CredentialRecord]:
        """Up to `limit` visible credentials (no hidden types) named after `after`, in name order.
        Backends answer from the (owner, name) index; this fallback reads them all."""
        from .model import HIDDEN_TYPES

        rows = [r for r in self.list_credentials(owner) if r.type not in HIDDEN_TYPES and (after is None or r.name > after)]
        return rows[:limit]

    @abstractmethod
    def delete_credential(self, owner: str, name: str, audit: AuditEvent | None = None) -> bool:
        """Delete one credential; `audit` is appended in the same transaction if a row was deleted."""

    @abstractmethod
    def touch_credential(self, owner: str, name: str, at: float) -> None: ...

    @abstractmethod
    def iter_all_credentials(self) -> Iterable[CredentialRecord]:
        """Every row of every owner (used for migrations and integrity checks)."""

    @abstractmethod
    def replace_payload(self, rec_id: str, payload: bytes, expected: bytes) -> bool:
        """Replace a payload only if it still equals `expected` (no lost concurrent write)."""

    @abstractmethod
    def count_credentials(self, owner: str | None = None) -> int: ...

    # -- audit (append-only: there is deliberately no update or delete)
    @abstractmethod
    def append_audit(self, event: AuditEvent) -> None: ...

    @abstractmethod
    def list_audit(self, owner: str | None, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]: ...

    def default_key_file(self) -> Path | None:
        """Where a generated master-key file lives: next to a file-based store; None
        for a database server (the key then must come from env, keyring or passphrase)."""
        return Path(self.location).with_name("master.key") if self.location else Path("master.key")

    def close(self) -> None:  # noqa: B027 - optional hook: backends without resources need nothing
        """Release connections."""
