"""The sidebar's "Access tokens" section and OAuth "Connect" button in a real browser (Debian chromium,
Playwright) against a real JupyterLab, the fake upstream and a real authorization server (authlib).

(a) A token minted in the sidebar is shown once, then gone from the page; a plain Python process uses it
with the openai SDK, and is refused once the token is revoked in the sidebar.
(b) "Connect" goes through the real authorization server and back to JupyterLab; the credential is listed
with its OAuth badge and no access or refresh token reaches the page.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from test_browser_sidebar import SIDEBAR, notebook, open_notebook, open_sidebar, run_cell, save_key

from jupyter_keyvault.testing.browser import (
    PageRecorder,
    launch_chromium,
    places_in_page,
    require_chromium,
    write_lab_settings,
)
from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT
from jupyter_keyvault.testing.live_server import JupyterLab
from jupyter_keyvault.testing.oauth_server import OAuthTestServer

pytestmark = pytest.mark.timeout(600)

PROVIDER = "testas"
CLIENT_ID = "kv-client"
PROXY = "/keyvault/proxy/openai/v1"
OPENAI_SCRIPT = """
import openai
client = openai.OpenAI(max_retries=0)
try:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    print("REPLY", r.choices[0].message.content)
except openai.APIStatusError as exc:
    print("STATUS", exc.status_code, exc.message)
