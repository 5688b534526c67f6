"""keyvault.panel() in a real kernel started by a real server, driven over the websocket like a browser.

The frontend is simulated message for message: a `comm_msg` `update` with `{"value": …}` on the
Password's comm (what the widget's view sends while typing), then the button's custom click message.
Every frame the kernel sent is kept (`ServerKernel.frames`) and searched for the canary.
"""

from __future__ import annotations

import json

import nbformat
import pytest

pytest.importorskip("ipywidgets", minversion="8")

PANEL_CODE = "import keyvault\npanel = keyvault.panel()\npanel"
CLICK = {"method": "custom", "content": {"event": "click"}}


class WidgetMirror:
    """The frontend's view of the kernel's widgets: state per comm, rebuilt from what the kernel sent."""

    def __init__(self, kernel):
        self.kernel = kernel

    def states(self) -> dict[str, dict]:
        states: dict[str, dict] = {}
        for m in self.kernel.received:
            content = m.get("content") or {}
            if m["msg_type"] == "comm_open" and content.get("target_name") == "jupyter.widget":
                states[content["comm_id"]] = dict(content["data"].get("state") or {})
            elif m["msg_type"] == "comm_msg" and content.get("comm_id") in states:
                data = content.get("data") or {}
                if data.get("method") in ("update", "echo_update"):
                    states[content["comm_id"]].update(data.get("state") or {})
            elif m["msg_type"] == "comm_close":
                states.pop(content.get("comm_id"), None)
        return states

    def comm_of(self, css_class: str) -> str:
        found = [cid for cid, st in self.states().items() if css_class in (st.get("_dom_classes") or ())]
        assert len(found) == 1, f"expected one widget with class {css_class}, found {found}"
        return found[0]

    def state_of(self, css_class: str) -> dict:
        return self.states()[self.comm_of(css_class)]

    async def set(self, css_class: str, **state):
        return await self.kernel.comm_msg(self.comm_of(css_class),
                                          {"method": "update", "state": state, "buffer_paths": []})

    async def click(self, css_class: str):
        return await self.kernel.comm_msg(self.comm_of(css_class), CLICK)

    def status(self) -> str:
        return self.state_of("keyvault-panel-status")["value"]

    def confirm_visible(self) -> bool:
        confirm = f"IPY_MODEL_{self.comm_of('keyvault-panel-confirm')}"
        return confirm in self.state_of("keyvault-panel-confirm-row").get("children", [])


@pytest.fixture
def plain_canary() -> str:
    """A canary that no provider pattern matches, so the scrubbers cannot hide a leak from the search."""
    import secrets

    return "plain-canary-" + secrets.token_hex(16)


def frames_text(kernel) -> str:
    return "\n".join(f.decode("latin-1") if isinstance(f, bytes) else f for f in kernel.frames)


async def listing(jp_fetch) -> list[dict]:
    return json.loads((await jp_fetch("keyvault", "api", "credentials")).body)["credentials"]


async def open_panel(server_kernel, path="panel.ipynb"):
    kernel = await server_kernel(path)
    result = await kernel.execute(PANEL_CODE)
    assert result.error is None, result.text
    views = [o for o in result.outputs if "application/vnd.jupyter.widget-view+json" in (o.get("data") or {})]
    assert views, "the panel was not displayed as a widget"
    return kernel, WidgetMirror(kernel)


