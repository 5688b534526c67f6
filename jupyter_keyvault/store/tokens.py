"""Vault access tokens: named, scoped, expiring bearer tokens for tools outside notebooks.

A token is `kvt1_<id>_<secret>`: `id` (16 random bytes, hex) is a public handle, `secret`
(32 random bytes, hex) is the part that proves possession. Only SHA-256(secret) is kept,
sealed like any credential value. A plain hash is enough because the secret is 256 random
bits: there is no dictionary to try and no salt needed; a stolen DB (after breaking the
encryption) still yields nothing that authenticates.

Verification looks the record up by `id` and compares hashes with `hmac.compare_digest`.
The lookup's timing can at most tell whether an id exists; ids are not secret and knowing
one gives no information about its secret. An unknown id is compared against a dummy
hash (skipping only the decryption), so the secret's comparison is the same either way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import InvalidInput, NotFound, VaultError
from .model import _iso, validate_name

PREFIX = "kvt1"
TOKEN_TYPE = "vault_token"  # noqa: S105 - a record type name
RECORD_PREFIX = "KVT_"
TOKEN_RE = re.compile(r"kvt1_([0-9a-f]{32})_([0-9a-f]{64})")
ID_RE = re.compile(r"[0-9a-f]{32}")
MAX_EXPIRES_DAYS = 3650
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


class TokenRefused(VaultError):
    """One message for every refused token (unknown, forged, expired): no oracle."""


class TokenScopeError(VaultError):
    """A valid token used for a credential it was not granted."""


def looks_like_token(text: str | None) -> bool:
    return bool(text) and text.startswith(PREFIX + "_")  # type: ignore[union-attr]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _record_name(token_id: str) -> str:
    return RECORD_PREFIX + token_id


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    credentials: list[str]
    created_at: float
    last_used_at: float | None
    expires_at: float | None
    kernel_id: str | None = None  # a kernel-bound token (KernelTokens): valid only while that kernel runs

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "credentials": list(self.credentials),
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "expires_at": _iso(self.expires_at),
        }


# Control, zero-width, bidi-override and surrogate characters: they hide or reorder what a list shows.
# openapi.json states the same set (less surrogates, which JSON Schema regexes cannot name) on AccessTokenWrite.name.
UNSHOWABLE_IN_NAMES = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ud800-\udfff\ufeff]")


def validate_token_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("token name must be a non-empty string")
    if len(name) > 100 or UNSHOWABLE_IN_NAMES.search(name):
        raise InvalidInput("token name must be at most 100 characters without control, zero-width or "
                           "direction-changing characters")
    return name.strip()


def parse_expiry(text: str) -> int:
    """`30d`, `2w`, `12h` or `90` (days) -> seconds."""
    m = re.fullmatch(r"\s*(\d{1,5})\s*([dhw]?)\s*", text or "")
    if not m:
        raise InvalidInput("expiry must look like 30d, 2w or 12h")
    n, unit = int(m.group(1)), m.group(2) or "d"
    seconds = n * {"h": 3600, "d": 86400, "w": 7 * 86400}[unit]
    if not 3600 <= seconds <= MAX_EXPIRES_DAYS * 86400:
        raise InvalidInput(f"expiry must be between 1 hour and {MAX_EXPIRES_DAYS} days")
    return seconds


class TokenStore:
    """Token operations over a Vault (tokens are records of type `vault_token`)."""

    def __init__(self, vault):
        self.vault = vault

    def _info(self, rec) -> TokenInfo:
        meta = rec.metadata
        return TokenInfo(rec.name[len(RECORD_PREFIX):], meta.get("token_name", ""), list(meta.get("credentials", [])),
                         rec.created_at, rec.last_used_at, meta.get("expires_at"))

    def create(self, owner: str, name: str, credentials: Iterable[str], expires_in_seconds: int, *,
               actor: str | None = None) -> tuple[str, TokenInfo]:
        """Mint a token; the plaintext is returned here once and never stored."""
        name = validate_token_name(name)
        creds = sorted({validate_name(c) for c in credentials})
        if not creds:
            raise InvalidInput("a token needs at least one credential it may use (--credential NAME)")
        if not isinstance(expires_in_seconds, int) or not 3600 <= expires_in_seconds <= MAX_EXPIRES_DAYS * 86400:
            raise InvalidInput(f"expiry must be between 1 hour and {MAX_EXPIRES_DAYS} days")
        token_id, secret = secrets.token_hex(16), secrets.token_hex(32)
        expires_at = self.vault._clock() + expires_in_seconds
        meta = {"token_name": name, "credentials": creds, "expires_at": expires_at}
        self.vault.set(owner, _record_name(token_id), _hash(secret), type=TOKEN_TYPE, metadata=meta, actor=actor,
                       action="token_create", hidden=True)
        rec = self.vault.backend.get_credential(owner, _record_name(token_id))
        return f"{PREFIX}_{token_id}_{secret}", self._info(rec)

    def list(self, owner: str) -> list[TokenInfo]:
        recs = [r for r in self.vault.backend.list_credentials(owner) if r.type == TOKEN_TYPE]
        return sorted((self._info(r) for r in recs), key=lambda t: t.created_at)

    def delete(self, owner: str, token_id: str, *, actor: str | None = None) -> None:
        if not isinstance(token_id, str) or not ID_RE.fullmatch(token_id):
            raise NotFound("no token with that id")
        rec = self.vault.backend.get_credential(owner, _record_name(token_id))
        if rec is None or rec.type != TOKEN_TYPE:  # type guard: this path never deletes a credential
            raise NotFound("no token with that id")
        self.vault.delete(owner, rec.name, actor=actor, hidden=True)

    def touch(self, owner: str, token_ids: set[str]) -> None:
        """Last-used times of tokens whose verification was reused (the server's short cache)."""
        for token_id in token_ids:
            if ID_RE.fullmatch(token_id):
                self.vault.touch(owner, _record_name(token_id))

    def verify(self, owner: str, token: str, credential: str | None) -> TokenInfo:
        """The token's info if it is valid now and may use `credential`; else TokenRefused/TokenScopeError."""
        refused = TokenRefused("vault access token refused (unknown, deleted, expired or malformed)")
        m = TOKEN_RE.fullmatch(token or "")
        rec = self.vault.backend.get_credential(owner, _record_name(m.group(1))) if m else None
        stored = _DUMMY_HASH
        if rec is not None and rec.type == TOKEN_TYPE:
            stored = self.vault.get_value(owner, rec.name, purpose="token_auth", touch=True)
        presented = _hash(m.group(2)) if m else _hash("")
        ok = hmac.compare_digest(stored, presented) and rec is not None and rec.type == TOKEN_TYPE
        if not ok:
            raise refused
        info = self._info(rec)
        if info.expires_at is None or info.expires_at <= self.vault._clock():
            raise refused
        if credential is not None and credential not in info.credentials:
            raise TokenScopeError(f"this token may not use {credential} (allowed: {', '.join(info.credentials)})")
        return info



# -- kernel-bound tokens: what `keyvault.env(NAME)` exports in proxy mode

KERNEL_TOKEN_MIN_SECONDS = 60
KERNEL_TOKEN_MAX_SECONDS = 3600
MAX_TOKENS_PER_KERNEL = 64  # a loop of `with keyvault.env(...)` revokes as it goes; this bounds a leak


@dataclass
class _KernelGrant:
    digest: str
    kernel_id: str
    credential: str
    created_at: float
    expires_at: float


class KernelTokens:
    """Short-lived `kvt1_` tokens bound to one kernel and one credential, held in this server's
    memory only: useless to another server, after a restart, once their kernel stops, once revoked
    or past their expiry (`lifetime` seconds after issue or the last renewal).

    They exist so libraries that read a key from the environment (LangChain, LiteLLM, ...) can send
    something the proxy accepts without the real key entering the kernel. The wire format is the
    vault token's, so the proxy's token path (Authorization Bearer, x-api-key, api-key) accepts them."""

    def __init__(self, lifetime: float, *, clock: Callable[[], float] = time.time):
        if not KERNEL_TOKEN_MIN_SECONDS <= lifetime <= KERNEL_TOKEN_MAX_SECONDS:
            raise ValueError(f"lifetime must be between {KERNEL_TOKEN_MIN_SECONDS} and {KERNEL_TOKEN_MAX_SECONDS} s")
        self.lifetime = float(lifetime)
        self._clock = clock
        self._grants: dict[str, _KernelGrant] = {}
        self._lock = threading.Lock()  # verify runs on the event loop, issue/renew too: cheap, never held long

    def _info(self, token_id: str, grant: _KernelGrant) -> TokenInfo:
        return TokenInfo(token_id, f"kernel {grant.kernel_id}", [grant.credential], grant.created_at, None,
                         grant.expires_at, kernel_id=grant.kernel_id)

    def holds(self, token: str | None) -> bool:
        """Whether `token` has the id of a token issued here (ids are not secret)."""
        m = TOKEN_RE.fullmatch(token or "")
        return bool(m) and m.group(1) in self._grants  # type: ignore[union-attr]

    def issue(self, kernel_id: str, credential: str) -> tuple[str, TokenInfo]:
        credential = validate_name(credential)
        now = self._clock()
        with self._lock:
            self._drop_expired(now)
            mine = sorted((g.created_at, tid) for tid, g in self._grants.items() if g.kernel_id == kernel_id)
            for _, oldest in mine[:max(0, len(mine) - MAX_TOKENS_PER_KERNEL + 1)]:
                del self._grants[oldest]
            token_id, secret = secrets.token_hex(16), secrets.token_hex(32)
            grant = self._grants[token_id] = _KernelGrant(_hash(secret), kernel_id, credential, now,
                                                          now + self.lifetime)
            return f"{PREFIX}_{token_id}_{secret}", self._info(token_id, grant)

    def _own(self, kernel_id: str, token_id: str) -> _KernelGrant:
        grant = self._grants.get(token_id) if isinstance(token_id, str) else None
        if grant is None or grant.kernel_id != kernel_id or grant.expires_at <= self._clock():
            raise NotFound("no such kernel token (expired, revoked or another kernel's)")
        return grant

    def renew(self, kernel_id: str, token_id: str) -> TokenInfo:
        """Push the expiry `lifetime` seconds ahead; only the kernel it was issued to may."""
        with self._lock:
            grant = self._own(kernel_id, token_id)
            grant.expires_at = self._clock() + self.lifetime
            return self._info(token_id, grant)

    def revoke(self, kernel_id: str, token_id: str) -> None:
        with self._lock:
            self._own(kernel_id, token_id)
            del self._grants[token_id]

    def forget_kernel(self, kernel_id: str) -> None:
        with self._lock:
            for tid in [t for t, g in self._grants.items() if g.kernel_id == kernel_id]:
                del self._grants[tid]

    def _drop_expired(self, now: float) -> None:
        for tid in [t for t, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[tid]

    def verify(self, token: str, credential: str | None, kernel_alive: Callable[[str], bool]) -> TokenInfo:
        """The token's info if it is valid now, its kernel still runs, and (when `credential` is given)
        it was issued for that credential; else TokenRefused / TokenScopeError."""
        refused = TokenRefused("vault access token refused (unknown, deleted, expired or malformed)")
        m = TOKEN_RE.fullmatch(token or "")
        grant = self._grants.get(m.group(1)) if m else None
        presented = _hash(m.group(2)) if m else _hash("")
        ok = hmac.compare_digest(grant.digest if grant else _DUMMY_HASH, presented) and grant is not None
        if not ok or grant is None or m is None:
            raise refused
        if grant.expires_at <= self._clock() or not kernel_alive(grant.kernel_id):
            with self._lock:
                self._grants.pop(m.group(1), None)
            raise refused
        if credential is not None and credential != grant.credential:
            raise TokenScopeError(f"this token may not use {credential} (allowed: {grant.credential})")
        return self._info(m.group(1), grant)
