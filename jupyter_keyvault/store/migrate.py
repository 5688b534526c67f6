"""Versioned schema of the SQL backend: alembic, driven from Python.

`SQLBackend` calls `check_and_upgrade` on open, inside one transaction (and, on
PostgreSQL, under an advisory lock), so the schema is current before anything else
runs. A revision this release does not know means a newer jupyter-keyvault migrated
the database: it is refused and left untouched.

Operators who prefer to migrate explicitly open backends with `auto_migrate=False` and run

    KEYVAULT_DB_URL=postgresql+psycopg://... python -m jupyter_keyvault.store.migrate upgrade
"""

from __future__ import annotations

import os
import sys

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .errors import VaultLocked

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
VERSION_TABLE = "keyvault_alembic_version"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    if connection is not None:
        cfg.attributes["connection"] = connection  # env.py migrates on this connection
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def current_revisions(conn: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return tuple(sorted(context.get_current_heads()))


def head_revisions() -> tuple[str, ...]:
    return tuple(sorted(script_directory().get_heads()))


def upgrade(conn: Connection, target: str = "heads") -> None:
    """Upgrade on `conn` (already in a transaction) to `target`."""
    command.upgrade(alembic_config(conn), target)


def check_and_upgrade(conn: Connection, *, auto_migrate: bool, where: str) -> None:
    script = script_directory()
    known = {rev.revision for rev in script.walk_revisions()}
    current = set(current_revisions(conn))
    unknown = current - known
    if unknown:
        raise VaultLocked(
            f"vault database {where} has schema revision {', '.join(sorted(unknown))}, unknown to this "
            "jupyter-keyvault: a newer version migrated it. Upgrade jupyter-keyvault; nothing was changed"
        )
    heads = set(script.get_heads())
    if current == heads:
        return
    if not auto_migrate:
        have = ", ".join(sorted(current)) or "empty"
        raise VaultLocked(
            f"vault database {where} schema is at {have}, this jupyter-keyvault needs {', '.join(sorted(heads))}: "
            "run `python -m jupyter_keyvault.store.migrate upgrade` (KEYVAULT_DB_URL set)"
        )
    upgrade(conn)


if __name__ == "__main__":
    # Runs as the program, not as the module sql.py imports: no import cycle.
    from jupyter_keyvault.store.sql import migrate_command

    try:
        sys.exit(migrate_command())
    except VaultLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
