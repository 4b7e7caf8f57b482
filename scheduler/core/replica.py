"""A read-only replica of a leader's core: apply batches of committed rows, keep every index.

A standby follows the leader through the store's feed (``Store.feed_after``): each batch holds
the current rows of the tasks and workers committed since the standby's last batch, the ids
deleted or pruned since then, and the changed global values. ``apply_feed`` puts them into this
core so that, once every batch up to the leader's last commit is applied, ``export()`` equals
the leader's. The core stays a full core all along: every derived index (readiness, heaps,
upstream-disabled flags, worker counters, run and timer indexes) is maintained incrementally,
through the same primitives the RPCs use, so a standby that wins the lease serves at once,
without a rebuild.

Interface (stable; the node and ``scheduler.follower`` use it):

* ``FeedBatch(tasks, task_deletes, workers, worker_deletes, meta)``: ``tasks`` are rows (dicts,
  as ``take_changes`` builds them) or ``Task`` objects from ``task_decoder()``; ``workers`` are
  worker rows; ``meta`` maps ``"paused"``/``"resources"`` to their values.
* ``Scheduler.apply_feed(batch)``: applies one batch; records no changes (``take_changes`` stays
  empty, nothing is written back) and sends no notifications.

Why a batch holds whole rows and no history: an upsert replaces the task as a unit (leave its
old version's index entries, enter the new one's), which is order-independent within a batch
as long as deletes of tasks come before upserts of workers and worker deletes come last (a
pruned worker's tasks arrive rewritten in the same batch, without it).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from .constants import DISABLED, DONE, FAILED, RUNNING
from .entities import Task, Worker, batchers_from_row
from .persistence import PersistenceAPI, gc_paused


@dataclass
class FeedBatch:
    """Rows committed after some sequence, as the store's feed returns them (see module docstring)."""

    tasks: list[Any] = field(default_factory=list)
    task_deletes: list[str] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    worker_deletes: list[str] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.tasks or self.task_deletes or self.workers or self.worker_deletes or self.meta)


#: What a worker row carries: every slot but the id, liveness (never persisted) and the indexes
#: (derived from the tasks, which this core maintains itself).
_NOT_IN_A_WORKER_ROW = {"id", "last_active", "last_get_work", "tasks", "stakes", "running", "heap"}
_PERSISTED_WORKER_FIELDS = tuple(
    name for name in Worker.__slots__ if name not in _NOT_IN_A_WORKER_ROW and not name.startswith("n_")
)


class ReplicaAPI(PersistenceAPI):
    def apply_feed(self, batch: FeedBatch) -> None:
        """Apply one batch of committed rows; afterwards the change log is exactly as before.

        A replica's log is empty (it never serves writes), so it is simply cleared again.
        """
        now = self._now()
        with gc_paused() if len(batch.tasks) > 10_000 else nullcontext():
            for task_id in batch.task_deletes:
                task = self._tasks.get(task_id)
                if task is not None:
                    self._delete_task(task)
            policy = self._default_policy
            for row in batch.tasks:
                task = row if row.__class__ is Task else Task.from_row(row, policy)
                old = self._tasks.get(task.id)
                if old is not None:
                    self._delete_task(old)
                self._adopt_task(task, now)
            for row in batch.workers:
                self._adopt_worker(row, now)
            for worker_id in batch.worker_deletes:
                if worker_id in self._workers:
                    self._drop_worker(worker_id)
                self._batchers.pop(worker_id, None)
            meta = batch.meta
            if "paused" in meta:
                self._paused = bool(meta["paused"])
            resources = meta.get("resources")
            if isinstance(resources, dict):
                self._resources = dict(resources)
        self._changes.clear()

    def _adopt_task(self, task: Task, now: float) -> None:
        """Enter a task decoded from a committed row into every index, as if it had been built here."""
        task_id = task.id
        tasks = self._tasks
        # Derived fields start from "in no index"; _refresh and the setters below fill them.
        task.ready = task.dis = task.c_countable = task.c_running = task.c_respend = False
        task.ix_run = task.ix_batch_run = task.ix_batch = None
        tasks[task_id] = task
        self._by_status[task.status][task_id] = task
        if task.seq > self._seq:
            self._seq = task.seq
        elif not task.seq:
            self._seq += 1
            task.seq = self._seq
        rdeps = self._rdeps
        for dep_id in task.deps:
            rdeps.setdefault(dep_id, set()).add(task_id)
        self._count_deps(task)
        if task.status == DONE:
            self._shift_dependents_unmet(task, -1)
        workers = self._workers
        for worker_id in task.stakeholders:
            worker = workers.get(worker_id)
            if worker is None:
                worker = workers[worker_id] = Worker(worker_id, now)
            worker.stakes.add(task_id)
        for worker_id in task.workers:
            worker = workers.get(worker_id)
            if worker is None:
                worker = workers[worker_id] = Worker(worker_id, now)
            worker.tasks.add(task_id)
        if task.remove is not None:
            self._remove_timers.add(task.remove, task.seq, task_id)
        elif not task.stakeholders:
            self._removal_candidates.add(task_id)
        if task.status == FAILED and task.retry is not None and self.settings.retry_delay >= 0:
            self._retry_timers.add(task.retry, task.seq, task_id)
        if task.status == DISABLED and task.scheduler_disable_time is not None:
            self._disable_timers.add(task.scheduler_disable_time, task.seq, task_id)
        if task.status == RUNNING:
            self._running_sorted = None
        runner = task.worker_running
        if runner and task.status == RUNNING and runner not in workers:
            workers[runner] = Worker(runner, now)
        self._sync_run_index(task)
        self._refresh(task)  # readiness and heaps, upstream-disabled propagation, worker counters

    def _adopt_worker(self, row: dict[str, Any], now: float) -> None:
        """Take a worker's persisted fields from its row; its indexes (and liveness) stay."""
        fresh = Worker.from_row(row, now)
        worker = self._workers.get(fresh.id)
        if worker is None:
            self._workers[fresh.id] = fresh
        else:
            for name in _PERSISTED_WORKER_FIELDS:
                setattr(worker, name, getattr(fresh, name))
        batchers = batchers_from_row(row)
        if batchers:
            self._batchers[fresh.id] = batchers
        else:
            self._batchers.pop(fresh.id, None)
