"""Drive a real JupyterLab with Debian chromium (Playwright) and collect everything the page received.

Tests use `launch_chromium()` (skips with a clear reason when chromium or playwright is missing),
`PageRecorder` (every HTTP response body, through request interception, and every websocket frame
received) and `browser_storage()` (localStorage, sessionStorage and every IndexedDB store).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("KEYVAULT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

LAB_SETTINGS = {
    # No news/update toasts over the screenshots; widget state saved so the test can inspect it.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
}


def require_chromium():
    """Skip (never pass) when the browser or the driver is absent; CI installs both."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM}: run scripts/install-chromium.sh (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed: pip install -e '.[test]'")


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def write_lab_settings(config_dir: Path, extra: dict | None = None) -> None:
    for plugin, values in {**LAB_SETTINGS, **(extra or {})}.items():
        path = config_dir / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class PageRecorder:
    """Every HTTP response body and every websocket frame the page received.

    Responses are kept as they arrive and their bodies read by `collect()` before the page closes
    (reading them inside the event handler stalls Playwright's sync dispatcher, and intercepting with
    context.route() stops JupyterLab's kernel websockets). Tests stay on one page (no navigation) so
    bodies are not evicted; one that cannot be read is listed in `unread`, so a test can tell
    "not found" from "not looked at".
    """

    def __init__(self, context):
        self.pending: list = []
        self.responses: list[tuple[str, bytes]] = []
        self.frames: list[tuple[str, bytes]] = []
        self.unread: list[str] = []

    def collect(self) -> None:
        pending, self.pending = self.pending, []
        for response in pending:
            if response.status in (204, 304) or 300 <= response.status < 400:
                self.responses.append((response.url, b""))  # no body by definition
                continue
            try:
                self.responses.append((response.url, response.body()))
            except Exception as exc:  # noqa: BLE001 - redirects have no body; evicted bodies are reported
                self.unread.append(f"{response.request.method} {response.url} {response.status}: {exc}".splitlines()[0])

    def watch(self, page) -> None:
        page.on("response", lambda response: self.pending.append(response))
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws):
        def received(payload):
            data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
            self.frames.append((ws.url, data))
        ws.on("framereceived", received)

    def where(self, secret: str) -> list[str]:
        self.collect()
        needle = secret.encode()
        return ([f"response {url}" for url, body in self.responses if needle in body]
                + [f"websocket frame {url}" for url, data in self.frames if needle in data])


STORAGE_DUMP = """async () => {
  const out = {local: {}, session: {}, indexeddb: {}};
  for (let i = 0; i < localStorage.length; i++) { const k = localStorage.key(i); out.local[k] = localStorage.getItem(k); }
  for (let i = 0; i < sessionStorage.length; i++) { const k = sessionStorage.key(i); out.session[k] = sessionStorage.getItem(k); }
  const dbs = indexedDB.databases ? await indexedDB.databases() : [];
  for (const info of dbs) {
    const db = await new Promise((ok, fail) => {
      const r = indexedDB.open(info.name); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error);
    });
    const stores = {};
    for (const name of Array.from(db.objectStoreNames)) {
      stores[name] = await new Promise((ok) => {
        const req = db.transaction(name, 'readonly').objectStore(name).getAll();
        req.onsuccess = () => { try { ok(JSON.stringify(req.result)); } catch (e) { ok(String(req.result)); } };
        req.onerror = () => ok('unreadable: ' + req.error);
      });
    }
    out.indexeddb[info.name] = stores;
    db.close();
  }
  return JSON.stringify(out);
}"""

INPUT_VALUES = """() => Array.from(document.querySelectorAll('input, textarea, select')).map(e => e.value).join('\\n')"""


def browser_storage(page) -> str:
    return page.evaluate(STORAGE_DUMP)


def places_in_page(page, secret: str) -> list[str]:
    """Where in the live page (DOM, input values, storage) the secret still is."""
    found = []
    if secret in page.content():
        found.append("DOM (page.content())")
    if secret in page.evaluate(INPUT_VALUES):
        found.append("an input's value")
    if secret in browser_storage(page):
        found.append("localStorage/sessionStorage/IndexedDB")
    return found
