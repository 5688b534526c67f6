"""Drive a kernel the way a browser does: REST session + the /api/kernels/{id}/channels websocket.

Used by end-to-end tests and by the examples runner, so code runs in a kernel that
the server started (with its env guard and KEYVAULT_SERVER_URL), not in a side kernel.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect


@dataclass
class ExecutionResult:
    stdout: str = ""
    stderr: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)  # iopub content of every output message
    error: dict[str, Any] | None = None  # ename / evalue / traceback
    messages: list[dict[str, Any]] = field(default_factory=list)  # every raw message received

    @property
    def text(self) -> str:
        """Everything a user would see, as text: streams, results, displays, tracebacks."""
        parts = [self.stdout, self.stderr]
        for out in self.outputs:
            for value in (out.get("data") or {}).values():
                parts.append(value if isinstance(value, str) else json.dumps(value))
        if self.error:
            parts += [self.error.get("evalue", "")] + list(self.error.get("traceback", []))
        return "\n".join(parts)


class ServerKernel:
    """A notebook session on a running Jupyter server, executed over its websocket."""

    def __init__(self, base_url: str, token: str, path: str = "notebook.ipynb", kernel_name: str = "python3"):
        self.base_url = base_url.rstrip("/") + "/"
        self.token = token
        self.path = path
        self.kernel_name = kernel_name
        self.session_id: str | None = None
        self.kernel_id: str | None = None
        self._ws = None
        self._client_session = uuid.uuid4().hex
        self.received: list[dict[str, Any]] = []  # every JSON message the kernel sent on this websocket
        self.frames: list[str | bytes] = []  # every raw frame, binary ones (buffers) included

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}", "Content-Type": "application/json"}

    async def _rest(self, method: str, path: str, body: Any = None) -> Any:
        req = HTTPRequest(self.base_url + path, method=method, headers=self.headers,
                          body=json.dumps(body) if body is not None else None, request_timeout=120)
        resp = await AsyncHTTPClient().fetch(req, raise_error=True)
        return json.loads(resp.body) if resp.body else None

    async def start(self) -> ServerKernel:
        session = await self._rest("POST", "api/sessions", {
            "path": self.path, "name": self.path, "type": "notebook", "kernel": {"name": self.kernel_name}})
        self.session_id, self.kernel_id = session["id"], session["kernel"]["id"]
        await self.connect()
        await self.execute("1", timeout=120)  # wait until the kernel answers
        return self

    async def connect(self) -> None:
        ws_url = (self.base_url.replace("http", "ws", 1)
                  + f"api/kernels/{quote(self.kernel_id)}/channels?session_id={self._client_session}")
        self._ws = await websocket_connect(HTTPRequest(ws_url, headers=self.headers), max_message_size=100 * 1024 * 1024)

    async def restart(self) -> None:
        await self._rest("POST", f"api/kernels/{self.kernel_id}/restart", {})
        self._ws.close()
        await self.connect()
        await self.execute("1", timeout=120)

    def _message(self, msg_type: str, content: dict, channel: str = "shell") -> dict:
        return {
            "header": {"msg_id": uuid.uuid4().hex, "username": "test", "session": self._client_session,
                       "msg_type": msg_type, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": [],
        }

    async def execute(self, code: str, *, timeout: float = 60, stdin: list[str] | None = None) -> ExecutionResult:
        """Run code; answer input()/getpass() prompts from `stdin` in order."""
        msg = self._message("execute_request", {"code": code, "silent": False, "store_history": True,
                                                "user_expressions": {}, "allow_stdin": stdin is not None,
                                                "stop_on_error": True})
        return await self._exchange(msg, "execute_reply", timeout=timeout, stdin=stdin)

    async def comm_msg(self, comm_id: str, data: dict, *, timeout: float = 60) -> ExecutionResult:
        """Send a comm message as a frontend does (e.g. a widget's state update or a button click) and
        collect what the kernel sent while handling it (until it is idle again)."""
        msg = self._message("comm_msg", {"comm_id": comm_id, "data": data})
        return await self._exchange(msg, None, timeout=timeout)

    async def _exchange(self, msg: dict, reply_type: str | None, *, timeout: float,
                        stdin: list[str] | None = None) -> ExecutionResult:
        msg_id = msg["header"]["msg_id"]
        await self._ws.write_message(json.dumps(msg))
        result = ExecutionResult()
        replies = list(stdin or [])
        got_idle = False
        got_reply = reply_type is None

        async def pump():
            nonlocal got_idle, got_reply
            while not (got_idle and got_reply):
                raw = await self._ws.read_message()
                if raw is None:
                    raise ConnectionError("kernel websocket closed")
                self.frames.append(raw)
                if isinstance(raw, bytes):
                    continue
                m = json.loads(raw)
                self.received.append(m)
                if m.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                result.messages.append(m)
                kind, content, channel = m["msg_type"], m["content"], m.get("channel")
                if channel == "stdin" and kind == "input_request":
                    answer = self._message("input_reply", {"value": replies.pop(0) if replies else ""}, "stdin")
                    answer["parent_header"] = m["header"]
                    await self._ws.write_message(json.dumps(answer))
                elif kind == "stream":
                    if content["name"] == "stdout":
                        result.stdout += content["text"]
                    else:
                        result.stderr += content["text"]
                elif kind in ("execute_result", "display_data", "update_display_data"):
                    result.outputs.append(content)
                elif kind == "error":
                    result.error = content
                elif kind == "status" and content["execution_state"] == "idle":
                    got_idle = True
                elif kind == reply_type:
                    got_reply = True

        await asyncio.wait_for(pump(), timeout)
        return result

    async def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
        if self.session_id:
            try:
                await self._rest("DELETE", f"api/sessions/{self.session_id}")
            except (OSError, HTTPClientError):
                pass  # the server may already be gone at teardown
