"""The audit log becomes append-only in the database itself: triggers refuse
UPDATE and DELETE (and TRUNCATE on PostgreSQL) whoever connects.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MESSAGE = "keyvault_audit is append-only"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION keyvault_audit_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege';
            END;
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER keyvault_audit_no_update_delete BEFORE UPDATE OR DELETE ON keyvault_audit "
            "FOR EACH ROW EXECUTE FUNCTION keyvault_audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER keyvault_audit_no_truncate BEFORE TRUNCATE ON keyvault_audit "
            "FOR EACH STATEMENT EXECUTE FUNCTION keyvault_audit_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER keyvault_audit_no_{action.lower()} BEFORE {action} ON keyvault_audit "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER keyvault_audit_no_truncate ON keyvault_audit")
        op.execute("DROP TRIGGER keyvault_audit_no_update_delete ON keyvault_audit")
        op.execute("DROP FUNCTION keyvault_audit_append_only()")
    else:
        op.execute("DROP TRIGGER keyvault_audit_no_update")
        op.execute("DROP TRIGGER keyvault_audit_no_delete")
