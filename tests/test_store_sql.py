"""SQLBackend (SQLAlchemy Core) on SQLite and on a real PostgreSQL: the shared
StorageBackend contract, the Vault over it, schema migrations and the append-only audit."""

from __future__ import annotations

import pytest

pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed: pip install jupyter-keyvault[hub]")

from jupyter_keyvault.store.sql import SQLBackend  # noqa: E402

from store_suite import StorageBackendSuite  # noqa: E402


class TestSQLBackendOnSQLite(StorageBackendSuite):
    @pytest.fixture
    def backend(self, tmp_path):
        b = SQLBackend(f"sqlite:///{tmp_path / 'keyvault' / 'vault.db'}")
        yield b
        b.close()


class TestSQLBackendOnPostgres(StorageBackendSuite):
    @pytest.fixture
    def backend(self, postgres_url):
        b = SQLBackend(postgres_url)
        yield b
        b.close()
