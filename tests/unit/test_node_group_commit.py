"""Group commit in the leader: what an RPC waits for before it is answered.

The node runs each RPC on the in-memory core at once and answers it only when everything it
changed, or read, is committed. These tests drive a leader term directly with a writer whose
commits the test releases by hand, so "answered before committed" would show.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lease import FencedOut
from scheduler.core import Changes, Scheduler
from scheduler.metrics import NodeMetrics
from scheduler.node import Node, NotLeader, Role, _Term


class HeldLease:
    """The lease as the leader sees it while it holds it."""

    def is_held(self) -> bool:
        return True


class GatedWriter:
    """Records each batch and blocks its commit until the test opens the gate."""

    def __init__(self) -> None:
        self.batches: list[Changes] = []
        self.gate = asyncio.Semaphore(0)
        self.fail_with: BaseException | None = None
        self.in_flight = False
        self.closed_in_flight: bool | None = None  # was a commit still running when close() came?

    async def apply(self, changes: Changes, epoch: int) -> None:
        self.batches.append(changes)
        self.in_flight = True
        try:
            await self.gate.acquire()
        finally:
            self.in_flight = False
        if self.fail_with is not None:
            raise self.fail_with

    def release(self, commits: int = 1) -> None:
        for _ in range(commits):
            self.gate.release()

    def close(self) -> None:
        self.closed_in_flight = self.in_flight


def lead(writer: GatedWriter) -> Node:
    """A node that leads epoch 1 with an empty core, its committer running on this loop."""
    metrics = NodeMetrics()
    node = Node(
        node_id="n1", store=None, lease=HeldLease(), core_factory=Scheduler, metrics=metrics, renew_interval=1.0
    )  # type: ignore[arg-type]
    term = _Term(epoch=1, core=Scheduler(metrics=metrics), writer=writer, lease=HeldLease(), on_end=node._term_ended)
    node.roles.to(Role.LOADING)
    term.start()
    node._became_leader(term)
    return node


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


def run(test: Any) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


def test_a_write_is_answered_only_after_its_commit() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        node = lead(writer)
        add = asyncio.ensure_future(node.call("add_task", {"task_id": "A", "worker": "w1"}))
        await settle()
        assert not add.done(), "answered before its commit"
        assert "A" in writer.batches[0].tasks
        writer.release()
        await asyncio.wait_for(add, 2)

    run(scenario)


def test_a_read_of_uncommitted_state_waits_for_that_commit_and_one_of_committed_state_does_not() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        node = lead(writer)
        add = asyncio.ensure_future(node.call("add_task", {"task_id": "A", "worker": "w1"}))
        await settle()  # A's commit is in flight
        listing = asyncio.ensure_future(node.call("task_list", {"status": "PENDING"}))
        await settle()
        assert not listing.done(), "a read showed A before A was durable"
        writer.release()
        assert "A" in await asyncio.wait_for(listing, 2)
        await add
        # Everything is committed now: a read is answered without a commit.
        assert "A" in await asyncio.wait_for(node.call("task_list", {"status": "PENDING"}), 0.5)
        assert len(writer.batches) == 1

    run(scenario)


def test_writes_that_arrive_during_a_commit_share_the_next_one() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        node = lead(writer)
        first = asyncio.ensure_future(node.call("add_task", {"task_id": "A", "worker": "w1"}))
        await settle()
        later = [asyncio.ensure_future(node.call("add_task", {"task_id": t, "worker": "w1"})) for t in "BCD"]
        await settle()
        writer.release(2)
        await asyncio.wait_for(asyncio.gather(first, *later), 2)
        assert [sorted(b.tasks) for b in writer.batches] == [["A"], ["B", "C", "D"]]

    run(scenario)


def test_a_failed_commit_answers_its_rpcs_with_not_leader_and_the_node_steps_down() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        node = lead(writer)
        writer.fail_with = FencedOut("scheduler", expected_holder="n1", expected_epoch=1, found_epoch=2)
        add = asyncio.ensure_future(node.call("add_task", {"task_id": "A", "worker": "w1"}))
        await settle()
        writer.release()
        with pytest.raises(NotLeader):
            await asyncio.wait_for(add, 2)
        assert node.role is Role.STANDBY and node._term is None
        with pytest.raises(NotLeader):
            await node.call("ping", {"worker": "w1"})

    run(scenario)


def test_stepping_down_mid_commit_fails_the_round_and_closes_the_writer_once_the_commit_unwound() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        node = lead(writer)
        add = asyncio.ensure_future(node.call("add_task", {"task_id": "A", "worker": "w1"}))
        await settle()
        assert writer.in_flight
        await node._step_down("renew_deadline_passed")
        with pytest.raises(NotLeader, match="retry"):
            await asyncio.wait_for(add, 2)
        assert writer.closed_in_flight is False, "the writer was closed under a commit still running"
        assert node.role is Role.STANDBY

    run(scenario)
