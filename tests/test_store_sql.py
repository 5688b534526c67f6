"""SQLBackend (SQLAlchemy Core) on SQLite and on a real PostgreSQL: the shared
StorageBackend contract, the Vault over it, schema migrations and the append-only audit."""

from __future__ import annotations

import pytest

pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed: pip install jupyter-keyvault[hub]")

from store_suite import StorageBackendSuite  # noqa: E402

from jupyter_keyvault.store.sql import SQLBackend, migrate_command  # noqa: E402


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


# ====================================================================== helpers
import os  # noqa: E402
import stat  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import sqlalchemy as sa  # noqa: E402
from store_suite import make_event, make_record  # noqa: E402
from test_store_durability import assert_absent_from_text, encodings_of  # noqa: E402

from jupyter_keyvault.store import (  # noqa: E402
    MasterKeyError,
    Vault,
    VaultError,
    VaultLocked,
    WrongMasterKey,
    migrate,  # noqa: E402
)
from jupyter_keyvault.testing.pytest_plugin import new_master_key  # noqa: E402


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keyvault' / 'vault.db'}"
    return request.getfixturevalue("postgres_url")


def raw_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def table_dump(url: str) -> bytes:
    """Every cell of every keyvault table, as bytes."""
    out = bytearray()
    engine = raw_engine(url)
    try:
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f"SELECT * FROM {table}")):  # noqa: S608 - names from the catalog
                    for cell in row:
                        out += bytes(cell) if isinstance(cell, (bytes, memoryview)) else str(cell).encode()
                        out += b"\x1f"
    finally:
        engine.dispose()
    return bytes(out)


# ====================================================================== URLs and errors
@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "not a valid SQLAlchemy URL"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("postgresql+psycopg2://u@127.0.0.1/db", "psycopg 3"),
    ],
)
def test_given_an_unusable_db_url_when_opened_then_a_clear_vault_locked_error_is_raised(url, message):
    with pytest.raises(VaultLocked, match=message):
        SQLBackend(url)


def test_given_a_postgres_url_when_opened_then_location_status_and_errors_never_show_the_password(postgres_cluster, postgres_url):
    password = sa.engine.make_url(postgres_url).password
    assert password and len(password) > 16
    backend = SQLBackend(postgres_url)
    vault = Vault(backend, env={"KEYVAULT_MASTER_KEY": new_master_key()})
    try:
        assert backend.location.endswith(postgres_url.rpartition("/")[2])
        assert "***" in backend.location
        assert_absent_from_text(password, repr(vault.status()) + backend.location, "status")
    finally:
        vault.close()
    wrong = sa.engine.make_url(postgres_url).set(password="Wr0ng-" + password[::-1]).render_as_string(hide_password=False)
    with pytest.raises(VaultLocked, match="password authentication failed") as info:
        SQLBackend(wrong)
    assert_absent_from_text(password[::-1], str(info.value), "the error of a wrong password")
    assert_absent_from_text(password, str(info.value), "the error of a wrong password")


def test_given_no_server_at_the_url_when_opened_then_a_clear_vault_locked_error_is_raised():
    from jupyter_keyvault.testing.postgres import free_port

    pytest.importorskip("psycopg")
    with pytest.raises(VaultLocked, match="cannot open vault database .*127.0.0.1"):
        SQLBackend(f"postgresql+psycopg://nobody:pw@127.0.0.1:{free_port()}/none?connect_timeout=3")


def test_given_a_sqlite_url_when_a_vault_is_created_under_a_loose_umask_then_dir_is_0700_and_files_0600(tmp_path):
    path = tmp_path / "keyvault" / "vault.db"
    old = os.umask(0)
    try:
        backend = SQLBackend(f"sqlite:///{path}")
        vault = Vault(backend, env={}, use_keyring=False)
        vault.set("alice", "OPENAI_API_KEY", "sk-test-" + "x" * 30)
        try:
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            for name in ("vault.db", "vault.db-wal", "vault.db-shm", "master.key"):
                assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
            assert vault.key_file == path.with_name("master.key")
        finally:
            vault.close()
    finally:
        os.umask(old)


