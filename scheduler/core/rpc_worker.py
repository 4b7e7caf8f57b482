"""The RPCs a luigi worker drives: registering tasks and workers, asking for work, keep-alive.

Signatures (names, order, defaults) are luigid 3.8.1's, because luigi's worker calls some of
them positionally and its HTTP client sends every parameter with client-side defaults filled in.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import validation as check
from .bookkeeping import Actor
from .constants import (
    BATCH_RUNNING,
    DISABLED,
    DONE,
    FAILED,
    PENDING,
    REPORTABLE_STATUSES,
    RUNNING,
    SUSPENDED,
    UNKNOWN,
    WORKER_STATE_ACTIVE,
    WORKER_STATE_DISABLED,
)
from .entities import Task, Worker
from .metrics import call_hook
from .notifications import decode_expl
from .retry import merge_policy
from .selection import Selection


class WorkerRPCs(Selection):
    def add_task(
        self,
        task_id: Any = None,
        status: Any = PENDING,
        runnable: Any = True,
        deps: Any = None,
        new_deps: Any = None,
        expl: Any = None,
        resources: Any = None,
        priority: Any = 0,
        family: Any = "",
        module: Any = None,
        params: Any = None,
        param_visibilities: Any = None,
        accepts_messages: Any = False,
        assistant: Any = False,
        tracking_url: Any = None,
        worker: Any = None,
        batchable: Any = None,
        batch_id: Any = None,
        retry_policy_dict: Any = None,
        owners: Any = None,
        **kwargs: Any,
    ) -> None:
        """Register or update a task and what this worker knows about it (docs/luigi-semantics.md, "add_task").

        Deviations from luigid, all fixes of its quirks (protocol section 8):

        * A RUNNING report from the task's runner (the tracking-URL update, or a batch
          representative) does not wipe state with its defaulted arguments: ``resources=None``
          leaves the declared resources unchanged, ``accepts_messages=False`` does not clear the
          flag, and ``retry_policy_dict=None`` keeps the task's retry policy (quirks 1 and 2).
        * A batch representative whose batch has no BATCH_RUNNING member left takes its own
          declared resources as ``resources_running`` instead of failing with an error.
        """
        m = "add_task"
        worker_id = check.worker_id(m, worker)
        task_id = check.identifier(m, "task_id", task_id)
        status = check.text(m, "status", status)
        if status not in REPORTABLE_STATUSES:
            raise check.fail(m, "status", f"one of {sorted(REPORTABLE_STATUSES)}", status)
        runnable = check.optional_flag(m, "runnable", runnable)
        deps = check.id_list(m, "deps", deps)
        new_deps = check.id_list(m, "new_deps", new_deps)
        if expl is not None and not isinstance(expl, str) and not self._wire_input:
            expl = str(expl)  # in-process luigi passes the exception itself; luigid stores it
        expl = check.optional_text(m, "expl", expl)
        resources = check.amounts(m, "resources", resources)
        priority = check.number(m, "priority", priority)
        family = "" if family is None else check.text(m, "family", family)
        module = check.optional_text(m, "module", module)
        params = check.str_mapping(m, "params", params)
        param_visibilities = check.str_mapping(m, "param_visibilities", param_visibilities)
        accepts_messages = check.optional_flag(m, "accepts_messages", accepts_messages)
        assistant = check.flag(m, "assistant", assistant)
        tracking_url = check.optional_text(m, "tracking_url", tracking_url)
        batchable = check.optional_flag(m, "batchable", batchable)
        batch_id = check.optional_text(m, "batch_id", batch_id)
        policy_overrides = check.retry_policy(m, retry_policy_dict)
        if owners is not None and not isinstance(owners, list | tuple):
            raise check.fail(m, "owners", "a list of strings", owners)

        now = self._now()
        worker_record = self._get_worker(worker_id, now)
        worker_record.last_active = now
        actor: Actor = (worker_id, _host(worker_record))
        policy = merge_policy(self._default_policy, policy_overrides)

        task = self._tasks.get(task_id)
        created = task is None
        if task is None:
            if worker_record.disabled:
                return None
            task = self._create_task(
                task_id,
                PENDING,
                now,
                deps=deps,
                priority=priority,
                family=family,
                module=module,
                params=params,
                param_visibilities=param_visibilities,
                resources=resources,
            )
            self._event(task, PENDING, now, actor)
        elif worker_record.disabled and task.status != RUNNING:
            return None

        # A stale "incomplete" check must not re-open a task that has only just finished.
        if status == PENDING and task.status == DONE and now - task.updated < self.settings.stable_done_cooldown_secs:
            return None

        # Placeholders (created for priority or as deps) learn what they are.
        if not task.family and family:
            self._set_family(task, family)
        if not task.module:
            task.module = module
        if not task.param_visibilities:
            task.param_visibilities = dict(param_visibilities or {})
        if not task.params:
            task.params = dict(params or {})

        if batch_id is not None:
            self._set_batch_id(task, batch_id)
        if status == RUNNING and not task.worker_running:
            self._set_worker_running(task, worker_id)
            if batch_id:
                siblings = self._batch_siblings(batch_id)
                source = siblings[0].resources_running if siblings else None
                task.resources_running = dict(source if source is not None else task.resources)
            task.time_running = now
        runner_report = status == RUNNING and task.worker_running == worker_id and not created

        if accepts_messages is not None and (accepts_messages or not runner_report):
            task.accepts_messages = accepts_messages
        if tracking_url is not None or task.status != RUNNING:
            task.tracking_url = tracking_url
            self._copy_to_siblings(task, "tracking_url", tracking_url)
        if batchable is not None:
            task.batchable = batchable
        if task.remove is not None:
            self._set_remove(task, None)
        if expl is not None:
            task.expl = expl
            self._copy_to_siblings(task, "expl", expl)

        # The lock: only the runner may end or restart a run (or a report adding new deps).
        not_running = task.status not in (RUNNING, BATCH_RUNNING)
        ends_or_starts_run = status in (DONE, FAILED, RUNNING)
        if not_running or (ends_or_starts_run and task.worker_running == worker_id) or new_deps:
            self._set_status(task, PENDING if status == SUSPENDED else status, now, actor)

        if status == FAILED and self.settings.batch_emails:
            self._queue_failure_notice(task, worker_id, family, expl, owners)

        if deps is not None:
            self._replace_deps(task, deps)
        if new_deps is not None:
            self._add_deps(task, new_deps)
        if resources is not None or not runner_report:
            self._set_resources(task, dict(resources or {}))

        if worker_record.enabled and not assistant:
            self._add_stakeholder(task, worker_id)
            # Deps may be reported later; placeholders keep them (and their priority) alive.
            for dep_id in list(task.deps):
                dep = self._tasks.get(dep_id)
                if dep is None:
                    dep = self._create_task(dep_id, UNKNOWN, now, priority=priority)
                self._add_stakeholder(dep, worker_id)

        self._raise_priority(task, priority)
        if policy_overrides is not None or not runner_report:
            task.retry_policy = policy

        if runnable and status != FAILED and worker_record.enabled:
            self._add_runnable_worker(task, worker_id)
            self._mark_runnable(task)
        self._changes.tasks.add(task.id)
        return None

    def _copy_to_siblings(self, task: Task, field: str, value: Any) -> None:
        if task.batch_id is not None:
            for sibling in self._batch_siblings(task.batch_id):
                setattr(sibling, field, value)
                self._changes.tasks.add(sibling.id)

    def _raise_priority(self, task: Task, priority: float) -> None:
        """Priority is never lowered, and a raise is pushed down to every lower-priority dep."""
        tasks = self._tasks
        stack = [(task, priority)]
        while stack:
            current, wanted = stack.pop()
            wanted = max(wanted, current.priority)
            if wanted != current.priority:
                self._set_priority(current, wanted)
            for dep_id in current.deps:
                dep = tasks.get(dep_id)
                if dep is not None and wanted > dep.priority:
                    stack.append((dep, wanted))

    def _queue_failure_notice(self, task: Task, worker_id: str, family: str, expl: str | None, owners: Any) -> None:
        names, _size = self._batchers.get(worker_id, {}).get(family, (None, 1))
        shown = {k: v for k, v in task.params.items() if not names or k not in names}
        owners_list = list(owners or ())
        self._outbox.add(
            "failure",
            task=task.display_name,
            family=task.family,
            params=shown,
            expl=decode_expl(expl),
            owners=owners_list,
        )
        if task.status == DISABLED:
            self._outbox.add("disable", task=task.display_name, family=task.family, params=shown, owners=owners_list)

    def add_task_batcher(
        self, worker: Any, task_family: Any, batched_args: Any, max_batch_size: Any = float("inf")
    ) -> None:
        """Remember which params of a family this worker batches, and the batch size limit.

        Deviation: the worker record is created here (luigid only stores the batcher) so the
        batcher is persisted with the worker row from the moment it is acknowledged.
        """
        m = "add_task_batcher"
        worker_id = check.worker_id(m, worker)
        family = check.text(m, "task_family", task_family)
        names = check.id_list(m, "batched_args", batched_args)
        if names is None:
            raise check.fail(m, "batched_args", "a list of strings", batched_args)
        size = check.batch_size(m, max_batch_size)
        self._get_worker(worker_id, self._now())
        per_worker = self._batchers.setdefault(worker_id, {})
        if per_worker.get(family) != (names, size):
            per_worker[family] = (names, size)
            self._changes.workers.add(worker_id)

    def announce_scheduling_failure(
        self, task_name: Any, family: Any, params: Any, expl: Any, owners: Any, **kwargs: Any
    ) -> None:
        """Queue a scheduling-failure notice when ``batch_emails`` is on; otherwise nothing."""
        m = "announce_scheduling_failure"
        family = check.text(m, "family", family)
        params = check.str_mapping(m, "params", params) or {}
        if not self.settings.batch_emails:
            return None
        names, _size = self._batchers.get(kwargs.get("worker") or "", {}).get(family, (None, 1))
        shown = {k: v for k, v in params.items() if not names or k not in names}
        self._outbox.add(
            "scheduling_failure",
            task=task_name,
            family=family,
            params=shown,
            expl=decode_expl(expl),
            owners=list(owners or ()),
        )
        return None

    def add_worker(self, worker: Any, info: Any, **kwargs: Any) -> None:
        """Merge ``info`` (pairs or an object) into the worker's info.  Does not refresh liveness."""
        m = "add_worker"
        worker_id = check.worker_id(m, worker)
        merged = check.worker_info(m, info)
        record = self._get_worker(worker_id, self._now())
        self._merge_info(record, merged)

    def _merge_info(self, record: Worker, info: dict[str, Any]) -> None:
        changed = any(record.info.get(key, _MISSING) != value for key, value in info.items())
        if changed:
            record.info.update(info)
            self._changes.workers.add(record.id)

    def count_pending(self, worker: Any) -> dict[str, Any]:
        """Pending counts for a worker, O(its running tasks), from the per-worker counters."""
        worker_id = check.worker_id("count_pending", worker)
        return self._count_reply(self._get_worker(worker_id, self._now()))

    def _count_reply(self, worker: Worker) -> dict[str, Any]:
        running = []
        tasks = self._tasks
        for task_id in worker.running:
            runner = tasks[task_id].worker_running
            entry: dict[str, Any] = {"task_id": task_id, "worker": runner}
            runner_record = self._workers.get(runner) if runner is not None else None
            if runner_record is not None:
                entry.update(runner_record.info)
            running.append(entry)
        return {
            "n_pending_tasks": worker.n_pending,
            "n_unique_pending": worker.n_unique,
            "n_pending_last_scheduled": worker.n_last,
            "worker_state": WORKER_STATE_DISABLED if worker.disabled else WORKER_STATE_ACTIVE,
            "running_tasks": running,
        }

    def get_work(
        self,
        host: Any = None,
        assistant: Any = False,
        current_tasks: Any = None,
        worker: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Hand out the best task (or a batch) to a worker (docs/luigi-semantics.md, "get_work").

        Cost for a trivial worker: amortised O(log n) plus the worker's running tasks; see
        ``selection`` for the greedy case.  Deviation: a runner id in ``running_tasks`` that is
        no longer registered is reported without info instead of being re-created as a worker.
        """
        m = "get_work"
        worker_id = check.worker_id(m, worker)
        host = check.optional_text(m, "host", host)
        assistant = check.flag(m, "assistant", assistant)
        current = check.id_list(m, "current_tasks", current_tasks)

        now = self._now()
        if self.settings.prune_on_get_work:
            self._prune(now)
        record = self._get_worker(worker_id, now)
        reference = {"host": host}
        if record.reference != reference:
            record.reference = reference
            self._changes.workers.add(worker_id)
        record.last_active = now
        record.last_get_work = now
        if record.disabled:
            return {
                "n_pending_tasks": 0,
                "running_tasks": [],
                "task_id": None,
                "n_unique_pending": 0,
                "worker_state": WORKER_STATE_DISABLED,
            }
        if assistant:
            self._merge_info(record, {"assistant": assistant})
        actor: Actor = (worker_id, host)

        best: Task | None = None
        if current is not None:
            best = self._lost_assignment(worker_id, set(current))
            self._reset_orphaned_batch_members(worker_id, now, actor)
        retransmission = best is not None
        batch = None
        if best is None and not self._paused:
            trivial = self._is_trivial(record)
            best = self._choose_task(record, assistant, now)
            if best is not None:
                batch = self._collect_batch(record, best, trivial)

        reply = self._count_reply(record)
        if best is not None and batch is not None and len(batch[0]) > 1:
            members, batched = batch
            member_ids = [task.id for task in members]
            batch_id = hashlib.md5("|".join(member_ids).encode("utf-8"), usedforsecurity=False).hexdigest()
            for task in members:
                self._set_status(task, BATCH_RUNNING, now, actor)
                self._set_batch_id(task, batch_id)
                self._set_worker_running(task, worker_id)
                task.resources_running = dict(task.resources)
                task.time_running = now
            params = dict(best.params)
            params.update(batched)
            reply.update(
                task_id=None,
                task_family=best.family,
                task_module=best.module,
                task_params=params,
                batch_id=batch_id,
                batch_task_ids=member_ids,
            )
        elif best is not None:
            self._set_status(best, RUNNING, now, actor)
            self._set_worker_running(best, worker_id)
            best.resources_running = dict(best.resources)
            best.time_running = now
            if retransmission:
                self._event(best, RUNNING, now, actor)
            call_hook(self.metrics, "handle_task_started", best)
            reply.update(
                task_id=best.id,
                task_family=best.family,
                task_module=best.module,
                task_params=dict(best.params),
            )
        else:
            reply["task_id"] = None
        return reply

    def _lost_assignment(self, worker_id: str, current: set[str]) -> Task | None:
        """The best-ranked task RUNNING on this worker that the worker does not know it runs."""
        tasks = self._tasks
        lost = [tasks[task_id] for task_id in self._run_by.get(worker_id, ()) if task_id not in current]
        if not lost:
            return None
        return min(lost, key=lambda task: (-task.priority, task.time, task.seq))

    def _reset_orphaned_batch_members(self, worker_id: str, now: float, actor: Actor) -> None:
        """BATCH_RUNNING members whose batch never got a RUNNING representative go back to PENDING."""
        tasks = self._tasks
        members = self._batch_run_by.get(worker_id)
        if not members:
            return
        live_batches = {tasks[task_id].batch_id for task_id in self._run_by.get(worker_id, ())}
        for task_id in list(members):
            task = tasks[task_id]
            if task.batch_id not in live_batches:
                self._set_status(task, PENDING, now, actor)

    def ping(self, **kwargs: Any) -> dict[str, Any]:
        """Keep-alive: refresh liveness (memory only) and drain the worker's message queue."""
        worker_id = check.worker_id("ping", kwargs.get("worker"))
        now = self._now()
        record = self._get_worker(worker_id, now)
        record.last_active = now
        messages, record.rpc_messages = record.rpc_messages, []
        if messages:
            self._changes.workers.add(record.id)  # delivered: the next leader must not resend them
        return {"rpc_messages": messages}


_MISSING = object()


def _host(worker: Worker) -> str | None:
    reference = worker.reference
    if reference:
        host = reference.get("host")
        return host if isinstance(host, str) else None
    return None
