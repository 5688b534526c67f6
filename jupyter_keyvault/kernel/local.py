"""Local mode: no Jupyter server to ask (plain `python`, IPython, or a kernel not started
by a keyvault-enabled server). Values come from the environment first, then from this
user's own vault on disk, opened with the same settings the CLI uses.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any

from .. import providers
from ..scrub import default_scrubber
from ..store import InvalidInput, NoCredential, NotFound, VaultError
from ..store.model import parse_expiry
from .errors import InvalidRequest, KeyVaultError, NoCredentialError

_LOCK = threading.Lock()
_VAULTS: dict[tuple[str, str], Any] = {}  # (vault path, fingerprint of the key env vars) -> Vault
_KEY_ENV = ("KEYVAULT_MASTER_KEY", "KEYVAULT_PASSPHRASE", "KEYVAULT_MASTER_KEY_FILE", "KEYVAULT_PASSPHRASE_FILE")


def how_to_add(name: str) -> str:
    return (f"set the {name} environment variable, or store it with `%keyvault set {name}` "
            f"(or `jupyter keyvault set {name}` in a terminal)")


def _load_settings():
    """`KeyVault` configured from jupyter_server_config (c.KeyVault.vault_path, …), like the CLI."""
    from ..settings import KeyVault

    try:
        from jupyter_core.application import JupyterApp

        class _ConfigReader(JupyterApp):
            name = "jupyter-keyvault-kernel"

        reader = _ConfigReader()
        reader.config_file_name = "jupyter_server_config"
        reader.load_config_file(suppress_errors=True)
        config = reader.config
    except Exception:  # noqa: BLE001 - a broken config file must not break the defaults
        config = None
    return KeyVault(config=config) if config is not None else KeyVault()


def reset() -> None:
    """Forget opened vaults (after changing KEYVAULT_MASTER_KEY, vault_path, … in this process)."""
    with _LOCK:
        for vault in _VAULTS.values():
            vault.close()
        _VAULTS.clear()


class LocalBackend:
    mode = "local"

    def __init__(self, reason: str = "", settings=None):
        self.reason = reason
        self.settings = settings if settings is not None else _load_settings()

    def __repr__(self) -> str:
        return f"LocalBackend(vault_path={self.settings.vault_path!r})"

    @property
    def owner(self) -> str:
        return self.settings.owner

    def _vault(self, *, create: bool):
        path = self.settings.vault_path
        if not create and not os.path.exists(path):
            return None
        fingerprint = hashlib.sha256("\0".join(os.environ.get(k, "") for k in _KEY_ENV).encode()).hexdigest()
        key = (path, fingerprint)
        with _LOCK:
            vault = _VAULTS.get(key)
            if vault is None:
                try:
                    vault = self.settings.open_vault(scrubber=default_scrubber)
                except VaultError as exc:
                    raise KeyVaultError(f"cannot open the local vault at {path}: {exc}") from None
                # Env vars are read live by this helper, not from the snapshot taken at open.
                vault.env_credential_names = set()
                _VAULTS[key] = vault
            return vault

    # -- reads
    def list(self) -> list[dict]:
        items: dict[str, dict] = {}
        vault = self._vault(create=False)
        if vault is not None:
            try:
                warn_after = self.settings.key_age_warning_days * 86400
                for info in vault.list(self.owner, include_env=False):
                    items[info.name] = {**info.to_json(), "stale": info.stale(time.time(), warn_after)}
            except VaultError as exc:
                raise KeyVaultError(str(exc)) from None
        for name in sorted(self.settings.credential_env_names()):
            if os.environ.get(name):
                if name in items:
                    items[name]["source"] = "env"  # the environment wins at use time
                else:
                    guess = providers.provider_for_env_var(name)
                    items[name] = {"name": name, "provider": guess.id if guess else None, "type": "api_key",
                                   "present": True, "source": "env", "metadata": {}}
        return [items[n] for n in sorted(items)]

    def reveal(self, name: str) -> dict:
        name = _valid_name(name)
        env_value = os.environ.get(name)
        if env_value:
            guess = providers.provider_for_env_var(name)
            default_scrubber.add_known(env_value, name)
            return {"name": name, "provider": guess.id if guess else None, "type": "api_key", "value": env_value,
                    "source": "env"}
        vault = self._vault(create=False)
        if vault is None:
            raise NoCredentialError(f"No API key configured for {name}: {how_to_add(name)}")
        try:
            resolved = vault.resolve(self.owner, name, how_to_add=how_to_add(name), actor="kernel:local")
        except (NoCredential, NotFound) as exc:
            raise NoCredentialError(str(exc)) from None
        except InvalidInput as exc:
            raise InvalidRequest(str(exc)) from None
        except VaultError as exc:
            raise KeyVaultError(str(exc)) from None
        default_scrubber.add_known(resolved.value, name)
        guess = providers.provider_for_env_var(name)
        return {"name": name, "provider": resolved.provider or (guess.id if guess else None), "type": resolved.type,
                "value": resolved.value, "source": resolved.source}

    def base_url(self, provider) -> str:
        try:
            return self.settings.base_url_for(provider)
        except InvalidInput as exc:
            raise InvalidRequest(str(exc)) from None

    # -- writes
    def put(self, name: str, value: str, provider: str | None = None, *, session: bool = False,
            expires: str | None = None) -> dict:
        """`session` here: in this kernel's memory only (there is no server), gone when it stops."""
        name = _valid_name(name)
        if not isinstance(value, str) or not value:
            raise InvalidRequest("no value given")
        default_scrubber.add_known(value, name)
        if provider is None:
            guess = providers.provider_for_env_var(name)
            provider = guess.id if guess else providers.detect_provider(value.strip())
        elif provider not in providers.PROVIDERS:
            raise InvalidRequest(f"unknown provider {provider!r}; known: {', '.join(providers.PROVIDERS)}")
        try:
            warnings = providers.check_key_format(provider, value)
            expires_at = parse_expiry(expires, time.time()) if expires else None
            info, created = self._vault(create=True).set(self.owner, name, value, provider=provider,
                                                         actor="kernel:local", session=session, expires_at=expires_at)
        except InvalidInput as exc:
            raise InvalidRequest(str(exc)) from None
        except VaultError as exc:
            raise KeyVaultError(str(exc)) from None
        return {"name": name, "provider": provider, "created": created, "warnings": warnings,
                **info.lifetime_json(time.time())}

    def delete(self, name: str) -> None:
        name = _valid_name(name)
        vault = self._vault(create=False)
        if vault is None:
            raise NoCredentialError(f"no credential named {name} in the vault")
        try:
            vault.delete(self.owner, name, actor="kernel:local")
        except NotFound as exc:
            raise NoCredentialError(str(exc)) from None
        except VaultError as exc:
            raise KeyVaultError(str(exc)) from None

    def test(self, name: str) -> dict:
        found = self.reveal(name)
        pid = found.get("provider")
        if pid is None:
            raise InvalidRequest(f"{name} has no provider; set it again with a provider to test it")
        provider = providers.get_provider(pid)
        result = providers.run_key_test(provider, found["value"], self.base_url(provider),
                                        timeout=self.settings.test_timeout)
        return result.to_json()

    def status(self) -> dict:
        out: dict[str, Any] = {
            "mode": "local",
            "reason": self.reason,
            "owner": self.owner,
            "vault_path": self.settings.vault_path,
            "vault_exists": os.path.exists(self.settings.vault_path),
            "allow_direct_access": True,
        }
        try:
            vault = self._vault(create=False)
        except KeyVaultError as exc:
            return {**out, "ok": False, "error": str(exc)}
        if vault is not None:
            st = vault.status()
            out.update(protection=st["protection"], warnings=st["warnings"], credentials=vault.count(self.owner))
        return {**out, "ok": True}


def _valid_name(name: str) -> str:
    from ..store import validate_name

    try:
        return validate_name(name)
    except InvalidInput as exc:
        raise InvalidRequest(str(exc)) from None