# ====================================================================== the Vault over SQL
def test_given_a_vault_over_sql_when_used_and_rotated_then_values_survive_and_only_the_new_key_opens_it(db_url, canary):
    old_key, new_key = new_master_key(), new_master_key()
    vault = Vault(SQLBackend(db_url), env={"KEYVAULT_MASTER_KEY": old_key, "KEYVAULT_NEW_MASTER_KEY": new_key})
    try:
        info, created = vault.set("alice", "OPENAI_API_KEY", canary, provider="openai")
        assert created and info.name == "OPENAI_API_KEY"
        vault.set("bob", "OPENAI_API_KEY", canary + "-bob")
        assert [i.name for i in vault.list("alice", include_env=False)] == ["OPENAI_API_KEY"]
        assert vault.rotate_master_key() == 2
        assert vault.get_value("alice", "OPENAI_API_KEY") == canary
    finally:
        vault.close()
    reopened = Vault(SQLBackend(db_url), env={"KEYVAULT_MASTER_KEY": new_key})
    try:
        assert reopened.get_value("bob", "OPENAI_API_KEY") == canary + "-bob"
        reopened.delete("bob", "OPENAI_API_KEY")
        assert reopened.count() == 1
        actions = [e.action for e in reopened.audit_events(None)]
        assert actions[:2] == ["delete", "rotate"] and actions.count("set") == 2
    finally:
        reopened.close()
    backend = SQLBackend(db_url)
    try:
        with pytest.raises(WrongMasterKey):
            Vault(backend, env={"KEYVAULT_MASTER_KEY": old_key})
    finally:
        backend.close()
    dump = table_dump(db_url)
    for form, needle in encodings_of(canary).items():
        assert needle not in dump, f"canary ({form}) stored in a table"


def test_given_a_postgres_vault_without_any_key_source_then_it_says_which_key_to_set(postgres_url):
    backend = SQLBackend(postgres_url)
    try:
        assert backend.default_key_file() is None
        with pytest.raises(MasterKeyError, match="KEYVAULT_MASTER_KEY"):
            Vault(backend, env={}, use_keyring=False)
    finally:
        backend.close()


def test_given_a_canary_in_a_postgres_vault_then_no_form_of_it_is_in_any_file_of_the_cluster(postgres_cluster, postgres_url, canary):
    if postgres_cluster.directory is None:
        pytest.skip("KEYVAULT_TEST_POSTGRES_URL points at an external server: its files are not readable here")
    vault = Vault(SQLBackend(postgres_url), env={"KEYVAULT_MASTER_KEY": new_master_key()})
    try:
        vault.set("alice", "CANARY_KEY", canary, provider="openai")
        vault.set("alice", "CANARY_KEY", canary, metadata={"label": "replaced"})
        assert vault.get_value("alice", "CANARY_KEY") == canary
    finally:
        vault.close()
    postgres_cluster.admin_execute("CHECKPOINT")
    needles = encodings_of(canary)
    scanned = 0
    for path in Path(postgres_cluster.directory).rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            scanned += 1
            for form, needle in needles.items():
                assert needle not in data, f"canary ({form}) found in {path}"
    assert scanned > 100  # the data directory, WAL segments and the server log were read


# ====================================================================== migrations
def test_given_a_new_database_when_opened_then_it_is_at_the_newest_schema_revision(db_url):
    backend = SQLBackend(db_url)
    try:
        assert backend.schema_revision() == migrate.head_revisions() == ("0002",)
    finally:
        backend.close()


def test_given_a_database_at_an_old_revision_when_opened_then_it_is_upgraded_and_keeps_its_rows(db_url):
    engine = raw_engine(db_url)
    if db_url.startswith("sqlite"):
        Path(sa.engine.make_url(db_url).database).parent.mkdir(parents=True, exist_ok=True)
    try:
        with engine.begin() as conn:
            migrate.upgrade(conn, "0001")
            conn.execute(sa.text("INSERT INTO keyvault_audit (at, owner, actor, action, outcome) VALUES (1, 'alice', 'alice', 'set', 'ok')"))
            conn.execute(sa.text("UPDATE keyvault_audit SET outcome = 'edited'"))  # revision 0001 still allowed it
        with engine.connect() as conn:
            assert migrate.current_revisions(conn) == ("0001",)
    finally:
        engine.dispose()

    backend = SQLBackend(db_url)
    try:
        assert backend.schema_revision() == ("0002",)
        assert [(e.owner, e.outcome) for e in backend.list_audit(None)] == [("alice", "edited")]
        backend.append_audit(make_event())
        assert len(backend.list_audit(None)) == 2
    finally:
        backend.close()
    engine = raw_engine(db_url)
    try:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE keyvault_audit SET outcome = 'forged'"))
    finally:
        engine.dispose()


