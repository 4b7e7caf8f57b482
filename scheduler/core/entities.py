"""Task and Worker records, and their JSON-safe rows.

The records are plain slotted objects: the scheduler owns every index over them and is the only
code that mutates them (through ``state.CoreState``), so the classes carry data and bookkeeping
only.  Rows are what the store persists; they hold every field needed to rebuild the exact
scheduling state, and none of the derived index bookkeeping, which ``restore`` recomputes.

Sets of ids (``deps``, ``workers``, ``stakeholders``) are dicts with ``None`` values: insertion
order matters for ``workers`` (the last-added worker drives ``n_pending_last_scheduled``) and
makes every other listing deterministic, and such dicts are not tracked by the cyclic garbage
collector, which keeps ``restore`` of 100k tasks fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .constants import VISIBILITY_HIDDEN, VISIBILITY_PUBLIC
from .retry import RetryPolicy, policy_from_row

# Persisted task fields, in row order.  ``seq`` keeps the creation order (the rank tie-break).
TASK_ROW_KEYS = (
    "id",
    "status",
    "family",
    "module",
    "updated",
    "time",
    "seq",
    "deps",
    "params",
    "param_visibilities",
    "priority",
    "resources",
    "resources_running",
    "stakeholders",
    "workers",
    "worker_running",
    "time_running",
    "retry",
    "remove",
    "expl",
    "tracking_url",
    "status_message",
    "progress_percentage",
    "accepts_messages",
    "retry_policy",
    "failures",
    "first_failure_time",
    "scheduler_disable_time",
    "runnable",
    "batchable",
    "batch_id",
    "scheduler_message_responses",
)

WORKER_ROW_KEYS = ("id", "started", "info", "disabled", "reference", "batchers")


class Task:
    """One task as the scheduler knows it (luigid's ``Task`` fields plus index bookkeeping)."""

    __slots__ = (
        *TASK_ROW_KEYS,
        # --- derived bookkeeping, rebuilt by restore, never persisted ---
        "n_unmet",  # deps that are missing or not DONE
        "n_dis",  # deps that propagate "upstream disabled"
        "dis",  # this task propagates "upstream disabled" (DISABLED, or PENDING with n_dis > 0)
        "ready",  # PENDING with every dep DONE: present in the ready heaps
        "token",  # bumped whenever heap entries must be re-pushed (rank change, re-ready)
        "c_countable",  # counted in its workers' n_pending/n_unique/n_last counters
        "c_running",  # listed in its workers' running-task sets
        "c_respend",  # counted as a PENDING task with resources (makes its workers non-trivial)
        "ix_run",  # worker id this task is indexed under as RUNNING runner
        "ix_batch_run",  # worker id this task is indexed under as BATCH_RUNNING runner
        "ix_batch",  # batch id this task is indexed under as a BATCH_RUNNING member
    )

    id: str
    status: str
    family: str
    module: str | None
    updated: float
    time: float
    seq: int
    deps: dict[str, None]
    params: dict[str, Any]
    param_visibilities: dict[str, Any]
    priority: float
    resources: dict[str, float]
    resources_running: dict[str, float] | None
    stakeholders: dict[str, None]
    workers: dict[str, None]
    worker_running: str | None
    time_running: float | None
    retry: float | None
    remove: float | None
    expl: Any
    tracking_url: str | None
    status_message: Any
    progress_percentage: Any
    accepts_messages: bool
    retry_policy: RetryPolicy
    failures: tuple[float, ...]
    first_failure_time: float | None
    scheduler_disable_time: float | None
    runnable: bool
    batchable: bool
    batch_id: str | None
    scheduler_message_responses: dict[str, Any]
    n_unmet: int
    n_dis: int
    dis: bool
    ready: bool
    token: int
    c_countable: bool
    c_running: bool
    c_respend: bool
    ix_run: str | None
    ix_batch_run: str | None
    ix_batch: str | None

    def __init__(
        self,
        task_id: str,
        status: str,
        *,
        now: float,
        seq: int,
        retry_policy: RetryPolicy,
        priority: float = 0,
        family: str = "",
        module: str | None = None,
        params: Mapping[str, Any] | None = None,
        param_visibilities: Mapping[str, Any] | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        self.id = task_id
        self.status = status
        self.family = family
        self.module = module
        self.time = now
        self.updated = now
        self.seq = seq
        self.deps = {}
        self.params = dict(params or {})
        self.param_visibilities = dict(param_visibilities or {})
        self.priority = priority
        self.resources = dict(resources or {})
        self.resources_running = None
        self.stakeholders = {}
        self.workers = {}
        self.worker_running = None
        self.time_running = None
        self.retry = None
        self.remove = None
        self.expl = None
        self.tracking_url = None
        self.status_message = None
        self.progress_percentage = None
        self.accepts_messages = False
        self.retry_policy = retry_policy
        self.failures = ()
        self.first_failure_time = None
        self.scheduler_disable_time = None
        self.runnable = False
        self.batchable = False
        self.batch_id = None
        self.scheduler_message_responses = {}
        self._reset_bookkeeping()

    def _reset_bookkeeping(self) -> None:
        self.n_unmet = 0
        self.n_dis = 0
        self.dis = False
        self.ready = False
        self.token = 0
        self.c_countable = False
        self.c_running = False
        self.c_respend = False
        self.ix_run = None
        self.ix_batch_run = None
        self.ix_batch = None

    # ----------------------------------------------------------------- derived views
    @property
    def public_params(self) -> dict[str, Any]:
        vis = self.param_visibilities
        if not vis:
            return dict(self.params)
        return {k: v for k, v in self.params.items() if _visibility(vis.get(k)) == VISIBILITY_PUBLIC}

    @property
    def hidden_params(self) -> dict[str, Any]:
        vis = self.param_visibilities
        return {k: v for k, v in self.params.items() if _visibility(vis.get(k)) == VISIBILITY_HIDDEN}

    @property
    def display_name(self) -> str:
        """``Family(a=1, b=2)`` over public params sorted by name (luigid's ``pretty_id``)."""
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.public_params.items()))
        return f"{self.family}({shown})"

    def rank_key(self) -> tuple[float, float, int]:
        """Ascending sort key: highest priority first, then the task the scheduler saw first."""
        return (-self.priority, self.time, self.seq)

    # ----------------------------------------------------------------- rows
    def to_row(self) -> dict[str, Any]:
        """The task as a stored row, leaving out every value that a missing key means on load.

        Most tasks of a large graph hold mostly empty fields (no module, no explanation, no
        failures, no resources...); full rows were twice the size. Every key left out is one less
        to send, store, fetch and decode when a standby takes over 100,000 tasks. Kept always:
        the identity, status, family and clocks the store indexes, and the retry policy (absent
        would mean "today's default", not the policy the task was given).
        """
        row: dict[str, Any] = {key: getattr(self, key) for key in _ALWAYS_KEPT}
        row["retry_policy"] = self.retry_policy.to_dict()
        # Empty containers, None, False and priority 0 are what an absent key means on load.
        for key in _LIST_KEYS:
            value = getattr(self, key)
            if value:
                row[key] = list(value)
        if self.stakeholders:
            row["stakeholders"] = sorted(self.stakeholders)
        for key in _DICT_KEYS:
            value = getattr(self, key)
            if value:
                row[key] = dict(value)
        for key in _NULLABLE_KEYS:
            value = getattr(self, key)
            if value is not None:
                row[key] = dict(value) if key == "resources_running" else value
        for key in _FLAG_KEYS:
            if getattr(self, key):
                row[key] = True
        if self.priority:
            row["priority"] = self.priority
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any], default_policy: RetryPolicy, fallback_seq: int) -> Task:
        """Rebuild a task from its row; bookkeeping is reset for ``restore`` to recompute.

        Only ``id``, ``status`` and ``updated`` are required: :meth:`to_row` leaves defaults out,
        and rows written by older versions carry every key. Written as straight attribute stores
        (no ``__init__``) because restore builds 100k+ tasks and this is its hot loop.  ``params``,
        ``param_visibilities`` and ``resources`` are shared with the row, not copied: the
        scheduler only ever replaces those dicts, never mutates them in place.
        """
        get = row.get
        task = _new_object(cls)
        task.id = row["id"]
        task.status = row["status"]
        task.family = get("family") or ""
        task.module = get("module")
        task.updated = updated = row["updated"]
        created = get("time")
        task.time = updated if created is None else created
        seq = get("seq")
        task.seq = fallback_seq if seq is None else seq
        deps = get("deps")
        task.deps = _fromkeys(deps) if deps else {}
        task.params = get("params") or {}
        task.param_visibilities = get("param_visibilities") or {}
        task.priority = get("priority") or 0
        task.resources = get("resources") or {}
        running = get("resources_running")
        task.resources_running = None if running is None else dict(running)
        stakeholders = get("stakeholders")
        task.stakeholders = _fromkeys(stakeholders) if stakeholders else {}
        workers = get("workers")
        task.workers = _fromkeys(workers) if workers else {}
        task.worker_running = get("worker_running")
        task.time_running = get("time_running")
        task.retry = get("retry")
        task.remove = get("remove")
        task.expl = get("expl")
        task.tracking_url = get("tracking_url")
        task.status_message = get("status_message")
        task.progress_percentage = get("progress_percentage")
        task.accepts_messages = get("accepts_messages") is True
        policy = get("retry_policy")
        task.retry_policy = policy_from_row(policy, default_policy) if policy else default_policy
        failures = get("failures")
        task.failures = tuple(failures) if failures else ()
        task.first_failure_time = get("first_failure_time")
        task.scheduler_disable_time = get("scheduler_disable_time")
        task.runnable = get("runnable") is True
        task.batchable = get("batchable") is True
        task.batch_id = get("batch_id")
        responses = get("scheduler_message_responses")
        task.scheduler_message_responses = dict(responses) if responses else {}
        task.n_unmet = 0
        task.n_dis = 0
        task.dis = False
        task.ready = False
        task.token = 0
        task.c_countable = False
        task.c_running = False
        task.c_respend = False
        task.ix_run = None
        task.ix_batch_run = None
        task.ix_batch = None
        return task


