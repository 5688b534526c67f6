"""The client matrix: every client library a notebook user reaches for, through a real Jupyter
server and its proxy, against the local fake upstream, from a kernel the server started (proxy
mode: the stored key must be absent from the kernel's memory and environment, searched as raw
bytes in /proc/<pid>/mem and /proc/<pid>/environ) and from a plain process holding a kvt1 token.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import httpx
import pytest

from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT

pytestmark = pytest.mark.e2e

CHAT = "[{'role': 'user', 'content': 'hi'}]"


@pytest.fixture
def stored_canary(canary, fake_upstream):
    """A unique key the fake upstream accepts (and nothing else may ever show)."""
    fake_upstream.valid_keys.add(canary)
    return canary


async def store(rest, name: str, value: str, provider: str, **extra) -> None:
    response = await rest("PUT", f"credentials/{name}", {"value": value, "provider": provider, **extra})
    assert response.status_code in (200, 201), response.text


def kernel_pid(jp_serverapp, kernel) -> int:
    return jp_serverapp.kernel_manager.get_kernel(kernel.kernel_id).provisioner.pid


def process_holds(pid: int, needle: bytes) -> dict[str, bool]:
    """Whether `needle` is anywhere in the process's readable memory, and in its environ block."""
    found_mem = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (r...)", line)
            if not m:
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    found_mem = True
                    break
            except (OSError, ValueError, OverflowError):
                continue
    with open(f"/proc/{pid}/environ", "rb") as f:
        found_env = needle in f.read()
    return {"memory": found_mem, "environ": found_env}


async def run(kernel, code: str, *, timeout: float = 120):
    result = await kernel.execute(code, timeout=timeout)
    assert result.error is None, result.text
    return result


def spread_ok(stdout: str, marker: str) -> None:
    """The kernel printed `marker <n> <span_ms>`: chunks 50 ms apart upstream arrive spread out."""
    m = re.search(rf"{marker} (\d+) (\d+)", stdout)
    assert m, stdout
    count, span_ms = int(m.group(1)), int(m.group(2))
    # 5 chunks, 4 gaps of 50 ms: ~200 ms when relayed as sent, ~0 ms when buffered into one lump. The bound
    # leaves room for a busy machine (2 shared cores) delaying the first chunk and bunching some later ones.
    assert count >= 4 and span_ms >= 75, (count, span_ms)


# -- openai SDK from a kernel: keyvault.openai() / async_openai()


