"""Encrypted backups: every credential of one owner, sealed under a passphrase.

The file is JSON with a plaintext header (format, KDF parameters, count) bound to
the ciphertext as associated data, so a tampered header fails to open.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import DecryptionError, InvalidInput, NotFound, VaultDamaged, VaultReadOnly
from .vault import Vault

FORMAT = "jupyter-keyvault-backup"
VERSION = 1
MIN_PASSPHRASE = 8


# A backup may come from anywhere: cap the scrypt cost it can ask for (128·n·r bytes of memory).
MAX_SCRYPT_N, MAX_SCRYPT_R, MAX_SCRYPT_P, MAX_SCRYPT_MEMORY = 2**20, 16, 4, 256 * 2**20


def _check_kdf(kdf: Any) -> None:
    """Reject malformed or absurdly expensive KDF parameters before deriving anything."""
    bad = InvalidInput("not a jupyter-keyvault backup file (bad key-derivation parameters)")
    if not isinstance(kdf, dict) or kdf.get("alg") != "scrypt":
        raise bad
    n, r, p, salt = kdf.get("n"), kdf.get("r"), kdf.get("p"), kdf.get("salt")
    # Spelled out (not all(...)) so the type checker narrows each; `type(x) is int` rejects bools.
    if not (type(n) is int and type(r) is int and type(p) is int) or not isinstance(salt, str):
        raise bad
    if not (2 <= n <= MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= MAX_SCRYPT_R and 1 <= p <= MAX_SCRYPT_P
            and 128 * n * r <= MAX_SCRYPT_MEMORY):
        raise bad
    try:
        base64.b64decode(salt, validate=True)
    except ValueError:
        raise bad from None


def _derive(passphrase: str, kdf: dict[str, Any]) -> bytes:
    return Scrypt(salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(
        passphrase.encode("utf-8")
    )


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def export_backup(vault: Vault, owner: str, passphrase: str, *, actor: str | None = None) -> bytes:
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE:
        raise InvalidInput(f"backup passphrase must be at least {MIN_PASSPHRASE} characters")
    items = [
        {
            "name": info.name,
            "type": info.type,
            "provider": info.provider,
            "metadata": info.metadata,
            "created_at": info.created_at,
            "expires_at": info.expires_at,  # an expiry travels with the value (session-only values never do)
            "value": value,
        }
        for info, value in vault.values_for_export(owner, actor=actor)
    ]
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": time.time(),
        "count": len(items),
        "kdf": {"alg": "scrypt", "n": 2**15, "r": 8, "p": 1, "salt": base64.b64encode(os.urandom(16)).decode()},
    }
    nonce = os.urandom(12)
    sealed = AESGCM(_derive(passphrase, header["kdf"])).encrypt(nonce, json.dumps(items).encode(), _aad(header))
    try:
        vault.audit(owner, "export", None, "ok", actor=actor, detail=f"{len(items)} credentials")
    except (VaultReadOnly, VaultDamaged):
        pass  # a rescue export from a read-only or damaged vault must still work; it cannot be logged there
    return json.dumps({**header, "nonce": base64.b64encode(nonce).decode(),
                       "ciphertext": base64.b64encode(sealed).decode()}, indent=1).encode()


def read_backup(data: bytes, passphrase: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(data)
        header = {k: doc[k] for k in ("format", "version", "created_at", "count", "kdf")}
        nonce, sealed = base64.b64decode(doc["nonce"]), base64.b64decode(doc["ciphertext"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInput("not a jupyter-keyvault backup file") from None
    if header["format"] != FORMAT or header["version"] != VERSION:
        raise InvalidInput("not a jupyter-keyvault backup file (unknown format or version)")
    _check_kdf(header["kdf"])
    try:
        plain = AESGCM(_derive(passphrase, header["kdf"])).decrypt(nonce, sealed, _aad(header))
    except (InvalidTag, ValueError):
        raise DecryptionError("backup could not be opened: wrong passphrase or damaged file") from None
    items = json.loads(plain)
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) and "value" in i and "type" in i for i in items
    ):
        raise InvalidInput("backup content is damaged (unexpected structure)")
    return items


def import_backup(vault: Vault, owner: str, data: bytes, passphrase: str, *, overwrite: bool = False,
                  actor: str | None = None) -> tuple[list[str], list[str]]:
    """Returns (imported names, skipped names). Validates everything before writing anything."""
    items = read_backup(data, passphrase)
    from .model import validate_name, validate_type, validate_value

    for item in items:
        validate_name(item["name"]), validate_type(item["type"]), validate_value(item["value"])
    imported, skipped = [], []
    now = time.time()
    for item in items:
        expires_at = item.get("expires_at")
        if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
            expires_at = None
        elif expires_at <= now:  # expired since the export: it would only be refused, then purged
            skipped.append(item["name"])
            continue
        exists = True
        try:
            vault.info(owner, item["name"])
        except NotFound:
            exists = False
        if exists and not overwrite:
            skipped.append(item["name"])
            continue
        vault.set(owner, item["name"], item["value"], provider=item.get("provider"), type=item["type"],
                  metadata=item.get("metadata") or {}, actor=actor, action="import", expires_at=expires_at)
        imported.append(item["name"])
    return imported, skipped
