"""The settings-panel, JupyterHub and Binder example notebooks run cell by cell in a real kernel of a real server."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("ipywidgets", minversion="8")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


async def run_notebook(server_kernel, name: str) -> list:
    kernel = await server_kernel(name)
    results = []
    for cell in nbformat.read(EXAMPLES / name, as_version=4).cells:
        if cell.cell_type == "code":
            result = await kernel.execute(cell.source)
            assert result.error is None, f"{name}: {result.text}"
            results.append(result)
    return results


async def store_openai_key(jp_fetch, value: str) -> None:
    resp = await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                          body=json.dumps({"value": value, "provider": "openai"}))
    assert resp.code in (201, 204)


async def test_given_a_stored_key_when_the_settings_panel_example_runs_then_it_shows_the_panel_and_reaches_the_upstream(
    jp_fetch, server_kernel, fake_upstream
):
    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    await store_openai_key(jp_fetch, VALID_OPENAI_KEY)
    results = await run_notebook(server_kernel, "settings-panel.ipynb")
    assert any(WIDGET_VIEW in (o.get("data") or {}) for o in results[0].outputs)
    assert "OPENAI_API_KEY openai" in results[1].stdout
    assert "'ok': True" in results[2].stdout and "Hello" in results[2].stdout
    assert fake_upstream.requests
    assert all(VALID_OPENAI_KEY not in r.text for r in results)


async def test_given_an_empty_vault_when_the_settings_panel_example_runs_then_it_says_what_to_do(server_kernel):
    results = await run_notebook(server_kernel, "settings-panel.ipynb")
    assert "Save an OPENAI_API_KEY in the panel above" in results[-1].stdout


async def test_given_no_hub_when_the_jupyterhub_example_runs_then_it_reports_this_servers_mode_and_backend(
    jp_fetch, server_kernel
):
    await store_openai_key(jp_fetch, "sk-proj-" + "H" * 40)
    results = await run_notebook(server_kernel, "jupyterhub.ipynb")
    assert "mode: server" in results[0].stdout
    assert "running under JupyterHub: False" in results[0].stdout
    assert "OPENAI_API_KEY" in results[1].stdout and "H" * 40 not in results[1].text


async def test_given_the_binder_demo_when_run_before_and_after_saving_the_demo_key_then_both_paths_work(
    jp_fetch, server_kernel, fake_upstream
):
    demo_key = "sk-demo-binder-not-a-real-key-000000000000"
    nb_text = (EXAMPLES / "binder-demo.ipynb").read_text()
    assert demo_key in nb_text  # the key the notebook tells users to paste is the one binder/start accepts
    assert demo_key in (EXAMPLES.parent / "binder" / "start").read_text()
    before = await run_notebook(server_kernel, "binder-demo.ipynb")
    assert "No OPENAI_API_KEY yet" in before[1].stdout
    fake_upstream.valid_keys.add(demo_key)
    await store_openai_key(jp_fetch, demo_key)
    after = await run_notebook(server_kernel, "binder-demo.ipynb")
    assert "placeholder" in after[1].stdout and demo_key not in after[1].text
    assert demo_key in fake_upstream.received_keys()
