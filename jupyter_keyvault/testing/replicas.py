"""Several keyvault hub service processes on one database, behind a real JupyterHub.

    with ServiceReplicas(3, db_url, extra_args=[...], admin_users=["carol"]) as r:
        r.hub.create_user("alice")
        http("GET", r.url(1) + "api/credentials", token=r.hub.user_token("alice"))
        r.signal(2, signal.SIGKILL); r.start_replica(2)

JupyterHub knows the service as an externally managed one (a URL and an API token, no
command): the hub checks every user token the replicas see and answers their group lookups,
and its proxy routes /services/keyvault/ to replica 0. Clients spread over the replicas by
calling their ports directly, as a Kubernetes Service in front of a Deployment would.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .hub import JupyterHubHarness, http
from .live_server import free_port

SERVICE = "keyvault"


class ServiceReplicas:
    def __init__(self, count: int, db_url: str, *, extra_args: list[str] = (), admin_users: list[str] = (),
                 master_key: str | None = None):
        from ..hub.config import keyvault_service_config

        self.db_url = db_url
        self.master_key = master_key or base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.extra_args = list(extra_args)
        self.api_token = secrets.token_hex(32)
        self.ports = [free_port() for _ in range(count)]
        self.root = Path(tempfile.mkdtemp(prefix="kv-replicas-"))
        _, roles, _ = keyvault_service_config(port=self.ports[0], master_key=self.master_key, name=SERVICE)
        service = {"name": SERVICE, "url": f"http://127.0.0.1:{self.ports[0]}", "api_token": self.api_token,
                   "oauth_no_confirm": True}
        self.hub = JupyterHubHarness(services=[service], load_roles=roles, admin_users=list(admin_users))
        self.procs: list[subprocess.Popen | None] = [None] * count

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}/services/{SERVICE}/"

    def log(self, i: int) -> str:
        path = self.root / f"replica-{i}.log"
        return path.read_text("utf-8", "replace") if path.exists() else ""

    def env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "JUPYTERHUB_"))}
        env.update({
            "HOME": str(self.root), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "KEYVAULT_MASTER_KEY": self.master_key, "KEYVAULT_HUB_DB_URL": self.db_url,
            "JUPYTERHUB_SERVICE_NAME": SERVICE, "JUPYTERHUB_API_TOKEN": self.api_token,
            "JUPYTERHUB_API_URL": self.hub.hub_api_url, "JUPYTERHUB_CLIENT_ID": f"service-{SERVICE}",
            "JUPYTERHUB_SERVICE_PREFIX": f"/services/{SERVICE}/", "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/services/{SERVICE}/oauth_callback",
        })
        return env

    def start_replica(self, i: int, timeout: float = 60) -> None:
        log = open(self.root / f"replica-{i}.log", "ab")
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "jupyter_keyvault.hub", *self.extra_args],
                                         env=self.env(self.ports[i]), cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"replica {i} exited ({self.procs[i].returncode}):\n{self.log(i)[-3000:]}")
            try:
                if http("GET", self.url(i) + "health/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {i} not ready in {timeout} s:\n{self.log(i)[-3000:]}")
            time.sleep(0.2)

    def start(self) -> ServiceReplicas:
        self.hub.start()
        try:
            for i in range(len(self.ports)):
                self.start_replica(i)
        except BaseException:
            self.stop()
            raise
        return self

    def signal(self, i: int, sig: int = signal.SIGTERM) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def wait(self, i: int, timeout: float = 60) -> int:
        proc = self.procs[i]
        assert proc is not None
        return proc.wait(timeout)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.hub.stop()

    def __enter__(self) -> ServiceReplicas:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
