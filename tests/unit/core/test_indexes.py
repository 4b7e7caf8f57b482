"""The incremental indexes always agree with a recount from scratch.

``get_work`` and ``count_pending`` read counters and heaps that are maintained incrementally on
every mutation.  These tests drive a scheduler through seeded random workloads (reports,
hand-outs, completions, failures, disables, prunes, time passing) and after every step recompute
each index from the task table alone and compare.
"""

from __future__ import annotations

import pytest
from core_harness import FakeClock

from scheduler.core import Scheduler
from tests.support.core_workload import random_workload, recount_problems


@pytest.mark.parametrize("seed", range(6))
def test_incremental_indexes_match_a_full_recount_after_every_step(seed: int, clock: FakeClock) -> None:
    random_workload(seed, 150, clock)


@pytest.mark.parametrize("seed", range(3))
def test_restore_rebuilds_the_same_indexes_as_incremental_maintenance(seed: int, clock: FakeClock) -> None:
    original = random_workload(100 + seed, 150, clock)
    copy = Scheduler(clock=clock, settings=original.settings)
    copy.restore(original.export())
    assert not recount_problems(copy)
    for worker in ("W1", "W2", "W3"):
        if worker in original._workers:
            assert copy.count_pending(worker) == original.count_pending(worker)
            assert copy.get_work(worker=worker, current_tasks=None) == original.get_work(
                worker=worker, current_tasks=None
            )
