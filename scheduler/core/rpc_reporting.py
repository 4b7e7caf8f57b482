"""RPCs called from inside a running task's process, and scheduler -> task messages.

Status messages, progress and resource decreases reported by a batch representative are copied
to its BATCH_RUNNING siblings so the visualiser shows them on every member.
"""

from __future__ import annotations

import uuid
from typing import Any

from . import validation as check
from .constants import RUNNING
from .entities import Task
from .metrics import call_hook
from .rpc_worker import WorkerRPCs


class ReportingRPCs(WorkerRPCs):
    def _running_batch_siblings(self, task: Task) -> list[Task]:
        if task.status == RUNNING and task.batch_id is not None:
            return self._batch_siblings(task.batch_id)
        return []

    def set_task_status_message(self, task_id: Any, status_message: Any) -> None:
        task_id = check.text("set_task_status_message", "task_id", task_id)
        status_message = check.scalar("set_task_status_message", "status_message", status_message)
        task = self._tasks.get(task_id)
        if task is not None:
            for target in [task, *self._running_batch_siblings(task)]:
                target.status_message = status_message
                self._changes.tasks.add(target.id)

    def get_task_status_message(self, task_id: Any) -> dict[str, Any]:
        task_id = check.text("get_task_status_message", "task_id", task_id)
        task = self._tasks.get(task_id)
        return {"taskId": task_id, "statusMessage": task.status_message if task is not None else ""}

    def set_task_progress_percentage(self, task_id: Any, progress_percentage: Any) -> None:
        m = "set_task_progress_percentage"
        task_id = check.text(m, "task_id", task_id)
        if progress_percentage is not None and not check.is_finite_number(progress_percentage):
            raise check.fail(m, "progress_percentage", "a number or null", progress_percentage)
        task = self._tasks.get(task_id)
        if task is not None:
            for target in [task, *self._running_batch_siblings(task)]:
                target.progress_percentage = progress_percentage
                self._changes.tasks.add(target.id)

    def get_task_progress_percentage(self, task_id: Any) -> dict[str, Any]:
        task_id = check.text("get_task_progress_percentage", "task_id", task_id)
        task = self._tasks.get(task_id)
        return {
            "taskId": task_id,
            "progressPercentage": task.progress_percentage if task is not None else None,
        }

    def decrease_running_task_resources(self, task_id: Any, decrease_resources: Any) -> None:
        """Lower what a RUNNING task holds (never below 0), and its batch siblings' holdings."""
        m = "decrease_running_task_resources"
        task_id = check.text(m, "task_id", task_id)
        decrease = check.amounts(m, "decrease_resources", decrease_resources) or {}
        task = self._tasks.get(task_id)
        if task is None or task.status != RUNNING:
            return None
        for target in [task, *self._running_batch_siblings(task)]:
            holding = target.resources_running
            if holding is None:
                continue
            for name, amount in decrease.items():
                if amount > 0 and name in holding:
                    holding[name] = max(0, holding[name] - amount)
            self._changes.tasks.add(target.id)
        return None

    def get_running_task_resources(self, task_id: Any) -> dict[str, Any]:
        task_id = check.text("get_running_task_resources", "task_id", task_id)
        task = self._tasks.get(task_id)
        resources = None if task is None or task.resources_running is None else dict(task.resources_running)
        return {"taskId": task_id, "resources": resources}

    def report_task_statistics(self, task_id: Any, statistics: Any) -> None:
        task_id = check.text("report_task_statistics", "task_id", task_id)
        task = self._tasks.get(task_id)
        if task is not None:
            call_hook(self.metrics, "handle_task_statistics", task, statistics)

    def update_metrics_task_started(self, task: Any) -> None:
        """In-process only (luigid exposes it over HTTP by accident; it cannot work there)."""
        call_hook(self.metrics, "handle_task_started", task)

    # ------------------------------------------------------------------ messages
    def send_scheduler_message(self, worker: Any, task: Any, content: Any) -> dict[str, Any]:
        """Queue a message for a running task; its worker picks it up with the next ping."""
        m = "send_scheduler_message"
        worker_id = check.worker_id(m, worker)
        task_id = check.text(m, "task", task)
        if not self.settings.send_messages:
            return {"message_id": None}
        message_id = str(uuid.uuid4())
        record = self._get_worker(worker_id, self._now())
        record.rpc_messages.append(
            {
                "name": "dispatch_scheduler_message",
                "kwargs": {"task_id": task_id, "message_id": message_id, "content": content},
            }
        )
        self._changes.workers.add(worker_id)
        return {"message_id": message_id}

    def add_scheduler_message_response(self, task_id: Any, message_id: Any, response: Any) -> None:
        m = "add_scheduler_message_response"
        task_id = check.text(m, "task_id", task_id)
        message_id = check.text(m, "message_id", message_id)
        task = self._tasks.get(task_id)
        if task is not None:
            task.scheduler_message_responses[message_id] = response
            self._changes.tasks.add(task_id)

    def get_scheduler_message_response(self, task_id: Any, message_id: Any) -> dict[str, Any]:
        """Return the task's answer once: reading it removes it (as in luigid)."""
        m = "get_scheduler_message_response"
        task_id = check.text(m, "task_id", task_id)
        message_id = check.text(m, "message_id", message_id)
        task = self._tasks.get(task_id)
        response = None
        if task is not None and message_id in task.scheduler_message_responses:
            response = task.scheduler_message_responses.pop(message_id)
            self._changes.tasks.add(task_id)
        return {"response": response}

    def set_worker_processes(self, worker: Any, n: Any) -> None:
        """Ask a worker (through its next ping) to change its number of processes."""
        m = "set_worker_processes"
        worker_id = check.worker_id(m, worker)
        if isinstance(n, bool) or not isinstance(n, int):
            raise check.fail(m, "n", "an integer", n)
        record = self._get_worker(worker_id, self._now())
        record.rpc_messages.append({"name": "set_worker_processes", "kwargs": {"n": n}})
        self._changes.workers.add(worker_id)
