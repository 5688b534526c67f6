"""pytest fixtures for jupyter-keyvault and for projects that build on it."""

from __future__ import annotations

import base64
import os

import pytest

from jupyter_keyvault.store import SQLiteBackend, Vault


def new_master_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class MemoryKeyring:
    """An in-memory keyring backend (the machines running tests have no OS keyring)."""

    def __new__(cls):
        from keyring.backend import KeyringBackend

        class _Backend(KeyringBackend):
            priority = 1

            def __init__(self):
                super().__init__()
                self.entries: dict[tuple[str, str], str] = {}

            def get_password(self, service, username):
                return self.entries.get((service, username))

            def set_password(self, service, username, password):
                self.entries[(service, username)] = password

            def delete_password(self, service, username):
                from keyring.errors import PasswordDeleteError

                if (service, username) not in self.entries:
                    raise PasswordDeleteError("not found")
                del self.entries[(service, username)]

        return _Backend()


@pytest.fixture
def memory_keyring():
    """Install an in-memory keyring for the test, restore the previous one after."""
    import keyring

    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def master_key() -> str:
    return new_master_key()


@pytest.fixture
def vault_path(tmp_path):
    return tmp_path / "keyvault" / "vault.db"


@pytest.fixture
def vault(vault_path, master_key):
    """A vault on SQLite keyed by an env master key."""
    v = Vault(SQLiteBackend(vault_path), env={"KEYVAULT_MASTER_KEY": master_key})
    yield v
    v.close()


VALID_OPENAI_KEY = "sk-proj-" + "V4L1D" * 8  # what the fake upstream accepts


@pytest.fixture
def fake_upstream():
    """A local OpenAI/Anthropic-compatible server on 127.0.0.1 that accepts VALID_OPENAI_KEY."""
    from .fake_upstream import FakeUpstream

    server = FakeUpstream(valid_keys=(VALID_OPENAI_KEY,)).start()
    yield server
    server.stop()


@pytest.fixture
def keyvault_config(request, tmp_path, fake_upstream):
    """c.KeyVault settings for a test server: a private vault, providers pointed at the fake upstream,
    then what the test's `@pytest.mark.keyvault(**traits)` says."""
    config = {
        "vault_path": str(tmp_path / "vault" / "vault.db"),
        "provider_base_urls": {
            "openai": fake_upstream.openai_base_url,
            "anthropic": fake_upstream.url,
            "groq": fake_upstream.openai_base_url,
            "openai_compatible": fake_upstream.openai_base_url,
        },
        "test_timeout": 5.0,
        # The server runs inside pytest's own process: freezing its heap would keep every earlier
        # test's cyclic garbage for the rest of the session.
        "freeze_startup_heap": False,
    }
    marker = request.node.get_closest_marker("keyvault")
    if marker:
        config.update(marker.kwargs)
    return config


@pytest.fixture
def jp_server_config(keyvault_config, master_key, monkeypatch):
    """Enable the extension in pytest-jupyter's in-process server (keyed by an env master key)."""
    from traitlets.config import Config

    monkeypatch.setenv("KEYVAULT_MASTER_KEY", master_key)
    return Config({
        "ServerApp": {"jpserver_extensions": {"jupyter_keyvault": True}},
        "KeyVault": keyvault_config,
    })


@pytest.fixture
def keyvault_app(jp_serverapp):
    """The KeyVaultManager of the in-process server."""
    return jp_serverapp.web_app.settings["keyvault_manager"]


@pytest.fixture
def server_url(jp_serverapp, http_server_client, jp_http_port, jp_base_url):
    """The in-process server's base URL, listening (http_server_client starts the listener)."""
    return f"http://localhost:{jp_http_port}{jp_base_url}"


@pytest.fixture
def loopback_url(jp_serverapp) -> str:
    """The in-process server's loopback proxy (server/lane.py): its base URL, as kernels are given it."""
    url = jp_serverapp.web_app.settings["keyvault_manager"].loopback_url
    assert url.startswith("http://127.0.0.1:"), url
    return url


@pytest.fixture
def server_kernel(http_server_client, jp_http_port, jp_base_url, jp_serverapp):
    """Factory: start a notebook session through the server's REST API and drive it over its websocket.
    The server shuts its kernels down at teardown."""
    from .kernel_client import ServerKernel

    server_url = f"http://localhost:{jp_http_port}{jp_base_url}"  # not `server_url`: modules may point it elsewhere
    async def start(path: str = "notebook.ipynb") -> ServerKernel:
        return await ServerKernel(server_url, jp_serverapp.identity_provider.token, path=path).start()

    return start
