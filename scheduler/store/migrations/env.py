"""Alembic environment for luigi-ha's store, run only through ``scheduler.store.migrate``.

There is no alembic.ini and no URL here: the caller hands us an open connection, holding the
migration lock, in ``config.attributes["connection"]`` (built by ``lease.create_engine`` from
the node's own URL, so the dialect settings are the node's) and the version table's name in
``config.attributes["version_table"]``.
"""

from __future__ import annotations

from alembic import context

from scheduler.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by scheduler.store.migrate
    raise RuntimeError("run luigi-ha migrations through scheduler.store.upgrade(engine)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=config.attributes["version_table"],
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
