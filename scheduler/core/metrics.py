"""Metrics hooks, called the way luigid calls its metrics collector.

The core calls ``handle_task_started`` on a single hand-out (retransmissions included, batches
excluded) and ``handle_task_done`` / ``handle_task_failed`` / ``handle_task_disabled`` on a real
status change; a failure that disables the task counts only as disabled.  The task object passed
is the core's own ``Task`` (``.id``, ``.family``, ``.params``, ``.status``, ``.time_running``
(may be None), ``.updated``).

Deviation from luigid (quirk 4): a collector that raises never breaks a state transition.  luigid
lets the prometheus collector's ``updated - time_running`` TypeError (a task that never ran)
escape *after* the status changed, which turns a valid report into an HTTP 500 and crashes the
worker after its retries.  Here every hook call is guarded, so the state change and its reply
always complete.
"""

from __future__ import annotations

from typing import Any, Protocol


class MetricsHooks(Protocol):
    def handle_task_started(self, task: Any) -> None: ...

    def handle_task_failed(self, task: Any) -> None: ...

    def handle_task_disabled(self, task: Any, config: Any) -> None: ...

    def handle_task_done(self, task: Any) -> None: ...


class NullMetrics:
    """The default: luigid's ``default``/``none`` collectors do nothing either."""

    def handle_task_started(self, task: Any) -> None:
        return None

    def handle_task_failed(self, task: Any) -> None:
        return None

    def handle_task_disabled(self, task: Any, config: Any) -> None:
        return None

    def handle_task_done(self, task: Any) -> None:
        return None

    def handle_task_statistics(self, task: Any, statistics: Any) -> None:
        return None


def call_hook(metrics: Any, name: str, *args: Any) -> None:
    """Call ``metrics.<name>(*args)`` if it exists, swallowing any error (see module docstring)."""
    hook = getattr(metrics, name, None)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:  # noqa: BLE001 - a broken collector must never corrupt scheduling state
        return
