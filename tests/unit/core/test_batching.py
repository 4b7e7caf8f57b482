"""Batching (docs/luigi-semantics.md, "Batching"): batch formation, the representative's report, and its siblings."""

from __future__ import annotations

import hashlib
import math

from core_harness import Harness


def add_day(h: Harness, day: int, worker: str = "W1", **kwargs) -> str:
    task_id = f"Load_{day}"
    kwargs.setdefault("params", {"day": str(day), "table": "t"})
    h.add(task_id, worker=worker, family="Load", batchable=True, **kwargs)
    return task_id


def register(h: Harness, worker: str = "W1", size: float = math.inf) -> None:
    h.s.add_task_batcher(worker=worker, task_family="Load", batched_args=["day"], max_batch_size=size)


def test_a_batch_is_handed_out_to_the_worker_that_registered_the_batcher(h: Harness) -> None:
    register(h)
    ids = [add_day(h, day) for day in (1, 2, 3)]
    reply = h.work()
    assert reply["task_id"] is None
    assert reply["batch_task_ids"] == ids
    assert reply["batch_id"] == hashlib.md5("|".join(ids).encode()).hexdigest()
    assert reply["task_family"] == "Load"
    assert reply["task_params"] == {"day": ["1", "2", "3"], "table": "t"}


def test_batch_members_become_batch_running_on_the_requesting_worker(h: Harness) -> None:
    register(h)
    ids = [add_day(h, day, resources={"db": 1}) for day in (1, 2)]
    h.s.update_resources(db=5)
    reply = h.work()
    for task_id in ids:
        task = h.s._tasks[task_id]
        assert task.status == "BATCH_RUNNING"
        assert task.batch_id == reply["batch_id"]
        assert task.worker_running == "W1"
        assert task.resources_running == {"db": 1}


def test_a_worker_without_the_batcher_gets_single_tasks(h: Harness) -> None:
    register(h, worker="W1")
    add_day(h, 1, worker="W2")
    add_day(h, 2, worker="W2")
    reply = h.work("W2")
    assert reply["task_id"] == "Load_1"
    assert "batch_id" not in reply


def test_a_batch_holds_at_most_max_batch_size_tasks(h: Harness) -> None:
    register(h, size=2)
    for day in (1, 2, 3):
        add_day(h, day)
    assert h.work()["batch_task_ids"] == ["Load_1", "Load_2"]


def test_only_tasks_with_identical_unbatched_params_and_resources_join(h: Harness) -> None:
    register(h)
    add_day(h, 1)
    add_day(h, 2, params={"day": "2", "table": "other"})
    add_day(h, 3, resources={"db": 1})
    add_day(h, 4)
    h.s.update_resources(db=5)
    assert h.work()["batch_task_ids"] == ["Load_1", "Load_4"]


def test_non_batchable_tasks_do_not_join_a_batch(h: Harness) -> None:
    register(h)
    add_day(h, 1)
    h.add("Load_2", family="Load", params={"day": "2", "table": "t"}, batchable=False)
    reply = h.work()
    assert reply["task_id"] == "Load_1"
    assert "batch_id" not in reply


def test_a_single_candidate_is_handed_out_as_a_plain_task(h: Harness) -> None:
    register(h)
    add_day(h, 1)
    reply = h.work()
    assert reply["task_id"] == "Load_1"
    assert "batch_task_ids" not in reply


def start_batch(h: Harness, days=(1, 2, 3), representative: str | None = None) -> tuple[dict, str]:
    register(h)
    for day in days:
        add_day(h, day, resources={"db": 1})
    h.s.update_resources(db=10)
    reply = h.work()
    combined = representative or "Load_combined"
    h.s.add_task(
        task_id=combined,
        worker="W1",
        family="Load",
        module="m",
        params={"day": "1,2,3", "table": "t"},
        status="RUNNING",
        batch_id=reply["batch_id"],
    )
    return reply, combined


def test_the_representative_running_report_takes_the_batch_resources(h: Harness) -> None:
    _reply, combined = start_batch(h)
    task = h.s._tasks[combined]
    assert task.status == "RUNNING"
    assert task.worker_running == "W1"
    assert task.resources_running == {"db": 1}


def test_siblings_follow_the_representative_to_done(h: Harness) -> None:
    reply, combined = start_batch(h)
    h.finish(combined, "W1")
    for task_id in reply["batch_task_ids"]:
        assert h.status(task_id) == "DONE"
        assert h.s._tasks[task_id].batch_id is None


def test_siblings_follow_the_representative_to_failed(h: Harness) -> None:
    reply, combined = start_batch(h)
    h.finish(combined, "W1", status="FAILED")
    assert [h.status(task_id) for task_id in reply["batch_task_ids"]] == ["FAILED"] * 3


def test_a_member_can_be_the_representative(h: Harness) -> None:
    reply, combined = start_batch(h, representative="Load_1")
    assert h.status("Load_1") == "RUNNING"
    h.finish("Load_1", "W1")
    assert [h.status(task_id) for task_id in reply["batch_task_ids"]] == ["DONE"] * 3


def test_a_failed_combined_task_that_is_not_batchable_is_removed_at_the_next_prune(h: Harness) -> None:
    _reply, combined = start_batch(h)
    h.finish(combined, "W1", status="FAILED")
    assert h.status(combined) == "FAILED"
    h.s.prune()
    assert h.status(combined) is None


def test_members_without_a_representative_are_reset_by_the_next_get_work(h: Harness) -> None:
    register(h)
    ids = [add_day(h, day) for day in (1, 2)]
    h.work()
    # the worker never reported a representative: the batch is orphaned
    reply = h.s.get_work(worker="W1", current_tasks=[])
    assert reply["batch_task_ids"] == ids  # reset to PENDING, then batched again
    h.s.pause()
    h.s.get_work(worker="W1", current_tasks=[])
    assert [h.status(task_id) for task_id in ids] == ["PENDING", "PENDING"]


def test_batch_members_of_a_dead_worker_fail_at_prune(make) -> None:
    h = make(worker_disconnect_delay=10)
    reply, combined = start_batch(h)
    h.clock.advance(11)
    h.s.prune()
    assert [h.status(task_id) for task_id in reply["batch_task_ids"]] == ["FAILED"] * 3
    assert h.status(combined) is None  # failed, and not batchable itself: removed at once


def test_a_representative_report_for_a_batch_without_members_does_not_fail(h: Harness) -> None:
    h.add("Load_x", family="Load", resources={"db": 1})
    h.s.add_task(task_id="Load_x", worker="W1", status="RUNNING", batch_id="gone", resources={"db": 1})
    assert h.s._tasks["Load_x"].resources_running == {"db": 1}
