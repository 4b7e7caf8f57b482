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

    ``wire_input=True`` says every call carries arguments decoded from a request body (the
    node sets it): they are checked strictly.  Without it the caller is Python code in the same
    process (``luigi.server.run``, a ``luigi.worker.Worker`` given this scheduler), which
    passes Python objects luigid accepts, such as the exception itself as ``expl``.
    """

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        metrics: Any = None,
        *,
        settings: SchedulerSettings | None = None,
        wire_input: bool = False,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = SchedulerSettings.resolve(**overrides)
        elif overrides:
            raise TypeError("pass either settings= or individual settings, not both")
        super().__init__(settings, clock, metrics)
        self._wire_input = wire_input

    def load(self) -> None:
        """Nothing to load: ``luigi.server.run`` calls it at start, as it does luigid's.

        luigid unpickles its state file here; this core's durable state lives in a node's store
        and is given to it with ``restore()``, so in-process it starts empty like luigid
        without a state file.
        """

    def dump(self) -> None:
        """Ask for the pending batch e-mail to be sent now, as luigid's ``dump()`` does at exit.

        The core sends nothing itself: it queues a ``flush`` intent for whoever delivers its
        notifications (``take_notifications()``).
        """
        if self.settings.batch_emails:
            self._outbox.add("flush")
