"""Initial schema: tasks, workers, meta, task events and the leader lease.

Written out by hand rather than generated at run time: a migration is history, and must create
the same tables next year, whatever ``tables.py`` and ``lease/schema.py`` say by then.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# See scheduler/store/tables.py for why each of these choices is made.
_MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
_JSON = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


# Ids compare byte for byte on MySQL/MariaDB (no case folding, no PAD SPACE): VARBINARY of UTF-8.
def _id(chars: int) -> sa.types.TypeEngine:
    return sa.String(chars).with_variant(mysql.VARBINARY(4 * chars), "mysql", "mariadb")


_EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "lh_tasks",
        sa.Column("task_id", _id(512), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("family", sa.String(255), nullable=False),
        sa.Column("updated", sa.Double(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        **_MYSQL,
    )
    op.create_index("ix_lh_tasks_status", "lh_tasks", ["status"])

    op.create_table(
        "lh_workers",
        sa.Column("worker_id", _id(512), primary_key=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        **_MYSQL,
    )

    op.create_table(
        "lh_meta",
        sa.Column("key", _id(64), primary_key=True),
        sa.Column("value", _JSON, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        **_MYSQL,
    )

    op.create_table(
        "lh_task_events",
        sa.Column("id", _EVENT_ID, primary_key=True, autoincrement=True),
        sa.Column("task_id", _id(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("worker", sa.String(512), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        **_MYSQL,
    )
    op.create_index("ix_lh_task_events_task_id", "lh_task_events", ["task_id", "id"])

    # The leader lease (lease/schema.py, define_lease_table) as it was at this revision.
    op.create_table(
        "lh_leases",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("acquired_at", sa.Double(asdecimal=False), nullable=True),
        sa.Column("renewed_at", sa.Double(asdecimal=False), nullable=True),
        sa.Column("expires_at", sa.Double(asdecimal=False), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_table("lh_leases")
    op.drop_index("ix_lh_task_events_task_id", table_name="lh_task_events")
    op.drop_table("lh_task_events")
    op.drop_table("lh_meta")
    op.drop_table("lh_workers")
    op.drop_index("ix_lh_tasks_status", table_name="lh_tasks")
    op.drop_table("lh_tasks")
