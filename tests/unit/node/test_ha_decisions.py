"""The HA loop's decisions, turn by turn, on a fake lease and a fake clock (no database, no sleep).

Each test is one situation a node meets and the role it must end up in; ``/status``, ``/leader``
(``is_leader``) and the ``luigi_ha_role`` metric must say the same thing at every turn.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lease import FencedOut
from scheduler.node import STARTUP_MARGIN, SWITCHOVER_HOLD_OFF
from scheduler.roles import Role
from tests.unit.node.fakes import Harness


def run(scenario: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        harness = Harness()
        try:
            await scenario(harness)
        finally:
            if harness.task is not None and not harness.task.done():
                await harness.stop()

    asyncio.run(asyncio.wait_for(main(), 20))


def metric(h: Harness, name: str, **labels: str) -> float:
    text = h.metrics.exposition()[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(name)


def agree(h: Harness, role: Role) -> None:
    """Every reader of the role sees ``role``."""
    node = h.node
    assert node.role is role
    assert node.status()["role"] == role.value
    assert node.is_leader is (role is Role.LEADER)
    assert metric(h, "luigi_ha_role", role=role.value) == 1
    assert sum(metric(h, "luigi_ha_role", role=r.value) for r in Role) == 1
    assert metric(h, "luigi_ha_is_leader") == (1 if role is Role.LEADER else 0)


def test_a_standby_takes_a_free_lease_loads_the_state_and_leads() -> None:
    async def scenario(h: Harness) -> None:
        await h.first_turn()
        agree(h, Role.LEADER)
        assert h.store.loads == 1
        assert h.node.status()["epoch"] == 1
        assert metric(h, "luigi_ha_lease_epoch") == 1
        await h.turn(3)  # renewals keep it leading
        agree(h, Role.LEADER)

    run(scenario)


def test_a_lease_held_by_another_node_keeps_it_standby_and_names_the_leader() -> None:
    async def scenario(h: Harness) -> None:
        h.lease.held_by("n2:7:bbbb", for_seconds=30)
        await h.first_turn()
        await h.turn(3)
        agree(h, Role.STANDBY)
        assert h.node.leader_hint() == "n2"
        assert h.store.loads == 0
        with pytest.raises(Exception, match="not the leader"):
            await h.node.call("ping", {"worker": "w"})

    run(scenario)


def test_a_leader_whose_renewals_fail_reads_as_expired_at_its_deadline_then_steps_down() -> None:
    async def scenario(h: Harness) -> None:
        await h.first_turn()
        h.lease.renew_fails = True
        await h.turn()  # 0.5 s after the last renewal: a failed renewal with deadline left
        agree(h, Role.LEADER)
        h.clock.now += 2.0  # the deadline passes while the loop is not looking
        agree(h, Role.LEADER_EXPIRED)
        h.lease.held_by("n2:7:bbbb", for_seconds=30)  # and the row expired: another node took it
        await h.turn()
        agree(h, Role.STANDBY)
        assert metric(h, "luigi_ha_stepdowns_total", reason="renew_deadline_passed") == 1
        assert h.writers[0].closed

    run(scenario)


def test_a_switchover_releases_the_lease_and_holds_off_before_campaigning_again() -> None:
    async def scenario(h: Harness) -> None:
        await h.first_turn()
        assert await h.node.switchover()
        agree(h, Role.HOLDING_OFF)
        assert h.lease.row_holder is None and h.lease.releases == 1
        await h.turn(int(SWITCHOVER_HOLD_OFF / 0.2) - 2)  # the lease is free, but we hold off
        agree(h, Role.HOLDING_OFF)
        assert h.lease.row_epoch == 1
        await h.turn(4)
        agree(h, Role.LEADER)
        assert h.lease.row_epoch == 2

    run(scenario)


def test_a_restarted_node_named_by_the_lease_holds_off_until_it_expires_plus_a_margin() -> None:
    async def scenario(h: Harness) -> None:
        h.lease.held_by("n1:99:dead", for_seconds=1.0)  # our previous incarnation
        await h.first_turn()
        agree(h, Role.HOLDING_OFF)
        await h.turn(int((1.0 + STARTUP_MARGIN) / 0.2) - 2)
        agree(h, Role.HOLDING_OFF)
        await h.turn(4)
        agree(h, Role.LEADER)

    run(scenario)


def test_a_fenced_out_commit_ends_the_term_at_once_and_the_node_campaigns_again() -> None:
    async def scenario(h: Harness) -> None:
        await h.first_turn()
        h.writers[0].fail_with = FencedOut("scheduler", expected_holder="n1", expected_epoch=1, found_epoch=2)
        with pytest.raises(Exception, match="fenced out"):
            await h.node.call("add_task", {"task_id": "A", "worker": "w"})
        agree(h, Role.STANDBY)  # before the loop's next turn
        assert metric(h, "luigi_ha_stepdowns_total", reason="fenced_out") == 1
        h.lease.valid_from = None
        h.lease.row_holder = None
        await h.turn(2)
        agree(h, Role.LEADER)
        assert h.node.status()["epoch"] == 2

    run(scenario)


def test_a_failed_load_releases_the_lease_and_stays_standby() -> None:
    async def scenario(h: Harness) -> None:
        h.store.load_fails = True
        await h.first_turn()
        agree(h, Role.STANDBY)
        assert h.lease.releases == 1
        h.store.load_fails = False
        await h.turn()
        agree(h, Role.LEADER)

    run(scenario)


def test_an_unreachable_database_keeps_a_standby_backing_off() -> None:
    async def scenario(h: Harness) -> None:
        h.lease.unreachable = True
        await h.first_turn()
        await h.turn(20)
        agree(h, Role.STANDBY)
        assert not h.node.db_reachable
        assert h.store.loads == 0
        h.lease.unreachable = False
        await h.turn(2)
        agree(h, Role.LEADER)

    run(scenario)


def test_stopping_a_leader_releases_the_lease_and_ends_stopped() -> None:
    async def scenario(h: Harness) -> None:
        await h.first_turn()
        await h.stop()
        agree(h, Role.STOPPED)
        assert h.lease.row_holder is None
        assert h.writers[0].closed

    run(scenario)


def test_a_lease_lost_while_loading_goes_back_to_standby() -> None:
    async def scenario(h: Harness) -> None:
        original = h.store.load_all

        def slow_load(decode_task: Any = None) -> Any:
            h.clock.now += 5.0  # the load outlives the deadline and no renewal ran
            return original(decode_task)

        h.store.load_all = slow_load  # type: ignore[method-assign]
        h.lease.renew_fails = True
        await h.first_turn()
        agree(h, Role.STANDBY)
        assert h.writers == []

    run(scenario)


def test_a_leader_whose_loop_is_cancelled_still_hands_the_lease_back() -> None:
    async def scenario(h: Harness) -> None:
        await h.first_turn()
        assert h.task is not None
        h.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(h.task, 5)
        agree(h, Role.STOPPED)
        assert h.lease.row_holder is None and h.lease.releases == 1
        assert h.writers[0].closed

    run(scenario)


def test_a_commit_failing_while_a_renewal_is_in_flight_steps_down_once_and_the_node_campaigns_again() -> None:
    async def scenario(h: Harness) -> None:
        await h.first_turn()
        entered, answer = threading.Event(), threading.Event()

        def slow_failing_renew() -> bool:  # the database died under a renewal
            entered.set()
            answer.wait(5)
            return False

        h.lease.renew = slow_failing_renew  # type: ignore[method-assign]
        h._go.set()  # let the loop start its next renewal; it blocks in the thread
        while not entered.is_set():
            await asyncio.sleep(0.01)
        h.writers[0].fail_with = ConnectionError("Lost connection to MySQL server during query")
        with pytest.raises(Exception):  # noqa: B017 - the commit error, whatever the layer wraps it in
            await h.node.call("add_task", {"task_id": "A", "worker": "w"})
        agree(h, Role.STANDBY)  # the failed commit ended the term at once
        h.lease.valid_from = None  # and the lease is no longer held
        answer.set()  # the renewal answers (failed) into a term that already ended
        await h.turn(2)
        assert not h.task.done(), h.task.exception()
        h.lease.row_holder = None
        await h.turn(3)
        agree(h, Role.LEADER)

    run(scenario)
