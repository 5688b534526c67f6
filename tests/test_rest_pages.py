"""Paginated listing, `GET /keyvault/api/credentials?limit=&cursor=`, through pytest-jupyter's in-process
server (real auth, real handlers, the vault on disk): every page, nothing twice and nothing missing
while credentials are added between pages, the whole listing unchanged for old clients, and every
bad limit or cursor a 400 JSON error that changes nothing.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_keyvault.store.pages import DEFAULT_PAGE

pytestmark = pytest.mark.keyvault(write_rate_per_minute=1_000_000)


@pytest.fixture
def put(jp_fetch):
    async def put(name: str) -> None:
        response = await jp_fetch("keyvault", "api", "credentials", name, method="PUT",
                                  body=json.dumps({"value": "sk-proj-" + name.lower().ljust(40, "x"),
                                                   "provider": "openai"}))
        assert response.code in (201, 204)

    return put


@pytest.fixture
def listing(jp_fetch):
    async def get(**params) -> dict:
        query = {k: str(v) for k, v in params.items()}
        response = await jp_fetch("keyvault", "api", "credentials", params=query)
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.body)

    return get


async def all_pages(listing, limit: int) -> tuple[list[str], int]:
    names: list[str] = []
    page = await listing(limit=limit)
    pages = 1
    while True:
        assert len(page["credentials"]) <= limit
        names += [c["name"] for c in page["credentials"]]
        if page["next"] is None:
            return names, pages
        page = await listing(limit=limit, cursor=page["next"])
        pages += 1


async def test_given_23_credentials_when_listed_5_at_a_time_then_the_pages_hold_each_once_in_name_order(
        jp_serverapp, put, listing):
    stored = sorted(f"KEY_{i:02d}" for i in range(23))
    for name in reversed(stored):
        await put(name)

    names, pages = await all_pages(listing, 5)
    whole = await listing()

    assert names == stored
    assert pages == 5
    assert [c["name"] for c in whole["credentials"]] == stored  # the unpaginated shape, as before
    assert whole["next"] is None


async def test_given_an_exact_multiple_when_paged_then_the_last_full_page_says_there_is_no_next(
        jp_serverapp, put, listing):
    for i in range(6):
        await put(f"KEY_{i}")

    first = await listing(limit=3)
    second = await listing(limit=3, cursor=first["next"])

    assert [c["name"] for c in second["credentials"]] == ["KEY_3", "KEY_4", "KEY_5"]
    assert second["next"] is None


async def test_given_a_cursor_alone_when_listing_then_the_default_page_follows_it(jp_serverapp, put, listing):
    for i in range(3):
        await put(f"KEY_{i}")
    first = await listing(limit=1)

    rest = await listing(cursor=first["next"])

    assert [c["name"] for c in rest["credentials"]] == ["KEY_1", "KEY_2"]
    assert DEFAULT_PAGE == 100


async def test_given_inserts_between_pages_when_paging_then_no_credential_is_listed_twice_or_missed(
        jp_serverapp, put, listing):
    original = [f"KEY_{i:02d}" for i in range(0, 40, 2)]
    for name in original:
        await put(name)
    seen: list[str] = []
    page = await listing(limit=4)
    inserted = 0
    while True:
        seen += [c["name"] for c in page["credentials"]]
        # Between pages: one name before the cursor (already passed) and one after it (still ahead).
        await put(f"KEY_{inserted * 2 + 1:02d}")
        await put(f"KEY_{39 - inserted * 2:02d}X")
        inserted += 1
        if page["next"] is None:
            break
        page = await listing(limit=4, cursor=page["next"])

    assert len(seen) == len(set(seen))
    assert set(original) <= set(seen)
    assert seen == sorted(seen)


@pytest.mark.parametrize("query", [
    "limit=0", "limit=501", "limit=-1", "limit=1.5", "limit=abc", "limit=", "limit=%EF%BC%91",
    "cursor=not-a-cursor", "cursor=c1.%21%21", "cursor=c1.A", "cursor=", "cursor=" + "c1." + "A" * 200,
    "limit=5&cursor=" + quote("c1.S0VZ/"),
])
async def test_given_a_bad_limit_or_cursor_when_listing_then_400_json_and_nothing_changes(
        jp_serverapp, jp_fetch, put, listing, query):
    await put("KEY_A")
    before = await listing()

    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("keyvault", "api", "credentials", params=dict(parse_qsl(query, keep_blank_values=True)))

    assert err.value.code == 400
    body = json.loads(err.value.response.body)
    assert "limit" in body["message"] or "cursor" in body["message"]
    assert await listing() == before
