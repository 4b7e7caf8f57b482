"""What a following standby may answer: every RPC in REPLICA_READS leaves its copy untouched.

A standby must never write, and its copy must stay equal to what the leader committed. So each
read runs here on a replica core whose workers have not been heard of for longer than
``worker_disconnect_delay`` (a leader's listing would prune them and fail their running task):
afterwards the core has no change to commit and exports exactly what it did before.
"""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.auth import RPC_ACCESS
from scheduler.core import Scheduler
from scheduler.reads import REPLICA_READS, WRITING_READS


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _populated(clock: Clock) -> Scheduler:
    core = Scheduler(clock=clock)
    core.add_worker(worker="w1", info={"host": "h1"})
    core.add_task(task_id="B", family="B", worker="w1", status="PENDING")
    core.add_task(task_id="A", family="A", worker="w1", status="PENDING", deps=["B"])
    core.add_task(task_id="C", family="C", worker="w1", status="FAILED", expl="boom")
    core.get_work(worker="w1")
    core.set_task_status_message(task_id="B", status_message="half way")
    core.take_changes()
    return core


_ARGUMENTS: dict[str, dict[str, Any]] = {
    "task_list": {"status": "", "upstream_status": "", "limit": False},
    "task_list_chunks": {"limit": False},
    "task_search": {"task_str": "A"},
    "dep_graph": {"task_id": "A"},
    "inverse_dep_graph": {"task_id": "B"},
    "graph": {},
    "worker_list": {},
    "resource_list": {},
    "fetch_error": {"task_id": "C"},
    "get_task_status_message": {"task_id": "B"},
    "get_task_progress_percentage": {"task_id": "B"},
    "get_running_task_resources": {"task_id": "B"},
    "is_paused": {},
    "is_pause_enabled": {},
    "has_task_history": {},
    "status_counts": {},
}


def test_the_replica_reads_are_the_access_tables_reads_but_those_that_write() -> None:
    reads = {method for method, access in RPC_ACCESS.items() if access == "read"}
    assert REPLICA_READS - {"task_list_chunks", "status_counts"} == reads - set(WRITING_READS)
    assert set(_ARGUMENTS) == REPLICA_READS  # every replica read is exercised below


@pytest.mark.parametrize("method", sorted(REPLICA_READS))
def test_a_replica_read_changes_nothing_even_with_workers_long_gone(method: str) -> None:
    clock = Clock()
    core = _populated(clock)
    core.replica = True
    clock.now += 10 * core.settings.worker_disconnect_delay
    before = core.export()
    result = getattr(core, method)(**_ARGUMENTS[method])
    if method == "task_list_chunks":
        assert "A" in "".join(result)
    assert not core.has_changes()
    assert core.export() == before


def test_the_same_listing_on_a_leader_prunes_the_silent_worker() -> None:
    """Why replica reads skip the prune: on a leader this listing drops w1 and fails B."""
    clock = Clock()
    core = _populated(clock)
    clock.now += 10 * core.settings.worker_disconnect_delay
    core.task_list(status="", upstream_status="", limit=False)
    assert core.has_changes()


@pytest.mark.parametrize("method", sorted(WRITING_READS))
def test_the_reads_left_to_the_leader_do_change_the_state(method: str) -> None:
    core = _populated(Clock())
    core.replica = True
    core.add_scheduler_message_response(task_id="B", message_id="m1", response="yes")
    core.take_changes()
    arguments = {"count_pending": {"worker": "w2"},
                 "get_scheduler_message_response": {"task_id": "B", "message_id": "m1"}}[method]
    getattr(core, method)(**arguments)
    assert core.has_changes()
