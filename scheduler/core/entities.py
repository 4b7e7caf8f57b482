"""Task and Worker records, and their JSON-safe rows.

The scheduler owns every index over these records and is the only code that mutates them
(through ``state.CoreState``), so the classes carry data and bookkeeping only. ``Task`` is a
msgspec ``Struct`` (stored rows decode straight into tasks), ``Worker`` a slotted class. Rows are
what the store persists; they hold every field needed to rebuild the exact scheduling state, and
none of the derived index bookkeeping, which ``restore`` recomputes.

Sets of ids (``deps``, ``workers``, ``stakeholders``) are dicts with ``None`` values: insertion
order matters for ``workers`` (the last-added worker drives ``n_pending_last_scheduled``) and
makes every other listing deterministic, and such dicts are not tracked by the cyclic garbage
collector, which keeps ``restore`` of 100k tasks fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

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


class Task(msgspec.Struct, kw_only=True, gc=False, eq=False):
    """One task as the scheduler knows it (luigid's ``Task`` fields plus index bookkeeping).

    A msgspec ``Struct`` rather than a plain slotted class for one reason: a takeover decodes
    100,000+ stored JSON rows, and msgspec builds the tasks straight from the JSON text (see
    :func:`task_from_json`), without a dict per row that would then be copied field by field.
    That halves the decode-and-rebuild time of a large state. Otherwise it behaves as a slotted
    object: ``eq=False`` keeps identity comparison and hashing, and ``gc=False`` keeps the
    cyclic collector from tracking (and scanning) every task, which is safe because a task never
    holds a reference to another task or to anything that could point back at it (the graph is
    linked by ids).

    The row fields come first, in ``TASK_ROW_KEYS`` order, with the value an absent key means.
    """

    id: str
    # A Literal, so decoding hands out the one shared string per status, not a copy per row.
    status: Literal["PENDING", "RUNNING", "BATCH_RUNNING", "DONE", "FAILED", "DISABLED", "UNKNOWN"]
    family: str = ""
    module: str | None = None
    updated: Any
    time: Any = None
    seq: int = 0
    deps: Any = {}
    params: dict[str, Any] = {}
    param_visibilities: dict[str, Any] = {}
    priority: Any = 0
    resources: dict[str, Any] = {}
    resources_running: dict[str, Any] | None = None
    stakeholders: Any = {}
    workers: Any = {}
    worker_running: str | None = None
    time_running: Any = None
    retry: Any = None
    remove: Any = None
    expl: Any = None
    tracking_url: Any = None
    status_message: Any = None
    progress_percentage: Any = None
    accepts_messages: bool = False
    retry_policy: Any = None
    failures: tuple[Any, ...] = ()
    first_failure_time: Any = None
    scheduler_disable_time: Any = None
    runnable: bool = False
    batchable: bool = False
    batch_id: str | None = None
    scheduler_message_responses: dict[str, Any] = {}
    # --- derived bookkeeping, rebuilt by restore, never persisted ---
    n_unmet: int = 0  # deps that are missing or not DONE
    n_dis: int = 0  # deps that propagate "upstream disabled"
    dis: bool = False  # this task propagates "upstream disabled" (DISABLED, or PENDING with n_dis > 0)
    ready: bool = False  # PENDING with every dep DONE: present in the ready heaps
    token: int = 0  # bumped whenever heap entries must be re-pushed (rank change, re-ready)
    c_countable: bool = False  # counted in its workers' n_pending/n_unique/n_last counters
    c_running: bool = False  # listed in its workers' running-task sets
    c_respend: bool = False  # counted as a PENDING task with resources (makes its workers non-trivial)
    ix_run: str | None = None  # worker id this task is indexed under as RUNNING runner
    ix_batch_run: str | None = None  # worker id this task is indexed under as BATCH_RUNNING runner
    ix_batch: str | None = None  # batch id this task is indexed under as a BATCH_RUNNING member

    @classmethod
    def new(
        cls,
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
    ) -> Task:
        """A task the scheduler has just heard of (every other field at its default)."""
        return cls(
            id=task_id,
            status=status,
            family=family,
            module=module,
            updated=now,
            time=now,
            seq=seq,
            params=dict(params or {}),
            param_visibilities=dict(param_visibilities or {}),
            priority=priority,
            resources=dict(resources or {}),
            retry_policy=retry_policy,
        )

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
    def from_row(cls, row: Mapping[str, Any], default_policy: RetryPolicy) -> Task:
        """A live task rebuilt from a decoded row (``default_policy``: when it stores none).

        Only ``id``, ``status`` and ``updated`` are required: :meth:`to_row` leaves defaults
        out, and rows written by older versions carry every key. This is the lenient path (any
        value that was ever stored is accepted); :func:`task_from_json` is the fast one.
        ``params``, ``param_visibilities`` and ``resources`` are shared with the row, not
        copied: the scheduler only ever replaces those dicts, never mutates them in place.
        """
        get = row.get
        running = get("resources_running")
        failures = get("failures")
        responses = get("scheduler_message_responses")
        task = cls(
            id=row["id"],
            status=row["status"],
            family=get("family") or "",
            module=get("module"),
            updated=row["updated"],
            time=get("time"),
            seq=get("seq") or 0,  # 0: restore numbers it after the highest
            deps=_fromkeys(get("deps") or ()),  # a fresh dict, never the row's own
            params=get("params") or {},
            param_visibilities=get("param_visibilities") or {},
            priority=get("priority") or 0,
            resources=get("resources") or {},
            resources_running=None if running is None else dict(running),
            stakeholders=_fromkeys(get("stakeholders") or ()),
            workers=_fromkeys(get("workers") or ()),
            worker_running=get("worker_running"),
            time_running=get("time_running"),
            retry=get("retry"),
            remove=get("remove"),
            expl=get("expl"),
            tracking_url=get("tracking_url"),
            status_message=get("status_message"),
            progress_percentage=get("progress_percentage"),
            accepts_messages=get("accepts_messages") is True,
            retry_policy=get("retry_policy"),
            failures=tuple(failures) if failures else (),
            first_failure_time=get("first_failure_time"),
            scheduler_disable_time=get("scheduler_disable_time"),
            runnable=get("runnable") is True,
            batchable=get("batchable") is True,
            batch_id=get("batch_id"),
            scheduler_message_responses=dict(responses) if responses else {},
        )
        return _finish_loaded(task, default_policy)


def _finish_loaded(task: Task, default_policy: RetryPolicy) -> Task:
    """Turn the stored forms of a just-decoded task's values into their run-time forms.

    Id sets are stored as lists and held as dicts with ``None`` values (ordered, and not tracked
    by the cyclic collector); an absent creation time means the last update's; the stored retry
    policy (a dict; absent: the scheduler's default) becomes a shared ``RetryPolicy``. Done right
    after decoding, while the task is still in the CPU cache.
    """
    ids = task.deps
    if ids.__class__ is not dict:
        task.deps = _fromkeys(ids)
    ids = task.stakeholders
    if ids.__class__ is not dict:
        task.stakeholders = _fromkeys(ids)
    ids = task.workers
    if ids.__class__ is not dict:
        task.workers = _fromkeys(ids)
    if task.time is None:
        task.time = task.updated
    policy = task.retry_policy
    task.retry_policy = policy_from_row(policy, default_policy) if policy else default_policy
    return task


def task_from_json(row_json: str | bytes, default_policy: RetryPolicy) -> Task:
    """The live task of one stored JSON row: ``Task.from_row(json.loads(row_json), default_policy)``.

    msgspec decodes the text straight into a ``Task``, about twice as fast as the standard
    library builds the row dict alone. It refuses a few things ``json`` accepts and ``to_row``
    can write (``Infinity``/``NaN``, lone surrogates) and any value of an unexpected type; such
    a row is read by the standard library and rebuilt by :meth:`Task.from_row`, so the result
    never depends on which path ran. Raises ``ValueError`` if it is not a JSON object.
    """
    try:
        return _finish_loaded(_decode_task(row_json), default_policy)
    except msgspec.MsgspecError:
        row = json.loads(row_json)
        if not isinstance(row, dict):
            raise ValueError("a task row must be a JSON object") from None
        try:
            return Task.from_row(row, default_policy)
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"a task row is not usable ({type(exc).__name__}: {exc}); it needs at least id, status and updated"
            ) from exc


_decode_task = msgspec.json.Decoder(Task).decode
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
            # Queued scheduler messages are state a failover must keep: a message sent before it
            # is delivered by the next leader's ping (its answer is kept in the task's row).
            **({"rpc_messages": [dict(m) for m in self.rpc_messages]} if self.rpc_messages else {}),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any], now: float) -> Worker:
        worker = cls(row["id"], now)
        worker.started = row.get("started", now)
        worker.info = dict(row.get("info") or {})
        worker.disabled = bool(row.get("disabled", False))
        reference = row.get("reference")
        worker.reference = None if reference is None else dict(reference)
        worker.rpc_messages = [dict(m) for m in row.get("rpc_messages") or ()]
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
