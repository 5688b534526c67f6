"""End to end: a real server, a real kernel started through it, the real openai SDK, a local upstream."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nbformat
import pytest

from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def stored_canary(canary, fake_upstream):
    fake_upstream.valid_keys.add(canary)
    return canary


async def put_key(jp_fetch, name: str, value: str, **extra) -> None:
    resp = await jp_fetch("keyvault", "api", "credentials", name, method="PUT",
                          body=json.dumps({"value": value, **extra}))
    assert resp.code in (201, 204)


def memory_scan_code(secret: str) -> str:
    """Kernel code that looks for the secret among every string reachable from gc, by hash only
    (sending the secret itself would put it in the kernel)."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return f"""
import gc, hashlib, os
def _items(o):
    if isinstance(o, dict): return list(o.keys()) + list(o.values())
    if isinstance(o, (list, tuple, set, frozenset)): return list(o)
    try:  # instance attributes may live inline, not in a gc-tracked dict
        d = object.__getattribute__(o, '__dict__')
    except Exception:
        return []
    return list(d.values()) if isinstance(d, dict) else []
def _strings(o):
    # gc tracks every container and object, so one level (their direct items) reaches every string.
    for v in _items(o):
        if isinstance(v, str): yield v
        elif isinstance(v, (bytes, bytearray)): yield bytes(v).decode('latin-1')
def _hit(s):
    if len(s) == {len(secret)} and hashlib.sha256(s.encode()).hexdigest() == {digest!r}: return True
    return False
