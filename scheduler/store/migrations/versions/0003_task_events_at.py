"""An index on ``lh_task_events.at`` for the history retention sweep.

The sweep deletes the oldest events in small batches (scheduler/store/retention.py); with this
index each batch finds its rows from the start of the index instead of scanning the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_lh_task_events_at", "lh_task_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_lh_task_events_at", table_name="lh_task_events")
