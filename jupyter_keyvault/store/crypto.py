"""Envelope encryption: per-owner data keys wrapped by the master key (KEK).

Every blob is self-describing: a 4-byte magic that starts with NUL (a valid stored
value can never start with NUL, so legacy plaintext rows are told apart), then the
nonce and the AES-256-GCM ciphertext with its tag. Associated data binds a value to
its owner, name and type, and a wrapped data key to its owner.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DecryptionError, MasterKeyError

VALUE_MAGIC = b"\x00KV1"
WRAP_MAGIC = b"\x00KW1"
CHECK_MAGIC = b"\x00KC1"
NONCE_BYTES = 12
KEY_BYTES = 32
_CHECK_PLAINTEXT = b"jupyter-keyvault master key check"


def _frame(*parts: str | bytes) -> bytes:
    """Length-prefix each part so ("ab", "c") and ("a", "bc") never collide."""
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8") if isinstance(part, str) else part
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def value_aad(owner: str, name: str, kind: str) -> bytes:
    return _frame("jupyter-keyvault/value/v1", owner, name, kind)


def _seal(key: bytes, magic: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return magic + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, magic: bytes, blob: bytes, aad: bytes) -> bytes:
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < len(magic) + NONCE_BYTES + 16:
        raise DecryptionError("credential could not be decrypted (corrupted or tampered)")
    if bytes(blob[: len(magic)]) != magic:
        raise DecryptionError("credential could not be decrypted (corrupted or tampered)")
    nonce = bytes(blob[len(magic) : len(magic) + NONCE_BYTES])
    try:
        return AESGCM(key).decrypt(nonce, bytes(blob[len(magic) + NONCE_BYTES :]), aad)
    except InvalidTag:
        raise DecryptionError("credential could not be decrypted (corrupted or tampered)") from None


def is_sealed_value(payload: bytes) -> bool:
    return bytes(payload[: len(VALUE_MAGIC)]) == VALUE_MAGIC


def is_legacy_plaintext(payload: bytes) -> bool:
    """A row written before encryption: UTF-8 text that does not start with NUL.

    Anything else that is not a sealed value is a damaged or tampered blob; it must
    fail to open, never be re-sealed as if it were a plaintext value.
    """
    raw = bytes(payload)
    if not raw or raw[:1] == b"\x00":
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def seal_value(dek: bytes, owner: str, name: str, kind: str, plaintext: bytes) -> bytes:
    return _seal(dek, VALUE_MAGIC, plaintext, value_aad(owner, name, kind))


def open_value(dek: bytes, owner: str, name: str, kind: str, payload: bytes) -> bytes:
    return _open(dek, VALUE_MAGIC, payload, value_aad(owner, name, kind))


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def decode_master_key(text: str, *, origin: str) -> bytes:
    """Parse a urlsafe-base64 master key of exactly 32 bytes; the message never echoes it."""
    cleaned = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", cleaned or "="):
        raise MasterKeyError(f"{origin} is not urlsafe base64")
    try:
        raw = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (ValueError, TypeError):
        raise MasterKeyError(f"{origin} is not urlsafe base64") from None
    if len(raw) != KEY_BYTES or not cleaned:
        raise MasterKeyError(
            f"{origin} must decode to exactly {KEY_BYTES} bytes (got {len(raw)}); "
            "generate one with: python -c \"import base64,os;"
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())\""
        )
    return raw


def encode_master_key(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


class KeyEncryptionKey:
    """The master key, used only through keys derived from it with HKDF."""

    def __init__(self, master: bytes):
        if not isinstance(master, (bytes, bytearray)) or len(master) != KEY_BYTES:
            raise MasterKeyError(f"master key must be exactly {KEY_BYTES} bytes")
        self._wrap_key = self._derive(bytes(master), b"jupyter-keyvault kek wrap v1")
        id_key = self._derive(bytes(master), b"jupyter-keyvault kek id v1")
        # A short public fingerprint: tells which KEK wrapped a row, reveals nothing usable.
        self.kek_id = hmac.new(id_key, b"kek-id", hashlib.sha256).hexdigest()[:16]

    @staticmethod
    def _derive(master: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)

    def wrap(self, owner: str, dek: bytes) -> bytes:
        return _seal(self._wrap_key, WRAP_MAGIC, dek, _frame("jupyter-keyvault/dek/v1", owner))

    def unwrap(self, owner: str, blob: bytes) -> bytes:
        return _open(self._wrap_key, WRAP_MAGIC, blob, _frame("jupyter-keyvault/dek/v1", owner))

    def make_check(self, vault_id: str) -> str:
        blob = _seal(self._wrap_key, CHECK_MAGIC, _CHECK_PLAINTEXT, _frame("check", vault_id))
        return base64.b64encode(blob).decode("ascii")

    def verify_check(self, vault_id: str, check: str) -> bool:
        try:
            blob = base64.b64decode(check)
            return _open(self._wrap_key, CHECK_MAGIC, blob, _frame("check", vault_id)) == _CHECK_PLAINTEXT
        except (DecryptionError, ValueError):
            return False