async def test_given_a_kernel_when_the_openai_sdk_uses_every_surface_through_the_proxy_then_all_work_and_the_key_stays_out(
        rest, server_kernel, fake_upstream, stored_canary, jp_serverapp):
    await store(rest, "OPENAI_API_KEY", stored_canary, "openai")
    fake_upstream.chunk_interval = 0.05
    kernel = await server_kernel("openai_sync.ipynb")
    result = await run(kernel, f"""
import time, openai, keyvault
client = keyvault.openai(max_retries=2)
print('CHAT', client.chat.completions.create(model='gpt-4o-mini', messages={CHAT}).choices[0].message.content)
t, times = time.monotonic(), []
for c in client.chat.completions.create(model='gpt-4o-mini', messages={CHAT}, stream=True):
    if c.choices and c.choices[0].delta.content: times.append(time.monotonic())
print('STREAM', len(times), int((times[-1] - times[0]) * 1000))
print('RESPONSES', client.responses.create(model='gpt-4o-mini', input='hi').output_text)
times = [time.monotonic() for e in client.responses.create(model='gpt-4o-mini', input='hi', stream=True)
         if e.type == 'response.output_text.delta']
print('RSTREAM', len(times), int((times[-1] - times[0]) * 1000))
print('EMBED', len(client.embeddings.create(model='text-embedding-3-small', input='x').data[0].embedding))
print('FILE', client.files.create(file=('data.jsonl', b'{{}}\\n' * 5000), purpose='batch').bytes)
print('SPEECH', client.audio.speech.create(model='tts-1', voice='alloy', input='hello').content[:3])
print('HEARD', client.audio.transcriptions.create(model='whisper-1', file=('a.mp3', b'abc')).text)
print('IMAGES', len(client.images.generate(model='dall-e-3', prompt='a cat', n=2).data))
""")
    out = result.stdout
    assert f"CHAT {REPLY_TEXT}" in out and f"RESPONSES {REPLY_TEXT}" in out
    spread_ok(out, "STREAM")
    spread_ok(out, "RSTREAM")
    assert "EMBED 8" in out and "FILE 15000" in out and "SPEECH b'ID3'" in out and "IMAGES 2" in out
    assert "(3 bytes heard)" in out

    # Retries: two failures, then success, all through the proxy; a timeout; both as the SDK reports them.
    fake_upstream.reset()
    fake_upstream.fail_next = [500, 429]
    result = await run(kernel, f"""
print('RETRIED', client.chat.completions.create(model='m', messages={CHAT}).choices[0].message.content)
""")
    assert f"RETRIED {REPLY_TEXT}" in result.stdout
    assert len([r for r in fake_upstream.requests if r.path == "/v1/chat/completions"]) == 3
    fake_upstream.delay = 3.0
    result = await run(kernel, f"""
try:
    client.with_options(timeout=0.5, max_retries=0).chat.completions.create(model='m', messages={CHAT})
except openai.APITimeoutError as exc:
    print('TIMEOUT', type(exc).__name__)
""")
    fake_upstream.delay = 0.0
    assert "TIMEOUT APITimeoutError" in result.stdout
    assert set(fake_upstream.received_keys()) == {stored_canary}
    assert process_holds(kernel_pid(jp_serverapp, kernel), stored_canary.encode()) == {"memory": False, "environ": False}


async def test_given_a_kernel_when_the_async_openai_sdk_streams_and_cancels_then_it_works_and_the_upstream_call_is_cut(
        rest, server_kernel, fake_upstream, stored_canary, jp_serverapp):
    await store(rest, "OPENAI_API_KEY", stored_canary, "openai")
    fake_upstream.chunk_interval = 0.05
    kernel = await server_kernel("openai_async.ipynb")
    result = await run(kernel, f"""
import asyncio, time, keyvault
client = keyvault.async_openai()
rs = await asyncio.gather(*(client.chat.completions.create(model='m', messages={CHAT}) for _ in range(3)))
print('GATHER', sum(r.choices[0].message.content == {REPLY_TEXT!r} for r in rs))
times = []
async for c in await client.chat.completions.create(model='m', messages={CHAT}, stream=True):
    if c.choices and c.choices[0].delta.content: times.append(time.monotonic())
print('STREAM', len(times), int((times[-1] - times[0]) * 1000))
print('RESPONSES', (await client.responses.create(model='m', input='hi')).output_text)
print('EMBED', len((await client.embeddings.create(model='e', input=['a', 'b'])).data))
print('FILE', (await client.files.create(file=('f.txt', b'z' * 2048), purpose='user_data')).bytes)
print('IMAGES', len((await client.images.generate(model='dall-e-3', prompt='x')).data))
""")
    out = result.stdout
    assert "GATHER 3" in out and f"RESPONSES {REPLY_TEXT}" in out and "EMBED 2" in out
    assert "FILE 2048" in out and "IMAGES 1" in out
    spread_ok(out, "STREAM")

    fake_upstream.n_chunks, fake_upstream.chunk_interval = 200, 0.05  # a 10 s stream, cancelled after one chunk
    disconnects = fake_upstream.client_disconnects
    result = await run(kernel, f"""
async def consume():
    async for c in await client.chat.completions.create(model='m', messages={CHAT}, stream=True):
        first.set()
first = asyncio.Event()
task = asyncio.create_task(consume())
await asyncio.wait_for(first.wait(), 30)
task.cancel()
try:
    await task
except asyncio.CancelledError:
    print('CANCELLED')
""")
    assert "CANCELLED" in result.stdout
    for _ in range(100):  # the proxy cuts the upstream request once its client has gone
        if fake_upstream.client_disconnects > disconnects:
            break
        await asyncio.sleep(0.1)
    assert fake_upstream.client_disconnects > disconnects
    assert process_holds(kernel_pid(jp_serverapp, kernel), stored_canary.encode()) == {"memory": False, "environ": False}


