"""A canary in every field a notebook can hold: the save hook and `jupyter keyvault scan`
run the same walk, so both must catch every one of them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import nbformat
import pytest

from jupyter_keyvault.nbscrub import scrub_notebook
from jupyter_keyvault.scrub import Scrubber

OPAQUE = "9f2c41d7e0b84a6c9e13f5a27d60c8b4e1a3f9d2"  # no provider prefix: found only as a known value


def entity(text: str, hexa: bool = False) -> str:
    return "".join(f"&#x{ord(c):x};" if hexa else f"&#{ord(c)};" for c in text)


def leaky_notebook(secret: str) -> tuple[dict, list[str]]:
    """A valid nbformat 4 notebook with `secret` (in clear or encoded) in every kind of field,
    and the list of the places it was put, by JSON path."""
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 7 + secret.encode() + b"\0" * 5).decode()
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({
        "kernelspec": {"name": "python3", "display_name": f"Python ({secret})", "language": "python"},
        "custom": {"nested": [{"deep": secret}]},
        "widgets": {"application/vnd.jupyter.widget-state+json": {
            "version_major": 2, "version_minor": 0,
            "state": {"m1": {"model_name": "TextModel", "model_module": "@jupyter-widgets/controls",
                             "model_module_version": "2.0.0", "state": {"value": secret}}}}},
    })
    code = nbformat.v4.new_code_cell("print(x)")
    code.metadata.update({"tags": [secret], "custom_field": {"k": secret}, "jupyter": {"source_hidden": False}})
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"{secret}\n"),
        nbformat.v4.new_output("display_data", data={
            "text/plain": f"plain {secret}",
            "text/html": f"<b>{entity(secret)}</b>",
            "text/markdown": f"md {entity(secret, hexa=True)}",
            "image/png": secret,
            "image/jpeg": png,
            "application/json": {"nested": {"list": [secret]}},
            "application/vnd.custom+json": {secret: "as a key"},
            "text/x-url": "https://example.org/?k=" + "".join(f"%{b:02X}" for b in secret.encode()),
        }, metadata={"image/png": {"width": 10, "alt": secret}, "custom": secret}),
        nbformat.v4.new_output("execute_result", data={"text/plain": "r", "text/latex": "\\u" + "\\u".join(
            f"{ord(c):04x}" for c in secret)}, metadata={"note": secret}, execution_count=1),
        nbformat.v4.new_output("error", ename=f"Error {secret}", evalue=secret, traceback=[f"line {secret}"]),
    ]
    code.execution_count = 1
    markdown = nbformat.v4.new_markdown_cell("![x](attachment:k.png)")
    markdown.attachments = {"k.png": {"image/png": base64.b64encode(secret.encode()).decode(), "text/plain": secret}}
    markdown.metadata["note"] = secret
    raw = nbformat.v4.new_raw_cell("raw")
    raw.metadata["format"] = secret
    nb.cells = [code, markdown, raw]
    nbformat.validate(nb)
    places = [
        "metadata/kernelspec/display_name", "metadata/custom/nested/0/deep",
        "metadata/widgets/application/vnd.jupyter.widget-state+json/state/m1/state/value",
        "cells/0/metadata/tags/0", "cells/0/metadata/custom_field/k",
        "cells/0/outputs/0/text",
        "cells/0/outputs/1/data/text/plain", "cells/0/outputs/1/data/text/html", "cells/0/outputs/1/data/text/markdown",
        "cells/0/outputs/1/data/image/png", "cells/0/outputs/1/data/image/jpeg",
        "cells/0/outputs/1/data/application/json/nested/list/0", "cells/0/outputs/1/data/application/vnd.custom+json/<key>",
        "cells/0/outputs/1/data/text/x-url",
        "cells/0/outputs/1/metadata/image/png/alt", "cells/0/outputs/1/metadata/custom",
        "cells/0/outputs/2/data/text/latex", "cells/0/outputs/2/metadata/note",
        "cells/0/outputs/3/ename", "cells/0/outputs/3/evalue", "cells/0/outputs/3/traceback/0",
        "cells/1/attachments/k.png/image/png", "cells/1/attachments/k.png/text/plain", "cells/1/metadata/note",
        "cells/2/metadata/format",
    ]
    return dict(nb), places


def assert_gone(text: str, secret: str) -> None:
    assert secret not in text
    assert entity(secret) not in text and entity(secret, hexa=True) not in text
    for core in (base64.b64encode(secret.encode()).decode()[:-4],):
        assert core not in text
    png_payload = json.loads(text) if text.startswith("{") else None
    if png_payload:
        jpeg = png_payload["cells"][0]["outputs"][1]["data"]["image/jpeg"]
        assert secret.encode() not in base64.b64decode(jpeg)


@pytest.mark.parametrize("kind", ["known-opaque", "known-provider", "pattern-only"])
def test_given_a_secret_in_every_notebook_field_when_scrubbed_for_save_then_every_place_is_redacted_and_reported(kind, canary):
    secret = {"known-opaque": OPAQUE, "known-provider": canary, "pattern-only": canary}[kind]
    scrubber = Scrubber()
    if kind != "pattern-only":
        scrubber.add_known(secret, "MY_KEY")
    nb, places = leaky_notebook(secret)
    report = scrub_notebook(nb, scrubber)
    assert sorted(report.locations) == sorted(places)
    saved = json.dumps(nb)
    assert_gone(saved, secret)
    again = scrub_notebook(json.loads(saved), scrubber)
    assert again.clean


def test_given_the_leaky_notebook_when_scanned_then_scan_reports_every_place_and_fix_clears_it(tmp_path, master_key):
    env = {"HOME": str(tmp_path / "home"), "JUPYTER_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "KEYVAULT_MASTER_KEY": master_key}
    cli = [sys.executable, "-m", "jupyter_keyvault.cli"]
    stored = subprocess.run([*cli, "set", "MY_TOKEN"], env=env, input=OPAQUE, capture_output=True, text=True, timeout=120)
    assert stored.returncode == 0, stored.stderr
    nb, places = leaky_notebook(OPAQUE)
    path = tmp_path / "leaky.ipynb"
    path.write_text(json.dumps(nb))
    out = subprocess.run([*cli, "scan", str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    for place in places:
        assert f"{path}: secret at {place}\n" in out.stdout
    assert OPAQUE not in out.stdout + out.stderr
    fixed = subprocess.run([*cli, "scan", "--fix", str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0, fixed.stderr
    assert_gone(path.read_text(), OPAQUE)
    rescan = subprocess.run([*cli, "scan", str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert rescan.returncode == 0 and "No secrets found." in rescan.stdout


async def test_given_the_leaky_notebook_when_saved_through_a_real_server_then_the_file_on_disk_has_it_nowhere(
    jp_fetch, jp_root_dir, keyvault_app
):
    resp = await jp_fetch("keyvault", "api", "credentials", "MY_TOKEN", method="PUT",
                          body=json.dumps({"value": OPAQUE, "provider": "openai_compatible"}))
    assert resp.code in (201, 204)
    nb, places = leaky_notebook(OPAQUE)
    resp = await jp_fetch("api", "contents", "leaky.ipynb", method="PUT",
                          body=json.dumps({"type": "notebook", "format": "json", "content": nb}))
    assert resp.code in (200, 201)
    on_disk = (jp_root_dir / "leaky.ipynb").read_text()
    assert_gone(on_disk, OPAQUE)
    assert on_disk.count("[REDACTED:MY_TOKEN]") >= len(places) - 2  # the image payloads are redacted in their bytes
    saved = json.loads(on_disk)
    jpeg = base64.b64decode(saved["cells"][0]["outputs"][1]["data"]["image/jpeg"])
    assert jpeg.startswith(b"\x89PNG") and OPAQUE.encode() not in jpeg  # still a valid payload, value overwritten
