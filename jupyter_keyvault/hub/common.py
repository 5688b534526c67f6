"""Names the hub service and its clients (admin CLI, config helpers) share."""

from __future__ import annotations

from ..store.errors import RateLimited

SERVICE_NAME_DEFAULT = "keyvault"
SHARED_OWNER = "shared"  # personal owners are "user:<name>", so no hub user name can collide
USER_OWNER_PREFIX = "user:"
GRANT_KINDS = ("group", "user")


def personal_owner(username: str) -> str:
    return USER_OWNER_PREFIX + username


class QuotaExceeded(RateLimited):
    """A user or a shared key is over a rate limit or a daily quota (429 with Retry-After)."""
