"""Server-side scrubbing: the iopub filter (kernels without the helper) and the pre-save hook."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nbformat
import pytest

GITHUB_TOKEN = "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"  # pattern-shaped, random-looking, not stored


@pytest.fixture
def keyvault_config(keyvault_config, request, tmp_path):
    keyvault_config["autoload"] = False  # prove the server alone protects the browser
    marker = request.node.get_closest_marker("keyvault")
    if marker:
        keyvault_config.update(marker.kwargs)
    return keyvault_config


async def store(jp_fetch, name, value):
    resp = await jp_fetch("keyvault", "api", "credentials", name, method="PUT",
                          body=json.dumps({"value": value, "provider": "openai"}))
    assert resp.code in (201, 204)


async def test_given_a_kernel_without_the_helper_when_it_prints_a_stored_value_then_the_browser_gets_it_redacted(
    jp_fetch, server_kernel, keyvault_app, canary, caplog
):
    caplog.set_level(logging.DEBUG)
    await store(jp_fetch, "OPENAI_API_KEY", canary)
    kernel = await server_kernel("plain.ipynb")
    check = await kernel.execute("print('keyvault' in get_ipython().extension_manager.loaded)")
    assert check.stdout.strip() == "False"
    result = await kernel.execute(
        f"k = {canary!r}\n"
        "import sys, time\n"
        "print(k)\n"
        "print('err', k, file=sys.stderr)\n"
        "print(k[:12], end='', flush=True); time.sleep(0.4); print(k[12:], flush=True)\n"
        "from IPython.display import display, HTML\n"
        "display(HTML(f'<b>{k}</b>'))\n"
        "k\n"
    )
    raw = json.dumps(result.messages)
    assert canary not in raw
    assert canary[:12] not in result.stdout.replace("[REDACTED", "")  # the split halves did not leak
    assert result.stdout.count("[REDACTED:OPENAI_API_KEY]") == 2
    assert "[REDACTED:OPENAI_API_KEY]" in result.stderr
    assert any("[REDACTED:OPENAI_API_KEY]" in json.dumps(o) for o in result.outputs)
    error = await kernel.execute(f"raise ValueError('bad key ' + {canary[:20]!r} + {canary[20:]!r})")
    assert error.error is not None
    leaked = [m["msg_type"] for m in error.messages if canary in json.dumps(m)]
    assert leaked == []
    assert "[REDACTED:OPENAI_API_KEY]" in error.error["evalue"]
    assert canary not in caplog.text  # the server log, at DEBUG, never saw it either


async def store_opaque(jp_fetch, name, value):
    resp = await jp_fetch("keyvault", "api", "credentials", name, method="PUT",
                          body=json.dumps({"value": value, "type": "custom"}))
    assert resp.code in (201, 204)


async def test_given_opaque_values_stored_replaced_and_deleted_when_a_kernel_prints_them_next_then_only_the_current_ones_are_redacted(
    jp_fetch, server_kernel, keyvault_app
):
    import secrets

    # Opaque 40-hex tokens match no pattern: only the server's known-value engine can find them.
    kept, replaced, deleted = (f"{secrets.token_hex(20)}" for _ in range(3))
    await store_opaque(jp_fetch, "KEPT", kept)
    await store_opaque(jp_fetch, "ROTATED", replaced)
    await store_opaque(jp_fetch, "GONE", deleted)
    kernel = await server_kernel("layers.ipynb")
    printed = f"print({kept!r}, {replaced!r}, {deleted!r})"
    first = await kernel.execute(printed)  # no wait for any scrubber build: the next output
    assert first.stdout.split() == ["[REDACTED:KEPT]", "[REDACTED:ROTATED]", "[REDACTED:GONE]"]
    for i in range(40):  # more values, so the later ones land in a delta layer over a built base
        await store_opaque(jp_fetch, f"FILL_{i}", secrets.token_hex(20))
    await keyvault_app.scrubber.rebuild_async()
    fresh = secrets.token_hex(20)
    await store_opaque(jp_fetch, "ROTATED", fresh)
    resp = await jp_fetch("keyvault", "api", "credentials", "GONE", method="DELETE")
    assert resp.code == 204
    second = await kernel.execute(f"print({kept!r}, {replaced!r}, {deleted!r}, {fresh!r})")
    assert second.stdout.split() == ["[REDACTED:KEPT]", replaced, deleted, "[REDACTED:ROTATED]"]
    await keyvault_app.scrubber.rebuild_async()  # and the same once the builds have caught up
    third = await kernel.execute(f"print({kept!r}, {replaced!r}, {deleted!r}, {fresh!r})")
    assert third.stdout.split() == ["[REDACTED:KEPT]", replaced, deleted, "[REDACTED:ROTATED]"]
    assert fresh not in json.dumps(second.messages) + json.dumps(third.messages)


async def test_given_two_credentials_sharing_a_value_when_one_is_deleted_or_rotated_then_the_value_stays_redacted(
    jp_fetch, server_kernel, keyvault_app
):
    import secrets

    # The same token stored twice (a staging and a prod name, a copy for another notebook): each
    # name's delete or rotation must leave the value redacted while the other still holds it.
    shared = secrets.token_hex(20)
    for name in ("TOKEN_PROD", "TOKEN_COPY", "TOKEN_OLD"):
        await store_opaque(jp_fetch, name, shared)
    kernel = await server_kernel("shared.ipynb")
    resp = await jp_fetch("keyvault", "api", "credentials", "TOKEN_COPY", method="DELETE")
    assert resp.code == 204
    await store_opaque(jp_fetch, "TOKEN_OLD", secrets.token_hex(20))  # rotated away from the shared value
    for _ in range(2):  # at once, and once the builds have caught up
        out = await kernel.execute(f"print({shared!r})")
        assert shared not in out.stdout and "[REDACTED:" in out.stdout, out.stdout
        await keyvault_app.scrubber.rebuild_async()
    resp = await jp_fetch("keyvault", "api", "credentials", "TOKEN_PROD", method="DELETE")
    assert resp.code == 204  # the last holder gone: no longer a secret of this vault
    assert (await kernel.execute(f"print({shared!r})")).stdout.split() == [shared]


async def test_given_a_pattern_shaped_token_when_printed_then_it_is_redacted_by_pattern(jp_fetch, server_kernel, keyvault_app):
    kernel = await server_kernel("pattern.ipynb")
    result = await kernel.execute(f"print('token', {GITHUB_TOKEN[:10]!r} + {GITHUB_TOKEN[10:]!r})")
    assert GITHUB_TOKEN not in json.dumps(result.messages)
    assert "token [REDACTED]" in result.stdout


async def test_given_a_notebook_with_secrets_in_outputs_when_saved_then_the_file_on_disk_has_none(
    jp_fetch, jp_root_dir, keyvault_app, canary
):
    await store(jp_fetch, "OPENAI_API_KEY", canary)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(k)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"the key is {canary}\n"),
        nbformat.v4.new_output("display_data", data={"text/html": f"<i>{canary}</i>", "text/plain": GITHUB_TOKEN,
                                                     "image/png": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}),
        nbformat.v4.new_output("error", ename="ValueError", evalue=f"bad {canary}", traceback=[f"line {canary}"]),
    ]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"m": {"state": {"value": canary}}}}}
    resp = await jp_fetch("api", "contents", "saved.ipynb", method="PUT",
                          body=json.dumps({"type": "notebook", "format": "json", "content": nb}))
    assert resp.code in (200, 201)
    on_disk = (Path(jp_root_dir) / "saved.ipynb").read_text()
    assert canary not in on_disk and GITHUB_TOKEN not in on_disk
    assert on_disk.count("[REDACTED:OPENAI_API_KEY]") == 5
    assert "iVBORw0KGgo" in on_disk  # image data untouched
    saved = nbformat.reads(on_disk, as_version=4)
    assert "keyvault" not in saved.metadata  # no source warnings for a clean source


async def test_given_a_secret_in_a_cell_source_when_saved_with_warn_then_it_stays_and_the_user_is_warned(
    jp_fetch, jp_root_dir, keyvault_app, caplog
):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# notes"), nbformat.v4.new_code_cell(f"token = '{GITHUB_TOKEN}'")]
    with caplog.at_level(logging.WARNING):
        await jp_fetch("api", "contents", "warned.ipynb", method="PUT",
                       body=json.dumps({"type": "notebook", "format": "json", "content": nb}))
    saved = nbformat.read(Path(jp_root_dir) / "warned.ipynb", as_version=4)
    assert GITHUB_TOKEN in saved.cells[1].source  # warn mode changes no source
    assert saved.metadata["keyvault"]["source_warnings"] == [{"cell": 1, "labels": ["github"]}]
    status = json.loads((await jp_fetch("keyvault", "api", "status")).body)
    assert status["notebook_warnings"][-1]["path"] == "warned.ipynb"
    assert status["notebook_warnings"][-1]["cells"] == [2]
    assert any("cell(s) 2 contain a secret" in r.getMessage() for r in caplog.records)
    assert GITHUB_TOKEN not in caplog.text


@pytest.mark.keyvault(scrub_sources="redact")
async def test_given_redact_mode_when_a_secret_is_in_a_source_then_the_saved_source_is_redacted(jp_fetch, jp_root_dir, keyvault_app):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"token = '{GITHUB_TOKEN}'")]
    await jp_fetch("api", "contents", "redacted.ipynb", method="PUT",
                   body=json.dumps({"type": "notebook", "format": "json", "content": nb}))
    saved = nbformat.read(Path(jp_root_dir) / "redacted.ipynb", as_version=4)
    assert saved.cells[0].source == "token = '[REDACTED]'"
