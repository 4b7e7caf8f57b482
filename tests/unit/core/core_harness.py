"""Test helpers for the scheduling-core specification tests (a uniquely named module, so test
files can import it without depending on which ``conftest`` Python saw first).

Every test drives a real ``Scheduler`` with an injected fake clock, so time-based rules
(retry_delay, cooldown, worker_disconnect_delay, ...) are exercised by moving the clock, never
by sleeping.
"""

from __future__ import annotations

from typing import Any

from scheduler.core import Scheduler

START = 1_700_000_000.0


class FakeClock:
    """A settable time source: ``clock()`` returns the current fake epoch seconds."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class RecordingMetrics:
    """Metrics hooks that remember every call as ``(hook name, task id)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def handle_task_started(self, task: Any) -> None:
        self.calls.append(("started", task.id))

    def handle_task_failed(self, task: Any) -> None:
        self.calls.append(("failed", task.id))

    def handle_task_disabled(self, task: Any, config: Any) -> None:
        self.calls.append(("disabled", task.id))

    def handle_task_done(self, task: Any) -> None:
        self.calls.append(("done", task.id))


class Harness:
    """A scheduler plus its clock, with shorthands for the calls a luigi worker makes."""

    def __init__(self, scheduler: Scheduler, clock: FakeClock) -> None:
        self.s = scheduler
        self.clock = clock
        self.running: dict[str, set[str]] = {}  # what each fake worker knows it runs

    def add(self, task_id: str, worker: str = "W1", **kwargs: Any) -> None:
        kwargs.setdefault("family", task_id.split("_")[0])
        self.s.add_task(task_id=task_id, worker=worker, **kwargs)

    def work(self, worker: str = "W1", **kwargs: Any) -> dict[str, Any]:
        """get_work as an honest luigi worker sends it: ``current_tasks`` = what it runs."""
        mine = self.running.setdefault(worker, set())
        kwargs.setdefault("current_tasks", sorted(mine))
        kwargs.setdefault("host", "host1")
        reply = self.s.get_work(worker=worker, **kwargs)
        if reply["task_id"] is not None:
            mine.add(reply["task_id"])
        return reply

    def next_id(self, worker: str = "W1", **kwargs: Any) -> str | None:
        return self.work(worker, **kwargs)["task_id"]

    def finish(self, task_id: str, worker: str = "W1", status: str = "DONE", **kwargs: Any) -> None:
        """The completion report luigi's worker sends (``runnable=None``, ``priority=0``)."""
        self.running.get(worker, set()).discard(task_id)
        self.s.add_task(
            task_id=task_id,
            worker=worker,
            status=status,
            runnable=None,
            priority=0,
            expl='"done"' if status == "DONE" else '"Traceback: boom"',
            **kwargs,
        )

    def status(self, task_id: str) -> str | None:
        task = self.s._tasks.get(task_id)
        return None if task is None else task.status

    def counts(self, worker: str = "W1") -> tuple[int, int, int]:
        reply = self.s.count_pending(worker)
        return reply["n_pending_tasks"], reply["n_unique_pending"], reply["n_pending_last_scheduled"]
