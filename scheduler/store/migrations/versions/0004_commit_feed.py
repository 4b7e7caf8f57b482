"""The committed-row feed: a commit sequence on every task, worker and meta row, tombstones.

A standby follows the leader by reading the rows committed after the last sequence it applied
(scheduler/store/feed.py). ``lh_feed`` holds the counter (one row, starting at 0) that every
fenced commit round increments in its own transaction; rows written before this revision carry
sequence 0, which a standby's cold start (a full load) covers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def _id(chars: int) -> sa.types.TypeEngine:
    return sa.String(chars).with_variant(mysql.VARBINARY(4 * chars), "mysql", "mariadb")


def _seq() -> sa.Column:
    return sa.Column("commit_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    op.add_column("lh_tasks", _seq())
    op.create_index("ix_lh_tasks_seq", "lh_tasks", ["commit_seq"])
    op.add_column("lh_workers", _seq())
    op.create_index("ix_lh_workers_seq", "lh_workers", ["commit_seq"])
    op.add_column("lh_meta", _seq())
    feed = op.create_table(
        "lh_feed",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("commit_seq", sa.BigInteger(), nullable=False),
        sa.Column("pruned_seq", sa.BigInteger(), nullable=False),
        **_MYSQL,
    )
    op.bulk_insert(feed, [{"id": 1, "commit_seq": 0, "pruned_seq": 0}])
    op.create_table(
        "lh_tombstones",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("item_id", _id(512), primary_key=True),
        sa.Column("commit_seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        **_MYSQL,
    )
    op.create_index("ix_lh_tombstones_seq", "lh_tombstones", ["commit_seq"])
    op.create_index("ix_lh_tombstones_at", "lh_tombstones", ["at"])


def downgrade() -> None:
    op.drop_index("ix_lh_tombstones_at", table_name="lh_tombstones")
    op.drop_index("ix_lh_tombstones_seq", table_name="lh_tombstones")
    op.drop_table("lh_tombstones")
    op.drop_table("lh_feed")
    op.drop_column("lh_meta", "commit_seq")
    op.drop_index("ix_lh_workers_seq", table_name="lh_workers")
    op.drop_column("lh_workers", "commit_seq")
    op.drop_index("ix_lh_tasks_seq", table_name="lh_tasks")
    op.drop_column("lh_tasks", "commit_seq")
