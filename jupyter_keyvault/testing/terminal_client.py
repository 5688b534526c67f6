"""Drive a Jupyter terminal like JupyterLab does: POST /api/terminals, then the
/terminals/websocket/{name} websocket (terminado's ["stdin", ...] / ["stdout", ...] frames)."""

from __future__ import annotations

import asyncio
import json
import secrets

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect


async def run_in_terminal(base_url: str, token: str, command: str, *, timeout: float = 30) -> str:
    """Run `command` in a new terminal of the server at base_url; return everything it printed."""
    base = base_url.rstrip("/") + "/"
    headers = {"Authorization": f"token {token}"}
    client = AsyncHTTPClient()
    resp = await client.fetch(HTTPRequest(base + "api/terminals", method="POST", body=b"{}", headers=headers))
    name = json.loads(resp.body)["name"]
    ws_url = base.replace("http", "ws", 1) + f"terminals/websocket/{name}"
    ws = await websocket_connect(HTTPRequest(ws_url, headers=headers))
    marker = "kvdone" + secrets.token_hex(4)
    split = marker[:3] + "''" + marker[3:]  # the echoed command line never contains the marker itself
    output = []
    try:
        ws.write_message(json.dumps(["stdin", f"{command}; echo {split}\r"]))

        async def read_until_marker():
            while True:
                msg = await ws.read_message()
                if msg is None:
                    raise ConnectionError("terminal websocket closed")
                kind, *payload = json.loads(msg)
                if kind == "stdout":
                    output.append(payload[0])
                    if marker in "".join(output).replace(split, ""):
                        return

        await asyncio.wait_for(read_until_marker(), timeout)
    finally:
        ws.close()
        await client.fetch(HTTPRequest(base + f"api/terminals/{name}", method="DELETE", headers=headers),
                           raise_error=False)
    return "".join(output)
