"""get_work's indexed choice is the task luigid's plain loop would choose.

luigid walks every PENDING and RUNNING task in rank order on each call, reserving greedy slots
and resources for the workers that will want them. The core reaches the same answer through
heaps (scheduler/core/selection.py). Here a reference written straight from luigid's loop runs
next to the core on random workloads (assistants, tasks nobody may run, resources, workers with
several processes) and every choice must agree.
"""

from __future__ import annotations

import random
from itertools import chain
from typing import Any

import pytest
from core_harness import FakeClock

from scheduler.core import Scheduler, SchedulerSettings

RESOURCES = {"db": 1, "cpu": 2}


def _fits(needed: dict[str, Any] | None, counted: dict[str, float]) -> bool:
    return all(amount + counted.get(name, 0) <= RESOURCES.get(name, 1) for name, amount in (needed or {}).items())


def _add(total: dict[str, float], resources: dict[str, Any] | None) -> None:
    for name, amount in (resources or {}).items():
        total[name] = total.get(name, 0) + amount


def luigid_choice(s: Scheduler, worker_id: str, assistant: bool, now: float) -> str | None:
    """luigid 3.8's selection loop (scheduler.py ``get_work``), without its indexes."""
    tasks = sorted(
        (t for t in s._tasks.values() if t.status in ("PENDING", "RUNNING")),
        key=lambda t: (-t.priority, t.time, t.seq),
    )
    used: dict[str, float] = {}
    for task in tasks:
        if task.status == "RUNNING":
            _add(used, task.resources_running if task.resources_running is not None else task.resources)
    limit = now - s.settings.worker_disconnect_delay
    greedy_workers = {
        w.id: w.greedy_slots() for w in s._workers.values() if w.last_get_work is not None and w.last_get_work > limit
    }
    greedy: dict[str, float] = {}
    for task in tasks:
        if task.status == "RUNNING":
            if task.worker_running in greedy_workers:
                greedy_workers[task.worker_running] -= 1
                _add(greedy, task.resources_running if task.resources_running is not None else task.resources)
            continue
        if not task.ready or not _fits(task.resources, greedy):
            continue
        if ((assistant and task.runnable) or worker_id in task.workers) and _fits(task.resources, used):
            return task.id
        for candidate in chain(task.workers, [worker_id] if assistant else []):
            if greedy_workers.get(candidate, 0) > 0:
                greedy_workers[candidate] -= 1
                _add(greedy, task.resources)
                break
    return None


def run_workload(seed: int, steps: int, clock: FakeClock) -> int:
    """Random calls; every choice the core makes is checked against the reference. Returns how
    many choices were checked."""
    rng = random.Random(seed)
    s = Scheduler(clock=clock, settings=SchedulerSettings(worker_disconnect_delay=30, resources=RESOURCES))
    checked = 0
    original = s._choose_task

    def choose(worker: Any, assistant: bool, now: float) -> Any:
        nonlocal checked
        expected = luigid_choice(s, worker.id, assistant, now)
        got = original(worker, assistant, now)
        assert (got.id if got is not None else None) == expected, f"seed {seed}: {worker.id} assistant={assistant}"
        checked += 1
        return got

    s._choose_task = choose  # type: ignore[method-assign]
    workers = ["W1", "W2", "W3", "Helper1", "Helper2"]
    for name in workers:
        s.add_worker(worker=name, info={"workers": rng.choice([1, 1, 2, 3])})
    names = [f"T{i}" for i in range(40)]
    running: dict[str, set[str]] = {w: set() for w in workers}
    for _ in range(steps):
        clock.advance(0.01)
        worker = rng.choice(workers)
        op = rng.random()
        if op < 0.45:
            index = rng.randrange(len(names))
            deps = [names[j] for j in range(index + 1, len(names)) if rng.random() < 0.1]
            s.add_task(
                task_id=names[index],
                worker=worker,
                family=f"F{index % 3}",
                status=rng.choice(["PENDING"] * 8 + ["DONE", "FAILED"]),
                deps=deps,
                priority=rng.choice([0, 0, 1, 5]),
                resources=rng.choice([None, None, {"db": 1}, {"cpu": 1}, {"cpu": 2}]),
                runnable=rng.random() < 0.6,
            )
        elif op < 0.8:
            assistant = worker.startswith("Helper") or rng.random() < 0.1
            reply = s.get_work(worker=worker, current_tasks=sorted(running[worker]), assistant=assistant)
            if reply["task_id"]:
                running[worker].add(reply["task_id"])
        elif op < 0.95 and running[worker]:
            task_id = rng.choice(sorted(running[worker]))
            running[worker].discard(task_id)
            s.add_task(task_id=task_id, worker=worker, status=rng.choice(["DONE", "DONE", "FAILED"]), runnable=None)
        else:
            clock.advance(rng.choice([5, 40]))
            s.ping(worker=worker)
            s.prune()
    return checked


@pytest.mark.parametrize("seed", range(40))
def test_every_choice_matches_luigids_loop(seed: int, clock: FakeClock) -> None:
    assert run_workload(seed, 400, clock) > 50
