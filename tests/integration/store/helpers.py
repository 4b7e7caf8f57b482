"""Builders for the store's tests: rows and batches shaped like the core's."""

from __future__ import annotations

from typing import Any

from scheduler.core import Changes


def task_row(task_id: str, status: str = "PENDING", **extra: Any) -> dict[str, Any]:
    """A task row shaped like the core's: always id, status, family, updated."""
    row = {"id": task_id, "status": status, "family": task_id.split("(")[0], "updated": 1700000000.25}
    row.update(extra)
    return row


def changes(
    tasks: dict[str, dict | None] | None = None,
    workers: dict[str, dict | None] | None = None,
    meta: dict[str, object] | None = None,
    events: list[dict] | None = None,
) -> Changes:
    return Changes(tasks=tasks or {}, workers=workers or {}, meta=meta or {}, events=events or [])


def event(task_id: str, status: str, at: float, worker: str | None = "w1", host: str | None = "h1") -> dict:
    return {"task_id": task_id, "status": status, "at": at, "worker": worker, "host": host}
