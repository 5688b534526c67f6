import json
import secrets
import time

import httpx2
import openai
import pytest

from jupyter_keyvault.kernel_auth import make_credential
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY


class KernelAuth(httpx2.Auth):
    def __init__(self, kernel_id, key):
        self.kernel_id, self.key = kernel_id, key

    def auth_flow(self, request):
        request.headers["Authorization"] = "Bearer " + make_credential(
            self.kernel_id, self.key, int(time.time()), secrets.token_hex(16))
        yield request


async def test_proxy_streams_with_the_real_key_injected(jp_fetch, jp_serverapp, keyvault_app, fake_upstream, jp_base_url, jp_http_port):
    await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                   body=json.dumps({"value": VALID_OPENAI_KEY}))
    km = jp_serverapp.kernel_manager
    kid = await km.start_kernel()
    key = km.get_kernel(kid).session.key
    base = f"http://localhost:{jp_http_port}{jp_base_url}keyvault/proxy/openai/v1"
    client = openai.AsyncOpenAI(base_url=base, api_key="keyvault-proxy",
                                http_client=openai.DefaultAsyncHttpxClient(auth=KernelAuth(kid, key)))
    models = await client.models.list()
    assert [m.id for m in models.data]
    chat = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = [c async for c in stream]
    assert len(chunks) >= 3
    assert set(fake_upstream.received_keys()) == {VALID_OPENAI_KEY}
    bad = openai.AsyncOpenAI(base_url=base, api_key="sk-proj-forged" + "x" * 30)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()
    await km.shutdown_kernel(kid)
