"""Start a real `jupyter server` subprocess with the extension, isolated from the real home."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    module = "jupyter_server"  # what `python -m` runs
    ready_path = "/keyvault/api/status"  # answered once the server (and the extension) is up

    def __init__(self, *extra_args: str, env: dict | None = None, master_key: str | None = None,
                 config: dict | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="kv-server-"))
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.master_key = master_key or base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.vault_path = self.root / "data" / "keyvault" / "vault.db"
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "JUPYTER_"))},
            "HOME": str(self.root / "home"),
            "JUPYTER_DATA_DIR": str(self.root / "data"),
            "JUPYTER_CONFIG_DIR": str(self.root / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),
            "IPYTHONDIR": str(self.root / "ipython"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "KEYVAULT_MASTER_KEY": self.master_key,
            **(env or {}),
        }
        for d in ("home", "data", "config", "runtime", "ipython"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        if config:  # e.g. {"KeyVault": {"provider_base_urls": {...}}}
            (self.root / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        self.args = [
            sys.executable, "-m", self.module, "--allow-root", "--no-browser",
            f"--port={self.port}", "--ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
            "--ServerApp.allow_unauthenticated_access=False", f"--ServerApp.root_dir={self.root / 'home'}",
            *extra_args,
        ]
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "server.log"

    def start(self, timeout: float = 60) -> JupyterServer:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited: {self.log_path.read_text()[-2000:]}")
            try:
                req = urllib.request.Request(self.url + self.ready_path, headers=self.headers)
                with urllib.request.urlopen(req, timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("jupyter server did not start in time")

    @property
    def headers(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class JupyterLab(JupyterServer):
    """The same isolated server, running JupyterLab (for browser tests)."""

    module = "jupyterlab"

    def lab_url(self, path: str = "lab") -> str:
        return f"{self.url}/{path}?token={self.token}"