async def test_given_the_panel_when_a_value_is_typed_and_saved_then_it_is_stored_and_never_sent_back_or_kept_in_widget_state(
    jp_fetch, server_kernel, plain_canary
):
    canary = plain_canary
    kernel, ui = await open_panel(server_kernel)
    assert "No credentials stored" in ui.state_of("keyvault-panel-list")["value"]
    await ui.set("keyvault-panel-name", value="OPENAI_API_KEY")
    await ui.set("keyvault-panel-provider", index=1)  # openai
    typed = await ui.set("keyvault-panel-value", value=canary)
    assert not [m for m in typed.messages if m["msg_type"] == "comm_msg"], "the kernel answered the typed value"
    saved = await ui.click("keyvault-panel-save")
    assert saved.error is None

    assert [(c["name"], c["provider"]) for c in await listing(jp_fetch)] == [("OPENAI_API_KEY", "openai")]
    assert ui.status().startswith("Saved OPENAI_API_KEY (openai).")
    assert "Warning: this does not look like an OpenAI key" in ui.status()  # the format hint, not the value
    assert "keyvault-status-ok" in ui.state_of("keyvault-panel-status")["_dom_classes"]
    assert 'data-name="OPENAI_API_KEY"' in ui.state_of("keyvault-panel-list")["value"]
    # The browser's field was told to empty itself, right after the click.
    clears = [m for m in saved.messages if m["msg_type"] == "comm_msg"
              and m["content"]["comm_id"] == ui.comm_of("keyvault-panel-value")]
    assert clears and clears[0]["content"]["data"]["state"] == {"value": ""}
    assert ui.state_of("keyvault-panel-value")["value"] == ""

    # The kernel's own widget state (what a saved notebook's metadata.widgets holds) has no value.
    state = await kernel.execute("import ipywidgets, json\n"
                                 "print(json.dumps(ipywidgets.Widget.get_manager_state(drop_defaults=False)))")
    assert state.error is None, state.text
    manager_state = json.loads(state.stdout)
    assert "keyvault-panel-value" in state.stdout and canary not in state.stdout
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PANEL_CODE)])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": manager_state}
    resp = await jp_fetch("api", "contents", "panel.ipynb", method="PUT",
                          body=json.dumps({"type": "notebook", "format": "json", "content": nb}))
    assert resp.code in (200, 201)
    on_disk = await jp_fetch("api", "contents", "panel.ipynb")
    assert "keyvault-panel-value" in on_disk.body.decode() and canary not in on_disk.body.decode()

    history = await kernel.execute("print('\\n'.join(In))\n%history -g")
    assert canary not in history.text
    # Every frame the kernel sent on this websocket: comm opens, updates, echoes, outputs, replies.
    assert kernel.frames and canary not in frames_text(kernel)


async def test_given_a_plain_password_widget_when_a_value_is_typed_then_the_kernel_echoes_it_so_the_search_can_see_a_leak(
    server_kernel, plain_canary
):
    canary = plain_canary
    """Control: proves the frame search above would catch ipywidgets' echo_update of a value."""
    kernel = await server_kernel("control.ipynb")
    result = await kernel.execute("import ipywidgets\nw = ipywidgets.Password()\nw.add_class('plain-password')\nw")
    assert result.error is None, result.text
    ui = WidgetMirror(kernel)
    await ui.set("plain-password", value=canary)
    assert canary in frames_text(kernel)


async def test_given_a_stored_key_when_test_is_clicked_then_the_status_shows_ok_and_detail(
    jp_fetch, server_kernel
):
    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    kernel, ui = await open_panel(server_kernel)
    await ui.set("keyvault-panel-name", value="OPENAI_API_KEY")
    await ui.set("keyvault-panel-value", value=VALID_OPENAI_KEY)
    await ui.click("keyvault-panel-save")
    assert ui.status().startswith("Saved OPENAI_API_KEY")
    await ui.click("keyvault-panel-test")
    assert ui.status().startswith("OPENAI_API_KEY works: "), ui.status()
    assert "keyvault-status-ok" in ui.state_of("keyvault-panel-status")["_dom_classes"]
    assert VALID_OPENAI_KEY not in frames_text(kernel)


async def test_given_a_rejected_key_when_test_is_clicked_then_the_status_says_it_failed_without_the_key(
    jp_fetch, server_kernel, canary
):
    kernel, ui = await open_panel(server_kernel)
    await ui.set("keyvault-panel-name", value="OPENAI_API_KEY")
    await ui.set("keyvault-panel-value", value=canary)  # the fake upstream does not accept it
    await ui.click("keyvault-panel-save")
    await ui.click("keyvault-panel-test")
    assert ui.status().startswith("OPENAI_API_KEY failed: "), ui.status()
    assert "keyvault-status-error" in ui.state_of("keyvault-panel-status")["_dom_classes"]
    assert canary not in frames_text(kernel)


