"""A replica core fed the leader's committed rows ends up in the leader's state, indexes and all.

The feed (``Scheduler.apply_feed``) carries whole current rows and the ids deleted since the
last batch. These tests run the seeded random workloads of ``tests.support.core_workload`` on a leader core and
hand the rows of each commit (``take_changes``) to a replica, sometimes one commit at a time and
sometimes several commits merged into one batch (a standby that fell behind reads them as one).
"""

from __future__ import annotations

import random

import pytest
from core_harness import FakeClock

from scheduler.core import Changes, FeedBatch, Scheduler
from tests.support.core_workload import canonical, random_workload, recount_problems


def feed_of(changes: list[Changes]) -> FeedBatch:
    """The feed batch a store returns for these commits: the newest row per id, or its deletion."""
    tasks: dict[str, dict | None] = {}
    workers: dict[str, dict | None] = {}
    meta: dict[str, object] = {}
    for change in changes:
        tasks.update(change.tasks)
        workers.update(change.workers)
        meta.update(change.meta)
    return FeedBatch(
        tasks=[row for row in tasks.values() if row is not None],
        task_deletes=[task_id for task_id, row in tasks.items() if row is None],
        workers=[row for row in workers.values() if row is not None],
        worker_deletes=[worker_id for worker_id, row in workers.items() if row is None],
        meta=meta,
    )


@pytest.mark.parametrize("seed", range(8))
def test_a_replica_fed_every_commit_exports_what_the_leader_exports(seed: int, clock: FakeClock) -> None:
    rng = random.Random(seed)
    replica: Scheduler | None = None
    pending: list[Changes] = []

    def commit(leader: Scheduler) -> None:
        nonlocal replica
        if replica is None:
            replica = Scheduler(clock=clock, settings=leader.settings)
        roll = rng.random()
        if roll < 0.04:
            leader.pause()
        elif roll < 0.08:
            leader.unpause()
        elif roll < 0.1:
            leader.update_resource("db", rng.choice([1, 2]))
        pending.append(leader.take_changes())
        if rng.random() < 0.6:  # otherwise the replica is behind and reads several commits at once
            replica.apply_feed(feed_of(pending))
            pending.clear()
            assert canonical(replica) == canonical(leader)
            assert not recount_problems(replica)
            assert not replica.has_changes()

    leader = random_workload(200 + seed, 150, clock, after_step=commit)
    assert replica is not None
    replica.apply_feed(feed_of(pending))
    assert canonical(replica) == canonical(leader)


def test_a_promoted_replica_hands_out_the_same_work_as_the_leader(clock: FakeClock) -> None:
    replica: Scheduler | None = None

    def commit(leader: Scheduler) -> None:
        nonlocal replica
        if replica is None:
            replica = Scheduler(clock=clock, settings=leader.settings)
        replica.apply_feed(feed_of([leader.take_changes()]))

    leader = random_workload(7, 200, clock, after_step=commit)
    assert replica is not None
    for worker in ("W1", "W2", "W3"):
        if worker in leader._workers:
            assert replica.count_pending(worker) == leader.count_pending(worker)
            assert replica.get_work(worker=worker, current_tasks=None) == leader.get_work(
                worker=worker, current_tasks=None
            )


def test_pause_and_resources_follow_the_leader(clock: FakeClock) -> None:
    leader = Scheduler(clock=clock, resources={"db": 2})
    replica = Scheduler(clock=clock, resources={"db": 2})
    leader.pause()
    leader.update_resource("db", 5)
    replica.apply_feed(feed_of([leader.take_changes()]))
    assert replica.is_paused() == {"paused": True}
    assert replica.resource_list() == leader.resource_list()
    leader.unpause()
    replica.apply_feed(feed_of([leader.take_changes()]))
    assert replica.is_paused() == {"paused": False}
