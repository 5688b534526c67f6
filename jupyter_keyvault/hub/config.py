"""Helpers for jupyterhub_config.py: register the keyvault service, its roles, and point user servers at it.

    from jupyter_keyvault.hub.config import keyvault_service_config
    service, roles, user_env = keyvault_service_config(port=10101, master_key_file="/srv/keyvault/master.key")
    c.JupyterHub.services.append(service)
    c.JupyterHub.load_roles.extend(roles)
    c.Spawner.environment.update(user_env)
    # and in the single-user servers' config: c.KeyVault.backend = "hub"
"""

from __future__ import annotations

import os
import sys

from ..envguard import wipe_environ_block, wipe_process_env_value
from .common import SERVICE_NAME_DEFAULT

# What the service itself must be able to read about users: their names, groups and admin flag.
SERVICE_SCOPES = ["read:users", "read:users:groups", "read:groups", "list:users"]


def keyvault_service_config(*, port: int, master_key: str | None = None, master_key_file: str | None = None,
                            name: str = SERVICE_NAME_DEFAULT,
                            host: str = "127.0.0.1", data_dir: str | None = None, db_url: str | None = None,
                            extra_args: list[str] = (), python: str | None = None,
                            environment: dict[str, str] | None = None,
                            user_scopes: list[str] | None = None, bind_ip: str | None = None,
                            ) -> tuple[dict, list[dict], dict]:
    """(service entry, roles, user-server environment) for a hub-managed keyvault service.

    `host` is how the hub's proxy and user servers reach the service; `bind_ip` where it listens
    (default: `host`; '0.0.0.0' on Kubernetes, where `host` is the hub's Service name).

    Prefer `master_key_file` (a 0600 file only the service's user can read): then no process
    environment holds the key. With `master_key`, the key is handed to the service through its
    environment, and removed from this (the hub's) process: from os.environ and from the
    environment block that /proc/<hub pid>/environ shows, where a same-uid process could read it."""
    if (master_key is None) == (master_key_file is None):
        raise ValueError("keyvault_service_config needs exactly one of master_key= or master_key_file=")
    secrets_env = {"KEYVAULT_MASTER_KEY": master_key} if master_key else {"KEYVAULT_MASTER_KEY_FILE": master_key_file}
    if db_url:
        secrets_env["KEYVAULT_HUB_DB_URL"] = db_url
    for var, value in secrets_env.items():
        # Read from the hub's environment by the caller (even if it already popped it from os.environ).
        if value and var != "KEYVAULT_MASTER_KEY_FILE":
            wipe_environ_block(var, value)
            if os.environ.get(var) == value:
                wipe_process_env_value(var)
                del os.environ[var]
    command = [python or sys.executable, "-m", "jupyter_keyvault.hub"]
    if bind_ip:
        command.append(f"--ip={bind_ip}")
    if data_dir:
        command.append(f"--data-dir={data_dir}")
    command += list(extra_args)
    service = {
        "name": name,
        "url": f"http://{host}:{port}",
        "command": command,
        # Secrets go through the environment (never argv, which the hub logs and `ps` shows).
        "environment": {**secrets_env, **(environment or {})},
        "oauth_no_confirm": True,
        "display": True,
    }
    if data_dir:
        service["cwd"] = data_dir
    access = f"access:services!service={name}"
    roles = [
        {"name": f"{name}-service", "description": "keyvault service: read users' names, groups and admin flag",
         "scopes": SERVICE_SCOPES, "services": [name]},
        # Users (their browser tokens) and their servers' tokens may call the service.
        {"name": "user", "scopes": ["self", access] + list(user_scopes or [])},
        {"name": "server", "scopes": ["users:activity!user", "access:servers!server", access]},
    ]
    user_env = {"KEYVAULT_HUB_URL": f"http://{host}:{port}/services/{name}/"}
    return service, roles, user_env
