"""keyvault.panel() (ipywidgets) in a real JupyterLab, driven by Debian chromium through Playwright.

A canary key is entered in the panel's Password field, saved, tested against the fake upstream,
used from another cell through keyvault.openai() and deleted; it must then be absent from the DOM,
input values, browser storage, every HTTP response and websocket frame the page received (comm
messages included), and the saved notebook, its widget-state metadata included.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
from test_browser_sidebar import (  # noqa: F401 - fixtures
    IMAGES,
    USE_CELL,
    browser_page,
    notebook,
    open_notebook,
    run_cell,
)

from jupyter_keyvault.testing.browser import places_in_page, require_chromium, write_lab_settings
from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT
from jupyter_keyvault.testing.live_server import JupyterLab

PANEL = ".keyvault-panel"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def lab(fake_upstream):
    require_chromium()
    server = JupyterLab(config={"KeyVault": {"provider_base_urls": {"openai": fake_upstream.openai_base_url},
                                             "test_timeout": 10.0}})
    write_lab_settings(server.root / "config")  # widget state is saved into the notebook
    (server.root / "home" / "panel.ipynb").write_text(json.dumps(notebook("import keyvault\nkeyvault.panel()",
                                                                         USE_CELL)))
    server.start(timeout=120)
    yield server
    server.stop()


def status_text(page) -> str:
    return page.locator(f"{PANEL} .keyvault-panel-status").inner_text()


def wait_status(page, text: str):
    page.wait_for_selector(f"{PANEL} .keyvault-panel-status:has-text('{text}')", timeout=60_000)


def test_given_a_canary_key_entered_in_the_widget_panel_when_saved_tested_used_and_deleted_then_the_browser_and_notebook_never_hold_it(
        lab, browser_page, fake_upstream):  # noqa: F811 - a pytest fixture
    page, recorder = browser_page
    canary = "sk-proj-CANARY" + secrets.token_hex(20)
    fake_upstream.valid_keys.add(canary)

    page.goto(lab.lab_url())
    open_notebook(page, "panel.ipynb")
    run_cell(page, 0)
    page.wait_for_selector(f"{PANEL} .keyvault-panel-value input")

    page.locator(f"{PANEL} .keyvault-panel-name input").fill("OPENAI_API_KEY")
    page.locator(f"{PANEL} .keyvault-panel-value input").fill(canary)
    page.locator(f"{PANEL} .keyvault-panel-save").click()
    # The kernel clears the field: one comm round trip after the click (not synchronous in the browser).
    page.wait_for_function("e => e.value === ''", arg=page.locator(f"{PANEL} .keyvault-panel-value input")
                           .element_handle(), timeout=5_000)
    wait_status(page, "Saved OPENAI_API_KEY")
    page.wait_for_selector(f'{PANEL} .keyvault-panel-row[data-name="OPENAI_API_KEY"]')
    assert places_in_page(page, canary) == []
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.locator(PANEL).screenshot(path=str(IMAGES / "widget-panel.png"))

    page.locator(f"{PANEL} .keyvault-panel-test").click()
    wait_status(page, "OPENAI_API_KEY works")
    assert fake_upstream.received_keys()[-1] == canary

    output = run_cell(page, 1)
    assert REPLY_TEXT in output, output

    page.locator(f"{PANEL} .keyvault-panel-delete").click()
    page.locator(f"{PANEL} .keyvault-panel-confirm").click()
    wait_status(page, "Deleted OPENAI_API_KEY.")

    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    saved = lab.root / "home" / "panel.ipynb"
    deadline = time.monotonic() + 30
    while "application/vnd.jupyter.widget-state+json" not in saved.read_text() and time.monotonic() < deadline:
        time.sleep(0.3)
    saved_nb = json.loads(saved.read_text())
    assert "application/vnd.jupyter.widget-state+json" in saved_nb["metadata"].get("widgets", {})
    assert REPLY_TEXT in saved.read_text()

    assert places_in_page(page, canary) == []
    assert recorder.where(canary) == []
    assert canary not in saved.read_text()
    assert canary not in lab.log_path.read_text()
    assert recorder.frames and any(b"comm_msg" in data or b"comm_open" in data for _, data in recorder.frames)
    api_unread = [u for u in recorder.unread if "/keyvault/" in u or "/api/" in u]
    assert api_unread == [], api_unread
