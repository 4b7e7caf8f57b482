"""The scheduler's in-memory state and the primitives that keep its indexes consistent.

Every mutation of a task or worker that affects an index goes through a method here; the RPC
layers above never assign indexed fields directly.  The indexes, and why they exist:

* ``_by_status``: tasks per status, for O(1) counts and status-filtered listings.
* ``_rdeps``: reverse dependency edges, so a task turning DONE promotes exactly its dependents.
* ``Task.n_unmet`` / ``Task.ready``: a PENDING task with no unmet dep is *ready*; ready tasks sit
  in rank heaps: one global, one per family (batch collection), one per runnable worker
  (``Worker.heap``, the O(log n) path of ``get_work`` for "trivial" workers).
* ``Task.n_dis`` / ``Task.dis``: incremental "upstream disabled" propagation, because luigid's
  pending counts skip PENDING tasks that sit behind a DISABLED task.
* per-worker counters (``n_pending``, ``n_unique``, ``n_last``, ``n_respend``) and ``running``:
  the ``count_pending`` reply in O(running tasks of the worker) instead of O(tasks).
* ``_run_by`` / ``_batch_run_by`` / ``_batch_members``: runners and batch siblings, for
  retransmission, orphan resets and batch status propagation without scanning.
* timer heaps and ``_removal_candidates``: a prune touches only tasks with something due.

Dependency cycles (which luigi cannot normally produce) never crash the indexes, but an
"upstream disabled" flag inside a cycle may stay set after its cause is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from . import heaps
from .bookkeeping import Bookkeeping
from .changes import ChangeLog
from .constants import DISABLED, DONE, FAILED, PENDING, RUNNING, TASK_STATUSES
from .entities import Task, Worker
from .heaps import TimerHeap
from .metrics import NullMetrics
from .notifications import Outbox
from .retry import RetryPolicy, make_policy
from .settings import SchedulerSettings


class CoreState(Bookkeeping):
    """Storage plus index maintenance.  No RPC semantics live here, only consistency."""

    def __init__(
        self,
        settings: SchedulerSettings,
        clock: Callable[[], float] | None = None,
        metrics: Any = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.metrics = metrics if metrics is not None else NullMetrics()
        self._default_policy: RetryPolicy = make_policy(*settings.retry_policy_defaults())
        self._changes = ChangeLog()
        self._outbox = Outbox()
        self._resources: dict[str, float] = dict(settings.resources)
        self._paused = False
        #: A replica's copy (a following standby) answers reads without pruning: its workers'
        #: liveness is not in the committed rows, so a prune there would drop live workers and
        #: fail their running tasks in the copy. The leader prunes; the feed brings the result.
        self.replica = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._workers: dict[str, Worker] = {}
        self._by_status: dict[str, dict[str, Task]] = {status: {} for status in TASK_STATUSES}
        self._rdeps: dict[str, set[str]] = {}
        # Ready tasks in heaps by what get_work can skip wholesale (selection.py): those some
        # worker may run (``runnable``) and that need no resources; those some worker may run,
        # one heap per distinct resource need (once the first of a heap cannot get its
        # resources, none of the rest can); and those nobody may run yet (an external task
        # waiting for its data), which can only use up an assistant's own greedy slot.
        self._runnable_heap: list[heaps.RankEntry] = []
        self._need_heaps: dict[tuple[tuple[str, float], ...], list[heaps.RankEntry]] = {}
        self._unclaimed_heap: list[heaps.RankEntry] = []
        self._n_ready = 0
        self._family_heaps: dict[str, list[heaps.RankEntry]] = {}
        self._family_ready: dict[str, int] = {}
        self._run_by: dict[str, dict[str, None]] = {}
        self._batch_run_by: dict[str, dict[str, None]] = {}
        self._batch_members: dict[str, dict[str, None]] = {}
        self._running_sorted: list[tuple[tuple[float, float, int], Task]] | None = None
        self._retry_timers = TimerHeap()
        self._remove_timers = TimerHeap()
        self._disable_timers = TimerHeap()
        self._removal_candidates: set[str] = set()
        self._batchers: dict[str, dict[str, tuple[list[str], float]]] = {}
        self._seq = 0
        self._token = 0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    # ------------------------------------------------------------------ workers
    def _get_worker(self, worker_id: str, now: float) -> Worker:
        """The worker record, created (and persisted) if unknown, like luigid's ``get_worker``."""
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = self._workers[worker_id] = Worker(worker_id, now)
            self._changes.workers.add(worker_id)
        return worker

    def _drop_worker(self, worker_id: str) -> None:
        """Forget a worker: it stops being a stakeholder and a runnable worker of every task."""
        worker = self._workers[worker_id]
        tasks = self._tasks
        for task_id in list(worker.stakes):
            task = tasks.get(task_id)
            if task is not None:
                self._remove_stakeholder(task, worker_id)
        for task_id in list(worker.tasks):
            task = tasks.get(task_id)
            if task is not None:
                self._remove_runnable_worker(task, worker_id)
        del self._workers[worker_id]
        self._changes.workers.add(worker_id)

    # ------------------------------------------------------------------ task lifecycle
    def _create_task(self, task_id: str, status: str, now: float, **fields: Any) -> Task:
        self._seq += 1
        deps = fields.pop("deps", None)
        task = Task.new(task_id, status, now=now, seq=self._seq, retry_policy=self._default_policy, **fields)
        self._tasks[task_id] = task
        self._by_status[status][task_id] = task
        self._removal_candidates.add(task_id)  # no stakeholder yet
        self._changes.tasks.add(task_id)
        if status == DONE:
            self._shift_dependents_unmet(task, -1)
        if deps:
            self._replace_deps(task, deps)
        else:
            self._refresh(task)
        return task

    def _delete_task(self, task: Task) -> None:
        task_id = task.id
        if task.ready:
            self._set_ready_count(task, False)
            task.ready = False
        if task.dis:
            task.dis = False
            self._shift_dependents_dis(task, -1)
        self._recount(task, False, False, False)
        for worker_id in task.workers:
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.tasks.discard(task_id)
        for worker_id in task.stakeholders:
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.stakes.discard(task_id)
        if task.status == DONE:
            self._shift_dependents_unmet(task, +1)
        for dep_id in task.deps:
            self._unlink_dep(dep_id, task_id)
        del self._by_status[task.status][task_id]
        if task.status == RUNNING:
            self._running_sorted = None
        self._index_run(task, None, None, None)
        del self._tasks[task_id]
        self._removal_candidates.discard(task_id)
        self._changes.tasks.add(task_id)

    # ------------------------------------------------------------------ status
    def _set_status_raw(self, task: Task, status: str) -> bool:
        """Move the task to ``status`` in every index; returns False when nothing changed."""
        old = task.status
        if old == status:
            return False
        del self._by_status[old][task.id]
        self._by_status[status][task.id] = task
        task.status = status
        if old == RUNNING or status == RUNNING:
            self._running_sorted = None
        if old == DONE:
            self._shift_dependents_unmet(task, +1)
        elif status == DONE:
            self._shift_dependents_unmet(task, -1)
        self._refresh(task)
        self._sync_run_index(task)
        self._changes.tasks.add(task.id)
        return True

    def _shift_dependents_unmet(self, task: Task, delta: int) -> None:
        tasks = self._tasks
        for dependent_id in self._rdeps.get(task.id, ()):
            dependent = tasks.get(dependent_id)
            if dependent is not None and dependent is not task:
                dependent.n_unmet += delta
                self._refresh(dependent)

    def _shift_dependents_dis(self, task: Task, delta: int) -> None:
        tasks = self._tasks
        for dependent_id in self._rdeps.get(task.id, ()):
            dependent = tasks.get(dependent_id)
            if dependent is not None and dependent is not task:
                dependent.n_dis += delta
                self._refresh(dependent)

    def _refresh(self, task: Task) -> None:
        """Recompute readiness, upstream-disabled propagation and worker counters.

        Uses an explicit work list because a DISABLED task can flip the flag of a long chain
        of PENDING dependents; recursion would hit Python's limit on deep graphs.
        """
        stack = [task]
        tasks = self._tasks
        rdeps = self._rdeps
        while stack:
            t = stack.pop()
            status = t.status
            pending = status == PENDING
            ready = pending and t.n_unmet == 0
            if ready != t.ready:
                self._set_ready_count(t, ready)
                t.ready = ready
                if ready:
                    self._push_ready(t)
            dis = status == DISABLED or (pending and t.n_dis > 0)
            if dis != t.dis:
                t.dis = dis
                delta = 1 if dis else -1
                for dependent_id in rdeps.get(t.id, ()):
                    dependent = tasks.get(dependent_id)
                    if dependent is not None and dependent is not t:
                        dependent.n_dis += delta
                        stack.append(dependent)
            countable = status == FAILED or (pending and t.n_dis == 0)
            running = status == RUNNING
            respend = pending and bool(t.resources)
            if countable != t.c_countable or running != t.c_running or respend != t.c_respend:
                self._recount(t, countable, running, respend)

    def _set_ready_count(self, task: Task, ready: bool) -> None:
        family = task.family
        if ready:
            self._n_ready += 1
            self._family_ready[family] = self._family_ready.get(family, 0) + 1
        else:
            self._n_ready -= 1
            left = self._family_ready[family] - 1
            if left:
                self._family_ready[family] = left
            else:
                del self._family_ready[family]

    def _recount(self, task: Task, countable: bool, running: bool, respend: bool) -> None:
        """Apply a change of the task's counted flags to every runnable worker's counters."""
        names = task.workers
        if names:
            workers = self._workers
            if countable != task.c_countable:
                delta = 1 if countable else -1
                for name in names:
                    workers[name].n_pending += delta
                if len(names) == 1:
                    workers[next(iter(names))].n_unique += delta
                workers[next(reversed(names))].n_last += delta
            if running != task.c_running:
                if running:
                    for name in names:
                        workers[name].running[task.id] = None
                else:
                    for name in names:
                        workers[name].running.pop(task.id, None)
            if respend != task.c_respend:
                delta = 1 if respend else -1
                for name in names:
                    workers[name].n_respend += delta
        task.c_countable = countable
        task.c_running = running
        task.c_respend = respend

    # ------------------------------------------------------------------ ready heaps
    def _push_ready(self, task: Task) -> None:
        """(Re-)enter a ready task into its heaps with a fresh token (old entries die)."""
        self._token += 1
        task.token = self._token
        entry = heaps.rank_entry(task.priority, task.time, task.seq, task.token, task.id)
        self._push_shared(task, entry)
        family_heap = self._family_heaps.setdefault(task.family, [])
        heaps.push(family_heap, entry, self._family_ready.get(task.family, 0), self._is_live)
        for name in task.workers:
            worker = self._workers[name]
            heaps.push(worker.heap, entry, len(worker.tasks), self._live_for(name))

    def _mark_runnable(self, task: Task) -> None:
        """Some worker may run the task now (Luigi never takes that back): assistants may too."""
        if task.runnable:
            return
        task.runnable = True
        if task.ready:  # same token: its entry in the unclaimed heap dies, this one is live
            self._push_shared(task, heaps.rank_entry(task.priority, task.time, task.seq, task.token, task.id))

    def _push_shared(self, task: Task, entry: heaps.RankEntry) -> None:
        """Enter a ready task into the one shared heap get_work walks for it."""
        if not task.runnable:
            heaps.push(self._unclaimed_heap, entry, self._n_ready, self._is_unclaimed)
        elif task.resources:
            heap = self._need_heaps.setdefault(heaps.need_key(task.resources), [])
            heaps.push(heap, entry, self._n_ready, self._is_live)
        else:
            heaps.push(self._runnable_heap, entry, self._n_ready, self._is_live)

    def _is_live(self, entry: heaps.RankEntry) -> bool:
        task = self._tasks.get(entry[4])
        return task is not None and task.token == entry[3] and task.ready

    def _is_unclaimed(self, entry: heaps.RankEntry) -> bool:
        """Live in the heap of tasks nobody may run: live, and still runnable by nobody."""
        return self._is_live(entry) and not self._tasks[entry[4]].runnable

    def _live_for(self, worker_id: str) -> Callable[[heaps.RankEntry], bool]:
        tasks = self._tasks

        def live(entry: heaps.RankEntry) -> bool:
            task = tasks.get(entry[4])
            return task is not None and task.token == entry[3] and task.ready and worker_id in task.workers

        return live

    def _rank_changed(self, task: Task) -> None:
        if task.ready:
            self._push_ready(task)
        if task.status == RUNNING:
            self._running_sorted = None

    def _running_in_rank_order(self) -> list[tuple[tuple[float, float, int], Task]]:
        """RUNNING tasks sorted by rank, cached until the running set or a rank changes."""
        if self._running_sorted is None:
            items = [((-t.priority, t.time, t.seq), t) for t in self._by_status[RUNNING].values()]
            items.sort(key=lambda item: item[0])
            self._running_sorted = items
        return self._running_sorted

    # ------------------------------------------------------------------ field setters
    def _set_priority(self, task: Task, priority: float) -> None:
        task.priority = priority
        self._rank_changed(task)
        self._changes.tasks.add(task.id)

    def _set_family(self, task: Task, family: str) -> None:
        if task.ready:
            self._set_ready_count(task, False)
            task.family = family
            self._set_ready_count(task, True)
        else:
            task.family = family
        self._rank_changed(task)

    def _set_resources(self, task: Task, resources: dict[str, float]) -> None:
        if resources != task.resources:
            task.resources = resources
            self._refresh(task)
            self._rank_changed(task)  # a ready task moves to the heap of its new need
            self._changes.tasks.add(task.id)

    def _count_deps(self, task: Task) -> None:
        """Set the task's counts of dependencies not DONE and of dependencies that are disabled."""
        tasks = self._tasks
        unmet = dis = 0
        for dep_id in task.deps:
            dep = tasks.get(dep_id)
            if dep is None or dep.status != DONE:
                unmet += 1
            if dep is not None and dep.dis:
                dis += 1
        task.n_unmet = unmet
        task.n_dis = dis

    def _replace_deps(self, task: Task, dep_ids: Iterable[str]) -> None:
        new = dict.fromkeys(dep_ids)
        old = task.deps
        if new.keys() == old.keys():
            return
        task_id = task.id
        for dep_id in old:
            if dep_id not in new:
                self._unlink_dep(dep_id, task_id)
        for dep_id in new:
            if dep_id not in old:
                self._rdeps.setdefault(dep_id, set()).add(task_id)
        task.deps = new
        self._count_deps(task)
        self._refresh(task)
        self._changes.tasks.add(task_id)

    def _add_deps(self, task: Task, dep_ids: Iterable[str]) -> None:
        tasks = self._tasks
        changed = False
        for dep_id in dep_ids:
            if dep_id in task.deps:
                continue
            changed = True
            task.deps[dep_id] = None
            self._rdeps.setdefault(dep_id, set()).add(task.id)
            dep = tasks.get(dep_id)
            if dep is None or dep.status != DONE:
                task.n_unmet += 1
            if dep is not None and dep.dis:
                task.n_dis += 1
        if changed:
            self._refresh(task)
            self._changes.tasks.add(task.id)

    def _unlink_dep(self, dep_id: str, task_id: str) -> None:
        dependents = self._rdeps.get(dep_id)
        if dependents is not None:
            dependents.discard(task_id)
            if not dependents:
                del self._rdeps[dep_id]

    def _add_stakeholder(self, task: Task, worker_id: str) -> None:
        if worker_id not in task.stakeholders:
            task.stakeholders[worker_id] = None
            self._workers[worker_id].stakes.add(task.id)
            self._changes.tasks.add(task.id)

    def _remove_stakeholder(self, task: Task, worker_id: str) -> None:
        if worker_id in task.stakeholders:
            del task.stakeholders[worker_id]
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.stakes.discard(task.id)
            if not task.stakeholders and task.remove is None:
                self._removal_candidates.add(task.id)
            self._changes.tasks.add(task.id)

    def _add_runnable_worker(self, task: Task, worker_id: str) -> None:
        """Append a worker to the ordered runnable list (re-adding keeps its first position)."""
        names = task.workers
        if worker_id in names:
            return
        workers = self._workers
        worker = workers[worker_id]
        before = len(names)
        previous_last = next(reversed(names)) if before else None
        names[worker_id] = None
        worker.tasks.add(task.id)
        if task.c_countable:
            worker.n_pending += 1
            if before == 0:
                worker.n_unique += 1
            elif before == 1:
                workers[previous_last].n_unique -= 1  # type: ignore[index]
            if previous_last is not None:
                workers[previous_last].n_last -= 1
            worker.n_last += 1
        if task.c_running:
            worker.running[task.id] = None
        if task.c_respend:
            worker.n_respend += 1
        if task.ready:
            entry = heaps.rank_entry(task.priority, task.time, task.seq, task.token, task.id)
            heaps.push(worker.heap, entry, len(worker.tasks), self._live_for(worker_id))
        self._changes.tasks.add(task.id)

    def _remove_runnable_worker(self, task: Task, worker_id: str) -> None:
        names = task.workers
        if worker_id not in names:
            return
        workers = self._workers
        worker = workers[worker_id]
        before = len(names)
        was_last = next(reversed(names)) == worker_id
        del names[worker_id]
        worker.tasks.discard(task.id)
        if task.c_countable:
            worker.n_pending -= 1
            if before == 1:
                worker.n_unique -= 1
            elif before == 2:
                workers[next(iter(names))].n_unique += 1
            if was_last:
                worker.n_last -= 1
                if names:
                    workers[next(reversed(names))].n_last += 1
        if task.c_running:
            worker.running.pop(task.id, None)
        if task.c_respend:
            worker.n_respend -= 1
        self._changes.tasks.add(task.id)
