"""alembic environment of the SQL backend. Normally run by
`jupyter_keyvault.store.migrate` with the connection in `config.attributes`; for
`alembic -c ... -x url=postgresql+psycopg://... revision` a URL may be given instead."""

from alembic import context
from sqlalchemy import create_engine

from jupyter_keyvault.store.migrate import VERSION_TABLE
from jupyter_keyvault.store.sql import metadata


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the database as -x url=... (or migrate through jupyter_keyvault.store.migrate)")
    engine = create_engine(url)
    with engine.begin() as conn:
        run(conn)
    engine.dispose()