_new_object = object.__new__
_fromkeys = dict.fromkeys

# How :meth:`Task.to_row` writes each row key; every key of TASK_ROW_KEYS is in one class.
_ALWAYS_KEPT = ("id", "status", "family", "updated", "time", "seq")  # and retry_policy, as a dict
_LIST_KEYS = ("deps", "workers", "failures")  # left out while empty
_DICT_KEYS = ("params", "param_visibilities", "resources", "scheduler_message_responses")  # likewise
_FLAG_KEYS = ("accepts_messages", "runnable", "batchable")  # left out while False
_NULLABLE_KEYS = tuple(  # left out while None
    key
    for key in TASK_ROW_KEYS
    if key not in {*_ALWAYS_KEPT, *_LIST_KEYS, *_DICT_KEYS, *_FLAG_KEYS, "retry_policy", "stakeholders", "priority"}
)


def _visibility(value: Any) -> int:
    """Visibility as an int; missing or unreadable values count as public, like luigi."""
    if value is None:
        return VISIBILITY_PUBLIC
    try:
        return int(value)
    except (TypeError, ValueError):
        return VISIBILITY_PUBLIC


class Worker:
    """A worker process as the scheduler knows it, plus its per-worker scheduling indexes.

    ``last_active`` and ``last_get_work`` are liveness only: they live in memory and are never
    persisted, so a ping never causes a write.
    """

    __slots__ = (
        "id",
        "reference",
        "last_active",
        "last_get_work",
        "started",
        "info",
        "disabled",
        "rpc_messages",
        # --- indexes ---
        "tasks",  # ids of tasks whose runnable-worker list contains this worker
        "stakes",  # ids of tasks this worker is a stakeholder of
        "n_pending",  # countable (PENDING not upstream-disabled, or FAILED) tasks of this worker
        "n_unique",  # ... of which this worker is the only runnable worker
        "n_last",  # ... of which this worker is the most recently added runnable worker
        "n_respend",  # PENDING tasks of this worker that declare resources
        "running",  # RUNNING tasks of this worker (whoever runs them), insertion ordered
        "heap",  # ready tasks of this worker, as rank-heap entries
    )

    id: str
    reference: dict[str, Any] | None
    last_active: float
    last_get_work: float | None
    started: float
    info: dict[str, Any]
    disabled: bool
    rpc_messages: list[dict[str, Any]]
    tasks: set[str]
    stakes: set[str]
    n_pending: int
    n_unique: int
    n_last: int
    n_respend: int
    running: dict[str, None]
    heap: list[tuple[Any, ...]]

    def __init__(self, worker_id: str, now: float) -> None:
        self.id = worker_id
        self.reference = None
        self.last_active = now
        self.last_get_work = None
        self.started = now
        self.info = {}
        self.disabled = False
        self.rpc_messages = []
        self.tasks = set()
        self.stakes = set()
        self.n_pending = 0
        self.n_unique = 0
        self.n_last = 0
        self.n_respend = 0
        self.running = {}
        self.heap = []

    @property
    def assistant(self) -> bool:
        return bool(self.info.get("assistant", False))

    @property
    def enabled(self) -> bool:
        return not self.disabled

    def greedy_slots(self) -> int:
        """How many tasks this worker runs at once (``info['workers']``), for greedy accounting."""
        value = self.info.get("workers", 1)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return 1
        return int(value)

    def to_row(self, batchers: Mapping[str, tuple[list[str], float]] | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "started": self.started,
            "info": dict(self.info),
            "disabled": self.disabled,
            "reference": None if self.reference is None else dict(self.reference),
            "batchers": {
                family: {"batched_args": list(args), "max_batch_size": _size_to_json(size)}
                for family, (args, size) in (batchers or {}).items()
            },
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any], now: float) -> Worker:
        worker = cls(row["id"], now)
        worker.started = row.get("started", now)
        worker.info = dict(row.get("info") or {})
        worker.disabled = bool(row.get("disabled", False))
        reference = row.get("reference")
        worker.reference = None if reference is None else dict(reference)
        return worker


def batchers_from_row(row: Mapping[str, Any]) -> dict[str, tuple[list[str], float]]:
    result: dict[str, tuple[list[str], float]] = {}
    for family, entry in (row.get("batchers") or {}).items():
        size = entry.get("max_batch_size")
        result[family] = (list(entry.get("batched_args") or ()), math.inf if size is None else size)
    return result


def _size_to_json(size: float) -> float | None:
    """``inf`` is not valid JSON for every database, so an unlimited batch size is stored as null."""
    return None if isinstance(size, float) and math.isinf(size) else size
