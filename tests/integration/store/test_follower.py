"""A follower (scheduler.follower) keeps a replica core equal to what the leader committed.

Model-based: a seeded random workload (tests.support.core_workload: reports, hand-outs,
completions, failures, disables, prunes of tasks and workers, batchers; plus pause, unpause and
resource changes here) runs on a leader core whose every change goes through the leader's real
writer and lease into a real database. A follower started cold part-way through catches up at
random moments; each time, its core's export equals the leader's.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator

import pytest

from lease import LeaderLease, LeaseTimings
from scheduler.core import Scheduler
from scheduler.follower import Follower, FollowerClosed
from scheduler.store import Store
from scheduler.store.tables import FENCE_FUNCTION, leases
from scheduler.store.writer import BatchWriter, open_writer
from tests.integration.store.helpers import changes, task_row
from tests.support.core_workload import canonical, random_workload, recount_problems

TIMINGS = LeaseTimings(ttl=30, renew_interval=5, renew_deadline=20)
START = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def writer(store: Store) -> Iterator[BatchWriter]:
    lease = LeaderLease(store.engine, "scheduler", "node-a:1:x", TIMINGS, table=leases, fence_function=FENCE_FUNCTION)
    assert lease.try_acquire() == 1
    w = open_writer(store, lease)
    yield w
    w.close()


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("db_url", ["sqlite", "postgres", "mariadb"], indirect=True)
def test_after_catching_up_the_followers_state_equals_the_leaders_export(
    store: Store, writer: BatchWriter, seed: int
) -> None:
    rng = random.Random(seed)
    clock = Clock()
    loop = asyncio.new_event_loop()
    follower: Follower | None = None
    checks = 0

    def commit(leader: Scheduler) -> None:
        nonlocal follower, checks
        roll = rng.random()
        if roll < 0.03:
            leader.pause()
        elif roll < 0.06:
            leader.unpause()
        elif roll < 0.08:
            leader.update_resource("db", rng.choice([1, 2]))
        loop.run_until_complete(writer.apply(leader.take_changes(), 1))
        if follower is None:
            if rng.random() < 0.1:  # a standby that starts cold part-way through
                follower = Follower(store, Scheduler(clock=clock, settings=leader.settings))
                follower.start()
                assert canonical(follower.core) == canonical(leader)
        elif rng.random() < 0.3:
            follower.catch_up()
            assert follower.applied_seq == store.feed_seq()
            assert canonical(follower.core) == canonical(leader)
            assert not follower.core.has_changes()
            checks += 1

    try:
        leader = random_workload(300 + seed, 120, clock, after_step=commit)
    finally:
        loop.close()
    assert follower is not None and checks > 5
    follower.catch_up()
    assert canonical(follower.core) == canonical(leader)
    assert not recount_problems(follower.core)
    follower.close()


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_take_over_reads_the_old_leaders_last_round_and_hands_the_core_over(store: Store, writer: BatchWriter) -> None:
    clock = Clock()
    follower = Follower(store, Scheduler(clock=clock))
    follower.start()
    assert follower.lag_seconds() < 5
    asyncio.run(writer.apply(changes(tasks={"A": task_row("A")}), 1))
    follower.catch_up()
    asyncio.run(writer.apply(changes(tasks={"B": task_row("B")}), 1))  # the old leader's last round
    core = follower.take_over()
    assert sorted(row["id"] for row in core.export().tasks) == ["A", "B"]
    with pytest.raises(FollowerClosed):
        follower.catch_up()


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_lag_is_the_time_since_the_last_complete_read_began(store: Store, writer: BatchWriter) -> None:
    ticks = [100.0]
    follower = Follower(store, Scheduler(), clock=lambda: ticks[0])
    assert follower.lag_seconds() == float("inf")  # never caught up
    follower.start()
    ticks[0] = 102.5
    assert follower.lag_seconds() == 2.5  # nothing read since: up to 2.5 s of commits may be missing
    follower.catch_up()
    assert follower.lag_seconds() == 0.0
    ticks[0] = 103.0
    assert follower.lag_seconds() == 0.5


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_on_postgres_a_commit_wakes_the_waiting_follower(store: Store, writer: BatchWriter) -> None:
    follower = Follower(store, Scheduler())
    follower.start()
    try:
        assert follower.wait_for_commit(0.05) is False  # opens the listener; nothing committed
        committer = threading.Timer(0.2, lambda: asyncio.run(writer.apply(changes(tasks={"A": task_row("A")}), 1)))
        started = time.monotonic()
        committer.start()
        assert follower.wait_for_commit(10) is True
        assert time.monotonic() - started < 5
        committer.join()
        follower.catch_up()
        assert [row["id"] for row in follower.core.export().tasks] == ["A"]
    finally:
        follower.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_follower_behind_the_pruned_tombstones_loads_everything_again(
    store: Store, writer: BatchWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from scheduler.store import feed
    from scheduler.store.tables import tombstones

    follower = Follower(store, Scheduler())
    follower.start()
    asyncio.run(writer.apply(changes(tasks={"A": task_row("A"), "B": task_row("B")}), 1))
    asyncio.run(writer.apply(changes(tasks={"A": None}), 1))
    with store.engine.begin() as conn:
        conn.execute(sa.update(tombstones).values(at=time.time() - feed.TOMBSTONE_RETENTION - 60))
    monkeypatch.setattr(feed, "PRUNE_EVERY", 1)
    asyncio.run(writer.apply(changes(tasks={"C": task_row("C")}), 1))  # prunes A's tombstone
    follower.catch_up()
    assert follower.reloads == 1
    assert sorted(row["id"] for row in follower.core.export().tasks) == ["B", "C"]
    assert follower.applied_seq == store.feed_seq() == 3