# -- anthropic SDK from a kernel


async def test_given_a_kernel_when_the_anthropic_sdk_sends_and_streams_messages_then_both_work_without_the_key(
        rest, server_kernel, fake_upstream, jp_serverapp):
    key = "sk-ant-api03-" + os.urandom(20).hex()
    fake_upstream.valid_keys.add(key)
    await store(rest, "ANTHROPIC_API_KEY", key, "anthropic")
    fake_upstream.chunk_interval = 0.05
    kernel = await server_kernel("anthropic.ipynb")
    result = await run(kernel, f"""
import time, keyvault
client = keyvault.anthropic()
m = client.messages.create(model='claude-haiku-4-5', max_tokens=50, messages={CHAT})
print('MESSAGE', m.content[0].text)
times = []
with client.messages.stream(model='claude-haiku-4-5', max_tokens=50, messages={CHAT}) as stream:
    for text in stream.text_stream:
        times.append(time.monotonic())
print('STREAM', len(times), int((times[-1] - times[0]) * 1000))
""")
    assert f"MESSAGE {REPLY_TEXT}" in result.stdout
    spread_ok(result.stdout, "STREAM")
    assert set(fake_upstream.received_keys()) == {key}
    assert process_holds(kernel_pid(jp_serverapp, kernel), key.encode()) == {"memory": False, "environ": False}


async def test_given_a_kernel_when_the_anthropic_sdk_sends_its_own_version_header_then_that_header_arrives_upstream(
        rest, server_kernel, fake_upstream):
    key = "sk-ant-api03-" + os.urandom(20).hex()
    fake_upstream.valid_keys.add(key)
    await store(rest, "ANTHROPIC_API_KEY", key, "anthropic")
    kernel = await server_kernel("anthropic_version.ipynb")
    await run(kernel, f"""
import keyvault
client = keyvault.anthropic(default_headers={{'anthropic-version': '2099-01-01'}})
client.messages.create(model='claude-haiku-4-5', max_tokens=5, messages={CHAT})
""")
    messages = [r for r in fake_upstream.requests if r.path == "/v1/messages"]
    assert messages and messages[-1].headers.get("anthropic-version") == "2099-01-01"


# -- libraries that read the environment, and plain HTTP, from a kernel


