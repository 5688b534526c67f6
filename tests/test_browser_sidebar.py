"""The JupyterLab "Key Vault" sidebar in a real browser (Debian chromium driven by Playwright) against a
real JupyterLab started by the test, a real kernel and the local fake upstream.

A canary key is typed into the sidebar, tested, used from a notebook cell through keyvault.openai(),
replaced and deleted; after each submit it must be nowhere the browser can see: DOM, input values,
localStorage/sessionStorage/IndexedDB, any HTTP response body or websocket frame the page received,
and the saved notebook on disk.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from jupyter_keyvault.testing.browser import (
    PageRecorder,
    launch_chromium,
    places_in_page,
    require_chromium,
    write_lab_settings,
)
from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT
from jupyter_keyvault.testing.live_server import JupyterLab

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
SIDEBAR = "#jupyter-keyvault-sidebar"
USE_CELL = (
    "import keyvault\n"
    "client = keyvault.openai()\n"
    "reply = client.chat.completions.create(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}])\n"
    "print(reply.choices[0].message.content)"
)

pytestmark = pytest.mark.timeout(600)


def notebook(*sources: str) -> dict:
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {}, "outputs": [],
                   "source": s} for i, s in enumerate(sources)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


@pytest.fixture
def lab(fake_upstream):
    require_chromium()
    server = JupyterLab(config={"KeyVault": {"provider_base_urls": {"openai": fake_upstream.openai_base_url},
                                             "test_timeout": 10.0}})
    write_lab_settings(server.root / "config")
    (server.root / "home" / "use.ipynb").write_text(json.dumps(notebook(USE_CELL)))
    server.start(timeout=120)
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


def open_sidebar(page):
    page.wait_for_selector('.jp-SideBar li[data-id="jupyter-keyvault-sidebar"]')
    if page.locator('.jp-SideBar li[data-id="jupyter-keyvault-sidebar"].lm-mod-current').count() == 0:
        page.click('.jp-SideBar li[data-id="jupyter-keyvault-sidebar"]')
    page.wait_for_selector(f"{SIDEBAR} .kv-protection-source")


def save_key(page, name: str, value: str, provider: str = "openai"):
    sidebar = page.locator(SIDEBAR)
    if not sidebar.locator(".kv-name").evaluate("e => e.readOnly"):
        sidebar.locator(".kv-name").fill(name)
        sidebar.locator(".kv-provider").select_option(provider)
    sidebar.locator(".kv-value").fill(value)
    sidebar.locator(".kv-save").click()
    # Cleared on submit, before the server answered.
    assert sidebar.locator(".kv-value").input_value() == ""


def open_notebook(page, name: str):
    """From the file browser, staying on the same page (no navigation evicts recorded bodies)."""
    page.wait_for_selector('.jp-SideBar li[data-id="jupyter-keyvault-sidebar"]')  # the app has loaded
    if page.locator('.jp-SideBar li[data-id="filebrowser"].lm-mod-current').count() == 0:
        page.click('.jp-SideBar li[data-id="filebrowser"]')
    page.locator(f'.jp-DirListing-item[title^="Name: {name}"]').dblclick()


def run_cell(page, index: int = 0) -> str:
    """Run one notebook cell with Shift+Enter and return its output text once it has finished."""
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content")
    page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')", timeout=120_000)  # kernel ready
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "e => /\\[\\d+\\]/.test(e.querySelector('.jp-InputPrompt').textContent)",
        arg=cell.element_handle(), timeout=150_000)
    return cell.locator(".jp-OutputArea").inner_text()


def row(page, name: str):
    return page.locator(f'{SIDEBAR} tr.kv-item-detail[data-name="{name}"]')


def test_given_a_canary_key_typed_into_the_sidebar_when_saved_tested_used_replaced_and_deleted_then_the_browser_never_holds_it(
        lab, browser_page, fake_upstream):
    page, recorder = browser_page
    canary = "sk-proj-CANARY" + secrets.token_hex(20)
    replacement = "sk-proj-CANARY" + secrets.token_hex(20)
    fake_upstream.valid_keys.update({canary, replacement})

    page.goto(lab.lab_url())
    open_sidebar(page)
    assert "Protected: master key from env" in page.locator(f"{SIDEBAR} .kv-protection-source").inner_text()
    # Kernel isolation is on by default where Landlock exists (every machine these tests run on).
    assert "Kernels isolated" in page.locator(f"{SIDEBAR} .kv-isolation").inner_text()
    assert "Key Vault: protected (env)" in page.locator(".kv-statusbar-button").inner_text()

    # Add
    save_key(page, "OPENAI_API_KEY", canary)
    page.wait_for_selector(f"{SIDEBAR} .kv-message:has-text('Saved OPENAI_API_KEY.')")
    page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="OPENAI_API_KEY"]')
    assert places_in_page(page, canary) == []
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.locator(".jp-SideBar.jp-mod-left, #jp-left-stack").first.wait_for()
    page.screenshot(path=str(IMAGES / "sidebar-light.png"), clip={"x": 0, "y": 0, "width": 700, "height": 800})

    # Test against the fake upstream
    row(page, "OPENAI_API_KEY").locator(".kv-test").click()
    result = row(page, "OPENAI_API_KEY").locator(".kv-test-result")
    page.wait_for_function("e => e.textContent.startsWith('OK')", arg=result.element_handle())
    assert fake_upstream.received_keys()[-1] == canary

    # Use from a notebook cell through the server proxy
    recorder.collect()
    open_notebook(page, "use.ipynb")
    output = run_cell(page)
    assert REPLY_TEXT in output, output
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    saved = lab.root / "home" / "use.ipynb"
    deadline = time.monotonic() + 30
    while REPLY_TEXT not in saved.read_text() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert REPLY_TEXT in saved.read_text()
    assert canary not in saved.read_text()

    # Replace, then test the new value
    open_sidebar(page)
    row(page, "OPENAI_API_KEY").locator(".kv-replace").click()
    assert page.locator(f"{SIDEBAR} .kv-form-title").inner_text() == "Replace OPENAI_API_KEY"
    save_key(page, "OPENAI_API_KEY", replacement)
    page.wait_for_selector(f"{SIDEBAR} .kv-message:has-text('Replaced OPENAI_API_KEY.')")
    row(page, "OPENAI_API_KEY").locator(".kv-test").click()
    result = row(page, "OPENAI_API_KEY").locator(".kv-test-result")
    page.wait_for_function("e => e.textContent.startsWith('OK')", arg=result.element_handle())
    assert fake_upstream.received_keys()[-1] == replacement

    # Delete, with confirmation
    row(page, "OPENAI_API_KEY").locator(".kv-delete").click()
    page.locator(".jp-Dialog button.jp-mod-warn").click()
    page.wait_for_selector(f"{SIDEBAR} .kv-message:has-text('Deleted OPENAI_API_KEY.')")
    # The list re-renders after the message: wait for the row to go (times out, failing, if it stays).
    page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="OPENAI_API_KEY"]', state="detached", timeout=10_000)

    for secret in (canary, replacement):
        assert places_in_page(page, secret) == []
        assert recorder.where(secret) == []
        assert secret not in saved.read_text()
        assert secret not in lab.log_path.read_text()
    recorder.collect()
    assert len(recorder.responses) > 20 and recorder.frames  # the recorder really saw the traffic
    api_unread = [u for u in recorder.unread if "/keyvault/" in u or "/api/" in u]
    assert api_unread == [], api_unread
    assert any(REPLY_TEXT.encode() in data for _, data in recorder.frames)


def test_given_a_stored_key_when_access_is_limited_in_the_sidebar_then_the_metadata_is_updated_and_enforced(
        lab, browser_page, fake_upstream):
    page, _ = browser_page
    page.goto(lab.lab_url())
    open_sidebar(page)
    save_key(page, "OPENAI_API_KEY", "sk-proj-" + "V4L1D" * 8)
    row(page, "OPENAI_API_KEY").locator(".kv-access").click()
    row(page, "OPENAI_API_KEY").locator(".kv-globs").fill("course/*.ipynb")
    row(page, "OPENAI_API_KEY").locator(".kv-globs").press("Enter")
    page.wait_for_selector(f"{SIDEBAR} .kv-message:has-text('OPENAI_API_KEY: only course/*.ipynb')")
    page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="OPENAI_API_KEY"] .kv-badge-scoped')

    # use.ipynb is outside course/: the kernel is refused.
    open_notebook(page, "use.ipynb")
    output = run_cell(page)
    assert "not allowed from this notebook" in output and REPLY_TEXT not in output, output


def test_given_the_dark_theme_when_the_sidebar_opens_then_it_uses_the_theme_colours(lab, browser_page):
    page, _ = browser_page
    write_lab_settings(lab.root / "config", {"@jupyterlab/apputils-extension/themes": {"theme": "JupyterLab Dark"}})
    page.goto(lab.lab_url())
    open_sidebar(page)
    save_key(page, "OPENAI_API_KEY", "sk-proj-" + "V4L1D" * 8)
    page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="OPENAI_API_KEY"]')
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
    background = page.locator(SIDEBAR).evaluate("e => getComputedStyle(e).backgroundColor")
    channels = [int(c) for c in background[background.index("(") + 1:background.index(")")].split(",")[:3]]
    assert sum(channels) < 3 * 100, background  # dark, from --jp-layout-color1
    page.screenshot(path=str(IMAGES / "sidebar-dark.png"), clip={"x": 0, "y": 0, "width": 700, "height": 800})


def test_given_a_damaged_vault_when_the_sidebar_opens_then_it_says_the_vault_is_not_available_and_why(
        fake_upstream):
    require_chromium()
    server = JupyterLab(config={"KeyVault": {"provider_base_urls": {"openai": fake_upstream.openai_base_url}}})
    write_lab_settings(server.root / "config")
    vault = server.root / "data" / "keyvault" / "vault.db"
    vault.parent.mkdir(parents=True)
    vault.write_bytes(b"")  # exists but empty: refused, never re-initialised
    server.start(timeout=120)
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page()
            page.set_default_timeout(90_000)
            page.goto(server.lab_url())
            open_sidebar(page)
            protection = page.locator(f"{SIDEBAR} .kv-protection")
            page.wait_for_selector(f"{SIDEBAR} .kv-protection[data-unavailable='true']")
            text = protection.inner_text()
            assert "Vault not available" in text and "vault.db" in text, text
            assert "until the vault opens again" in page.locator(SIDEBAR).inner_text()
            assert page.locator(f"{SIDEBAR} .kv-message[data-kind='error']").count() == 0
            page.wait_for_selector(".kv-statusbar-button:has-text('Key Vault: not available')")
            browser.close()
    finally:
        server.stop()
    assert vault.read_bytes() == b""


def test_given_lifetimes_when_the_sidebar_lists_keys_then_the_session_checkbox_works_and_expired_and_stale_are_badged(
        lab, browser_page, fake_upstream):
    import sqlite3
    import urllib.request

    page, recorder = browser_page
    canary = "sk-proj-CANARY" + secrets.token_hex(20)

    def put(name: str, body: dict) -> None:
        req = urllib.request.Request(f"{lab.url}/keyvault/api/credentials/{name}", method="PUT",
                                     data=json.dumps(body).encode(),
                                     headers={**lab.headers, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 201

    put("OLD_KEY", {"value": "sk-proj-" + "O" * 40})
    put("SHORT_KEY", {"value": "sk-proj-" + "S" * 40, "expires_in": "1s"})
    with sqlite3.connect(lab.vault_path) as db:  # as if OLD_KEY's value were set 120 days ago
        meta = json.loads(db.execute("SELECT metadata FROM credentials WHERE name = 'OLD_KEY'").fetchone()[0])
        meta["value_set_at"] -= 120 * 86400
        db.execute("UPDATE credentials SET metadata = ? WHERE name = 'OLD_KEY'", (json.dumps(meta),))
    time.sleep(1.2)

    page.goto(lab.lab_url())
    open_sidebar(page)
    page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="OLD_KEY"] .kv-badge-stale')
    page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="SHORT_KEY"] .kv-badge-expired')
    assert page.locator(f'{SIDEBAR} tr.kv-item[data-name="OLD_KEY"] .kv-badge-expired').count() == 0
    assert "OLD_KEY is older than 90 days" in page.locator(f"{SIDEBAR} .kv-warnings").inner_text()

    sidebar = page.locator(SIDEBAR)
    sidebar.locator(".kv-session").check()
    save_key(page, "OPENAI_API_KEY", canary)
    page.wait_for_selector(f"{SIDEBAR} .kv-message:has-text('Saved OPENAI_API_KEY for this session only.')")
    page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="OPENAI_API_KEY"] .kv-badge-session')
    assert not sidebar.locator(".kv-session").is_checked()  # the next key is stored unless asked again
    assert page.locator(f'{SIDEBAR} tr.kv-item[data-name="OLD_KEY"] .kv-badge-session').count() == 0
    page.locator(".jp-SideBar.jp-mod-left, #jp-left-stack").first.wait_for()
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "sidebar-lifetimes.png"), clip={"x": 0, "y": 0, "width": 700, "height": 800})

    assert places_in_page(page, canary) == [] and recorder.where(canary) == []
    on_disk = b"".join(p.read_bytes() for p in lab.root.rglob("*") if p.is_file() and p.suffix != ".png")
    assert canary.encode() not in on_disk


@pytest.fixture
def lab_with_many_keys(fake_upstream):
    """A lab whose vault already holds 230 credentials: more than two of the sidebar's pages."""
    from jupyter_keyvault.store import SQLiteBackend, Vault

    require_chromium()
    server = JupyterLab(config={"KeyVault": {"owner": "pages",
                                             "provider_base_urls": {"openai": fake_upstream.openai_base_url}}})
    write_lab_settings(server.root / "config")
    vault = Vault(SQLiteBackend(server.vault_path), env={"KEYVAULT_MASTER_KEY": server.master_key})
    for i in range(230):
        vault.set("pages", f"KEY_{i:03d}", "sk-proj-" + secrets.token_hex(20), provider="openai")
    vault.close()
    server.start(timeout=120)
    yield server
    server.stop()


def test_given_more_credentials_than_a_page_when_the_sidebar_opens_then_it_reads_every_page_and_lists_each_once(
        lab_with_many_keys):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(90_000)
        listings: list[str] = []
        page.on("request", lambda r: listings.append(r.url) if "/keyvault/api/credentials?" in r.url else None)
        page.goto(lab_with_many_keys.lab_url())
        open_sidebar(page)
        page.wait_for_selector(f'{SIDEBAR} tr.kv-item[data-name="KEY_229"]')
        names = page.locator(f"{SIDEBAR} tr.kv-item").evaluate_all("rows => rows.map(r => r.dataset.name)")
        browser.close()

    assert names == [f"KEY_{i:03d}" for i in range(230)]
    assert len(listings) % 3 == 0 and all("limit=100" in url for url in listings)
    assert sum("cursor=" in url for url in listings) == 2 * len(listings) // 3
