"""jupyter-ai 3.x (Jupyternaut): its secrets settings store into the vault, not a plaintext `.env`.

Jupyternaut keeps its secrets manager in `settings["jupyternaut.secrets_manager"]`; its own one writes
the workspace's `.env` file in plaintext and applies it to this server's `os.environ`, where its
models (LiteLLM) read the keys. `VaultSecretsManager` takes its place with the same interface
(`list_secrets`, `update_secrets`, `get_secret`, `stop`):

- a secret saved in jupyter-ai's settings is encrypted into the vault (metadata `"jupyter_ai": true`),
  never written to any file in the workspace;
- its value is put in this server process's environment, where jupyter-ai's models read it, and its
  name is added to the names `KeyVaultManager.kernel_env` removes, so no kernel or terminal inherits it;
- the settings page lists the vault's credentials (names only, as jupyter-ai's API does).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from .. import envguard, providers

SETTINGS_KEY = "jupyternaut.secrets_manager"
FLAG = "jupyter_ai"  # metadata of credentials saved through jupyter-ai's settings


class VaultSecretsManager:
    """jupyter-ai's secrets manager interface over the vault (see the module doc)."""

    def __init__(self, manager, log):
        self.kv = manager
        self.log = log
        self._names: list[str] = []  # what the settings page lists; refreshed off the event loop

    # -- the interface jupyter-ai's REST handler calls
    def list_secrets(self):
        from jupyter_ai_jupyternaut.secrets.secrets_types import SecretsList

        self._refresh_later()  # the handler calls this on the event loop: answer from the cached names
        return SecretsList(editable_secrets=list(self._names), static_secrets=[])

    async def update_secrets(self, updated_secrets: dict[str, str | None]) -> None:
        """Store (or, for None, delete) each secret in the vault; nothing is written to the workspace."""
        for name, value in (updated_secrets or {}).items():
            if value is None:
                await asyncio.to_thread(self.kv.vault.delete, self.kv.owner, name, actor="jupyter-ai")
                self.kv.invalidate(name, deleted=True)
                self._unexport(name)
                continue
            guess = providers.provider_for_env_var(name)
            provider = guess.id if guess is not None else providers.detect_provider(value.strip())
            providers.check_key_format(provider, value)  # a key that is clearly another provider's: refused
            await asyncio.to_thread(self.kv.vault.set, self.kv.owner, name, value, provider=provider,
                                    metadata={FLAG: True}, actor="jupyter-ai")
            self.kv.invalidate(name)
            self._export(name, value)
        await self.refresh()

    def get_secret(self, secret_name: str) -> str | None:
        """The value, for jupyter-ai's server-side code only (never sent to a frontend). Blocking."""
        from ..store import VaultError

        try:
            return self.kv.vault.get_value(self.kv.owner, secret_name, purpose="jupyter-ai", actor="jupyter-ai")
        except VaultError:
            return None

    def stop(self) -> None:
        for name in list(self.kv.server_env_names):
            self._unexport(name)

    # -- our side
    async def start(self) -> None:
        """Export the secrets saved through jupyter-ai before, so its models find them after a restart."""
        for name in await asyncio.to_thread(self._flagged_names):
            value = await asyncio.to_thread(self.get_secret, name)
            if value is not None:
                self._export(name, value)
        await self.refresh()

    async def refresh(self) -> None:
        items = await asyncio.to_thread(self.kv.vault.list, self.kv.owner, include_env=False)
        self._names = sorted(i.name for i in items if i.type in providers.INJECTABLE_TYPES)

    def _refresh_later(self) -> None:
        task = asyncio.ensure_future(self.refresh())
        self.kv.keep_task(task)

    def _flagged_names(self) -> list[str]:
        return [i.name for i in self.kv.vault.list(self.kv.owner, include_env=False) if i.metadata.get(FLAG)]

    def _export(self, name: str, value: str) -> None:
        self.kv.server_env_names.add(name)  # first: kernel_env removes it from every kernel from now on
        old = os.environ.get(name)
        if old is not None and old != value:
            envguard.wipe_live_value(name, old)
        os.environ[name] = value

    def _unexport(self, name: str) -> None:
        value = os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value  # put back for one moment, so its C copy can be overwritten in place
            envguard.wipe_live_value(name, value)
            os.environ.pop(name, None)
        self.kv.server_env_names.discard(name)


def install(settings: dict[str, Any], manager, log) -> VaultSecretsManager | None:
    """Replace jupyter-ai's secrets manager in the web app's settings, if jupyter-ai is loaded. Run once
    every extension has set its settings (the app schedules it on the event loop)."""
    current = settings.get(SETTINGS_KEY)
    if current is None or isinstance(current, VaultSecretsManager):
        return None
    ours = VaultSecretsManager(manager, log)
    stop = getattr(current, "stop", None)
    if callable(stop):
        stop()  # its `.env` watcher: secrets live in the vault now
    settings[SETTINGS_KEY] = ours
    manager.keep_task(asyncio.ensure_future(ours.start()))
    log.info("jupyter-keyvault: jupyter-ai's secrets are stored in the vault (no .env file)")
    return ours
