"""Initial schema: vault metadata, wrapped owner keys, credentials, audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyvault_meta",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "keyvault_owner_keys",
        sa.Column("owner", sa.String(256), primary_key=True),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("kek_id", sa.String(128), nullable=False),
    )
    op.create_table(
        "keyvault_credentials",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(64)),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("last_used_at", sa.Double),
        sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
        sa.UniqueConstraint("owner", "name", name="keyvault_credentials_owner_name"),
    )
    op.create_table(
        "keyvault_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256)),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("keyvault_audit_owner", "keyvault_audit", ["owner", "id"])


def downgrade() -> None:
    for table in ("keyvault_audit", "keyvault_credentials", "keyvault_owner_keys", "keyvault_meta"):
        op.drop_table(table)
