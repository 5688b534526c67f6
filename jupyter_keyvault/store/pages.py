"""Pages of a credential listing (`GET …/credentials?limit=&cursor=`): the server, the hub service, its client, the CLI.

The cursor is opaque to clients: the last name of the page before, versioned and base64url-encoded,
so the next page starts strictly after it (keyset paging; a stable order by name). Without `limit`
and `cursor` a listing is whole, as it was before pages existed.
"""

from __future__ import annotations

import base64
import re
from typing import Iterator

from .vault import MAX_PAGE

DEFAULT_PAGE = 100  # the page the sidebar and the CLI ask for
_CURSOR = "c1."
# base64url without padding, of at most 72 bytes (openapi.json documents the same pattern)
CURSOR_PATTERN = re.compile(r"c1\.(?:[A-Za-z0-9_-]{4}){0,24}(?:[A-Za-z0-9_-]{2,3})?")


class BadPage(ValueError):
    """A limit or cursor this listing cannot serve (a 400)."""


def encode_cursor(last_name: str) -> str:
    return _CURSOR + base64.urlsafe_b64encode(last_name.encode("latin-1")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name a page starts after. Any cursor of the documented form is served (one not issued here
    just starts somewhere); only a malformed one is refused."""
    if not CURSOR_PATTERN.fullmatch(cursor):
        raise BadPage("cursor is not one this listing returned (pass back the 'next' value as it came)")
    text = cursor[len(_CURSOR):]
    # Names are ASCII; NUL cannot be stored in PostgreSQL text, so it is no bound.
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("latin-1").replace("\0", "")


def page_request(limit: str | None, cursor: str | None) -> tuple[int, str | None] | None:
    """(limit, the name to start after) from the query arguments, or None for the whole listing."""
    if limit is None and cursor is None:
        return None
    if limit is None:
        size = DEFAULT_PAGE
    else:
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_PAGE:
            raise BadPage(f"limit must be an integer from 1 to {MAX_PAGE}")
        size = int(limit)
    return size, (None if cursor is None else decode_cursor(cursor))


def next_cursor(items: list, more: bool) -> str | None:
    return encode_cursor(items[-1].name) if more and items else None


def all_pages(vault, owner: str, size: int = DEFAULT_PAGE) -> Iterator:
    """Every item of a vault's listing, read a page at a time (`vault.list_page`)."""
    after = None
    while True:
        items, more = vault.list_page(owner, limit=size, after=after)
        yield from items
        if not more or not items:
            return
        after = items[-1].name