def test_given_a_database_from_a_newer_release_when_opened_then_it_is_refused_and_left_untouched(db_url):
    backend = SQLBackend(db_url)
    backend.upsert_credential(make_record(payload=b"from the future"))
    backend.close()
    engine = raw_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE keyvault_alembic_version SET version_num = '0099_future'"))
        before = table_dump(db_url)

        with pytest.raises(VaultLocked) as info:
            SQLBackend(db_url)

        message = str(info.value)
        assert "0099_future" in message and "newer" in message and "Upgrade jupyter-keyvault" in message
        assert table_dump(db_url) == before
        with engine.connect() as conn:
            assert migrate.current_revisions(conn) == ("0099_future",)
    finally:
        engine.dispose()


def test_given_an_old_database_and_auto_migrate_off_then_it_is_refused_until_the_migrate_command_runs(db_url, monkeypatch, capsys):
    engine = raw_engine(db_url)
    if db_url.startswith("sqlite"):
        Path(sa.engine.make_url(db_url).database).parent.mkdir(parents=True, exist_ok=True)
    try:
        with engine.begin() as conn:
            migrate.upgrade(conn, "0001")
    finally:
        engine.dispose()
    with pytest.raises(VaultLocked, match=r"schema is at 0001, this jupyter-keyvault needs 0002: run `python -m jupyter_keyvault.store.migrate upgrade`"):
        SQLBackend(db_url, auto_migrate=False)

    monkeypatch.setenv("KEYVAULT_DB_URL", db_url)
    assert migrate_command(["current"]) == 1
    assert "schema is at 0001" in capsys.readouterr().err
    assert migrate_command(["upgrade"]) == 0
    assert capsys.readouterr().out.strip() == "0002"
    SQLBackend(db_url, auto_migrate=False).close()


# ====================================================================== append-only audit
def test_given_audit_rows_when_changed_through_raw_sql_then_every_kind_of_change_is_refused(db_url):
    backend = SQLBackend(db_url)
    try:
        backend.append_audit(make_event(outcome="ok"))
        backend.append_audit(make_event(action="delete"))
    finally:
        backend.close()
    statements = ["UPDATE keyvault_audit SET outcome = 'forged'", "DELETE FROM keyvault_audit",
                  "DELETE FROM keyvault_audit WHERE action = 'delete'"]
    if db_url.startswith("postgresql"):
        statements.append("TRUNCATE keyvault_audit")
    engine = raw_engine(db_url)
    try:
        for statement in statements:
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                with engine.begin() as conn:
                    conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    backend = SQLBackend(db_url)
    try:
        assert [(e.action, e.outcome) for e in backend.list_audit(None)] == [("delete", "ok"), ("set", "ok")]
    finally:
        backend.close()


APP_ROLE_GRANTS = """
CREATE ROLE {role} LOGIN PASSWORD '{password}';
GRANT CONNECT ON DATABASE {db} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON keyvault_alembic_version TO {role};
GRANT SELECT, INSERT, UPDATE ON keyvault_meta, keyvault_owner_keys TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON keyvault_credentials TO {role};
GRANT SELECT, INSERT ON keyvault_audit TO {role};
GRANT USAGE ON SEQUENCE keyvault_audit_id_seq TO {role};
"""


