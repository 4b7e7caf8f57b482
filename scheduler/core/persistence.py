"""The persistence contract with the store and the node: changes, snapshots, restore, grace.

* ``take_changes()`` returns rows for what changed since the previous call and clears the log.
* ``export()`` / ``restore()`` move the complete state; ``restore`` rebuilds every index in
  bulk passes (no per-task incremental maintenance), which is what makes it fast.
* ``grant_grace()`` gives every worker a fresh ``worker_disconnect_delay`` after a takeover, so
  a failover never fails running tasks through the dead-runner rule.

Liveness (``last_active``, ``last_get_work``) is deliberately not persisted: the next ping
refreshes it.  Queued worker messages are (in the worker's row), and so are the tasks' answers
to them (in the task's row), so a message sent before a failover is delivered and answered after.
"""

from __future__ import annotations

import functools
import gc
import heapq
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import heaps
from .changes import Changes, Snapshot
from .constants import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING
from .entities import Task, Worker, batchers_from_row, task_from_json
from .rpc_admin import AdminRPCs


class PersistenceAPI(AdminRPCs):
    # ------------------------------------------------------------------ incremental
    def take_changes(self) -> Changes:
        """Rows of every task/worker changed since the previous call (None: deleted), the
        changed global values, and the buffered history events; then start a new log."""
        log = self._changes
        tasks = self._tasks
        workers = self._workers
        task_rows: dict[str, dict[str, Any] | None] = {}
        for task_id in log.tasks:
            task = tasks.get(task_id)
            task_rows[task_id] = task.to_row() if task is not None else None
        worker_rows: dict[str, dict[str, Any] | None] = {}
        for worker_id in log.workers:
            worker = workers.get(worker_id)
            worker_rows[worker_id] = worker.to_row(self._batchers.get(worker_id)) if worker is not None else None
        meta = {key: self._meta_value(key) for key in log.meta}
        events = list(log.events)
        log.clear()
        return Changes(tasks=task_rows, workers=worker_rows, meta=meta, events=events)

    def has_changes(self) -> bool:
        """Has anything changed since the previous ``take_changes()``? O(1)."""
        return bool(self._changes)

    def _meta_value(self, key: str) -> object:
        if key == "paused":
            return self._paused
        if key == "resources":
            return dict(self._resources)
        raise KeyError(key)

    def take_notifications(self) -> list[dict[str, Any]]:
        """Drain the e-mail outbox (see ``notifications``)."""
        return self._outbox.drain()

    # ------------------------------------------------------------------ cheap reads
    def status_counts(self) -> dict[str, int]:
        """Tasks per status, O(number of statuses)."""
        return {status: len(tasks) for status, tasks in self._by_status.items()}

    def pending_count(self) -> int:
        """Number of PENDING tasks, O(1)."""
        return len(self._by_status[PENDING])

    # ------------------------------------------------------------------ full state
    def export(self) -> Snapshot:
        batchers = self._batchers
        with gc_paused():
            return Snapshot(
                tasks=[task.to_row() for task in self._tasks.values()],
                workers=[worker.to_row(batchers.get(worker.id)) for worker in self._workers.values()],
                meta={"paused": self._paused, "resources": dict(self._resources)},
            )

    def restore(self, snapshot: Snapshot) -> None:
        """Replace all state with ``snapshot`` and rebuild every index; the change log is empty after.

        Workers named by tasks (stakeholders, runnable workers, runners of running tasks) but
        without a row are recreated as live records; every restored worker counts as just seen.
        Cost: a few linear passes over tasks and edges plus one heapify per heap.
        """
        now = self._now()
        with gc_paused():
            self._restore(snapshot, now)

    def _restore(self, snapshot: Snapshot, now: float) -> None:
        self._reset_state()
        meta = snapshot.meta or {}
        self._paused = bool(meta.get("paused", False))
        resources = meta.get("resources")
        self._resources = dict(resources) if isinstance(resources, dict) else dict(self.settings.resources)

        tasks = self._load_tasks(snapshot.tasks)
        workers = self._load_workers(snapshot.workers, now)
        self._index_tasks(tasks, workers, now)
        self._changes.clear()

    def _load_tasks(self, rows: list[Any]) -> dict[str, Task]:
        policy = self._default_policy
        tasks: dict[str, Task] = {}
        by_status = self._by_status
        from_row = Task.from_row
        missing_seq: list[Task] = []
        for row in rows:
            task = row if row.__class__ is Task else from_row(row, policy)
            if not task.seq:
                missing_seq.append(task)
            tasks[task.id] = task
            by_status[task.status][task.id] = task
        highest = max((task.seq for task in tasks.values()), default=0)
        for task in missing_seq:
            highest += 1
            task.seq = highest
        self._tasks = tasks
        self._seq = highest
        return tasks

    def _load_workers(self, rows: list[dict[str, Any]], now: float) -> dict[str, Worker]:
        workers: dict[str, Worker] = {}
        for row in rows:
            worker = Worker.from_row(row, now)
            workers[worker.id] = worker
            batchers = batchers_from_row(row)
            if batchers:
                self._batchers[worker.id] = batchers
        self._workers = workers
        return workers

    def _index_tasks(self, tasks: dict[str, Task], workers: dict[str, Worker], now: float) -> None:
        """Rebuild every derived index in one pass over tasks plus a disabled-propagation pass.

        Workers named by a task but without a row are created on the way.  Counters are first
        computed as if nothing were upstream-disabled (the common case); the few PENDING tasks
        behind a DISABLED task are then un-counted by ``_propagate_disabled``.
        """
        rdeps = self._rdeps
        rdeps_get = rdeps.get
        tasks_get = tasks.get
        workers_get = workers.get
        retry_entries: list[heaps.TimeEntry] = []
        remove_entries: list[heaps.TimeEntry] = []
        disable_entries: list[heaps.TimeEntry] = []
        retry_on = self.settings.retry_delay >= 0
        candidates = self._removal_candidates
        family_heaps = self._family_heaps
        family_ready = self._family_ready
        runnable_heap = self._runnable_heap
        unclaimed_heap = self._unclaimed_heap
        need_heaps = self._need_heaps
        disabled: list[Task] = []
        token = self._token
        n_ready = 0
        for task in tasks.values():
            task_id = task.id
            status = task.status
            unmet = 0
            for dep_id in task.deps:
                dependents = rdeps_get(dep_id)
                if dependents is None:
                    rdeps[dep_id] = {task_id}
                else:
                    dependents.add(task_id)
                dep = tasks_get(dep_id)
                if dep is None or dep.status != DONE:
                    unmet += 1
            task.n_unmet = unmet
            pending = status == PENDING
            if pending:
                pass
            elif status == DISABLED:
                task.dis = True
                disabled.append(task)
                if task.scheduler_disable_time is not None:
                    disable_entries.append((task.scheduler_disable_time, task.seq, task_id))
            elif status == FAILED:
                if retry_on and task.retry is not None:
                    retry_entries.append((task.retry, task.seq, task_id))
            elif status in (RUNNING, BATCH_RUNNING):
                runner = task.worker_running
                if runner and runner not in workers:
                    workers[runner] = Worker(runner, now)
                self._sync_run_index(task)
            if task.remove is not None:
                remove_entries.append((task.remove, task.seq, task_id))
            elif not task.stakeholders:
                candidates.add(task_id)
            for worker_id in task.stakeholders:
                worker = workers_get(worker_id)
                if worker is None:
                    worker = workers[worker_id] = Worker(worker_id, now)
                worker.stakes.add(task_id)

            entry = None
            if pending and unmet == 0:
                token += 1
                task.token = token
                task.ready = True
                n_ready += 1
                entry = (-task.priority, task.time, task.seq, token, task_id)
                # The routing of CoreState._push_shared, inlined: this runs once per ready task.
                if not task.runnable:
                    unclaimed_heap.append(entry)
                elif task.resources:
                    need_heaps.setdefault(heaps.need_key(task.resources), []).append(entry)
                else:
                    runnable_heap.append(entry)
                family = task.family
                family_ready[family] = family_ready.get(family, 0) + 1
                family_heap = family_heaps.get(family)
                if family_heap is None:
                    family_heaps[family] = [entry]
                else:
                    family_heap.append(entry)
            countable = pending or status == FAILED
            running = status == RUNNING
            respend = pending and bool(task.resources)
            task.c_countable = countable
            task.c_running = running
            task.c_respend = respend
            names = task.workers
            if names:
                for worker_id in names:
                    worker = workers_get(worker_id)
                    if worker is None:
                        worker = workers[worker_id] = Worker(worker_id, now)
                    worker.tasks.add(task_id)
                    if countable:
                        worker.n_pending += 1
                    if running:
                        worker.running[task_id] = None
                    if respend:
                        worker.n_respend += 1
                    if entry is not None:
                        worker.heap.append(entry)
                if countable:
                    # ``worker`` is now the record of the last name (the most recently added).
                    if len(names) == 1:
                        worker.n_unique += 1
                    worker.n_last += 1
        self._token = token
        self._n_ready = n_ready
        self._retry_timers.rebuild(retry_entries)
        self._remove_timers.rebuild(remove_entries)
        self._disable_timers.rebuild(disable_entries)
        heapq.heapify(runnable_heap)
        heapq.heapify(unclaimed_heap)
        for need_heap in need_heaps.values():
            heapq.heapify(need_heap)
        for family_heap in family_heaps.values():
            heapq.heapify(family_heap)
        for worker in workers.values():
            heapq.heapify(worker.heap)
        self._propagate_disabled(disabled)

    def _propagate_disabled(self, disabled: list[Task]) -> None:
        """Flag every PENDING task reachable from a DISABLED one through PENDING tasks, and take
        it out of the pending counters (its upstream status is UPSTREAM_DISABLED)."""
        tasks = self._tasks
        rdeps = self._rdeps
        stack = disabled
        while stack:
            source = stack.pop()
            for dependent_id in rdeps.get(source.id, ()):
                dependent = tasks.get(dependent_id)
                if dependent is None or dependent is source:
                    continue
                dependent.n_dis += 1
                if not dependent.dis and dependent.status == PENDING:
                    dependent.dis = True
                    self._recount(dependent, False, dependent.c_running, dependent.c_respend)
                    stack.append(dependent)

    def task_decoder(self) -> Callable[[str | bytes], Task]:
        """What turns one stored task row (its JSON text) into a live task for :meth:`restore`.

        A store calls it on each row as the row arrives (``Store.load_all(decode_task=...)``) and
        ``restore`` adopts the tasks as they are: decoding straight into task objects, with this
        scheduler's default retry policy filled in, is most of what a takeover costs.
        """
        return functools.partial(task_from_json, default_policy=self._default_policy)

    def grant_grace(self) -> None:
        """Treat every known worker, and every runner of a running task, as just seen.

        Called by the node right after it takes over: workers could not reach any scheduler
        during the failover, and must not be pruned (nor their running tasks failed) for it.
        Records created here for unknown runners are not persisted (they carry no information).
        """
        now = self._now()
        workers = self._workers
        for status in (RUNNING, BATCH_RUNNING):
            for task in self._by_status[status].values():
                runner = task.worker_running
                if runner and runner not in workers:
                    workers[runner] = Worker(runner, now)
        for worker in workers.values():
            worker.last_active = now


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off while a whole state is built, copied or decoded.

    100,000 tasks are about 500,000 tracked lists and dicts. With the collector on, allocating
    them triggers generation-2 passes over everything allocated so far, again and again; and
    merely re-enabling it afterwards makes the next allocations scan them all as young objects,
    then again as middle-aged ones. Nothing allocated here is cyclic garbage, so the collector
    is paused and, on the way out, what was allocated moves straight into the oldest generation
    (``gc.freeze()`` + ``gc.unfreeze()``: no scan), where the next full collection sees it once.
    That promotion is skipped if the process uses ``gc.freeze()`` for its own purposes. The
    previous setting is always put back. (The store's ``load_all`` uses it too.)
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if was_enabled:
            gc.enable()
