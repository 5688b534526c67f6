"""The proxy's one pooled upstream session serves every caller: nothing one answer leaves in it may
ride along on another caller's request. Real server (pytest-jupyter), a real kernel, a vault access
token, and a local upstream that sets a cookie on every answer and records the Cookie headers it gets.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jupyter_keyvault.kernel_auth import make_credential

CANARY = "c00k1e-canary-" + secrets.token_hex(8)


@pytest.fixture
def cookie_upstream():
    cookies: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            cookies.append(self.headers.get("Cookie"))
            body = json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode()
            self.send_response(200)
            self.send_header("Set-Cookie", f"session={CANARY}; Path=/")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # A host name, not an address: aiohttp's default jar ignores cookies from IP addresses.
    yield f"http://localhost:{server.server_address[1]}/v1", cookies
    server.shutdown()
    server.server_close()


@pytest.fixture
def keyvault_config(keyvault_config, cookie_upstream):
    return {**keyvault_config, "provider_base_urls": {**keyvault_config["provider_base_urls"],
                                                      "openai": cookie_upstream[0]}}


async def test_given_an_upstream_that_sets_a_cookie_when_another_caller_uses_the_proxy_then_the_cookie_is_not_sent(
        jp_serverapp, proxy_token, http_server, jp_http_port, jp_base_url, http, cookie_upstream):
    token = await proxy_token()
    km = jp_serverapp.kernel_manager
    kid = await km.start_kernel()
    try:
        kernel = make_credential(kid, km.get_kernel(kid).session.key, int(time.time()), secrets.token_hex(16))
        url = f"http://localhost:{jp_http_port}{jp_base_url}keyvault/proxy/openai/v1/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": []}

        first = await http.post(url, json=body, headers={"Authorization": f"Bearer {kernel}"})
        second = await http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    finally:
        await km.shutdown_all(now=True)

    assert first.status_code == second.status_code == 200
    assert CANARY not in first.headers.get("set-cookie", "") + second.headers.get("set-cookie", "")
    assert cookie_upstream[1] == [None, None]