def test_given_a_service_role_without_ownership_then_it_works_but_cannot_disable_or_bypass_the_audit_triggers(
    postgres_cluster, postgres_url
):
    import secrets

    SQLBackend(postgres_url).close()  # the owner (migration role) creates the schema
    url = sa.engine.make_url(postgres_url)
    role, password = "kv_app_" + secrets.token_hex(4), secrets.token_urlsafe(16)
    engine = raw_engine(postgres_url)
    try:
        with engine.begin() as conn:
            for statement in APP_ROLE_GRANTS.format(role=role, password=password, db=url.database).strip().split(";\n"):
                conn.execute(sa.text(statement))
        app_url = url.set(username=role, password=password).render_as_string(hide_password=False)
        key = new_master_key()
        vault = Vault(SQLBackend(app_url, auto_migrate=False), env={"KEYVAULT_MASTER_KEY": key})
        try:
            vault.set("alice", "OPENAI_API_KEY", "sk-test-" + "a" * 30)
            vault.delete("alice", "OPENAI_API_KEY")
            assert [e.action for e in vault.audit_events("alice")] == ["delete", "set"]
        finally:
            vault.close()
        app = raw_engine(app_url)
        try:
            for statement in (
                "ALTER TABLE keyvault_audit DISABLE TRIGGER ALL",
                "DROP TRIGGER keyvault_audit_no_update_delete ON keyvault_audit",
                "UPDATE keyvault_audit SET outcome = 'forged'",
                "DELETE FROM keyvault_audit",
                "TRUNCATE keyvault_audit",
                "SET session_replication_role = replica",  # would skip triggers
            ):
                with pytest.raises(sa.exc.DatabaseError, match="must be owner|permission denied|append-only"):
                    with app.begin() as conn:
                        conn.execute(sa.text(statement))
        finally:
            app.dispose()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM keyvault_audit WHERE outcome = 'ok'")).scalar() == 2
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        engine.dispose()


def test_given_no_postgresql_binaries_then_the_cluster_helper_gives_a_clear_skip_reason(monkeypatch):
    from jupyter_keyvault.testing import postgres

    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    monkeypatch.delenv(postgres.ENV_URL, raising=False)
    with pytest.raises(postgres.PostgresUnavailable, match="install-postgresql.sh or set KEYVAULT_TEST_POSTGRES_URL"):
        postgres.PostgresCluster.start()


def test_given_a_failing_write_then_it_is_rolled_back_with_an_error_that_quotes_no_stored_data(db_url):
    backend = SQLBackend(db_url)
    payload = b"\x00KV1" + b"payload-canary-" + os.urandom(8).hex().encode()
    try:
        with pytest.raises(VaultError, match="the vault database refused the change: .*actor") as info:
            backend.upsert_credential(make_record(payload=payload, provider="provider-canary"),
                                      audit=make_event(actor=None, target="target-canary"))
        text = "".join(traceback.format_exception_only(info.value)) + repr(info.value) + repr(info.value.__cause__)
        assert backend.get_credential("alice", "OPENAI_API_KEY") is None
        for needle in ("payload-canary", "provider-canary", "target-canary", payload.hex()):
            assert needle not in text
    finally:
        backend.close()


# ====================================================================== identity at creation
def test_given_creators_racing_on_an_empty_database_then_one_identity_wins_whole_and_never_mixes(db_url):
    from store_suite import run_concurrently

    backends = [SQLBackend(db_url) for _ in range(4)]
    try:
        won = run_concurrently(
            lambda i: backends[i].create_vault({"vault_id": f"v{i}", "kek_check": f"check-{i}", "kek_source": "env"}),
            list(range(4)),
        )
        assert sorted(won) == [False, False, False, True]
        winner = won.index(True)
        for b in backends:
            assert (b.meta_get("vault_id"), b.meta_get("kek_check")) == (f"v{winner}", f"check-{winner}")
            assert not b.is_new()
    finally:
        for b in backends:
            b.close()


def test_given_credentials_without_a_vault_id_when_a_vault_opens_then_it_is_refused_as_damaged(db_url):
    from jupyter_keyvault.store import VaultDamaged

    key = new_master_key()
    vault = Vault(SQLBackend(db_url), env={"KEYVAULT_MASTER_KEY": key})
    vault.set("alice", "KEPT", "sk-kept-value-bbbb")
    vault.close()
    engine = raw_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM keyvault_meta"))
    finally:
        engine.dispose()
    backend = SQLBackend(db_url)
    try:
        with pytest.raises(VaultDamaged, match="no vault id and key check record"):
            Vault(backend, env={"KEYVAULT_MASTER_KEY": key})
    finally:
        backend.close()


def test_given_a_file_that_is_not_sqlite_when_opened_by_the_sql_backend_then_vault_damaged(tmp_path):
    from jupyter_keyvault.store import VaultDamaged

    path = tmp_path / "keyvault" / "vault.db"
    path.parent.mkdir()
    path.write_bytes(b"not a database at all" * 8)
    with pytest.raises(VaultDamaged, match="not a SQLite database"):
        SQLBackend(f"sqlite:///{path}")
    assert path.read_bytes() == b"not a database at all" * 8