@pytest.mark.keyvault(allow_direct_access=True)  # only for the positive control at the end
async def test_given_keyvault_env_in_proxy_mode_when_langchain_litellm_openai_httpx_and_requests_run_then_all_work_and_the_key_stays_out(
        rest, server_kernel, fake_upstream, stored_canary, jp_serverapp):
    await store(rest, "OPENAI_API_KEY", stored_canary, "openai")
    generic = "wandb-" + os.urandom(12).hex()  # a generic credential: no provider, no proxy
    response = await rest("PUT", "credentials/WANDB_API_KEY", {"value": generic})
    assert response.status_code == 201 and response.json()["provider"] is None
    fake_upstream.chunk_interval = 0.05
    kernel = await server_kernel("env_libraries.ipynb")
    result = await run(kernel, f"""
import os, time
os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'  # no network fetch of litellm's price list
import keyvault
with keyvault.env('OPENAI_API_KEY'):
    print('EXPORTED', os.environ['OPENAI_API_KEY'][:5], os.environ['OPENAI_BASE_URL'].endswith('/keyvault/proxy/openai/v1'))
    from langchain_openai import ChatOpenAI
    llm = ChatOpenAI(model='gpt-4o-mini', max_retries=0)
    print('LANGCHAIN', llm.invoke('hi').content)
    times = [time.monotonic() for chunk in llm.stream('hi') if chunk.content]
    print('LCSTREAM', len(times), int((times[-1] - times[0]) * 1000))
    import litellm
    r = litellm.completion(model='openai/gpt-4o-mini', messages={CHAT})
    print('LITELLM', r.choices[0].message.content)
    import openai
    print('PLAIN_OPENAI', openai.OpenAI().chat.completions.create(model='m', messages={CHAT}).choices[0].message.content)
print('AFTER', 'OPENAI_API_KEY' in os.environ, 'OPENAI_BASE_URL' in os.environ)
with keyvault.env('WANDB_API_KEY'):
    import hashlib
    print('GENERIC', hashlib.sha256(os.environ['WANDB_API_KEY'].encode()).hexdigest())
print('GENERIC_AFTER', 'WANDB_API_KEY' in os.environ)
import httpx, requests
auth = keyvault.auth('OPENAI_API_KEY')
r = requests.post(auth.base_url + '/chat/completions', json={{'model': 'm', 'messages': {CHAT}}}, auth=auth)
print('REQUESTS', r.status_code, r.json()['choices'][0]['message']['content'])
r = httpx.post(auth.base_url + '/embeddings', json={{'model': 'e', 'input': 'x'}}, auth=auth, trust_env=False)
print('HTTPX', r.status_code, len(r.json()['data']))
with keyvault.httpx_client('OPENAI_API_KEY') as http:
    print('HTTPX_CLIENT', [m['id'] for m in http.get('models').json()['data']][:1])
""", timeout=240)
    out = result.stdout
    assert "EXPORTED kvt1_ True" in out
    assert f"LANGCHAIN {REPLY_TEXT}" in out and f"LITELLM {REPLY_TEXT}" in out and f"PLAIN_OPENAI {REPLY_TEXT}" in out
    spread_ok(out, "LCSTREAM")
    assert "AFTER False False" in out
    import hashlib

    assert f"GENERIC {hashlib.sha256(generic.encode()).hexdigest()}" in out and "GENERIC_AFTER False" in out
    assert generic not in out
    assert f"REQUESTS 200 {REPLY_TEXT}" in out and "HTTPX 200 1" in out and "HTTPX_CLIENT ['gpt-4o-mini']" in out
    assert set(fake_upstream.received_keys()) == {stored_canary}
    pid = kernel_pid(jp_serverapp, kernel)
    assert process_holds(pid, stored_canary.encode()) == {"memory": False, "environ": False}
    # Positive control: the same search finds the key once direct mode brings it into the kernel.
    await run(kernel, "with keyvault.env('OPENAI_API_KEY', mode='direct'):\n    held = os.environ['OPENAI_API_KEY'] + ''\n")
    assert process_holds(pid, stored_canary.encode())["memory"] is True


async def test_given_the_env_magic_when_a_library_reads_the_environment_then_it_works_until_turned_off(
        rest, server_kernel, fake_upstream, stored_canary, jp_serverapp):
    ant_key = "sk-ant-api03-" + os.urandom(20).hex()
    fake_upstream.valid_keys.add(ant_key)
    await store(rest, "OPENAI_API_KEY", stored_canary, "openai")
    await store(rest, "ANTHROPIC_API_KEY", ant_key, "anthropic")
    kernel = await server_kernel("env_magic.ipynb")
    result = await run(kernel, f"""
%load_ext keyvault
%keyvault env OPENAI_API_KEY ANTHROPIC_API_KEY
import os, openai, anthropic
token, proxy = os.environ['OPENAI_API_KEY'], os.environ['OPENAI_BASE_URL']
print('MAGIC', openai.OpenAI(max_retries=0).chat.completions.create(model='m', messages={CHAT}).choices[0].message.content)
m = anthropic.Anthropic(max_retries=0).messages.create(model='claude-haiku-4-5', max_tokens=5, messages={CHAT})
print('ANTHROPIC', m.content[0].text)
%keyvault env --off
print('OFF', 'OPENAI_API_KEY' in os.environ)
try:
    openai.OpenAI(api_key=token, base_url=proxy, max_retries=0).models.list()  # the proxy refuses it now
except openai.AuthenticationError as exc:
    print('REVOKED', exc.status_code)
""")
    assert f"MAGIC {REPLY_TEXT}" in result.stdout and f"ANTHROPIC {REPLY_TEXT}" in result.stdout
    assert "OFF False" in result.stdout and "REVOKED 401" in result.stdout
    assert set(fake_upstream.received_keys()) == {stored_canary, ant_key}
    pid = kernel_pid(jp_serverapp, kernel)
    for key in (stored_canary, ant_key):
        assert process_holds(pid, key.encode()) == {"memory": False, "environ": False}


