"""The loopback lane (server/lane.py): the provider proxy kernels are given, on 127.0.0.1.

Every proxy test in test_proxy*.py runs on both fronts (the Jupyter URL and this lane); here is what
only the lane has: where kernels are sent, the address it listens on, the Hosts it answers (the
DNS-rebinding attack runs on both fronts in test_proxy_headers.py), what it does not serve, and when
it is not offered."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx2
import pytest

from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT
from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

CHAT = "keyvault/proxy/openai/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_given_a_kernel_when_it_uses_keyvault_openai_then_its_calls_go_through_the_loopback_lane(
        jp_fetch, server_kernel, loopback_url, fake_upstream, canary):
    fake_upstream.valid_keys.add(canary)
    await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                   body=json.dumps({"value": canary, "provider": "openai"}))
    kernel = await server_kernel("lane.ipynb")
    result = await kernel.execute(
        "%load_ext keyvault\n"
        "import os\n"
        "client = keyvault.openai()\n"
        "print('PROXY_URL', os.environ['KEYVAULT_PROXY_URL'])\n"
        "print('BASE_URL', client.base_url)\n"
        "print('WS_URL', client.websocket_base_url)\n"
        "r = client.chat.completions.create(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print('REPLY', r.choices[0].message.content)\n"
        "%keyvault status\n"
    )
    assert result.error is None, result.text
    assert f"PROXY_URL {loopback_url}" in result.stdout
    assert f"BASE_URL {loopback_url}keyvault/proxy/openai/v1/" in result.stdout
    # The Realtime websocket stays on the Jupyter URL (the lane serves HTTP only).
    assert "WS_URL ws://" in result.stdout and urlsplit(loopback_url).netloc not in result.stdout.split("WS_URL")[1].split()[0]
    assert f"REPLY {REPLY_TEXT}" in result.stdout
    assert f"proxy: {loopback_url} (the server's loopback lane)" in result.stdout
    assert fake_upstream.received_keys() == [canary] and canary not in result.text


async def test_the_loopback_lane_listens_on_127_0_0_1_only(loopback_url):
    port = urlsplit(loopback_url).port
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, local_port = local.split(":")
                if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                    listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex; nothing on any other address


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}"])
async def test_given_the_lanes_own_address_as_host_then_the_call_is_served(
        loopback_url, proxy_token, fake_upstream, host):
    token = await proxy_token()
    async with httpx2.AsyncClient() as http:
        resp = await http.post(loopback_url + CHAT, json=BODY, headers={
            "Authorization": f"Bearer {token}", "Host": host.format(port=urlsplit(loopback_url).port)})
    assert resp.status_code == 200, resp.text
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY]


@pytest.mark.parametrize("path", ["keyvault/api/credentials", "keyvault/kernel/status", "api/contents",
                                  "keyvault/proxy/oauth/GITHUB/user", "keyvault/proxy/Openai/v1/models"])
async def test_given_a_path_other_than_a_provider_proxy_when_asked_of_the_lane_then_404_and_nothing_upstream(
        loopback_url, proxy_token, fake_upstream, path):
    token = await proxy_token()
    async with httpx2.AsyncClient() as http:
        resp = await http.get(loopback_url + path, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["type"] == "keyvault_error"
    assert fake_upstream.requests == []


async def test_given_a_websocket_upgrade_when_asked_of_the_lane_then_400_pointing_at_the_server_url(
        loopback_url, proxy_token, fake_upstream):
    token = await proxy_token()
    async with httpx2.AsyncClient() as http:
        resp = await http.get(loopback_url + "keyvault/proxy/openai/v1/realtime", headers={
            "Authorization": f"Bearer {token}", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert resp.status_code == 400 and "Jupyter server's URL" in resp.json()["error"]["message"]
    assert fake_upstream.requests == []


@pytest.mark.keyvault(server_url="http://jupyter.internal:8888/")
async def test_given_server_url_set_then_kernels_are_not_sent_to_a_loopback_lane(jp_serverapp):
    manager = jp_serverapp.web_app.settings["keyvault_manager"]
    env = manager.kernel_env({"KEYVAULT_PROXY_URL": "http://127.0.0.1:1/planted/"})
    assert manager.loopback_url == "" and "KEYVAULT_PROXY_URL" not in env
    assert env["KEYVAULT_SERVER_URL"] == "http://jupyter.internal:8888/"


@pytest.mark.keyvault(loopback_proxy=False)
async def test_given_the_loopback_proxy_turned_off_then_kernels_use_the_server_url(jp_serverapp):
    manager = jp_serverapp.web_app.settings["keyvault_manager"]
    env = manager.kernel_env({"KEYVAULT_PROXY_URL": "http://127.0.0.1:1/planted/"})
    assert manager.loopback_url == "" and "KEYVAULT_PROXY_URL" not in env


@pytest.fixture
def taken_port():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


@pytest.fixture
def keyvault_config(keyvault_config, request):
    if "taken_port" in request.fixturenames:
        keyvault_config["loopback_proxy_port"] = request.getfixturevalue("taken_port")
    return keyvault_config


async def test_given_the_loopback_port_is_taken_then_the_server_starts_and_kernels_use_its_url(
        taken_port, jp_serverapp):
    manager = jp_serverapp.web_app.settings["keyvault_manager"]
    assert manager.loopback_proxy_port == taken_port  # asked for, not available: no lane, and no failure
    assert manager.loopback_url == "" and "KEYVAULT_PROXY_URL" not in manager.kernel_env({})


async def test_given_a_failure_inside_the_lane_then_a_provider_shaped_500_and_the_log_has_it(
        jp_serverapp, loopback_url, proxy_token, fake_upstream, monkeypatch, caplog):
    token = await proxy_token()
    manager = jp_serverapp.web_app.settings["keyvault_manager"]

    async def broken_session():
        raise RuntimeError("session factory broke")

    monkeypatch.setattr(manager, "http_session", broken_session)
    async with httpx2.AsyncClient() as http:
        resp = await http.post(loopback_url + CHAT, json=BODY, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 500 and resp.json()["error"]["type"] == "keyvault_error", resp.text
    assert "session factory broke" not in resp.text  # the cause goes to the log, not to the caller
    assert "the loopback proxy failed on POST" in caplog.text and "session factory broke" in caplog.text
    assert fake_upstream.requests == []
