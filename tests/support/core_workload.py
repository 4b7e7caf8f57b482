"""A seeded random workload on a scheduling core, and a recount of every index from scratch.

Shared by the core's index tests and the standby's replica tests: the same mix of every kind of
RPC, prune and passing time drives a leader core, and ``recount_problems`` says where an
incrementally maintained index disagrees with the task table.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from scheduler.core import Scheduler, SchedulerSettings, heaps


class Clock(Protocol):
    def __call__(self) -> float: ...

    def advance(self, seconds: float) -> float: ...


def upstream_disabled(tasks: dict[str, Any], task_id: str, memo: dict[str, bool]) -> bool:
    """Spec: a PENDING task is upstream-disabled if a dep is DISABLED or a PENDING dep is."""
    if task_id in memo:
        return memo[task_id]
    memo[task_id] = False
    task = tasks.get(task_id)
    result = False
    if task is not None:
        if task.status == "DISABLED":
            result = True
        elif task.status == "PENDING":
            result = any(upstream_disabled(tasks, dep, memo) for dep in task.deps if dep in tasks)
    memo[task_id] = result
    return result


def canonical(s: Scheduler) -> dict:
    """A core's ``export()`` in an order-free form, for comparing two cores' states."""
    exported = s.export()
    return {
        "tasks": sorted(exported.tasks, key=lambda row: row["id"]),
        "workers": sorted(exported.workers, key=lambda row: row["id"]),
        "meta": exported.meta,
    }


def recount_problems(s: Scheduler) -> list[str]:
    tasks = s._tasks
    memo: dict[str, bool] = {}
    problems = []
    for worker_id, worker in s._workers.items():
        own = [t for t in tasks.values() if worker_id in t.workers]
        countable = [
            t
            for t in own
            if t.status == "FAILED"
            or (
                t.status == "PENDING" and not any(upstream_disabled(tasks, dep, memo) for dep in t.deps if dep in tasks)
            )
        ]
        expected = (
            len(countable),
            sum(1 for t in countable if len(t.workers) == 1),
            sum(1 for t in countable if list(t.workers)[-1] == worker_id),
        )
        actual = s.count_pending(worker_id)
        got = (actual["n_pending_tasks"], actual["n_unique_pending"], actual["n_pending_last_scheduled"])
        if got != expected:
            problems.append(f"counts of {worker_id}: {got} != {expected}")
        running = sorted(t.id for t in own if t.status == "RUNNING")
        if sorted(entry["task_id"] for entry in actual["running_tasks"]) != running:
            problems.append(f"running tasks of {worker_id}")
        ready_own = {
            t.id
            for t in own
            if t.status == "PENDING" and all(dep in tasks and tasks[dep].status == "DONE" for dep in t.deps)
        }
        live = s._live_for(worker_id)
        if {entry[4] for entry in worker.heap if live(entry)} != ready_own:
            problems.append(f"ready heap of {worker_id}")
    ready = {
        t.id
        for t in tasks.values()
        if t.status == "PENDING" and all(dep in tasks and tasks[dep].status == "DONE" for dep in t.deps)
    }
    runnable = {task_id for task_id in ready if tasks[task_id].runnable}
    needs_nothing = {task_id for task_id in runnable if not tasks[task_id].resources}
    if {entry[4] for entry in s._runnable_heap if s._is_live(entry)} != needs_nothing:
        problems.append("heap of ready tasks some worker may run")
    for need, heap in s._need_heaps.items():
        if any(s._is_live(entry) and heaps.need_key(tasks[entry[4]].resources) != need for entry in heap):
            problems.append(f"a task in the heap of need {need} needs something else")
    in_need_heaps = {entry[4] for heap in s._need_heaps.values() for entry in heap if s._is_live(entry)}
    if in_need_heaps != runnable - needs_nothing:
        problems.append("heaps of ready tasks some worker may run, by resource need")
    if {entry[4] for entry in s._unclaimed_heap if s._is_unclaimed(entry)} != ready - runnable:
        problems.append("heap of ready tasks nobody may run")
    counts = {status: 0 for status in s.status_counts()}
    for task in tasks.values():
        counts[task.status] += 1
    if counts != s.status_counts():
        problems.append("status counts")
    return problems


def random_workload(
    seed: int, steps: int, clock: Clock, after_step: Callable[[Scheduler], None] | None = None
) -> Scheduler:
    """A seeded random mix of every kind of RPC and prune; ``after_step(s)`` runs after each step."""
    rng = random.Random(seed)
    s = Scheduler(
        clock=clock,
        settings=SchedulerSettings(
            retry_delay=20,
            remove_delay=40,
            worker_disconnect_delay=30,
            retry_count=3,
            disable_persist=60,
            resources={"db": 1},
        ),
    )
    workers = ["W1", "W2", "W3"]
    names = [f"T{i}" for i in range(12)]
    running: dict[str, set[str]] = {w: set() for w in workers}
    for step in range(steps):
        clock.advance(0.001)
        worker = rng.choice(workers)
        op = rng.random()
        if op < 0.45:
            index = rng.randrange(len(names))
            deps = [names[j] for j in range(index + 1, len(names)) if rng.random() < 0.2]
            s.add_task(
                task_id=names[index],
                worker=worker,
                family=f"F{index % 2}",
                status=rng.choice(["PENDING"] * 6 + ["DONE", "FAILED", "DISABLED", "UNKNOWN"]),
                deps=deps if rng.random() < 0.7 else None,
                priority=rng.choice([0, 1, 3]),
                resources=rng.choice([None, {}, {"db": 1}]),
                runnable=rng.choice([True, True, False]),
                params={"i": str(index)},
                batchable=True,
            )
        elif op < 0.7:
            reply = s.get_work(worker=worker, current_tasks=sorted(running[worker]), assistant=rng.random() < 0.1)
            if reply["task_id"]:
                running[worker].add(reply["task_id"])
        elif op < 0.82 and running[worker]:
            task_id = rng.choice(sorted(running[worker]))
            running[worker].discard(task_id)
            s.add_task(task_id=task_id, worker=worker, status=rng.choice(["DONE", "FAILED"]), runnable=None)
        elif op < 0.9:
            clock.advance(rng.choice([1, 10, 35]))
            s.ping(worker=worker)
            s.prune()
        elif op < 0.93:
            s.add_task_batcher(worker=worker, task_family="F0", batched_args=["i"], max_batch_size=3)
        elif op < 0.95:
            s.mark_as_done(rng.choice(names))
        elif op < 0.97:
            s.re_enable_task(rng.choice(names))
        elif op < 0.98:
            s.disable_worker(worker)
        else:
            s.forgive_failures(rng.choice(names))
        problems = recount_problems(s)
        assert not problems, f"seed {seed} step {step}: {problems}"
        if after_step is not None:
            after_step(s)
    return s