# -- kernel-bound tokens: attacks


async def test_given_a_kernel_bound_env_token_when_used_after_the_block_for_another_credential_or_after_the_kernel_stops_then_refused(
        rest, server_kernel, server_url, fake_upstream, stored_canary, jp_serverapp):
    await store(rest, "OPENAI_API_KEY", stored_canary, "openai")
    await store(rest, "OTHER_OPENAI", stored_canary, "openai")
    kernel = await server_kernel("attack.ipynb")
    result = await run(kernel, """
import os, keyvault
cm = keyvault.env('OPENAI_API_KEY')
cm.__enter__()
print('TOKEN', os.environ['OPENAI_API_KEY'])
""")
    token = re.search(r"TOKEN (\S+)", result.stdout).group(1)
    assert token.startswith("kvt1_") and stored_canary not in token
    proxy = server_url + "keyvault/proxy/openai/v1/"

    async def call(headers) -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            return await client.get(proxy + "models", headers=headers)

    ok = await call({"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert (await call({"x-api-key": token})).status_code == 200  # the anthropic SDK's header
    assert (await call({"api-key": token})).status_code == 200  # Azure's
    # Scoped to the one credential it was issued for.
    other = await call({"Authorization": f"Bearer {token}", "X-KeyVault-Credential": "OTHER_OPENAI"})
    assert other.status_code == 403
    # A forged secret with the right id: refused.
    forged = token[:-8] + ("0" * 8 if not token.endswith("0" * 8) else "1" * 8)
    assert (await call({"Authorization": f"Bearer {forged}"})).status_code == 401
    # The token is no key: the upstream never sees it.
    assert token not in fake_upstream.received_keys()
    # Useless once its kernel stopped.
    await kernel.stop()
    for _ in range(50):
        if kernel.kernel_id not in jp_serverapp.kernel_manager:
            break
        await asyncio.sleep(0.1)
    dead = await call({"Authorization": f"Bearer {token}"})
    assert dead.status_code == 401 and stored_canary not in dead.text


async def test_given_an_env_block_when_it_ends_then_its_token_is_revoked_and_the_variables_are_overwritten_in_place(
        rest, server_kernel, server_url, stored_canary, jp_serverapp):
    await store(rest, "OPENAI_API_KEY", stored_canary, "openai")
    kernel = await server_kernel("revoke.ipynb")
    result = await run(kernel, """
import ctypes, os, keyvault
libc = ctypes.CDLL(None); libc.getenv.restype = ctypes.c_void_p
with keyvault.env('OPENAI_API_KEY'):
    token = os.environ['OPENAI_API_KEY']
    address = libc.getenv(b'OPENAI_API_KEY')
print('TOKEN', token)
print('LEFT', ctypes.string_at(address, len(token)) == token.encode())
""")
    token = re.search(r"TOKEN (\S+)", result.stdout).group(1)
    assert "LEFT False" in result.stdout  # the C copy was overwritten before unsetenv freed it
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        response = await client.get(server_url + "keyvault/proxy/openai/v1/models",
                                    headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


# -- Azure OpenAI through the proxy: api-key header, deployment path, api-version query


async def test_given_an_azure_credential_with_its_endpoint_when_the_azure_client_calls_a_deployment_then_the_proxy_injects_api_key(
        rest, server_kernel, fake_upstream, jp_serverapp):
    key = os.urandom(16).hex()  # Azure keys are 32 hex characters
    fake_upstream.valid_keys.add(key)
    await store(rest, "AZURE_OPENAI_API_KEY", key, "azure_openai", metadata={"base_url": fake_upstream.url})
    kernel = await server_kernel("azure.ipynb")
    result = await run(kernel, f"""
import keyvault
client = keyvault.client('azure_openai')
print('AZURE', client.chat.completions.create(model='my-deployment', messages={CHAT}).choices[0].message.content)
""")
    assert f"AZURE {REPLY_TEXT}" in result.stdout
    sent = [r for r in fake_upstream.requests if r.path.startswith("/openai/deployments/")][-1]
    assert sent.path == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=" in sent.query and sent.headers.get("api-key") == key and "authorization" not in sent.headers
    assert process_holds(kernel_pid(jp_serverapp, kernel), key.encode()) == {"memory": False, "environ": False}


# -- every library from a plain process holding a kvt1 token


PLAIN_PROCESS = """
import os, sys, time
os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'
server, token = sys.argv[1], sys.argv[2]
openai_base, anthropic_base = server + 'keyvault/proxy/openai/v1', server + 'keyvault/proxy/anthropic'
chat = [{'role': 'user', 'content': 'hi'}]
import openai
client = openai.OpenAI(api_key=token, base_url=openai_base, max_retries=0)
print('OPENAI', client.chat.completions.create(model='m', messages=chat).choices[0].message.content)
times = [time.monotonic() for c in client.chat.completions.create(model='m', messages=chat, stream=True)
         if c.choices and c.choices[0].delta.content]
print('STREAM', len(times), int((times[-1] - times[0]) * 1000))
print('RESPONSES', client.responses.create(model='m', input='hi').output_text)
print('FILE', client.files.create(file=('a.jsonl', b'x' * 4096), purpose='batch').bytes)
import asyncio
async def main():
    aclient = openai.AsyncOpenAI(api_key=token, base_url=openai_base, max_retries=0)
    return (await aclient.embeddings.create(model='e', input='x')).data
print('ASYNC_EMBED', len(asyncio.run(main())))
import anthropic
m = anthropic.Anthropic(api_key=token, base_url=anthropic_base).messages.create(
    model='claude-haiku-4-5', max_tokens=5, messages=chat)
print('ANTHROPIC', m.content[0].text)
from langchain_openai import ChatOpenAI
print('LANGCHAIN', ChatOpenAI(model='m', api_key=token, base_url=openai_base, max_retries=0).invoke('hi').content)
import litellm
print('LITELLM', litellm.completion(model='openai/m', api_key=token, api_base=openai_base, messages=chat)
      .choices[0].message.content)
import httpx, requests
headers = {'Authorization': 'Bearer ' + token}
print('HTTPX', httpx.get(openai_base + '/models', headers=headers, trust_env=False).status_code)
print('REQUESTS', requests.post(openai_base + '/embeddings', headers=headers, json={'model': 'e', 'input': 'x'}).status_code)
"""


async def test_given_a_kvt1_token_when_a_plain_process_uses_every_library_then_each_reaches_the_upstream_through_the_proxy(
        rest, server_url, fake_upstream, stored_canary, tmp_path):
    ant_key = "sk-ant-api03-" + os.urandom(20).hex()
    fake_upstream.valid_keys.add(ant_key)
    await store(rest, "OPENAI_API_KEY", stored_canary, "openai")
    await store(rest, "ANTHROPIC_API_KEY", ant_key, "anthropic")
    minted = await rest("POST", "tokens", {"name": "matrix", "credentials": ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"],
                                           "expires_in_days": 1})
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    fake_upstream.chunk_interval = 0.05
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_PROCESS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC", "KEYVAULT"))}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), server_url, token, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 240)
    out = stdout.decode()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    for line in ("OPENAI", "RESPONSES", "ANTHROPIC", "LANGCHAIN", "LITELLM"):
        assert f"{line} {REPLY_TEXT}" in out, out
    spread_ok(out, "STREAM")
    assert "FILE 4096" in out and "ASYNC_EMBED 1" in out and "HTTPX 200" in out and "REQUESTS 200" in out
    assert set(fake_upstream.received_keys()) == {stored_canary, ant_key}
    assert stored_canary not in out + stderr.decode()
