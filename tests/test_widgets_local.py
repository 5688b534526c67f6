"""keyvault.panel() outside a Jupyter server (plain python/IPython): it uses the local vault on disk."""

from __future__ import annotations

import base64
import builtins
import os
import sys

import pytest

pytest.importorskip("ipywidgets", minversion="8")

from jupyter_keyvault.kernel import mode  # noqa: E402


@pytest.fixture
def local(monkeypatch, tmp_path):
    for var in ("KEYVAULT_SERVER_URL", "KEYVAULT_KERNEL_ID", "KEYVAULT_KERNEL_SESSION_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("KEYVAULT_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    mode.reset()
    assert mode.current_backend().mode == "local"
    yield
    mode.reset()


def test_given_no_server_when_a_key_is_saved_and_deleted_in_the_panel_then_the_local_vault_changes(local, canary):
    import keyvault

    box = keyvault.panel()
    ui = box.keyvault_panel
    assert "keyvault-panel" in box._dom_classes
    ui.provider.value = "groq"  # picking a provider fills in its usual name and shows its key format
    assert ui.name.value == "GROQ_API_KEY" and "gsk_" in ui.hint.value
    ui.provider.value = "openai"  # the name follows while it is still the previous provider's default
    assert ui.name.value == "OPENAI_API_KEY"
    ui.name.value = "OPENAI_API_KEY"
    ui.value.set_state({"value": canary})  # what the frontend sends while typing
    assert canary not in str(ui.value.get_state())
    ui.save.click()
    assert ui.status.value.startswith("Saved OPENAI_API_KEY")
    assert [c["name"] for c in keyvault.list()] == ["OPENAI_API_KEY"]
    assert keyvault.get("OPENAI_API_KEY").reveal() == canary
    assert 'data-name="OPENAI_API_KEY"' in ui.list.value
    import ipywidgets

    assert canary not in str(ipywidgets.Widget.get_manager_state(drop_defaults=False))

    ui.delete.click()
    ui.confirm.click()
    assert ui.status.value == "Deleted OPENAI_API_KEY."
    assert keyvault.list() == []


def test_given_ipywidgets_is_missing_when_panel_is_called_then_a_clear_error_says_how_to_install_it(monkeypatch):
    import keyvault
    from jupyter_keyvault.kernel import widgets

    real_import = builtins.__import__

    def no_ipywidgets(name, *args, **kwargs):
        if name == "ipywidgets" or name.startswith("ipywidgets."):
            raise ImportError("No module named 'ipywidgets'")
        return real_import(name, *args, **kwargs)

    # A fresh import of the module in a process without ipywidgets; monkeypatch puts the real one back.
    monkeypatch.delitem(sys.modules, "jupyter_keyvault.kernel.widgets")
    monkeypatch.setattr(builtins, "__import__", no_ipywidgets)
    with pytest.raises(keyvault.KeyVaultError, match=r"pip install 'jupyter-keyvault\[widgets\]'"):
        keyvault.panel()
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert sys.modules["jupyter_keyvault.kernel.widgets"] is not widgets  # the test really re-imported it


class _EchoingBackend:
    """A backend whose errors quote what it was given: the worst case for the status line."""

    def list(self):
        return []

    def put(self, name, value, provider=None, **_lifetime):
        raise keyvault_error(f"server said: bad value {value!r} for {name}")


def keyvault_error(message):
    from jupyter_keyvault.kernel.errors import InvalidRequest

    return InvalidRequest(message)


@pytest.mark.parametrize("value", ["plain-canary-0123456789abcdef", "sk-proj-CANARY" + "Ab1" * 15])
def test_given_an_error_that_quotes_the_value_when_save_fails_then_the_status_shows_it_redacted(value):
    from jupyter_keyvault.kernel.widgets import KeyVaultPanel

    ui = KeyVaultPanel(backend_factory=_EchoingBackend)
    ui.name.value = "OPENAI_API_KEY"
    ui.value.set_state({"value": value})
    ui.save.click()
    assert ui.status.value.startswith("Error: server said: bad value")
    assert value not in ui.status.value and "REDACTED" in ui.status.value
    assert "keyvault-status-error" in ui.status._dom_classes


def test_given_a_key_pasted_into_the_name_field_when_save_fails_then_the_status_does_not_show_it():
    from jupyter_keyvault.kernel.widgets import KeyVaultPanel

    key = "sk-proj-CANARY" + "Zz9" * 15
    ui = KeyVaultPanel(backend_factory=_EchoingBackend)
    ui.name.value = key
    ui.value.set_state({"value": "some-value-1234"})
    ui.save.click()
    assert ui.status.value.startswith("Error:") and key not in ui.status.value


class _RecordingBackend:
    puts: list = []

    def list(self):
        return [{"name": "S_KEY", "provider": None, "lifetime": "session"},
                {"name": "OLD_KEY", "provider": None, "stale": True, "age_days": 120},
                {"name": "GONE_KEY", "provider": None, "expired": True, "expires_at": "2026-01-01T00:00:00.000Z"}]

    def put(self, name, value, provider=None, **lifetime):
        self.puts.append((name, lifetime))
        return {"name": name}


def test_given_the_session_checkbox_when_saving_then_the_value_is_session_only_and_badges_show_lifetimes():
    from jupyter_keyvault.kernel.widgets import KeyVaultPanel

    ui = KeyVaultPanel(backend_factory=_RecordingBackend)
    ui.name.value = "S_KEY"
    ui.value.set_state({"value": "session-value-0123456789"})
    ui.session.value = True
    ui.save.click()
    assert _RecordingBackend.puts[-1] == ("S_KEY", {"session": True})
    assert "for this session only" in ui.status.value
    listing = ui.list.value
    assert "keyvault-badge-session" in listing and "keyvault-badge-expired" in listing
    assert "keyvault-badge-stale" in listing and "120 days old" in listing
