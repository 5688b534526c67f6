"""Start a real JupyterHub (and configurable-http-proxy) on 127.0.0.1 for tests.

    with JupyterHubHarness(services=[...], extra_config="c.X.y = 1") as hub:
        hub.create_user("alice")
        hub.start_server("alice")
        token = hub.user_token("alice")
        hub.user_api("alice", "GET", "keyvault/api/credentials", token=token)
        kernel = await hub.start_kernel("alice")          # a ServerKernel on the user's server

Everything lives in a private temporary directory: the hub database, cookie secret, the
users' home, data, config and runtime dirs. Ports are free ports chosen by the OS. The hub
uses the dummy authenticator and the simple local-process spawner (user servers run as the
current user with `--allow-root`). An admin API token (a service with admin scopes) drives
the hub's REST API.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .live_server import free_port

ADMIN_SERVICE = "test-admin"
ADMIN_SCOPES = [
    "admin:users", "admin:groups", "admin:servers", "tokens", "access:servers", "access:services",
    "read:users", "list:users", "read:groups", "list:groups", "read:services", "list:services",
]


def missing_requirements() -> str | None:
    """Why a real JupyterHub cannot start here, or None when it can (use as a skip reason)."""
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        return "jupyterhub is not installed (pip install 'jupyter-keyvault[hub]')"
    if not chp_command():
        return "configurable-http-proxy is not installed (bash scripts/install-chp.sh)"
    return None


def chp_command() -> str | None:
    return shutil.which("configurable-http-proxy")


class HubError(RuntimeError):
    def __init__(self, status: int, body: str, url: str):
        super().__init__(f"{status} from {url}: {body[:500]}")
        self.status = status
        self.body = body


class Response:
    def __init__(self, status: int, body: bytes, headers):
        from tornado.httputil import HTTPHeaders

        self.status = status
        self.body = body
        self.headers = HTTPHeaders()  # case-insensitive (the proxy lowercases names)
        for name, value in (headers.items() if hasattr(headers, "items") else headers):
            self.headers.add(name, value)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def http(method: str, url: str, *, token: str | None = None, body: Any = None, headers: dict | None = None,
         timeout: float = 30) -> Response:
    """One HTTP call; never raises on a status (tests assert on them)."""
    data = None
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"token {token}"
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # nosec B310
            return Response(resp.status, resp.read(), resp.headers.items())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read(), exc.headers.items() if exc.headers else [])


UID_VENV_PYTHON = os.path.join(os.environ.get("KEYVAULT_UID_VENV", "/opt/jupyter-keyvault-uid-venv"), "bin", "python")


class JupyterHubHarness:
    """A real JupyterHub on free local ports, with an admin token and helpers for its REST API."""

    def __init__(self, *, services: list[dict] | None = None, load_roles: list[dict] | None = None,
                 extra_config: str = "", singleuser_config: str = "", user_env: dict[str, str] | None = None,
                 hub_env: dict[str, str] | None = None, root: str | Path | None = None,
                 admin_users: list[str] = (), system_users: bool = False):
        self.root = Path(root or tempfile.mkdtemp(prefix="kv-hub-"))
        self.port = free_port()  # the public proxy port: browsers and servers' users come here
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub_api_url = f"http://127.0.0.1:{self.hub_port}/hub/api"
        self.admin_token = secrets.token_hex(24)
        self.services = list(services or [])
        self.load_roles = list(load_roles or [])
        self.extra_config = extra_config
        self.singleuser_config = singleuser_config
        self.user_env = dict(user_env or {})
        self.admin_users = set(admin_users)  # hub admins (the hub creates them at start)
        self.hub_env = dict(hub_env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "hub.log"
        self._user_tokens: dict[str, str] = {}
        # True: every hub user is a system user (see add_system_user) and LocalProcessSpawner runs
        # their server under their own uid, as production spawners do. False: one uid for all.
        self.system_users = system_users
        # Servers of system users need an interpreter they may execute (scripts/install-uid-venv.sh).
        self.server_python = UID_VENV_PYTHON if system_users else sys.executable

    # -- paths
    def user_dir(self, name: str) -> Path:
        if self.system_users:
            import pwd

            return Path(pwd.getpwnam(name).pw_dir)
        return self.root / "users" / name

    def user_log(self, name: str) -> str:
        """The user's server output (stdout+stderr of the single-user server and its kernels' server side)."""
        # The local spawner inherits the hub's stdout, so server logs are part of the hub log.
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    # -- lifecycle
    def write_config(self) -> Path:
        for d in ("users", "singleuser-config", "runtime"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        if self.system_users:  # other uids read the single-user config (nothing secret lives there)
            for d in (self.root, self.root / "singleuser-config"):
                d.chmod(0o755)
        (self.root / "singleuser-config" / "jupyter_server_config.py").write_text(
            "c = get_config()  # noqa\n" + textwrap.dedent(self.singleuser_config) + "\n")
        admin_service = {"name": ADMIN_SERVICE, "api_token": self.admin_token}
        roles = [{"name": "test-admin-role", "scopes": ADMIN_SCOPES, "services": [ADMIN_SERVICE]}]
        roles += self.load_roles
        base_env = {
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "JUPYTER_PLATFORM_DIRS": "1",
            "JUPYTER_CONFIG_DIR": str(self.root / "singleuser-config"),
            **self.user_env,
        }
        config = f"""
