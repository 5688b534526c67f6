"""The vault: validation, envelope encryption and audit over a storage backend."""

from __future__ import annotations

import builtins
import hmac
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, overload

from . import faults
from . import masterkey as mk
from .backend import StorageBackend
from .crypto import KeyEncryptionKey, is_legacy_plaintext, is_sealed_value, new_data_key, open_value, seal_value
from .errors import (
    CredentialExpired,
    DecryptionError,
    InvalidInput,
    MasterKeyError,
    NoCredential,
    NotFound,
    StaleMasterKey,
    StaleValue,
    VaultDiskFull,
    VaultError,
    VaultLocked,
    WrongMasterKey,
)
from .model import (
    HIDDEN_TYPES,
    LIFETIME_KEYS,
    MAX_VALUE_BYTES,
    AuditEvent,
    CredentialInfo,
    CredentialRecord,
    _iso,
    expires_at_of,
    is_expired,
    new_id,
    validate_name,
    validate_owner,
    validate_type,
    validate_value,
)

try:
    import fcntl
except ImportError:  # Windows: no flock; staged keys are then never discarded (harmless)
    fcntl = None  # type: ignore[assignment]

MAX_PAGE = 500  # credentials per listing page
log = logging.getLogger("jupyter_keyvault.store")
VERSION_KEY = "vault_id"


def wrong_key_message(source: str, location: str = "") -> str:
    hint = ""
    if source == "env":
        hint = f" (after rotate-master-key, set {mk.ENV_MASTER_KEY} to the key that was in {mk.ENV_NEW_MASTER_KEY})"
    where = f" for {location}" if location else ""
    return f"wrong master key{where}: vault was sealed with a different master key{hint}; nothing was changed"


@dataclass(frozen=True)
class ResolvedCredential:
    """A value resolved for use. Its repr never shows the value."""

    name: str
    value: str
    source: str  # "env" or "vault"
    provider: str | None
    type: str
    metadata: Mapping[str, Any]
    expires_at: float | None = None

    def __repr__(self) -> str:
        return f"ResolvedCredential(name={self.name!r}, source={self.source!r}, value=***)"


