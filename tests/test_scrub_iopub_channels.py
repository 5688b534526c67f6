"""Kernel → browser through the server's filter: a canary per channel the red team found
(issues 14, 16, 19), with and without the kernel helper, over both kernel websocket
protocols JupyterLab speaks. Each canary is stored in the vault; then every raw frame the
browser receives is searched for it, in clear and in every encoded form tried."""

from __future__ import annotations

import base64
import json
import re
import secrets
from typing import Any

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_keyvault.testing.kernel_client import ServerKernel

V1 = "v1.kernel.websocket.jupyter.org"

# Kernel code per channel; K is the stored canary (built from two halves, so the cell
# source itself never holds it). `send(type, content, **kw)` sends a raw iopub message.
PRELUDE = """
def send(msg_type, content, header_extra=None, parent_extra=None, metadata=None, buffers=None):
    k = get_ipython().kernel
    parent = dict(k.get_parent('shell'))
    parent['header'] = {**parent['header'], **(parent_extra or {})}
    msg = k.session.msg(msg_type, content, parent=parent, metadata=metadata)
    msg['header'].update(header_extra or {})
    k.session.send(k.iopub_socket, msg, buffers=buffers)
"""
ATTACKS = {
    "display_metadata": "from IPython.display import display\n"
                        "display({'text/plain': 'x'}, metadata={'note': K, 'image/png': {'alt': K}}, raw=True)",
    "comm_close_data": "from comm import create_comm\n"
                       "c = create_comm(target_name='kv_test', data={})\nc.close(data={'k': K})",
    "comm_msg_buffer": "from comm import create_comm\n"
                       "c = create_comm(target_name='kv_test', data={})\nc.send(data={}, buffers=[b'<<' + K.encode() + b'>>'])",
    "widget_image_buffer": "import ipywidgets\nw = ipywidgets.Image(value=K.encode(), format='png')\ndisplay(w)",
    "debug_event": "send('debug_event', {'seq': 1, 'type': 'event', 'event': 'output', 'body': {'output': K}})",
    "clear_output_extra": "send('clear_output', {'wait': False, 'note': K})",
    "status_extra": "send('status', {'execution_state': 'busy', 'detail': K})",
    "unknown_type": "send('my_custom_event', {'payload': [{'k': K}]})",
    "header_extra": "send('stream', {'name': 'stdout', 'text': 'hi\\n'}, header_extra={'trace': K})",
    "parent_header_extra": "send('stream', {'name': 'stdout', 'text': 'hi\\n'}, parent_extra={'trace': K})",
    "message_metadata": "send('stream', {'name': 'stdout', 'text': 'hi\\n'}, metadata={'trace': K})",
    "image_png_raw": "from IPython.display import display\ndisplay({'image/png': K}, raw=True)",
    "image_png_base64": "import base64\nfrom IPython.display import display\n"
                        "display({'image/png': base64.b64encode(b'\\x89PNG..' + K.encode() + b'...').decode()}, raw=True)",
    "html_decimal_entities": "from IPython.display import display, HTML\n"
                             "display(HTML(''.join(f'&#{ord(c)};' for c in K)))",
    "html_hex_entities": "from IPython.display import display, HTML\n"
                         "display(HTML(''.join(f'&#x{ord(c):x};' for c in K)))",
    "json_u_escapes": "print(''.join(f'\\\\u{ord(c):04x}' for c in K))",
    "percent_encoding": "import urllib.parse\nfrom IPython.display import display, Markdown\n"
                        "display(Markdown('[link](https://x.example/?k=' + urllib.parse.quote(K, safe='') + ')'))\n"
                        "print(''.join(f'%{b:02X}' for b in K.encode()))",
    "mimetype_key": "from IPython.display import display\ndisplay({'text/plain': 'x', 'application/x-' + K: 'v'}, raw=True)",
}


def encoded_forms(secret: str) -> dict[str, bytes]:
    raw = secret.encode()
    forms = {
        "clear": raw,
        "decimal entities": "".join(f"&#{ord(c)};" for c in secret).encode(),
        "hex entities": "".join(f"&#x{ord(c):x};" for c in secret).encode(),
        "percent": "".join(f"%{b:02X}" for b in raw).encode(),
        "\\u escapes": "".join(f"\\u{ord(c):04x}" for c in secret).encode(),
        "\\u escapes in JSON": "".join(f"\\\\u{ord(c):04x}" for c in secret).encode(),
    }
    for pad in range(3):
        core = base64.b64encode(b"\0" * pad + raw).decode()[4 if pad else 0:][:len(secret)]
        forms[f"base64/{pad}"] = core.encode()
    return forms


