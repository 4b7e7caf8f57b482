"""Bounded task history: delete ``lh_task_events`` rows older than the retention, in small batches.

Each batch is its own short transaction, fenced like every leader write (a deposed leader
deletes nothing), and takes at most ``batch`` of the oldest rows through the ``at`` index, so
it holds its locks briefly and a commit round waits for it at most that long.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from .tables import task_events


def delete_expired_events(
    engine: sa.Engine, cutoff: float, fence: Callable[[sa.Connection], None], batch: int = 500
) -> int:
    """Delete up to ``batch`` events recorded before ``cutoff`` (epoch seconds); return how many."""
    with engine.begin() as conn:
        fence(conn)
        ids = [
            row[0]
            for row in conn.execute(
                sa.select(task_events.c.id).where(task_events.c.at < cutoff).order_by(task_events.c.at).limit(batch)
            )
        ]
        if ids:
            conn.execute(sa.delete(task_events).where(task_events.c.id.in_(ids)))
        return len(ids)
