"""What a following standby answers, offline: reads from its copy within the lag bound, 503 otherwise."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.core import FeedBatch, Scheduler
from scheduler.follower import Follower
from scheduler.node import NotLeader, Role
from scheduler.store.feed import FeedRead
from tests.unit.node.fakes import Harness


def following(h: Harness, max_lag: float = 5.0) -> Follower:
    """Give the harness's node a follower whose copy holds one task, caught up now."""
    core = Scheduler()
    core.add_task(task_id="T1", worker="w1", family="T")
    core.take_changes()
    core.replica = True
    follower = Follower(h.store, core, clock=h.clock)  # type: ignore[arg-type]
    follower.apply(h.clock(), FeedRead(seq=7, batch=FeedBatch()))
    h.node._follower = follower
    h.node.replica_max_lag = max_lag
    h.node.roles.to(Role.FOLLOWING)
    return follower


def test_a_following_standby_answers_reads_from_its_copy_and_503_to_writes() -> None:
    async def scenario() -> None:
        h = Harness()
        following(h)
        listing = await h.node.call("task_list", {"limit": False})
        assert set(listing) == {"T1"}
        chunks = await h.node.call("task_list_chunks", {"limit": False})
        assert isinstance(chunks, list) and "T1" in "".join(chunks)
        for method, kwargs in [("add_task", {"task_id": "T2", "worker": "w1"}), ("count_pending", {"worker": "w1"})]:
            with pytest.raises(NotLeader):
                await h.node.call(method, kwargs)
        assert h.node.replica_ready() and h.node.status()["replica"] is None  # follow is off in the harness

    asyncio.run(scenario())


def test_a_copy_older_than_its_bound_is_not_read_and_not_ready() -> None:
    async def scenario() -> None:
        h = Harness()
        following(h, max_lag=2.0)
        h.clock.now += 1.5
        assert h.node.replica_ready()
        assert "T1" in await h.node.call("task_list", {"limit": False})
        h.clock.now += 1.0  # 2.5 s since the last full read began
        assert not h.node.replica_ready() and h.node.replica_lag() == pytest.approx(2.5)
        with pytest.raises(NotLeader, match="more than 2 s behind"):
            await h.node.call("task_list", {"limit": False})

    asyncio.run(scenario())


def test_no_reads_from_the_copy_once_the_node_is_taking_over() -> None:
    async def scenario() -> None:
        h = Harness()
        following(h)
        h.node.roles.to(Role.LOADING)
        assert not h.node.replica_ready()
        with pytest.raises(NotLeader):
            await h.node.call("task_list", {"limit": False})

    asyncio.run(scenario())