def leaks(frames: list[bytes], secret: str) -> list[str]:
    blob = b"\n".join(frames)
    found = [name for name, form in encoded_forms(secret).items() if form in blob]
    # base64 payloads: decode every long base64 run and look inside
    for run in re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", blob):
        try:
            if secret.encode() in base64.b64decode(run + b"=" * (-len(run) % 4)):
                found.append("inside a base64 payload")
        except ValueError:
            pass
    return found


class _V1Socket:
    """The browser side of `v1.kernel.websocket.jupyter.org`: binary frames with offsets."""

    def __init__(self, ws):
        self.ws = ws

    async def write_message(self, text: str) -> None:
        msg = json.loads(text)
        parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")]
        channel = msg["channel"].encode()
        offsets = [8 * (1 + 1 + len(parts) + 1)]
        offsets.append(offsets[-1] + len(channel))
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
        await self.ws.write_message(head + channel + b"".join(parts), binary=True)

    async def read_message(self) -> Any:
        raw = await self.ws.read_message()
        if raw is None:
            return None
        self.raw.append(raw)
        count = int.from_bytes(raw[:8], "little")
        offsets = [int.from_bytes(raw[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
        channel = raw[offsets[0]:offsets[1]].decode()
        parts = [raw[offsets[i]:offsets[i + 1]] for i in range(1, count - 1)]
        header, parent, metadata, content = (json.loads(p) for p in parts[:4])
        return json.dumps({"header": header, "parent_header": parent, "metadata": metadata, "content": content,
                           "msg_type": header.get("msg_type"), "channel": channel})

    def close(self) -> None:
        self.ws.close()


class V1ServerKernel(ServerKernel):
    async def connect(self) -> None:
        ws_url = (self.base_url.replace("http", "ws", 1)
                  + f"api/kernels/{self.kernel_id}/channels?session_id={self._client_session}")
        ws = await websocket_connect(HTTPRequest(ws_url, headers=self.headers), subprotocols=[V1],
                                     max_message_size=100 * 1024 * 1024)
        assert ws.selected_subprotocol == V1
        self._ws = _V1Socket(ws)
        self._ws.raw = self.raw_frames


@pytest.fixture
def keyvault_config(keyvault_config, request):
    keyvault_config["autoload"] = getattr(request, "param", "no-helper") == "helper"
    return keyvault_config


@pytest.mark.parametrize("protocol", ["legacy", V1])
@pytest.mark.parametrize("keyvault_config", ["helper", "no-helper"], indirect=True)
async def test_given_a_stored_value_on_every_channel_when_the_kernel_sends_it_then_no_frame_to_the_browser_holds_it(
    jp_fetch, server_url, jp_serverapp, keyvault_config, protocol
):
    canaries = {name: f"kvcanary{secrets.token_hex(16)}" for name in ATTACKS}  # opaque: found as known values only
    for name, value in canaries.items():
        resp = await jp_fetch("keyvault", "api", "credentials", f"CH_{name.upper()}", method="PUT",
                              body=json.dumps({"value": value, "provider": "openai_compatible"}))
        assert resp.code in (201, 204)
    cls = V1ServerKernel if protocol == V1 else ServerKernel
    kernel = cls(server_url, jp_serverapp.identity_provider.token, path=f"channels-{protocol[:2]}.ipynb")
    kernel.raw_frames = []
    await kernel.start()
    try:
        loaded = await kernel.execute("print('keyvault' in get_ipython().extension_manager.loaded)")
        assert loaded.stdout.strip() == str(keyvault_config["autoload"])
        await kernel.execute(PRELUDE)
        leaked = {}
        for name, code in ATTACKS.items():
            value = canaries[name]
            kernel.frames.clear()
            kernel.raw_frames.clear()
            result = await kernel.execute(f"K = {value[:10]!r} + {value[10:]!r}\n{code}")
            assert result.error is None, (name, result.error)
            frames = [f.encode() if isinstance(f, str) else f for f in kernel.frames + kernel.raw_frames]
            assert frames, name
            found = leaks(frames, value)
            if found:
                leaked[name] = found
        assert leaked == {}
    finally:
        await kernel.stop()


async def test_given_a_value_split_across_prints_when_sent_over_v1_then_it_is_still_redacted(
    jp_fetch, server_url, jp_serverapp, canary
):
    await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                   body=json.dumps({"value": canary, "provider": "openai"}))
    kernel = V1ServerKernel(server_url, jp_serverapp.identity_provider.token, path="split-v1.ipynb")
    kernel.raw_frames = []
    await kernel.start()
    try:
        result = await kernel.execute(
            f"import time\nk = {canary[:9]!r} + {canary[9:]!r}\n"
            "print(k[:15], end='', flush=True); time.sleep(0.3); print(k[15:], flush=True)")
        assert canary[15:] not in result.stdout and "[REDACTED:OPENAI_API_KEY]" in result.stdout
        assert not leaks(kernel.raw_frames, canary)
    finally:
        await kernel.stop()
