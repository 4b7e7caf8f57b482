"""The lease table: one row per lease name. Its definition lives only here.

The scheduler's Alembic migration calls :func:`define_lease_table` on its own ``MetaData``, so a
column added here reaches every deployment through one migration and never drifts from what
:class:`lease.LeaderLease` expects. :func:`create_schema` is for standalone use and tests.

Columns and why:

``name`` String(128), primary key
    One row per lease; the primary key makes the fence's ``SELECT ... FOR SHARE`` lock exactly
    one index record on every database.
``holder`` String(255), NULL when free
    Opaque holder id; must be unique per process incarnation (see :func:`lease.make_holder_id`).
``epoch`` BigInteger, NOT NULL, default 0
    The fencing token: incremented by every successful acquire, never by a renew or release, so
    each value is granted to exactly one holder.
``acquired_at``, ``renewed_at``, ``expires_at`` double precision, seconds since the Unix epoch
    As computed by the *database's* clock (:mod:`lease.clock`), never a node's. A plain double is
    portable (PostgreSQL ``DOUBLE PRECISION``, MySQL/MariaDB ``DOUBLE``, SQLite ``REAL``) and has
    microsecond resolution for present-day dates; ``sa.Float`` would be a 4-byte ``FLOAT`` on
    MySQL, good to about two minutes, hence ``sa.Double``. ``expires_at`` is 0 for a free row,
    i.e. long expired.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["DEFAULT_TABLE_NAME", "create_schema", "define_lease_table"]

DEFAULT_TABLE_NAME = "lh_leases"

NAME_LENGTH = 128
HOLDER_LENGTH = 255


def _timestamp(name: str, *, nullable: bool) -> sa.Column:
    kw = {} if nullable else {"server_default": sa.text("0")}
    return sa.Column(name, sa.Double(asdecimal=False), nullable=nullable, **kw)


def define_lease_table(metadata: sa.MetaData, name: str = DEFAULT_TABLE_NAME) -> sa.Table:
    """Define (or return the already defined) lease table on ``metadata``."""
    if name in metadata.tables:
        return metadata.tables[name]
    return sa.Table(
        name,
        metadata,
        sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
        sa.Column("holder", sa.String(HOLDER_LENGTH), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        _timestamp("acquired_at", nullable=True),
        _timestamp("renewed_at", nullable=True),
        _timestamp("expires_at", nullable=False),
    )


def create_schema(engine: sa.Engine, name: str = DEFAULT_TABLE_NAME) -> sa.Table:
    """Create the lease table if it does not exist yet and return it (standalone use, tests)."""
    table = define_lease_table(sa.MetaData(), name)
    table.create(engine, checkfirst=True)
    return table
