"""jupyter-ai 3.x (the real package, Jupyternaut) in a real server with jupyter-keyvault: a key saved in
its settings goes into the vault, into no `.env`, reaches the local upstream from jupyter-ai's own chat
model, and is in no kernel's environment or memory."""

from __future__ import annotations

import json
import os
import re

import pytest

from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT

pytest.importorskip("jupyter_ai_jupyternaut", reason="jupyter-ai is an optional extra: pip install 'jupyter-keyvault[jupyter-ai]'")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of litellm's price list at import

pytestmark = pytest.mark.e2e


@pytest.fixture
def jp_server_config(jp_server_config):
    jp_server_config.ServerApp.jpserver_extensions = {"jupyter_keyvault": True, "jupyter_ai_jupyternaut": True,
                                                      "jupyter_ai_persona_manager": True}
    return jp_server_config


def process_holds(pid: int, needle: bytes) -> dict[str, bool]:
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (r...)", line)
            if not m or int(m.group(2), 16) - int(m.group(1), 16) > 1 << 30:
                continue
            try:
                mem.seek(int(m.group(1), 16))
                if needle in mem.read(int(m.group(2), 16) - int(m.group(1), 16)):
                    found = True
                    break
            except (OSError, ValueError, OverflowError):
                continue
    with open(f"/proc/{pid}/environ", "rb") as f:
        return {"memory": found, "environ": needle in f.read()}


async def test_given_jupyter_ai_when_a_key_is_saved_in_its_settings_then_it_is_in_the_vault_not_a_dotenv_and_its_model_uses_it(
        jp_fetch, jp_serverapp, jp_root_dir, server_kernel, fake_upstream, canary):
    from jupyter_ai_jupyternaut.jupyternaut.chat_models import ChatLiteLLM

    from jupyter_keyvault.server.jupyter_ai import SETTINGS_KEY, VaultSecretsManager

    for _ in range(50):  # installed once the server's loop runs
        if isinstance(jp_serverapp.web_app.settings.get(SETTINGS_KEY), VaultSecretsManager):
            break
        await __import__("asyncio").sleep(0.1)
    assert isinstance(jp_serverapp.web_app.settings[SETTINGS_KEY], VaultSecretsManager)
    fake_upstream.valid_keys.add(canary)

    # Saved through jupyter-ai's own settings API (what its settings page calls).
    response = await jp_fetch("api", "jupyternaut", "secrets", method="PUT",
                              body=json.dumps({"updated_secrets": {"OPENAI_API_KEY": canary}}))
    assert response.code == 204
    listed = json.loads((await jp_fetch("api", "jupyternaut", "secrets")).body)
    assert "OPENAI_API_KEY" in listed["editable_secrets"] and canary not in json.dumps(listed)

    # In the vault (encrypted), listed by our API, and in no file of the workspace.
    ours = json.loads((await jp_fetch("keyvault", "api", "credentials")).body)["credentials"]
    item = next(i for i in ours if i["name"] == "OPENAI_API_KEY")
    assert item["provider"] == "openai" and item["metadata"].get("jupyter_ai") is True
    assert not (jp_root_dir / ".env").exists()
    for path in jp_root_dir.rglob("*"):
        assert not path.is_file() or canary.encode() not in path.read_bytes(), path
    vault_file = jp_serverapp.web_app.settings["keyvault_manager"].vault_path
    assert canary.encode() not in open(vault_file, "rb").read()

    # jupyter-ai's chat model (as Jupyternaut builds it) reaches the upstream with the key.
    model = ChatLiteLLM(model="openai/gpt-4o-mini", api_base=fake_upstream.openai_base_url, streaming=False)
    reply = await model.ainvoke("hi")
    assert reply.content == REPLY_TEXT
    assert canary in fake_upstream.received_keys()

    # No kernel inherits it.
    kernel = await server_kernel("ai.ipynb")
    result = await kernel.execute("import os; print('IN_ENV', 'OPENAI_API_KEY' in os.environ)")
    assert "IN_ENV False" in result.stdout, result.text
    pid = jp_serverapp.kernel_manager.get_kernel(kernel.kernel_id).provisioner.pid
    assert process_holds(pid, canary.encode()) == {"memory": False, "environ": False}

    # Deleting it in jupyter-ai's settings deletes it from the vault and from the server's environment.
    response = await jp_fetch("api", "jupyternaut", "secrets", method="PUT",
                              body=json.dumps({"updated_secrets": {"OPENAI_API_KEY": None}}))
    assert response.code == 204
    ours = json.loads((await jp_fetch("keyvault", "api", "credentials")).body)["credentials"]
    assert "OPENAI_API_KEY" not in [i["name"] for i in ours] and "OPENAI_API_KEY" not in os.environ