import os
c = get_config()  # noqa
ROOT = {str(self.root)!r}
c.JupyterHub.bind_url = "http://127.0.0.1:{self.port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{self.hub_port}"
c.JupyterHub.hub_connect_url = "http://127.0.0.1:{self.hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp_command()!r}]
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.db_url = "sqlite:///" + os.path.join(ROOT, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(ROOT, "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(ROOT, "jupyterhub.pid")
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {self.admin_users!r}
c.JupyterHub.spawner_class = {"localprocess" if self.system_users else "simple"!r}
c.Spawner.cmd = [{self.server_python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"]
c.Spawner.ip = "127.0.0.1"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.default_url = "/tree"
_base_env = {base_env!r}
if {self.system_users!r}:
    # Each server runs as its system user, in its own home (HOME and the Jupyter dirs from it).
    c.Spawner.environment = _base_env
else:
    c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(ROOT, "users", "{{username}}")
    c.Spawner.notebook_dir = os.path.join(ROOT, "users", "{{username}}")

    def _per_user(sub):
        return lambda spawner: os.path.join(ROOT, "users", spawner.user.name, sub)

    c.Spawner.environment = {{
        **_base_env,
        "JUPYTER_DATA_DIR": _per_user(".local/share/jupyter"),
        "JUPYTER_RUNTIME_DIR": _per_user(".local/share/jupyter/runtime"),
        "IPYTHONDIR": _per_user(".ipython"),
    }}
c.JupyterHub.services = {[admin_service] + self.services!r}
c.JupyterHub.load_roles = {roles!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.log_level = "INFO"
"""
        config += "\n" + textwrap.dedent(self.extra_config) + "\n"
        path = self.root / "jupyterhub_config.py"
        path.write_text(config)
        return path

    def start(self, timeout: float = 90) -> JupyterHubHarness:
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        config = self.write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "JUPYTERHUB_"))}
        env.update({"HOME": str(self.root), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
                    "JUPYTER_PLATFORM_DIRS": "1", **self.hub_env})
        # Prefer the venv's bin (jupyterhub-singleuser, jupyter) and the proxy's dir.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.root,
                                     env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited ({self.proc.returncode}):\n{self.log_path.read_text()[-4000:]}")
            try:
                if http("GET", self.url + "/hub/api/", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"jupyterhub did not answer in {timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # the hub stops user servers and the proxy it started (cleanup_*)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> JupyterHubHarness:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- hub REST API (as the admin service)
    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None,
            expect: int | tuple[int, ...] | None = None) -> Response:
        resp = http(method, f"{self.url}/hub/api/{path.lstrip('/')}", token=token or self.admin_token, body=body)
        if expect is not None:
            allowed = (expect,) if isinstance(expect, int) else expect
            if resp.status not in allowed:
                raise HubError(resp.status, resp.text, path)
        return resp

    @staticmethod
    def add_system_user(name: str) -> None:
        """A system user with a private home (tests run as root); remove with remove_system_user."""
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                       capture_output=True, timeout=60)
        import pwd

        os.chmod(pwd.getpwnam(name).pw_dir, 0o700)

    @staticmethod
    def remove_system_user(name: str) -> None:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, timeout=30)
        subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=60)

    def create_user(self, name: str) -> dict:
        """Create a user (hub admins are given as `admin_users` and exist from the start)."""
        self.api("POST", f"users/{name}", expect=(201, 409))
        return self.api("GET", f"users/{name}", expect=200).json()

    def create_group(self, name: str, users: list[str] = ()) -> dict:
        self.api("POST", f"groups/{name}", {"users": list(users)} if users else None, expect=(201, 409))
        if users:
            self.api("POST", f"groups/{name}/users", {"users": list(users)}, expect=200)
        return self.api("GET", f"groups/{name}", expect=200).json()

    def add_to_group(self, group: str, *users: str) -> None:
        self.api("POST", f"groups/{group}/users", {"users": list(users)}, expect=200)

    def start_server(self, name: str, timeout: float = 120) -> dict:
        """Start the user's default server and wait until the hub reports it ready."""
        self.api("POST", f"users/{name}/server", expect=(201, 202, 400))  # 400: already running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"users/{name}", expect=200).json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return server
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.25)
        raise RuntimeError(f"{name}'s server did not become ready in {timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def stop_server(self, name: str, timeout: float = 60) -> None:
        self.api("DELETE", f"users/{name}/server", expect=(202, 204, 400))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.api("GET", f"users/{name}", expect=200).json().get("servers"):
                return
            time.sleep(0.25)

    def user_token(self, name: str, *, scopes: list[str] | None = None, note: str = "test") -> str:
        """An API token of the user (what a browser session or `jupyterhub token` gives them); cached."""
        if scopes is None and name in self._user_tokens:
            return self._user_tokens[name]
        body: dict[str, Any] = {"note": note}
        if scopes is not None:
            body["scopes"] = scopes
        token = self.api("POST", f"users/{name}/tokens", body, expect=201).json()["token"]
        if scopes is None:
            self._user_tokens[name] = token
        return token

    # -- the user's own server, through the public proxy
    def user_url(self, name: str) -> str:
        return f"{self.url}/user/{name}/"

    def user_api(self, name: str, method: str, path: str, body: Any = None, *, token: str | None = None,
                 headers: dict | None = None) -> Response:
        return http(method, self.user_url(name) + path.lstrip("/"), token=token or self.user_token(name),
                    body=body, headers=headers)

    def service_url(self, service: str) -> str:
        return f"{self.url}/services/{service}/"

    async def start_kernel(self, name: str, *, token: str | None = None, path: str = "notebook.ipynb"):
        """A kernel started by the user's server, driven over its websocket (like JupyterLab)."""
        from .kernel_client import ServerKernel

        return await ServerKernel(self.user_url(name), token or self.user_token(name), path=path).start()
