"""Run, batch and timer bookkeeping: the indexes that follow who runs what, and when.

Split from ``state`` to keep each module small; ``CoreState`` inherits these primitives.  The
attributes they use are created by ``CoreState._reset_state``.
"""

from __future__ import annotations

from .changes import ChangeLog
from .constants import BATCH_RUNNING, RUNNING
from .entities import Task
from .heaps import TimerHeap
from .settings import SchedulerSettings

Actor = tuple[str | None, str | None]  # (worker id, host) responsible for a change


class Bookkeeping:
    settings: SchedulerSettings
    _tasks: dict[str, Task]
    _changes: ChangeLog
    _run_by: dict[str, dict[str, None]]
    _batch_run_by: dict[str, dict[str, None]]
    _batch_members: dict[str, dict[str, None]]
    _retry_timers: TimerHeap
    _remove_timers: TimerHeap
    _disable_timers: TimerHeap
    _removal_candidates: set[str]

    def _set_worker_running(self, task: Task, worker_id: str | None) -> None:
        task.worker_running = worker_id
        self._sync_run_index(task)
        self._changes.tasks.add(task.id)

    def _set_batch_id(self, task: Task, batch_id: str | None) -> None:
        task.batch_id = batch_id
        self._sync_run_index(task)
        self._changes.tasks.add(task.id)

    def _sync_run_index(self, task: Task) -> None:
        status = task.status
        self._index_run(
            task,
            task.worker_running if status == RUNNING else None,
            task.worker_running if status == BATCH_RUNNING else None,
            task.batch_id if status == BATCH_RUNNING else None,
        )

    def _index_run(self, task: Task, run: str | None, batch_run: str | None, batch: str | None) -> None:
        if run != task.ix_run:
            _move(self._run_by, task.id, task.ix_run, run)
            task.ix_run = run
        if batch_run != task.ix_batch_run:
            _move(self._batch_run_by, task.id, task.ix_batch_run, batch_run)
            task.ix_batch_run = batch_run
        if batch != task.ix_batch:
            _move(self._batch_members, task.id, task.ix_batch, batch)
            task.ix_batch = batch

    def _batch_siblings(self, batch_id: str) -> list[Task]:
        """BATCH_RUNNING tasks of a batch, in the order they joined it."""
        tasks = self._tasks
        return [tasks[task_id] for task_id in self._batch_members.get(batch_id, ())]

    # ------------------------------------------------------------------ timers
    def _set_retry(self, task: Task, at: float | None) -> None:
        task.retry = at
        if at is not None and self.settings.retry_delay >= 0:
            self._retry_timers.add(at, task.seq, task.id)
        self._changes.tasks.add(task.id)

    def _set_remove(self, task: Task, at: float | None) -> None:
        if task.remove == at:
            return
        task.remove = at
        if at is None:
            if not task.stakeholders:
                self._removal_candidates.add(task.id)
        else:
            self._remove_timers.add(at, task.seq, task.id)
        self._changes.tasks.add(task.id)

    def _set_disable_time(self, task: Task, at: float | None) -> None:
        task.scheduler_disable_time = at
        if at is not None:
            self._disable_timers.add(at, task.seq, task.id)
        self._changes.tasks.add(task.id)

    def _event(self, task: Task, status: str, now: float, actor: Actor | None) -> None:
        worker, host = actor if actor is not None else (None, None)
        self._changes.event(task.id, status, now, worker, host)


def _move(index: dict[str, dict[str, None]], task_id: str, old: str | None, new: str | None) -> None:
    if old is not None:
        members = index.get(old)
        if members is not None:
            members.pop(task_id, None)
            if not members:
                del index[old]
    if new is not None:
        index.setdefault(new, {})[task_id] = None