"""


@pytest.fixture
def oauth_as():
    server = OAuthTestServer().start()
    yield server
    server.stop()


@pytest.fixture
def lab(fake_upstream, oauth_as):
    require_chromium()
    server = JupyterLab(config={"KeyVault": {
        "provider_base_urls": {"openai": fake_upstream.openai_base_url}, "test_timeout": 10.0,
        "oauth_providers": {PROVIDER: oauth_as.provider_config(CLIENT_ID)}}})
    write_lab_settings(server.root / "config")
    (server.root / "home" / "panel.ipynb").write_text(json.dumps(notebook("import keyvault\nkeyvault.panel()")))
    server.start(timeout=120)
    client_secret = "cs-" + os.urandom(16).hex()
    oauth_as.add_client(CLIENT_ID, client_secret, [server.url + "/keyvault/oauth/callback"])
    request = urllib.request.Request(
        server.url + "/keyvault/api/credentials/OAUTH_TESTAS_CLIENT_SECRET", method="PUT",
        data=json.dumps({"value": client_secret, "type": "oauth_client_secret"}).encode(),
        headers={**server.headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # nosec B310 - our own http://127.0.0.1 server
        assert response.status == 201
    yield server
    server.stop()


@pytest.fixture
def browser_page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        recorder = PageRecorder(context)
        page = context.new_page()
        page.set_default_timeout(90_000)
        recorder.watch(page)
        yield page, recorder
        browser.close()


def run_openai_script(lab: JupyterLab, token: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "OPENAI_"))}
    env.update(OPENAI_BASE_URL=lab.url + PROXY, OPENAI_API_KEY=token)
    done = subprocess.run([sys.executable, "-c", OPENAI_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout


def test_given_a_stored_key_when_a_token_is_minted_in_the_sidebar_then_it_is_shown_once_works_outside_and_dies_when_revoked(
        lab, browser_page, fake_upstream):
    page, recorder = browser_page
    fake_upstream.valid_keys.add("sk-proj-" + "T0KEN" * 8)
    page.goto(lab.lab_url())
    open_sidebar(page)
    save_key(page, "OPENAI_API_KEY", "sk-proj-" + "T0KEN" * 8)
    page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="OPENAI_API_KEY"]')

    tokens = page.locator(f"{SIDEBAR} .kv-tokens")
    tokens.locator("summary").click()
    form = tokens.locator(".kv-token-form")
    # The OAuth client secret behind the provider is not something a token can be granted.
    assert form.locator('input[value="OAUTH_TESTAS_CLIENT_SECRET"]').count() == 0
    form.locator('input[type="text"]').fill("ci-script")
    form.locator('input[type="checkbox"][value="OPENAI_API_KEY"]').check()
    form.locator('input[type="number"]').fill("7")
    form.locator('button[type="submit"]').click()

    shown = page.locator(f"{SIDEBAR} .kv-token-once .kv-token-value")
    token = shown.inner_text()
    assert token.startswith("kvt1_"), token
    assert page.locator(f"{SIDEBAR} .kv-token-once").count() == 1
    listed = tokens.locator(".kv-token").filter(has_text="ci-script")
    meta = listed.locator(".kv-token-meta").inner_text()
    assert "scopes: OPENAI_API_KEY" in meta and "expires " in meta and "expires never" not in meta, meta
    page.screenshot(path=str(os.path.join(os.path.dirname(__file__), "..", "docs", "images", "sidebar-token.png")),
                    clip={"x": 0, "y": 0, "width": 700, "height": 800})

    page.locator(f"{SIDEBAR} .kv-token-dismiss").click()
    assert page.locator(f"{SIDEBAR} .kv-token-once").count() == 0
    assert places_in_page(page, token) == []
    # The one response that carried it is the create call (shown once); nothing else did.
    assert [w for w in recorder.where(token) if "/keyvault/api/tokens" not in w] == []

    assert f"REPLY {REPLY_TEXT}" in run_openai_script(lab, token)

    listed.locator(".kv-token-delete").click()
    page.locator(".jp-Dialog button.jp-mod-warn").click()
    page.wait_for_selector(f"{SIDEBAR} .kv-message:has-text('Revoked ci-script.')")
    assert tokens.locator(".kv-token").count() == 0
    refused = run_openai_script(lab, token)
    assert refused.startswith("STATUS 401") and "vault access token refused" in refused, refused
    assert token not in lab.log_path.read_text()


def test_given_an_oauth_provider_when_connect_is_clicked_in_the_sidebar_then_the_real_as_flow_returns_to_lab_and_no_token_reaches_the_page(
        lab, browser_page, oauth_as):
    page, recorder = browser_page
    page.goto(lab.lab_url())
    open_sidebar(page)
    connect = page.locator(f"{SIDEBAR} .kv-connect")
    assert connect.inner_text() == "Connect Test AS"
    connect.click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill("DRIVE")
    recorder.collect()  # bodies of this page, before it navigates away
    with page.expect_navigation(url=lambda u: "/lab" in u and "/keyvault/" not in u, timeout=90_000):
        dialog.locator("button.jp-mod-accept").click()

    assert oauth_as.token_requests == ["authorization_code"]
    assert oauth_as.authorize_requests[-1]["code_challenge_method"] == "S256"
    open_sidebar(page)
    item = page.locator(f'{SIDEBAR} tr.kv-item[data-name="DRIVE"]')
    item.wait_for()
    assert item.locator(".kv-badge-oauth").inner_text() == "OAuth"
    assert "testas" in item.inner_text()
    detail = page.locator(f'{SIDEBAR} tr.kv-item-detail[data-name="DRIVE"]')
    assert "Token expires" in detail.locator(".kv-test-result").inner_text()
    page.screenshot(path=str(os.path.join(os.path.dirname(__file__), "..", "docs", "images", "sidebar-oauth.png")),
                    clip={"x": 0, "y": 0, "width": 700, "height": 800})

    issued = [t.access_token for t in oauth_as.tokens] + [t.refresh_token for t in oauth_as.tokens if t.refresh_token]
    assert len(issued) == 2
    recorder.collect()
    assert len(recorder.responses) > 20 and recorder.frames
    for value in issued:
        assert places_in_page(page, value) == []
        assert recorder.where(value) == []
        assert value not in lab.log_path.read_text()
    hops = [url for url, _ in recorder.responses]
    assert any(f"/keyvault/oauth/{PROVIDER}/start" in u for u in hops)
    assert any(u.startswith(oauth_as.url + "/authorize") for u in hops)
    assert any("/keyvault/oauth/callback" in u for u in hops)


def test_given_an_oauth_provider_when_connect_is_clicked_in_the_widget_panel_then_its_link_opens_the_real_flow_on_the_same_origin(
        lab, browser_page, oauth_as):
    page, recorder = browser_page
    panel = ".keyvault-panel"
    page.goto(lab.lab_url())
    open_notebook(page, "panel.ipynb")
    run_cell(page, 0)
    page.locator(f"{panel} .keyvault-panel-connect").wait_for()
    assert page.locator(f"{panel} .keyvault-panel-connect").inner_text().strip() == "Connect Test AS"
    page.locator(f"{panel} .keyvault-panel-name input").fill("MAIL")
    page.locator(f"{panel} .keyvault-panel-name input").press("Enter")
    page.locator(f"{panel} .keyvault-panel-connect").click()
    link = page.locator(f'{panel} a.keyvault-panel-oauth-go[target="_blank"]')
    link.wait_for()
    assert "as MAIL" in link.inner_text()
    with page.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_url(lambda u: u.startswith(lab.url + "/lab/tree/panel.ipynb"), timeout=90_000)
    tab.close()
    assert oauth_as.token_requests == ["authorization_code"]

    page.locator(f"{panel} .keyvault-panel-refresh").click()
    row = page.locator(f'{panel} .keyvault-panel-row[data-name="MAIL"]')
    row.wait_for()
    assert "OAuth: testas" in row.inner_text() and "token until" in row.inner_text()
    page.locator(panel).screenshot(path=str(os.path.join(os.path.dirname(__file__), "..", "docs", "images",
                                                         "widget-panel-oauth.png")))
    issued = [t.access_token for t in oauth_as.tokens] + [t.refresh_token for t in oauth_as.tokens if t.refresh_token]
    for value in issued:
        assert places_in_page(page, value) == []
        assert recorder.where(value) == []
