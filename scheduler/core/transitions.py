"""Status transition rules (luigid's ``set_status``) and the prune cycle.

Both are shared by several RPCs: ``add_task``, ``get_work``, the visualiser's buttons and the
periodic prune all change statuses through ``_set_status`` so the rules of protocol section 3.3
are applied in one place, in luigid's order.
"""

from __future__ import annotations

from .bookkeeping import Actor
from .constants import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING
from .entities import Task
from .metrics import call_hook
from .retry import has_excessive_failures, recent_failures
from .state import CoreState


class Transitions(CoreState):
    def _set_status(self, task: Task, status: str, now: float, actor: Actor | None = None) -> None:
        """Apply a requested status with luigid's rules (docs/luigi-semantics.md, "Status changes"), in its order.

        1. DISABLED never replaces RUNNING/BATCH_RUNNING.
        2. From DISABLED: DONE clears the disable; a scheduler disable can only be replaced by
           another DISABLED.
        3. A batch representative leaving RUNNING takes its BATCH_RUNNING siblings along.
        4. FAILED records a failure and becomes DISABLED when failures are excessive; a
           requested DISABLED is a worker's disable, which never expires.
        5. A real change updates ``updated``, the indexes, the history and the metrics.
        6. FAILED (re)arms the retry timer; a failed non-batchable batch task is removed soon.
        """
        old = task.status
        if status == DISABLED and old in (RUNNING, BATCH_RUNNING):
            return
        remove_on_failure = task.batch_id is not None and not task.batchable
        if old == DISABLED:
            if status == DONE:
                self._clear_disable(task)
            elif task.scheduler_disable_time is not None and status != DISABLED:
                return
        if old == RUNNING and task.batch_id is not None and status != RUNNING:
            for sibling in self._batch_siblings(task.batch_id):
                self._set_status(sibling, status, now, actor)
                self._set_batch_id(sibling, None)
            self._set_batch_id(task, None)
        if status == FAILED and task.status != DISABLED:
            if task.first_failure_time is None:
                task.first_failure_time = now
            task.failures = recent_failures((*task.failures, now), task.retry_policy, now)
            if has_excessive_failures(task.failures, task.first_failure_time, task.retry_policy, now):
                self._set_disable_time(task, now)
                status = DISABLED
                self._note_disable(task)
        elif status == DISABLED:
            task.scheduler_disable_time = None
        if self._set_status_raw(task, status):
            task.updated = now
            self._event(task, status, now, actor)
            if status == DONE:
                call_hook(self.metrics, "handle_task_done", task)
            elif status == FAILED:
                call_hook(self.metrics, "handle_task_failed", task)
            elif status == DISABLED:
                call_hook(self.metrics, "handle_task_disabled", task, self.settings)
        if status == FAILED:
            self._set_retry(task, now + self.settings.retry_delay)
            if remove_on_failure:
                self._set_remove(task, now)
        self._changes.tasks.add(task.id)

    def _clear_disable(self, task: Task) -> None:
        task.scheduler_disable_time = None
        task.failures = ()
        task.first_failure_time = None
        self._changes.tasks.add(task.id)

    def _re_enable(self, task: Task, now: float) -> None:
        """End a scheduler disable: the task becomes FAILED with a clean failure history."""
        self._clear_disable(task)
        self._set_status(task, FAILED, now)
        self._clear_disable(task)

    def _note_disable(self, task: Task) -> None:
        if not self.settings.batch_emails:
            policy = task.retry_policy
            self._outbox.add(
                "disabled",
                task_id=task.id,
                family=task.family,
                failures=policy.retry_count,
                window=policy.disable_window,
                persist=self.settings.disable_persist,
            )

    # ------------------------------------------------------------------ prune
    def _prune(self, now: float) -> None:
        """One luigid prune cycle (docs/luigi-semantics.md, "Pruning"), touching only workers and tasks that are due.

        Cost: O(workers + running tasks + due timers + newly orphaned tasks), instead of luigid's
        scan of every task.  The per-task rule order (dead runner, removal mark, disable expiry,
        retry, deletion) is preserved because each phase below runs after the previous one.
        A replica's copy never prunes (``CoreState.replica``).
        """
        if self.replica:
            return
        settings = self.settings
        limit = settings.worker_disconnect_delay
        for worker_id in [w.id for w in self._workers.values() if w.last_active + limit < now]:
            self._drop_worker(worker_id)
        assistants = {w.id for w in self._workers.values() if w.assistant}

        # (a) running tasks whose runner is gone, in creation order like luigid's task scan
        # (it decides whether a batch member fails on its own or through its representative)
        running = [*self._by_status[RUNNING].values(), *self._by_status[BATCH_RUNNING].values()]
        running.sort(key=lambda task: task.seq)
        for task in running:
            runner = task.worker_running
            if task.status not in (RUNNING, BATCH_RUNNING) or not runner:
                continue
            if runner not in task.stakeholders and runner not in assistants:
                self._set_worker_running(task, None)
                self._set_status(task, FAILED, now)
                self._set_retry(task, now + settings.retry_delay)

        # (b) tasks nobody cares about any more are marked for deletion
        for task_id in list(self._removal_candidates):
            task = self._tasks.get(task_id)
            if task is None or task.stakeholders or task.remove is not None:
                self._removal_candidates.discard(task_id)
            elif task.status != RUNNING:
                self._removal_candidates.discard(task_id)
                self._set_remove(task, now + settings.remove_delay)

        # (c) scheduler disables expire
        persist = settings.disable_persist
        for at, _seq, task_id in self._disable_timers.pop_due(lambda at: now - at > persist):
            task = self._tasks.get(task_id)
            if task is not None and task.status == DISABLED and task.scheduler_disable_time == at:
                self._re_enable(task, now)

        # (d) failed tasks come back after retry_delay
        if settings.retry_delay >= 0:
            for at, _seq, task_id in self._retry_timers.pop_due(lambda at: at < now):
                task = self._tasks.get(task_id)
                if task is not None and task.status == FAILED and task.retry == at:
                    self._set_status(task, PENDING, now)

        # (e) deletion
        for at, _seq, task_id in self._remove_timers.pop_due(lambda at: at <= now):
            task = self._tasks.get(task_id)
            if task is not None and task.remove == at:
                self._delete_task(task)
