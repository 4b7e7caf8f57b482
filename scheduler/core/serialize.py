"""The "TaskJSON" object of the visualiser and admin RPCs (docs/luigi-semantics.md).

Key presence matters to the visualiser, so the optional keys follow luigid exactly:
``re_enable_able`` only for DISABLED tasks, ``deps`` only in graph replies (and
``re_enable_task``), ``accepts_messages`` only for RUNNING tasks when messages are enabled.
Containers are copied so a reply never aliases live state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .constants import DISABLED, RUNNING, UNKNOWN
from .entities import Task


def dumps_json(value: Any) -> str:
    """JSON text as the HTTP layer writes replies (``Infinity`` allowed, unknown types as text)."""
    return json.dumps(value, allow_nan=True, default=str)


def task_json(task: Task, *, send_messages: bool, deps: Iterable[str] | None = None) -> dict[str, Any]:
    """Serialise one task; pass ``deps`` (the ids to list) to include the ``deps`` key."""
    result: dict[str, Any] = {
        "display_name": task.display_name,
        "status": task.status,
        "workers": list(task.workers),
        "worker_running": task.worker_running,
        "time_running": task.time_running,
        "start_time": task.time,
        "last_updated": task.updated,
        "params": task.public_params,
        "name": task.family,
        "priority": task.priority,
        "resources": dict(task.resources),
        "resources_running": None if task.resources_running is None else dict(task.resources_running),
        "tracking_url": task.tracking_url,
        "status_message": task.status_message,
        "progress_percentage": task.progress_percentage,
    }
    if task.status == DISABLED:
        result["re_enable_able"] = task.scheduler_disable_time is not None
    if deps is not None:
        result["deps"] = list(deps)
    if send_messages and task.status == RUNNING:
        result["accepts_messages"] = task.accepts_messages
    return result


def family_from_id(task_id: str) -> str:
    """The family guessed from an id: the text before the first ``(`` or ``_``, if any."""
    for index, char in enumerate(task_id):
        if char in "(_":
            return task_id[:index] if index else UNKNOWN
    return UNKNOWN


def placeholder_node(task_id: str) -> dict[str, Any]:
    """How graph replies show a dep the scheduler cannot describe (missing or never reported)."""
    return {
        "deps": [],
        "status": UNKNOWN,
        "workers": [],
        "start_time": UNKNOWN,
        "params": {"task_id": task_id},
        "name": family_from_id(task_id),
        "display_name": task_id,
        "priority": 0,
    }
