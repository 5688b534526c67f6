"""Schemathesis against a live `jupyter server` subprocess: no 5xx, no response off the OpenAPI schema.

The server runs as a user would start it (python -m jupyter_server), with an isolated home,
an env master key and every provider pointed at a local fake upstream, so generated key
tests never leave the machine.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
from importlib.resources import files

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from jupyter_keyvault.providers import PROVIDERS
from jupyter_keyvault.testing.fake_upstream import FakeUpstream
from jupyter_keyvault.testing.fuzzing import schemathesis_config

TOKEN = secrets.token_hex(16)  # the live server's token, known to schemathesis as the `token` security scheme
SCHEMA = schemathesis.openapi.from_path(
    str(files("jupyter_keyvault").joinpath("openapi.json")),
    config=schemathesis.config.SchemathesisConfig.from_dict(
        schemathesis_config({"auth": {"openapi": {"token": {"api_key": f"token {TOKEN}"}}}})),
)
EXAMPLES_PER_OPERATION = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, url: str, token: str, process: subprocess.Popen, log_path):
        self.url, self.token, self.process, self.log_path = url, token, process, log_path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")


@pytest.fixture(scope="module")
def fuzz_upstream():
    with FakeUpstream(valid_keys={"sk-proj-" + "F" * 40}) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, fuzz_upstream):
    root = tmp_path_factory.mktemp("fuzz-server")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "KEYVAULT_")) and not k.endswith(("_API_KEY", "_BASE_URL"))}
    for var, sub in {"HOME": "home", "JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data",
                     "JUPYTER_RUNTIME_DIR": "runtime", "IPYTHONDIR": "ipython"}.items():
        (root / sub).mkdir()
        env[var] = str(root / sub)
    env.update(
        JUPYTER_PLATFORM_DIRS="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        KEYVAULT_MASTER_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode(),
    )
    # Every provider (ollama and gemini included) points at the fake upstream: nothing leaves the host.
    base_urls = {pid: (fuzz_upstream.url if p.sdk == "anthropic" else fuzz_upstream.openai_base_url)
                 for pid, p in PROVIDERS.items()}
    (root / "config" / "jupyter_server_config.py").write_text(
        f"c.ServerApp.jpserver_extensions = {{'jupyter_keyvault': True}}\n"
        f"c.KeyVault.provider_base_urls = {base_urls!r}\n"
    )
    token, port = TOKEN, free_port()
    (root / "work").mkdir()
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser", f"--port={port}",
             "--ip=127.0.0.1", "--port-retries=0", f"--ServerApp.root_dir={root / 'work'}",
             f"--IdentityProvider.token={token}", "--ServerApp.allow_unauthenticated_access=False",
             "--KeyVault.write_rate_per_minute=100000", "--KeyVault.test_rate_per_minute=100000",
             "--KeyVault.test_timeout=2", f"--KeyVault.vault_path={root / 'vault' / 'vault.db'}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", token, process, log_path)
    try:
        deadline = time.monotonic() + 45
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter server exited with {process.returncode}:\n{server.log()}")
            try:
                if requests.get(server.url + "/keyvault/api/status", headers=server.headers, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter server did not answer within 45 s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_given_the_live_server_when_unauthenticated_then_every_documented_operation_is_refused(live_server):
    for path, operations in SCHEMA.raw_schema["paths"].items():
        for method in operations:
            if method == "parameters":
                continue
            url = live_server.url + path.replace("{name}", "OPENAI_API_KEY")
            for headers in ({}, {"Authorization": "token not-the-token"}):
                response = requests.request(method, url, json={"value": "sk-proj-x"}, headers=headers, timeout=10)
                assert response.status_code == 403, (method, path, headers, response.status_code)
    assert requests.get(live_server.url + "/keyvault/api/credentials", headers=live_server.headers,
                        timeout=10).json()["credentials"] == []


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_given_generated_requests_when_sent_to_the_live_server_then_no_5xx_and_responses_match_the_schema(
        case, live_server):
    response = case.call(base_url=live_server.url, timeout=15)
    if response.status_code >= 500:
        print(live_server.log()[-6000:])  # the server's traceback, shown with the failure
    case.validate_response(response)


def test_given_the_fuzzing_when_it_is_over_then_the_server_logged_no_uncaught_exception(live_server):
    log = live_server.log()
    assert "Uncaught exception" not in log and "Traceback" not in log, log[-6000:]