class Vault:
    """Credentials of many owners, sealed with per-owner data keys under one master key."""

    def __init__(
        self,
        backend: StorageBackend,
        *,
        key_file: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        preferred_source: str | None = None,
        use_keyring: bool = True,
        env_credential_names: Iterable[str] = (),
        max_value_bytes: int = MAX_VALUE_BYTES,
        on_value: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.backend = backend
        self._env = dict(os.environ if env is None else env)
        self._clock = clock
        self._max_value_bytes = max_value_bytes
        self._on_value = on_value
        self.env_credential_names = set(env_credential_names)
        self.key_file: Path | None = Path(key_file) if key_file else backend.default_key_file()
        self._resolver = mk.MasterKeyResolver(
            key_file=self.key_file, env=self._env, preferred_source=preferred_source, use_keyring=use_keyring
        )
        self._deks: dict[str, bytes] = {}
        self._touched: dict[tuple[str, str], float] = {}
        # Session-only credentials: this process's memory, never the backend (sealed all the same).
        self._session: dict[tuple[str, str], CredentialRecord] = {}
        self._lock = threading.RLock()
        self._vault_id: str
        self.master: mk.MasterKey
        self._kek: KeyEncryptionKey
        self._unlock()
        self.legacy_migrated = self._migrate_legacy_plaintext()

    # -- unlocking
    @property
    def vault_id(self) -> str:
        return self._vault_id

    def _unlock(self) -> None:
        b = self.backend
        if b.is_new() and self._create():
            return
        vault_id = b.meta_get(VERSION_KEY)
        check = b.meta_get("kek_check")
        if vault_id is None or check is None:
            missing = " and ".join(n for n, v in (("vault id", vault_id), ("key check", check)) if v is None)
            raise faults.damaged(
                b.location,
                f"it has no {missing} record, so it is not a complete vault (damaged, or its "
                f"{Path(b.location).name}-wal was lost; if it never held credentials, moving it aside lets a "
                "new vault be created)",
            )
        self._vault_id = vault_id
        recorded = b.meta_get("kek_source")
        master = self._resolver.resolve(self._vault_id, recorded, b.meta_get, b.meta_init)
        kek = KeyEncryptionKey(master.key)
        if b.meta_get("kek_id") is None and b.health().get("writable", True):
            b.meta_init("kek_id", kek.kek_id)  # vaults made before kek_id was recorded get it here
        if kek.verify_check(self._vault_id, check):
            self._discard_pending_rotation(master.source)
        else:
            recovered = self._resume_rotation(master, check)
            if recovered is None:
                raise WrongMasterKey(wrong_key_message(master.source, b.location))
            master, kek = recovered
        self.master, self._kek = master, kek

    def _create(self) -> bool:
        """A new vault: its id, key check and key source are written with the schema, in
        one transaction, so a vault file without them is known to be damaged."""
        vault_id = uuid.uuid4().hex
        pending = {VERSION_KEY: vault_id}
        try:
            master = self._resolver.resolve(vault_id, None, pending.get, lambda k, v: pending.setdefault(k, v))
        except OSError as exc:  # the key file could not be written (full disk, read-only, permissions)
            raise faults.from_os(exc, self.key_file) from None
        kek = KeyEncryptionKey(master.key)
        pending.update(kek_check=kek.make_check(vault_id), kek_source=master.source, kek_id=kek.kek_id)
        created = False
        try:
            created = self.backend.create_vault(pending)
        finally:
            if not created and master.source == "keyring":  # our entry names a vault that does not exist
                mk.keyring_delete(vault_id)
        if not created:
            return False
        self._vault_id, self.master, self._kek = vault_id, master, kek
        return True

    @contextmanager
    def _rotation_guard(self, wait: bool = True):
        """An OS lock held from staging a next key until it is promoted, so that another
        process opening the vault meanwhile never discards or races that staged key.
        Yields False when `wait` is False and a rotation is in flight (or cannot be told)."""
        if fcntl is None or self.key_file is None:
            yield wait
            return
        try:
            fd = os.open(self.key_file.with_name(self.key_file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield wait
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def _discard_pending_rotation(self, source: str) -> None:
        """The committed key works: any staged next key belongs to a rotation that never
        committed -- unless a rotation is in flight right now in another process."""
        if source == "file":
            staged = self._staged_key_file()
            if not staged.exists():
                return
            with self._rotation_guard(wait=False) as idle:
                if idle and staged.exists():
                    staged.unlink()
                    log.warning("jupyter-keyvault: discarded an unfinished master-key rotation (rolled back)")
        elif source == "keyring" and mk.keyring_usable() and mk.keyring_get(self._vault_id, pending=True):
            with self._rotation_guard(wait=False) as idle:
                if idle:
                    mk.keyring_delete(self._vault_id, pending=True)
                    log.warning("jupyter-keyvault: discarded an unfinished master-key rotation (rolled back)")

    def _resume_rotation(self, master: mk.MasterKey, check: str):
        """A rotation committed but crashed before its new key was promoted: finish it."""
        if master.source not in ("file", "keyring"):
            return None
        with self._rotation_guard():
            promote = True
            staged: bytes | None
            if master.source == "file":
                if self._staged_key_file().exists():
                    staged = mk.read_key_file(self._staged_key_file())
                else:  # another process may have finished the rotation meanwhile
                    staged, promote = mk.read_key_file(self._file_source_key_file()), False
            else:
                staged = mk.keyring_get(self._vault_id, pending=True)
                if staged is None:
                    staged, promote = mk.keyring_get(self._vault_id), False
            if staged is None:
                return None
            kek = KeyEncryptionKey(staged)
            if not kek.verify_check(self._vault_id, check):
                return None
            if promote and master.source == "file":
                key_file = self._file_source_key_file()
                os.replace(self._staged_key_file(), key_file)
                mk.fsync_path(key_file.parent)
            elif promote:
                mk.keyring_set(self._vault_id, staged)
                mk.keyring_delete(self._vault_id, pending=True)
            if promote:
                log.warning("jupyter-keyvault: finished an interrupted master-key rotation")
        return mk.MasterKey(staged, master.source, master.strong, master.detail, master.warnings), kek

    def _file_source_key_file(self) -> Path:
        """The key file of a vault whose master key source is "file" (the resolver picks that
        source only when there is one); otherwise the resolver's clear error."""
        return mk.require_key_file(self.key_file)

    def _staged_key_file(self) -> Path:
        key_file = self._file_source_key_file()
        return key_file.with_name(key_file.name + ".next")

    # -- data keys
    STALE_KEY_RETRIES = 5  # rotations back to back may outrun one reload

    @overload
    def _dek(self, owner: str, create: Literal[True]) -> bytes: ...

    @overload
    def _dek(self, owner: str, create: Literal[False]) -> bytes | None: ...

    def _dek(self, owner: str, create: bool) -> bytes | None:
        """The owner's data key; None only when it has none and `create` is False."""
        with self._lock:
            dek = self._deks.get(owner)
            if dek is not None:
                return dek
            stored = self.backend.get_owner_key(owner)
            if stored is None:
                if not create:
                    return None
                for attempt in range(self.STALE_KEY_RETRIES):
                    try:
                        wrapped = self.backend.init_owner_key(owner, self._kek.wrap(owner, new_data_key()), self._kek.kek_id)
                        break
                    except StaleMasterKey:
                        # Another process rotated: reload the current key, then wrap under it.
                        if attempt == self.STALE_KEY_RETRIES - 1:
                            raise
                        self._deks.clear()
                        self._unlock()
            else:
                wrapped = stored[0]
            try:
                dek = self._kek.unwrap(owner, wrapped)
            except DecryptionError:
                raise DecryptionError(f"the data key of owner {owner!r} could not be decrypted (corrupted or tampered)") from None
            self._deks[owner] = dek
            return dek

    def _migrate_legacy_plaintext(self) -> int:
        """Rows written before encryption (no magic prefix) are sealed in place."""
        count = 0
        if not self.backend.health().get("writable", True):
            return 0  # sealed on the next writable open; reads of them still work meanwhile
        for rec in self.backend.iter_all_credentials():
            if is_sealed_value(rec.payload) or not is_legacy_plaintext(rec.payload):
                continue  # sealed, or a damaged blob that must keep failing to open
            dek = self._dek(rec.owner, create=True)
            self.backend.replace_payload(rec.id, seal_value(dek, rec.owner, rec.name, rec.type, rec.payload), rec.payload)
            count += 1
        if count:
            log.warning("jupyter-keyvault: encrypted %d legacy plaintext credential(s) in place", count)
        return count

    # -- audit
    def audit(self, owner: str, action: str, target: str | None, outcome: str = "ok", *, actor: str | None = None,
              detail: str | None = None) -> None:
        self.backend.append_audit(
            AuditEvent(None, self._clock(), owner, actor or owner, action, target, outcome, detail)
        )

    def audit_events(self, owner: str | None, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]:
        if not 1 <= int(limit) <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        return self.backend.list_audit(owner, limit, before_id)

    # -- credentials
    def set(
        self,
        owner: str,
        name: str,
        value: str | bytes,
        *,
        provider: str | None = None,
        type: str = "api_key",
        metadata: Mapping[str, Any] | None = None,
        actor: str | None = None,
        action: str = "set",
        hidden: bool = False,
        session: bool = False,
        expires_at: float | None = None,
    ) -> tuple[CredentialInfo, bool]:
        """Store a value (`session`: in this process's memory only, gone when it ends; `expires_at`:
        epoch seconds after which every use is refused and the purge destroys it)."""
        owner = validate_owner(owner)
        name = validate_name(name)
        kind = validate_type(type)
        # Hidden records (vault access tokens) are made only by their own API, and a
        # credential write can never replace one (nor a token write a credential).
        if (kind in HIDDEN_TYPES) != hidden:
            raise InvalidInput(f"credential type {kind} cannot be set here")
        existing = self._record(owner, name)
        if existing is not None and (existing.type in HIDDEN_TYPES) != hidden:
            raise InvalidInput(f"the name {name} is reserved; choose another")
        text = validate_value(value, max_bytes=self._max_value_bytes)
        if provider is not None and (not isinstance(provider, str) or not 1 <= len(provider) <= 64):
            raise InvalidInput("provider must be a short string")
        if session and hidden:
            raise InvalidInput("vault access tokens cannot be session-only")
        now = self._clock()
        if expires_at is not None and not (isinstance(expires_at, (int, float)) and expires_at > now):
            raise InvalidInput("expiry is in the past; give a future time")
        if hidden:  # access tokens keep their own metadata (their expires_at is the token's)
            meta = dict(metadata or {})
        else:
            meta = {k: v for k, v in (metadata or {}).items() if k not in LIFETIME_KEYS}
            meta["value_set_at"] = now  # the key's age counts from here
        if expires_at is not None:
            meta["expires_at"] = float(expires_at)
        if session:
            meta["session"] = True
        dek = self._dek(owner, create=True)
        rec = CredentialRecord(
            id=new_id(),
            owner=owner,
            name=name,
            type=kind,
            provider=provider,
            payload=seal_value(dek, owner, name, kind, text.encode("utf-8")),
            created_at=now,
            updated_at=now,
            metadata=meta,
        )
        if session:
            stored, created = self._set_session(rec, actor=actor, action=action)
        else:
            event = AuditEvent(None, now, owner, actor or owner, action, name, "ok")
            with self._lock:
                dropped = self._session.pop((owner, name), None)  # a stored value replaces a session one
                stored, created = self.backend.upsert_credential(rec, audit=event)
            created = created and dropped is None
        if self._on_value:
            self._on_value(name, text)
        return CredentialInfo.from_record(stored), created

    def _set_session(self, rec: CredentialRecord, *, actor: str | None, action: str) -> tuple[CredentialRecord, bool]:
        """Hold `rec` in memory. A stored value of the same name is deleted (audited), so a name
        has one value wherever it is looked up; only the audit row reaches the backend."""
        key = (rec.owner, rec.name)
        with self._lock:
            previous = self._session.get(key)
            on_disk = self.backend.get_credential(rec.owner, rec.name)
            if on_disk is not None:
                self.backend.delete_credential(rec.owner, rec.name, audit=AuditEvent(
                    None, rec.updated_at, rec.owner, actor or rec.owner, "delete", rec.name, "ok",
                    "replaced by a session-only value"))
            if previous is not None:
                rec.id, rec.created_at = previous.id, previous.created_at
            created = previous is None and on_disk is None
            self._session[key] = rec
        self.backend.append_audit(AuditEvent(None, rec.updated_at, rec.owner, actor or rec.owner, action, rec.name,
                                             "ok", "session-only, " + ("created" if created else "replaced")))
        return rec, created

    def lookup_record(self, owner: str, name: str) -> CredentialRecord | None:
        """The record of `name`, session-only or stored (sealed value, plaintext metadata), or None."""
        return self._record(validate_owner(owner), validate_name(name))

    def _record(self, owner: str, name: str) -> CredentialRecord | None:
        rec = self._session.get((owner, name))
        return rec if rec is not None else self.backend.get_credential(owner, name)

    def _records(self, owner: str) -> list[CredentialRecord]:
        held = [r for (o, _), r in list(self._session.items()) if o == owner]
        names = {r.name for r in held}
        return [r for r in self.backend.list_credentials(owner) if r.name not in names] + held

    def info(self, owner: str, name: str) -> CredentialInfo:
        rec = self._record(validate_owner(owner), validate_name(name))
        if rec is None or rec.type in HIDDEN_TYPES:
            raise NotFound(f"no credential named {name.strip()} in the vault")
        return CredentialInfo.from_record(rec)

    def update_metadata(self, owner: str, name: str, metadata: Mapping[str, Any], *, actor: str | None = None,
                        audit_action: str = "update") -> CredentialInfo:
        """Replace a credential's metadata without touching its value."""
        owner, name = validate_owner(owner), validate_name(name)
        rec = self._record(owner, name)
        if rec is None:
            raise NotFound(f"no credential named {name} in the vault")
        # Lifetime facts belong to the value: metadata written by a client keeps them as they are.
        kept = {k: rec.metadata[k] for k in LIFETIME_KEYS if k in rec.metadata}
        stored = self._write_metadata(rec, {**{k: v for k, v in metadata.items() if k not in LIFETIME_KEYS}, **kept})
        self.audit(owner, audit_action, name, "ok", actor=actor, detail="metadata")
        return CredentialInfo.from_record(stored)

    def _write_metadata(self, rec: CredentialRecord, metadata: dict[str, Any]) -> CredentialRecord:
        rec.metadata = metadata
        rec.updated_at = self._clock()
        if rec.metadata.get("session") is True:
            return rec  # held in memory: the record itself is the copy
        return self.backend.upsert_credential(rec)[0]

    def set_expiry(self, owner: str, name: str, expires_at: float | None, *, actor: str | None = None) -> CredentialInfo:
        """Set (epoch seconds, in the future) or clear (None) when a credential expires; the value is untouched."""
        owner, name = validate_owner(owner), validate_name(name)
        rec = self._record(owner, name)
        if rec is None or rec.type in HIDDEN_TYPES:
            raise NotFound(f"no credential named {name} in the vault")
        if expires_at is not None and not (isinstance(expires_at, (int, float)) and expires_at > self._clock()):
            raise InvalidInput("expiry is in the past; give a future time")
        meta = {k: v for k, v in rec.metadata.items() if k != "expires_at"}
        if expires_at is not None:
            meta["expires_at"] = float(expires_at)
        stored = self._write_metadata(rec, meta)
        self.audit(owner, "update", name, "ok", actor=actor,
                   detail=f"expires {_iso(expires_at)}" if expires_at is not None else "expiry cleared")
        return CredentialInfo.from_record(stored)

    def replace_value(self, owner: str, name: str, expected: str, value: str, metadata: Mapping[str, Any], *,
                      actor: str | None = None, action: str = "refresh") -> CredentialInfo:
        """Compare-and-swap a value (e.g. refreshed OAuth tokens): only if it still is `expected`.

        Raises StaleValue when another writer changed it first; nothing is written then."""
        owner, name = validate_owner(owner), validate_name(name)
        text = validate_value(value, max_bytes=self._max_value_bytes)
        rec = self._record(owner, name)
        if rec is None:
            raise NotFound(f"no credential named {name} in the vault")
        current = self.get_value(owner, name, purpose=action, actor=actor, touch=False)
        if not hmac.compare_digest(current.encode("utf-8"), expected.encode("utf-8")):
            raise StaleValue(f"credential {name} was changed by another writer; nothing was written")
        dek = self._dek(owner, create=True)
        sealed = seal_value(dek, owner, name, rec.type, text.encode("utf-8"))
        if rec.metadata.get("session") is True:
            with self._lock:
                if self._session.get((owner, name)) is not rec:
                    raise StaleValue(f"credential {name} was changed by another writer; nothing was written")
                rec.payload = sealed
        elif not self.backend.replace_payload(rec.id, sealed, rec.payload):
            raise StaleValue(f"credential {name} was changed by another writer; nothing was written")
        if self._on_value:
            self._on_value(name, text)
        # Metadata (non-secret expiry, flags) follows the value; a crash between the two
        # writes leaves a stale expiry, which at worst causes one extra refresh.
        return self.update_metadata(owner, name, metadata, actor=actor, audit_action=action)

    def get_value(self, owner: str, name: str, *, purpose: str = "use", actor: str | None = None, touch: bool = True) -> str:
        """Decrypt one stored value. Every failure is one opaque error for that credential.
        An expired value is refused for every purpose but scrubbing (CredentialExpired, audited)."""
        owner, name = validate_owner(owner), validate_name(name)
        rec = self._record(owner, name)
        if rec is None:
            raise NotFound(f"no credential named {name} in the vault")
        if (purpose not in ("scrub", "revoke") and rec.type not in HIDDEN_TYPES
                and is_expired(rec.metadata, self._clock())):
            self.audit(owner, purpose, name, "expired", actor=actor)
            raise CredentialExpired(f"credential {name} expired at {_iso(rec.metadata['expires_at'])}; "
                                    "set a new value to use it again")
        dek = self._dek(owner, create=False)
        if dek is None:
            raise DecryptionError(f"credential {name} could not be decrypted (corrupted or tampered)")
        try:
            value = open_value(dek, owner, name, rec.type, rec.payload).decode("utf-8")
        except (DecryptionError, UnicodeDecodeError):
            self.audit(owner, purpose, name, "error", actor=actor, detail="decryption failed")
            raise DecryptionError(f"credential {name} could not be decrypted (corrupted or tampered)") from None
        if touch:
            self._touch(owner, name)
        if self._on_value:
            self._on_value(name, value)
        return value

    def values_for_export(self, owner: str, *, actor: str | None = None) -> list[tuple[CredentialInfo, str]]:
        """Every credential of `owner` with its value, from ONE read: a consistent point in
        time (a concurrent delete cannot fail an export half-way) that includes writes still
        in the WAL. A value that fails to open is the usual opaque error, audited."""
        owner = validate_owner(owner)
        # Session-only values are never in the backend, so never exported; expired ones are left out too.
        now = self._clock()
        records = [r for r in self.backend.list_credentials(owner)
                   if r.type not in HIDDEN_TYPES and not is_expired(r.metadata, now)]
        dek = self._dek(owner, create=False) if records else None
        out = []
        for rec in records:
            try:
                if dek is None:
                    raise DecryptionError("no data key")
                value = open_value(dek, owner, rec.name, rec.type, rec.payload).decode("utf-8")
            except (DecryptionError, UnicodeDecodeError):
                self.audit(owner, "export", rec.name, "error", actor=actor, detail="decryption failed")
                raise DecryptionError(f"credential {rec.name} could not be decrypted (corrupted or tampered)") from None
            if self._on_value:
                self._on_value(rec.name, value)
            out.append((CredentialInfo.from_record(rec), value))
        return out

    TOUCH_INTERVAL = 60.0  # last_used_at is coarse: at most one write per credential a minute

    def touch(self, owner: str, name: str) -> None:
        """Record a use of `name` now (coarse, see TOUCH_INTERVAL) without decrypting it."""
        self._touch(validate_owner(owner), validate_name(name))

    def _touch(self, owner: str, name: str) -> None:
        now = self._clock()
        if now - self._touched.get((owner, name), float("-inf")) >= self.TOUCH_INTERVAL:
            self._touched[(owner, name)] = now
            held = self._session.get((owner, name))
            if held is not None:
                held.last_used_at = now
                return
            try:
                self.backend.touch_credential(owner, name, now)
            except (VaultDiskFull, VaultLocked) as exc:  # last-used is advisory: a read must not fail on it
                log.warning("jupyter-keyvault: last-used time of %s not recorded: %s", name, exc)

    def resolve(self, owner: str, name: str, *, actor: str | None = None, how_to_add: str | None = None,
                purpose: str = "use") -> ResolvedCredential:
        """The value to use: an explicitly set env var of that name first, then the vault.

        `purpose` names the audit action ("use", or "test" when the caller audits the test itself).
        """
        name = validate_name(name)
        env_value = self._env.get(name)
        if env_value and name in self.env_credential_names:
            if purpose == "use":
                self.audit(owner, "use", name, "ok", actor=actor, detail="source=env")
            return ResolvedCredential(name, env_value, "env", None, "api_key", {})
        rec = self._record(validate_owner(owner), name)
        if rec is None or rec.type in HIDDEN_TYPES:
            hint = how_to_add or f"add one with `jupyter keyvault set {name}` or the Key Vault panel"
            raise NoCredential(f"No API key configured for {name}: {hint}")
        value = self.get_value(owner, name, actor=actor, purpose=purpose)
        if purpose == "use":
            self.audit(owner, "use", name, "ok", actor=actor, detail="source=vault")
        return ResolvedCredential(name, value, "vault", rec.provider, rec.type,
                                  {k: v for k, v in rec.metadata.items() if k not in LIFETIME_KEYS},
                                  expires_at_of(rec.metadata))

    def list(self, owner: str, *, include_env: bool = True, include_hidden: bool = False) -> list[CredentialInfo]:
        owner = validate_owner(owner)
        items = [CredentialInfo.from_record(r) for r in self._records(owner)
                 if include_hidden or r.type not in HIDDEN_TYPES]
        if include_env:
            stored = {i.name for i in items}
            now = self._clock()
            for name in sorted(self.env_credential_names):
                if self._env.get(name) and name not in stored:
                    items.append(CredentialInfo("env:" + name, owner, name, "api_key", None, now, now, None, {}, "env"))
                elif self._env.get(name):
                    # Env wins at use time; say so rather than hide it.
                    items = [
                        CredentialInfo(**{**i.__dict__, "source": "env"}) if i.name == name else i for i in items
                    ]
        return sorted(items, key=lambda i: i.name)

    def list_page(self, owner: str, *, limit: int, after: str | None = None,
                  include_env: bool = True) -> tuple[builtins.list[CredentialInfo], bool]:
        """One page of `list()`: up to `limit` items named after `after`, in name order, and whether more
        follow. Keyset paging: a credential added or deleted meanwhile never shifts another one onto a
        second page or off every page."""
        owner = validate_owner(owner)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}")
        if after is not None and not isinstance(after, str):
            raise InvalidInput("after must be a credential name")
        records = self.backend.list_credentials_page(owner, after, limit + 1)
        # Stored names up to the last one read are all here; names beyond it belong to later pages.
        bound = records[-1].name if len(records) > limit else None
        held = {r.name: r for (o, _), r in list(self._session.items())
                if o == owner and (after is None or r.name > after) and (bound is None or r.name <= bound)}
        if held:  # session-only values live in this process, not in the backend's index
            records = sorted([r for r in records if r.name not in held] + list(held.values()), key=lambda r: r.name)
        items = [CredentialInfo.from_record(r) for r in records]
        if include_env:
            stored = {i.name for i in items}
            now = self._clock()
            for name in sorted(self.env_credential_names):
                if not self._env.get(name) or (after is not None and name <= after) or (bound and name > bound):
                    continue
                if name in stored:
                    items = [CredentialInfo(**{**i.__dict__, "source": "env"}) if i.name == name else i for i in items]
                else:
                    items.append(CredentialInfo("env:" + name, owner, name, "api_key", None, now, now, None, {}, "env"))
            items.sort(key=lambda i: i.name)
        return items[:limit], len(items) > limit

    def delete(self, owner: str, name: str, *, actor: str | None = None, hidden: bool = False) -> None:
        owner, name = validate_owner(owner), validate_name(name)
        rec = self._record(owner, name)
        if rec is not None and (rec.type in HIDDEN_TYPES) != hidden:  # type guard both ways
            raise NotFound(f"no credential named {name} in the vault")
        with self._lock:
            held = self._session.pop((owner, name), None)
        if held is not None:
            self.audit(owner, "delete", name, "ok", actor=actor, detail="session-only")
            return
        event = AuditEvent(None, self._clock(), owner, actor or owner, "delete", name, "ok")
        if not self.backend.delete_credential(owner, name, audit=event):
            self.audit(owner, "delete", name, "not_found", actor=actor)
            raise NotFound(f"no credential named {name} in the vault")

    def count(self, owner: str | None = None) -> int:
        held = sum(1 for o, _ in list(self._session) if owner is None or o == owner)
        return self.backend.count_credentials(owner) + held

    # -- lifetimes
    def purge_expired(self, owner: str | None = None) -> builtins.list[tuple[str, str]]:
        """Destroy every expired value (of `owner`, else of all owners): the record goes, an
        "expire" audit row stays. Returns (owner, name) of each one purged. Scans the records,
        so callers on an event loop run it in a thread."""
        now = self._clock()
        purged: list[tuple[str, str]] = []
        with self._lock:
            for key, rec in list(self._session.items()):
                if (owner is None or key[0] == owner) and is_expired(rec.metadata, now):
                    del self._session[key]
                    purged.append(key)
        for o, name in purged:
            self.audit(o, "expire", name, "ok", actor="keyvault", detail="session-only value destroyed")
        records = self.backend.list_credentials(owner) if owner is not None else self.backend.iter_all_credentials()
        for rec in list(records):
            if rec.type in HIDDEN_TYPES or not is_expired(rec.metadata, now):
                continue
            current = self.backend.get_credential(rec.owner, rec.name)  # a new value set meanwhile stays
            if current is None or current.payload != rec.payload:
                continue
            event = AuditEvent(None, now, rec.owner, "keyvault", "expire", rec.name, "ok",
                               f"value destroyed (expired at {_iso(rec.metadata['expires_at'])})")
            if self.backend.delete_credential(rec.owner, rec.name, audit=event):
                purged.append((rec.owner, rec.name))
        return purged

    def end_session(self, owner: str, *, actor: str | None = None, reason: str = "session ended") -> builtins.list[str]:
        """Forget every session-only value of `owner` (their server stopped); returns the names."""
        with self._lock:
            keys = [k for k in self._session if k[0] == owner]
            for key in keys:
                del self._session[key]
        for _, name in keys:
            self.audit(owner, "delete", name, "ok", actor=actor or "keyvault", detail=f"session-only; {reason}")
        return [name for _, name in keys]

    # -- master key
    def rotate_master_key(self, *, actor: str = "admin") -> int:
        """Re-wrap every data key under a new master key in one transaction.

        The next key is staged where it will live before the commit, so a crash at
        any point either rolls back (old key still opens) or resumes on next open.
        """
        source = self.master.source
        with self._lock, self._rotation_guard():
            new_key, meta = self._resolver.new_key_for_rotation(source, self.backend.meta_get)
            new_kek = KeyEncryptionKey(new_key)
            if new_kek.kek_id == self._kek.kek_id:
                raise MasterKeyError("the new master key is the same as the current one")
            if source == "file":
                mk.write_private_file(self._staged_key_file(), (mk.encode_master_key(new_key) + "\n").encode())
            elif source == "keyring":
                mk.keyring_set(self._vault_id, new_key, pending=True)
            meta["kek_check"] = new_kek.make_check(self._vault_id)
            meta["kek_id"] = new_kek.kek_id
            old_kek = self._kek
            try:
                count = self.backend.rewrap_owner_keys(
                    lambda owner, blob: new_kek.wrap(owner, old_kek.unwrap(owner, blob)), new_kek.kek_id, meta
                )
            except DecryptionError:
                if self.backend.meta_get("kek_id") not in (None, old_kek.kek_id):
                    raise StaleMasterKey(
                        "the master key was rotated by another process meanwhile; nothing was changed"
                    ) from None
                raise
            if source == "file":
                key_file = self._file_source_key_file()
                os.replace(self._staged_key_file(), key_file)
                mk.fsync_path(key_file.parent)
            elif source == "keyring":
                mk.keyring_set(self._vault_id, new_key)
                mk.keyring_delete(self._vault_id, pending=True)
            self._kek = new_kek
            self.master = mk.MasterKey(new_key, source, self.master.strong, self.master.detail, self.master.warnings)
            self._deks.clear()
        self.audit(actor, "rotate", None, "ok", actor=actor, detail=f"{count} data keys re-wrapped")
        return count

    # -- status
    def backup_database(self, dest: str | os.PathLike) -> int:
        """A consistent copy of the whole vault (still encrypted; opens with the same master
        key), including writes not yet checkpointed out of the WAL. Returns its size."""
        return self.backend.backup_to(dest)

    def status(self, *, check: bool = True, with_paths: bool = False) -> dict[str, Any]:
        """How the vault is protected and whether its storage is healthy. `check` re-runs
        the integrity check (its time is storage.integrity.seconds). Storage problems name
        the vault file by its base name unless `with_paths` (a terminal user, not a browser)."""
        warnings = list(self.master.warnings)
        if check and hasattr(self.backend, "check_integrity"):
            self.backend.check_integrity()
        storage = self.backend.health()
        try:
            count: int | None = self.count()
        except VaultError as exc:  # status is where a damaged vault is explained, so it must not fail
            count = None
            storage["problems"].append(str(exc))
        if not with_paths:
            location = self.backend.location
            directory = str(Path(location).parent) if location else ""

            def redact(text: str) -> str:
                if location:
                    text = text.replace(location, Path(location).name)
                return text.replace(directory, "<vault directory>") if directory not in ("", ".", "/") else text

            storage["problems"] = [redact(p) for p in storage["problems"]]
            storage["integrity"]["detail"] = redact(storage["integrity"].get("detail") or "")
        warnings += storage["problems"]
        return {
            "storage": storage,
            "protection": {
                "source": self.master.source,
                "strong": self.master.strong,
                "detail": self.master.detail,
            },
            "backend": self.backend.name,
            "location": self.backend.location,
            "credentials": count,
            "warnings": warnings,
        }

    def close(self) -> None:
        self._session.clear()
        self._deks.clear()
        self.backend.close()
