"""Errors mapped by kind: bad input is the client's 400; any other exception is a 500 JSON that is
answered only once the round the failed RPC may have touched is durable."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from scheduler.core import Scheduler
from scheduler.core.errors import InvalidArgument
from scheduler.http import build_app
from scheduler.metrics import NodeMetrics
from scheduler.node import Node, RequestFailed, Role, _Term
from tests.unit.test_node_group_commit import GatedWriter, HeldLease, settle


class BuggyScheduler(Scheduler):
    """A core whose ``ping`` changes state and then fails the way a bug would."""

    def ping(self, **kwargs: Any) -> Any:
        self.add_task(task_id="touched", worker="w1")
        raise ValueError("an internal bug, not the client's input")

    def is_paused(self, **kwargs: Any) -> Any:
        raise InvalidArgument("is_paused: 'x' must be a number")


def lead(writer: GatedWriter) -> Node:
    metrics = NodeMetrics()
    node = Node(
        node_id="n1", store=None, lease=HeldLease(), core_factory=Scheduler, metrics=metrics, renew_interval=1.0
    )  # type: ignore[arg-type]
    term = _Term(epoch=1, core=BuggyScheduler(metrics=metrics), writer=writer, lease=HeldLease(),
                 on_end=node._term_ended)
    node.roles.to(Role.LOADING)
    term.start()
    node._became_leader(term)
    return node


def test_an_internal_error_is_raised_only_after_what_the_rpc_changed_is_committed() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        node = lead(writer)
        call = asyncio.ensure_future(node.call("ping", {"worker": "w1"}))
        await settle()
        assert not call.done(), "the failure was answered before its round was durable"
        assert "touched" in writer.batches[0].tasks
        writer.release()
        try:
            await asyncio.wait_for(call, 2)
        except RequestFailed as exc:
            assert "ValueError" in str(exc)
        else:
            raise AssertionError("no RequestFailed")

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_only_invalid_argument_is_a_400_and_any_other_exception_a_500_json() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        writer.release(10)
        node = lead(writer)
        async with TestClient(TestServer(build_app(node, max_body_bytes=1 << 20))) as client:
            bad = await client.get("/api/is_paused")
            assert bad.status == 400
            assert "must be a number" in (await bad.json())["error"]
            bug = await client.get("/api/ping", params={"data": '{"worker": "w1"}'})
            assert bug.status == 500
            body = await bug.json()
            assert body["status"] == 500 and "ValueError" in body["error"]
        assert len(writer.batches) == 1  # the 500 went out after its round was committed

    asyncio.run(asyncio.wait_for(scenario(), 10))
