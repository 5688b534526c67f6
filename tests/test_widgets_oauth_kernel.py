"""keyvault.panel() and OAuth, in a real kernel started by a real server, with a real authorization server:
a Connect button per configured provider, a link relative to the server's base URL that a browser follows
through the authorization server, and OAuth credentials listed with their expiry or `needs reconnecting`.
"""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from test_oauth import (  # noqa: F401 - fixtures
    CLIENT_ID,
    CLIENT_SECRET,
    PROVIDER,
    keyvault_config,
    make_token,
    oauth_as,
    open_browser,
    skip_clock,
)
from test_widgets_kernel import open_panel

pytest.importorskip("ipywidgets", minversion="8")


def link_of(ui) -> str:
    found = re.search(r'<a class="keyvault-panel-oauth-go" target="_blank" rel="noopener" href="([^"]+)"',
                      ui.state_of("keyvault-panel-oauth-link")["value"])
    assert found, ui.state_of("keyvault-panel-oauth-link")["value"]
    return html.unescape(found.group(1))


async def test_given_an_oauth_provider_when_connect_is_clicked_in_the_panel_then_a_relative_link_runs_the_real_flow_and_the_list_shows_it(
        open_browser, server_url, jp_base_url, oauth_as, keyvault_app, server_kernel, jp_fetch):  # noqa: F811 - pytest fixtures
    browser = await open_browser()
    kernel, ui = await open_panel(server_kernel, "work/panel.ipynb")
    connect = ui.state_of("keyvault-panel-connect")
    assert connect["description"] == "Connect Test AS"

    await ui.set("keyvault-panel-name", value="DRIVE")
    clicked = await ui.click("keyvault-panel-connect")
    assert clicked.error is None
    href = link_of(ui)
    parts = urlsplit(href)
    assert not parts.scheme and not parts.netloc  # relative: the browser stays on the user's origin
    assert parts.path == f"{jp_base_url}keyvault/oauth/{PROVIDER}/start"
    assert parse_qs(parts.query) == {"name": ["DRIVE"], "next": [f"{jp_base_url}lab/tree/work/panel.ipynb"]}
    assert "Open the link to connect DRIVE." in ui.status()

    # The browser opens it (same origin as the server): through the AS and back to the notebook.
    origin = server_url[: -len(jp_base_url)]
    final = await browser.get(origin + href, follow_redirects=False)
    while final.status_code in (302, 303):
        location = final.headers["location"]
        if urlsplit(location).path.startswith(f"{jp_base_url}lab"):
            break
        final = await browser.get(location if "://" in location else origin + location, follow_redirects=False)
    assert urlsplit(final.headers["location"]).path == f"{jp_base_url}lab/tree/work/panel.ipynb"
    assert oauth_as.token_requests == ["authorization_code"]

    await ui.click("keyvault-panel-refresh")
    listing = ui.state_of("keyvault-panel-list")["value"]
    row = listing[listing.index('data-name="DRIVE"'):]
    row = row[:row.index("</tr>")]
    assert f"OAuth: {PROVIDER}" in row and "token until" in row and "needs reconnecting" not in row

    # Refresh token revoked at the AS and the access token expired: the next use marks it, the panel says so.
    async with httpx.AsyncClient(trust_env=False, timeout=30) as tool:
        revoked = await tool.post(oauth_as.url + "/revoke", data={"token": oauth_as.tokens[0].refresh_token},
                                  auth=(CLIENT_ID, CLIENT_SECRET))
        assert revoked.status_code == 200
        skip_clock(keyvault_app, 3600)
        token = await make_token(jp_fetch, "DRIVE")
        refused = await tool.get(server_url + "keyvault/proxy/oauth/DRIVE/files",
                                 headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401
    await ui.click("keyvault-panel-refresh")
    listing = ui.state_of("keyvault-panel-list")["value"]
    assert 'class="keyvault-panel-reauth">needs reconnecting' in listing

    frames = "\n".join(f.decode("latin-1") if isinstance(f, bytes) else f for f in kernel.frames)
    for t in oauth_as.tokens:
        assert t.access_token not in frames and (t.refresh_token or "@@") not in frames