found = any(_hit(s) for o in gc.get_objects() for s in _strings(o)) or any(_hit(v) for v in os.environ.values())
print('CANARY_FOUND' if found else 'CANARY_ABSENT')
"""


@pytest.mark.keyvault(allow_direct_access=True)  # direct mode is off by default where kernels are isolated
async def test_given_a_stored_key_when_the_kernel_uses_keyvault_openai_then_the_key_never_enters_the_kernel(
    jp_fetch, server_kernel, fake_upstream, stored_canary
):
    await put_key(jp_fetch, "OPENAI_API_KEY", stored_canary)
    kernel = await server_kernel("chat.ipynb")
    result = await kernel.execute(
        "%load_ext keyvault\n"
        "client = keyvault.openai()\n"
        "print('API_KEY', client.api_key)\n"
        "r = client.chat.completions.create(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print('REPLY', r.choices[0].message.content)\n"
        "print('MODELS', [m.id for m in client.models.list().data])\n"
        "chunks = [c.choices[0].delta.content for c in client.chat.completions.create(model='gpt-4o-mini', "
        "messages=[{'role': 'user', 'content': 'hi'}], stream=True) if c.choices and c.choices[0].delta.content]\n"
        "print('STREAM', len(chunks), ''.join(chunks))\n"
    )
    assert result.error is None, result.text
    assert f"REPLY {REPLY_TEXT}" in result.stdout
    assert "gpt-4o-mini" in result.stdout
    assert "STREAM" in result.stdout and REPLY_TEXT in result.stdout.split("STREAM", 1)[1]
    api_key = result.stdout.split("API_KEY ", 1)[1].split()[0]
    assert api_key != stored_canary and not api_key.startswith("sk-")
    assert set(fake_upstream.received_keys()) == {stored_canary}
    assert stored_canary not in result.text
    scan = await kernel.execute(memory_scan_code(stored_canary))
    assert "CANARY_ABSENT" in scan.stdout, scan.text
    # Positive control: the same scan does find the key once direct mode brings it in.
    await kernel.execute("direct_client = keyvault.openai(mode='direct')")
    scan = await kernel.execute(memory_scan_code(stored_canary))
    assert "CANARY_FOUND" in scan.stdout, scan.text


async def test_given_an_async_client_when_used_concurrently_then_every_call_succeeds(jp_fetch, server_kernel, fake_upstream):
    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    await put_key(jp_fetch, "OPENAI_API_KEY", VALID_OPENAI_KEY)
    kernel = await server_kernel("async.ipynb")
    result = await kernel.execute(
        "import asyncio, keyvault\n"
        "client = keyvault.async_openai()\n"
        "rs = await asyncio.gather(*(client.chat.completions.create(model='m', messages=[{'role': 'user', 'content': str(i)}]) for i in range(5)))\n"
        f"print('OK', sum(r.choices[0].message.content == {REPLY_TEXT!r} for r in rs))\n"
    )
    assert result.error is None, result.text
    assert "OK 5" in result.stdout


@pytest.mark.keyvault(allow_direct_access=True)  # direct mode is off by default where kernels are isolated
async def test_given_direct_mode_when_get_and_env_are_used_then_values_are_masked_and_scoped(
    jp_fetch, server_kernel, fake_upstream
):
    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    await put_key(jp_fetch, "OPENAI_API_KEY", VALID_OPENAI_KEY)
    kernel = await server_kernel("direct.ipynb")
    result = await kernel.execute(
        "import os, keyvault\n"
        "s = keyvault.get('OPENAI_API_KEY')\n"
        "print('REPR', repr(s), str(s))\n"
        "print('REVEAL_OK', s.reveal() == os.environ.get('NOPE', s.reveal()))\n"
        "with keyvault.env('OPENAI_API_KEY'):\n"
        "    inside = 'OPENAI_API_KEY' in os.environ\n"
        "print('ENV', inside, 'OPENAI_API_KEY' in os.environ)\n"
        "c = keyvault.openai(mode='direct')\n"
        "print('DIRECT', c.chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'x'}]).choices[0].message.content)\n"
    )
    assert result.error is None, result.text
    assert VALID_OPENAI_KEY not in result.stdout
    assert "REPR Secret(" in result.stdout and "********" in result.stdout
    assert "ENV True False" in result.stdout
    assert f"DIRECT {REPLY_TEXT}" in result.stdout


@pytest.fixture
def keyvault_config(keyvault_config, request):
    marker = request.node.get_closest_marker("keyvault")
    if marker:
        keyvault_config.update(marker.kwargs)
    return keyvault_config


@pytest.mark.keyvault(allow_direct_access=False)
async def test_given_direct_access_disabled_when_the_kernel_asks_for_a_value_then_it_is_refused_but_proxy_works(
    jp_fetch, server_kernel, fake_upstream
):
    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    await put_key(jp_fetch, "OPENAI_API_KEY", VALID_OPENAI_KEY)
    kernel = await server_kernel("nodirect.ipynb")
    denied = await kernel.execute("import keyvault\nkeyvault.get('OPENAI_API_KEY')")
    assert denied.error is not None and denied.error["ename"] == "DirectAccessDisabled"
    assert "direct access is disabled" in denied.error["evalue"]
    proxied = await kernel.execute(
        "print(keyvault.openai().chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'x'}])"
        ".choices[0].message.content)")
    assert proxied.error is None and REPLY_TEXT in proxied.stdout


@pytest.mark.keyvault(allow_direct_access=True)  # direct mode is off by default where kernels are isolated
async def test_given_a_key_limited_to_a_folder_when_another_notebook_uses_it_then_access_is_denied(
    jp_fetch, server_kernel, fake_upstream
):
    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    await put_key(jp_fetch, "OPENAI_API_KEY", VALID_OPENAI_KEY, metadata={"notebooks": ["course/*.ipynb"]})
    call = ("import keyvault\n"
            "print(keyvault.openai().chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'x'}])"
            ".choices[0].message.content)")
    allowed = await (await server_kernel("course/lab1.ipynb")).execute(call)
    assert allowed.error is None and REPLY_TEXT in allowed.stdout, allowed.text
    other = await server_kernel("scratch/other.ipynb")
    denied = await other.execute(call)
    assert denied.error is not None and "not allowed from this notebook" in denied.text
    direct = await other.execute("keyvault.get('OPENAI_API_KEY')")
    assert direct.error is not None and "not allowed from this notebook" in direct.text


async def test_given_no_key_when_the_kernel_asks_for_a_client_then_the_error_says_how_to_add_one(server_kernel, fake_upstream):
    kernel = await server_kernel("nokey.ipynb")
    result = await kernel.execute("import keyvault\nkeyvault.openai()")
    assert result.error is not None
    assert "No API key configured for OPENAI_API_KEY" in result.error["evalue"]


async def test_given_the_set_magic_when_the_value_is_typed_at_the_password_prompt_then_it_is_stored_but_not_in_history(
    jp_fetch, server_kernel, fake_upstream, canary
):
    kernel = await server_kernel("magic.ipynb")
    result = await kernel.execute("%load_ext keyvault\n%keyvault set OPENAI_API_KEY", stdin=[canary])
    assert result.error is None, result.text
    prompts = [m for m in result.messages if m["msg_type"] == "input_request"]
    assert prompts and prompts[0]["content"]["password"] is True
    assert canary not in result.text
    listing = json.loads((await jp_fetch("keyvault", "api", "credentials")).body)
    assert [c["name"] for c in listing["credentials"]] == ["OPENAI_API_KEY"]
    history = await kernel.execute("print('\\n'.join(In))\n%history -g")
    assert canary not in history.text and "set OPENAI_API_KEY" in history.text


@pytest.mark.parametrize("notebook", ["chat.ipynb", "streaming.ipynb", "async.ipynb", pytest.param(
    "direct-mode.ipynb", marks=pytest.mark.keyvault(allow_direct_access=True))])
async def test_given_an_example_notebook_when_run_through_a_real_server_and_kernel_then_every_cell_succeeds(
    jp_fetch, server_kernel, fake_upstream, notebook
):
    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    await put_key(jp_fetch, "OPENAI_API_KEY", VALID_OPENAI_KEY)
    kernel = await server_kernel(notebook)
    nb = nbformat.read(EXAMPLES / notebook, as_version=4)
    outputs = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        result = await kernel.execute(cell.source)
        assert result.error is None, f"{notebook}: {result.text}"
        outputs.append(result.text)
    assert VALID_OPENAI_KEY not in "\n".join(outputs)
    assert fake_upstream.requests, "the notebook never reached the upstream"


async def test_given_anthropic_and_groq_keys_when_their_clients_are_used_from_the_kernel_then_each_goes_through_the_proxy(
    jp_fetch, server_kernel, fake_upstream
):
    anthropic_key = "sk-ant-api03-" + "A" * 40
    groq_key = "gsk_" + "G" * 48
    fake_upstream.valid_keys.update({anthropic_key, groq_key})
    await put_key(jp_fetch, "ANTHROPIC_API_KEY", anthropic_key)
    await put_key(jp_fetch, "GROQ_API_KEY", groq_key)
    kernel = await server_kernel("providers.ipynb")
    result = await kernel.execute(
        "import keyvault\n"
        "a = keyvault.anthropic()\n"
        "m = a.messages.create(model='claude-haiku-4-5', max_tokens=20, messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print('ANTHROPIC', m.content[0].text)\n"
        "with a.messages.stream(model='claude-haiku-4-5', max_tokens=20, messages=[{'role': 'user', 'content': 'hi'}]) as s:\n"
        "    print('ANTHROPIC_STREAM', ''.join(s.text_stream))\n"
        "g = keyvault.client('groq')\n"
        "print('GROQ', g.chat.completions.create(model='llama', messages=[{'role': 'user', 'content': 'hi'}]).choices[0].message.content)\n"
    )
    assert result.error is None, result.text
    assert f"ANTHROPIC {REPLY_TEXT}" in result.stdout
    assert f"ANTHROPIC_STREAM {REPLY_TEXT}" in result.stdout
    assert f"GROQ {REPLY_TEXT}" in result.stdout
    assert {anthropic_key, groq_key} <= set(fake_upstream.received_keys())
    assert anthropic_key not in result.text and groq_key not in result.text


def test_given_no_server_when_plain_python_uses_keyvault_then_the_local_vault_is_used(tmp_path, fake_upstream, master_key):
    import os
    import subprocess
    import sys

    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    env.update({"KEYVAULT_MASTER_KEY": master_key, "JUPYTER_DATA_DIR": str(tmp_path / "data"),
                "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "HOME": str(tmp_path)})
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "jupyter_server_config.py").write_text(
        f"c.KeyVault.provider_base_urls = {{'openai': {fake_upstream.openai_base_url!r}}}\n")
    subprocess.run([sys.executable, "-m", "jupyter_keyvault.cli", "set", "OPENAI_API_KEY"], input=VALID_OPENAI_KEY,
                   text=True, env=env, check=True, capture_output=True)
    code = ("import keyvault\n"
            "print(keyvault.status()['mode'])\n"
            "c = keyvault.openai()\n"
            "print(c.chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'x'}]).choices[0].message.content)\n"
            "print(repr(keyvault.get('OPENAI_API_KEY')))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "local"
    assert REPLY_TEXT in out.stdout and VALID_OPENAI_KEY not in out.stdout
    missing = subprocess.run([sys.executable, "-c", "import keyvault; keyvault.openai('NOT_THERE_KEY')"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "No API key configured for NOT_THERE_KEY" in missing.stderr