async def test_given_a_stored_key_when_delete_is_clicked_then_it_asks_and_only_confirm_deletes(
    jp_fetch, server_kernel, canary
):
    kernel, ui = await open_panel(server_kernel)
    await ui.set("keyvault-panel-name", value="GROQ_API_KEY")
    await ui.set("keyvault-panel-value", value="gsk_" + "Q" * 48)
    await ui.click("keyvault-panel-save")
    assert [c["name"] for c in await listing(jp_fetch)] == ["GROQ_API_KEY"]

    assert not ui.confirm_visible()
    await ui.click("keyvault-panel-delete")
    assert ui.confirm_visible()
    assert ui.status() == "Delete GROQ_API_KEY? This cannot be undone."
    assert [c["name"] for c in await listing(jp_fetch)] == ["GROQ_API_KEY"]  # nothing deleted yet

    await ui.click("keyvault-panel-cancel")
    assert not ui.confirm_visible() and ui.status() == "Kept GROQ_API_KEY."
    assert [c["name"] for c in await listing(jp_fetch)] == ["GROQ_API_KEY"]

    await ui.click("keyvault-panel-delete")
    await ui.set("keyvault-panel-name", value="SOMETHING_ELSE")  # confirm acts on the name it asked about
    await ui.click("keyvault-panel-confirm")
    assert ui.status() == "Deleted GROQ_API_KEY."
    assert not ui.confirm_visible()
    assert await listing(jp_fetch) == []
    assert "No credentials stored" in ui.state_of("keyvault-panel-list")["value"]


@pytest.mark.parametrize(
    ("name", "value", "provider_index", "expected"),
    [
        ("bad name!", "sk-proj-" + "B" * 40, 0, "Error: credential name must be usable as an environment variable"),
        ("", "sk-proj-" + "B" * 40, 0, "Error: enter a name first"),
        ("OPENAI_API_KEY", "", 0, "Error: enter the value in the password field; nothing was stored"),
        ("OPENAI_API_KEY", "   ", 0, "Error: enter the value in the password field; nothing was stored"),
        ("OPENAI_API_KEY", "sk-proj-" + "B" * 40, 99, "Error: unknown provider choice 99"),
    ],
    ids=["bad-name", "empty-name", "empty-value", "blank-value", "unknown-provider"],
)
async def test_given_invalid_input_when_save_is_clicked_then_the_status_says_why_and_nothing_is_stored(
    jp_fetch, server_kernel, name, value, provider_index, expected
):
    kernel, ui = await open_panel(server_kernel)
    await ui.set("keyvault-panel-name", value=name)
    answered = await ui.set("keyvault-panel-provider", index=provider_index)
    await ui.set("keyvault-panel-value", value=value)
    if provider_index == 99:
        # A forged choice is reported at once, the browser is put back on a valid one, and save is refused.
        assert ui.status().startswith(expected), ui.status()
        assert ui.state_of("keyvault-panel-provider")["index"] == 0
        assert not [m for m in answered.messages if m["msg_type"] in ("error", "stream")]
        assert ui.state_of("keyvault-panel-provider")["index"] == 0
    else:
        await ui.click("keyvault-panel-save")
        assert ui.status().startswith(expected), ui.status()
        assert "keyvault-status-error" in ui.state_of("keyvault-panel-status")["_dom_classes"]
    assert await listing(jp_fetch) == []
    assert ui.state_of("keyvault-panel-value")["value"] == ""
    if value.strip():
        assert value.strip() not in frames_text(kernel)


async def test_given_a_name_that_looks_like_a_key_when_save_fails_then_the_status_does_not_show_it(
    jp_fetch, server_kernel, canary
):
    kernel, ui = await open_panel(server_kernel)
    await ui.set("keyvault-panel-name", value=canary)  # pasted into the wrong field
    await ui.set("keyvault-panel-value", value="whatever-value-123")
    await ui.click("keyvault-panel-save")
    assert ui.status().startswith("Error:")
    assert await listing(jp_fetch) == []
    statuses = [m["content"]["data"]["state"]["value"] for m in kernel.received
                if m["msg_type"] == "comm_msg" and m["content"].get("comm_id") == ui.comm_of("keyvault-panel-status")
                and "value" in (m["content"]["data"].get("state") or {})]
    assert statuses and all(canary not in s for s in statuses)


async def test_given_no_oauth_provider_when_the_panel_opens_then_it_has_no_connect_button(server_kernel):
    kernel, ui = await open_panel(server_kernel)
    assert not [s for s in ui.states().values() if "keyvault-panel-connect" in (s.get("_dom_classes") or ())]
    assert ui.state_of("keyvault-panel-oauth")["children"] == []
