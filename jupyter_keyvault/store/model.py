"""The credential model and input validation shared by every backend."""

from __future__ import annotations

import functools
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput

CREDENTIAL_TYPES = ("api_key", "oauth2", "custom", "oauth_client_secret", "vault_token")
# Records of these types are not credentials a user picks from a list (vault access tokens).
HIDDEN_TYPES = ("vault_token",)
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VALUE_BYTES = 16 * 1024
OWNER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


def validate_name(name: object) -> str:
    """Trim and check a credential name: it must be usable as an env-var name."""
    if not isinstance(name, str):
        raise InvalidInput("credential name must be a string")
    name = name.strip()
    if not name:
        raise InvalidInput("credential name is empty")
    if len(name) > 64:
        raise InvalidInput("credential name is longer than 64 characters")
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            "credential name must be usable as an environment variable: letters, digits "
            "and '_', not starting with a digit (e.g. OPENAI_API_KEY)"
        )
    return name


def validate_owner(owner: object) -> str:
    if not isinstance(owner, str) or not OWNER_RE.fullmatch(owner):
        raise InvalidInput("owner must be 1-256 printable characters")
    return owner


def validate_type(kind: object) -> str:
    if kind not in CREDENTIAL_TYPES:
        raise InvalidInput(f"credential type must be one of {', '.join(CREDENTIAL_TYPES)}")
    return kind


def validate_value(value: object, *, max_bytes: int = MAX_VALUE_BYTES) -> str:
    """Check a secret value. Error messages describe the problem, never the value."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("value is not valid UTF-8 text") from None
    if not isinstance(value, str):
        raise InvalidInput("value must be a string")
    if not value:
        raise InvalidInput("value is empty")
    if not value.strip():
        raise InvalidInput("value is only whitespace")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidInput(f"value is {size} bytes; the limit is {max_bytes} bytes")
    if "\x00" in value:
        raise InvalidInput("value contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("value is not valid UTF-8 text") from None
    return value


# Server-made metadata keys: clients can neither set nor drop them (REST PATCH keeps them).
LIFETIME_KEYS = ("session", "expires_at", "value_set_at")
SERVER_METADATA_KEYS = ("hint", *LIFETIME_KEYS)
_DURATION_RE = re.compile(r"\s*(\d{1,6})\s*([smhdw])\s*")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_LIFETIME_SECONDS = 10 * 366 * 86400


def parse_expiry(text: object, now: float) -> float:
    """When a credential expires, as epoch seconds: a duration from `now` (`90m`, `8h`, `7d`, `2w`),
    a date (`2026-12-24`, meaning 00:00 UTC of that day) or an ISO 8601 time (`2026-12-24T18:00Z`,
    UTC unless it names an offset). The time must be in the future and within ten years."""
    from datetime import datetime, timezone

    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("expiry must be a duration like 8h or 7d, or an ISO 8601 date or time")
    m = _DURATION_RE.fullmatch(text)
    if m:
        at = now + int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        try:
            parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidInput("expiry must be a duration like 8h or 7d, or an ISO 8601 date or time "
                               "(e.g. 2026-12-24 or 2026-12-24T18:00:00Z)") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        at = parsed.timestamp()
    if at <= now:
        raise InvalidInput("expiry is in the past; give a future time")
    if at - now > MAX_LIFETIME_SECONDS:
        raise InvalidInput("expiry is more than ten years away")
    return at


def expires_at_of(metadata: dict[str, Any]) -> float | None:
    value = metadata.get("expires_at")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_expired(metadata: dict[str, Any], now: float) -> bool:
    at = expires_at_of(metadata)
    return at is not None and at <= now


def value_created_at(metadata: dict[str, Any], created_at: float) -> float:
    """When the current value was set (records written before lifetimes existed: the record's creation)."""
    value = metadata.get("value_set_at")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else created_at


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class CredentialRecord:
    """One row as the backend stores it: everything but the value is plaintext metadata."""

    id: str
    owner: str
    name: str
    type: str
    provider: str | None
    payload: bytes
    created_at: float
    updated_at: float
    last_used_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CredentialInfo:
    """What may be shown anywhere: presence and metadata, never the value."""

    id: str
    owner: str
    name: str
    type: str
    provider: str | None
    created_at: float
    updated_at: float
    last_used_at: float | None
    metadata: dict[str, Any]
    source: str = "vault"
    # Server-made lifetime facts (session, expires_at, value_set_at): kept out of `metadata`, which is the client's.
    lifetime: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: CredentialRecord) -> CredentialInfo:
        return cls(
            id=rec.id,
            owner=rec.owner,
            name=rec.name,
            type=rec.type,
            provider=rec.provider,
            created_at=rec.created_at,
            updated_at=rec.updated_at,
            last_used_at=rec.last_used_at,
            metadata={k: v for k, v in rec.metadata.items() if k not in LIFETIME_KEYS},
            lifetime={k: rec.metadata[k] for k in LIFETIME_KEYS if k in rec.metadata},
        )

    @property
    def session(self) -> bool:
        return self.lifetime.get("session") is True

    @property
    def expires_at(self) -> float | None:
        return expires_at_of(self.lifetime)

    @property
    def value_created_at(self) -> float:
        return value_created_at(self.lifetime, self.created_at)

    def expired(self, now: float) -> bool:
        return is_expired(self.lifetime, now)

    def stale(self, now: float, warn_after_seconds: float) -> bool:
        """Older than the warning age (0 turns the warning off); env values have no age here."""
        return self.source != "env" and warn_after_seconds > 0 and now - self.value_created_at >= warn_after_seconds

    def lifetime_json(self, now: float) -> dict[str, Any]:
        return {
            "lifetime": "session" if self.session else "stored",
            "expires_at": _iso(self.expires_at),
            "expired": self.expired(now),
            "value_created_at": _iso(self.value_created_at),
            "age_days": max(0, int((now - self.value_created_at) // 86400)),
        }

    def to_json(self) -> dict[str, Any]:
        item = {
            "name": self.name,
            "provider": self.provider,
            "type": self.type,
            "present": True,
            "source": self.source,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "last_used_at": _iso(self.last_used_at),
            "metadata": self.metadata,
            **self.lifetime_json(time.time()),
        }
        if self.type == "oauth2":
            oauth = self.metadata.get("oauth") or {}
            item["oauth"] = {
                "provider": oauth.get("provider"),
                "scopes": list(oauth.get("scopes") or []),
                "expires_at": _iso(oauth.get("expires_at")),
                "needs_reauth": bool(oauth.get("needs_reauth")),
            }
        return item


@dataclass(frozen=True)
class AuditEvent:
    id: int | None
    at: float
    owner: str
    actor: str
    action: str
    target: str | None
    outcome: str
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "owner": self.owner,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@functools.lru_cache(maxsize=8192)
def _iso_second(second: int) -> str:
    t = time.gmtime(second)
    return f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:{t[5]:02d}"


def _iso(ts: float | None) -> str | None:
    # Listings format thousands of timestamps that share seconds: cache the slow part.
    if ts is None:
        return None
    second = int(ts)
    return f"{_iso_second(second)}.{int((ts - second) * 1000):03d}Z"
