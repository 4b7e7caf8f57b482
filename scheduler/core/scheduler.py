"""``Scheduler``: luigid 3.8.1's RPC surface over the core's indexed state.

The class is assembled from single-purpose layers (each a module):

``bookkeeping`` (run/batch/timer indexes) -> ``state`` (storage, readiness, counters) ->
``transitions`` (status rules, prune) -> ``selection`` (choosing work) -> ``rpc_worker`` ->
``rpc_reporting`` -> ``rpc_admin`` -> ``persistence`` (changes, snapshots, grace) -> ``replica``
(applying a standby's feed of committed rows).

It performs no I/O, starts no threads and reads the time only through the injected clock, so
the node can replay, test and persist it deterministically.  It is not thread-safe: the node
applies requests one at a time, as luigid's single tornado thread does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .replica import ReplicaAPI
from .settings import SchedulerSettings

#: Every RPC name luigid 3.8.1 registers that the HTTP layer may dispatch to a method of the
#: same name (``update_metrics_task_started`` is excluded: it cannot work remotely).
RPC_METHODS: frozenset[str] = frozenset(
    {
        "add_task",
        "add_task_batcher",
        "announce_scheduling_failure",
        "add_worker",
        "get_work",
        "count_pending",
        "ping",
        "set_task_status_message",
        "get_task_status_message",
        "set_task_progress_percentage",
        "get_task_progress_percentage",
        "decrease_running_task_resources",
        "get_running_task_resources",
        "report_task_statistics",
        "add_scheduler_message_response",
        "send_scheduler_message",
        "get_scheduler_message_response",
        "set_worker_processes",
        "disable_worker",
        "task_list",
        "task_search",
        "worker_list",
        "resource_list",
        "graph",
        "dep_graph",
        "inverse_dep_graph",
        "fetch_error",
        "forgive_failures",
        "mark_as_done",
        "re_enable_task",
        "has_task_history",
        "is_pause_enabled",
        "is_paused",
        "pause",
        "unpause",
        "update_resource",
        "update_resources",
        "prune",
    }
)


class Scheduler(ReplicaAPI):
    """A drop-in for ``luigi.scheduler.Scheduler`` with persistence hooks.

    ``Scheduler(clock=None, metrics=None, **settings)``: settings are luigid's ``[scheduler]``
    keys (plus ``resources``); anything not given comes from luigi's configuration, then from
    luigi's defaults.  A ready ``SchedulerSettings`` may be passed as ``settings=`` instead.
    ``clock`` is a zero-argument callable returning epoch seconds (default ``time.time``).
    """

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        metrics: Any = None,
        *,
        settings: SchedulerSettings | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = SchedulerSettings.resolve(**overrides)
        elif overrides:
            raise TypeError("pass either settings= or individual settings, not both")
        super().__init__(settings, clock, metrics)
