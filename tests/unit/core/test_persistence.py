"""The persistence contract: take_changes, export/restore and grant_grace."""

from __future__ import annotations

import gc
import json

from core_harness import FakeClock, Harness

from scheduler.core import Changes, Scheduler, SchedulerSettings, Snapshot
from scheduler.core.entities import Task
from scheduler.store.codec import dumps

REQUIRED_TASK_KEYS = {"id", "status", "family", "updated"}


def roundtrip(snapshot: Snapshot) -> Snapshot:
    """What a store does: JSON out, JSON back (proves the rows are JSON-safe)."""
    text = json.dumps({"tasks": snapshot.tasks, "workers": snapshot.workers, "meta": snapshot.meta}, allow_nan=False)
    data = json.loads(text)
    return Snapshot(tasks=data["tasks"], workers=data["workers"], meta=data["meta"])


def fresh(clock: FakeClock, **settings) -> Scheduler:
    return Scheduler(clock=clock, settings=SchedulerSettings(**settings))


def test_take_changes_returns_rows_of_changed_tasks_only(h: Harness) -> None:
    h.add("A")
    h.add("B")
    h.s.take_changes()
    h.add("A", status="DONE")
    changes = h.s.take_changes()
    assert set(changes.tasks) == {"A"}
    row = changes.tasks["A"]
    assert set(row) >= REQUIRED_TASK_KEYS
    assert row["status"] == "DONE" and row["updated"] == h.clock.now


def test_take_changes_clears_the_log(h: Harness) -> None:
    h.add("A")
    assert not h.s.take_changes().empty
    assert h.s.take_changes().empty


def test_a_deleted_task_is_reported_as_none(make) -> None:
    h = make(worker_disconnect_delay=1, remove_delay=0)
    h.add("A", status="DONE", runnable=False)
    h.s.take_changes()
    h.clock.advance(2)
    h.s.prune()
    changes = h.s.take_changes()
    assert changes.tasks == {"A": None}
    assert changes.workers == {"W1": None}


def test_pings_and_get_work_without_changes_do_not_dirty_the_worker(h: Harness) -> None:
    h.add("A", status="DONE", runnable=False)
    h.work()
    h.s.take_changes()
    h.clock.advance(5)
    h.s.ping(worker="W1")
    h.work()
    assert h.s.take_changes().empty


def test_worker_rows_change_with_info_disable_and_batchers(h: Harness) -> None:
    h.add("A")
    h.s.take_changes()
    h.s.add_worker("W1", [["host", "box"], ["workers", 3]])
    assert h.s.take_changes().workers["W1"]["info"] == {"host": "box", "workers": 3}
    h.s.add_task_batcher(worker="W1", task_family="Load", batched_args=["day"], max_batch_size=float("inf"))
    row = h.s.take_changes().workers["W1"]
    assert row["batchers"] == {"Load": {"batched_args": ["day"], "max_batch_size": None}}
    h.s.disable_worker("W1")
    assert h.s.take_changes().workers["W1"]["disabled"] is True


def test_worker_rows_never_carry_liveness(h: Harness) -> None:
    h.add("A")
    row = h.s.take_changes().workers["W1"]
    assert "last_active" not in row and "last_get_work" not in row
    assert {"id", "started", "info", "disabled", "reference", "batchers"} <= set(row)


def test_pause_and_resource_changes_are_reported_as_meta(h: Harness) -> None:
    h.s.pause()
    h.s.update_resource("db", 4)
    h.s.update_resources(cpu=8)
    assert h.s.take_changes().meta == {"paused": True, "resources": {"db": 4, "cpu": 8}}


def test_events_record_each_status_change_and_hand_out(h: Harness) -> None:
    h.add("A")
    h.work(host="box")
    h.finish("A")
    events = h.s.take_changes().events
    assert [(event["task_id"], event["status"], event["worker"]) for event in events] == [
        ("A", "PENDING", "W1"),
        ("A", "RUNNING", "W1"),
        ("A", "DONE", "W1"),
    ]
    assert events[1]["host"] == "box"
    assert all(event["at"] == h.clock.now for event in events)


def test_a_retransmitted_hand_out_is_recorded_as_an_event(h: Harness) -> None:
    h.add("A")
    h.s.get_work(worker="W1", current_tasks=[])
    h.s.take_changes()
    h.s.get_work(worker="W1", current_tasks=[])
    assert [event["status"] for event in h.s.take_changes().events] == ["RUNNING"]


def test_changes_is_empty_only_when_nothing_is_in_it() -> None:
    assert Changes().empty
    assert not Changes(events=[{"task_id": "A"}]).empty


def build_busy_scheduler(h: Harness) -> None:
    h.s.update_resource("db", 1)
    h.s.add_worker("W1", [["workers", 1], ["host", "a"]])
    h.s.add_task_batcher(worker="W2", task_family="Load", batched_args=["day"], max_batch_size=5)
    h.add("Root", deps=["Mid", "Side"], priority=4)
    h.add("Mid", deps=["Leaf"], resources={"db": 1})
    h.add("Leaf")
    h.add("Side", status="DISABLED")
    h.add("Flaky", retry_policy_dict={"retry_count": 5, "disable_hard_timeout": None, "disable_window": None})
    for day in (1, 2, 3):
        h.add(f"Load_{day}", worker="W2", family="Load", params={"day": str(day)}, batchable=True)
    assert h.next_id("W1") == "Leaf"  # Root's priority 4 was pushed down to it
    h.finish("Leaf")
    assert h.next_id("W1") == "Mid"  # now RUNNING, holding the db
    h.clock.advance(1)


def test_export_then_restore_gives_the_same_answers(h: Harness, clock: FakeClock) -> None:
    build_busy_scheduler(h)
    snapshot = roundtrip(h.s.export())
    other = fresh(clock)
    other.restore(snapshot)
    assert other.take_changes().empty
    for worker in ("W1", "W2"):
        assert other.count_pending(worker) == h.s.count_pending(worker)
    assert other.task_list("", "", limit=False) == h.s.task_list("", "", limit=False)
    assert other.get_work(worker="W2", current_tasks=[]) == h.s.get_work(worker="W2", current_tasks=[])
    assert other.get_work(worker="W1", current_tasks=["Flaky"]) == h.s.get_work(worker="W1", current_tasks=["Flaky"])
    assert other.export() == h.s.export()


def test_a_restored_scheduler_finds_an_assistant_the_runnable_task_behind_those_nobody_may_run(
    h: Harness, clock: FakeClock
) -> None:
    for i in range(20):
        h.add(f"Ext_{i}", runnable=False)
    h.add("Late")
    other = fresh(clock)
    other.restore(roundtrip(h.s.export()))
    assert other.get_work(worker="Helper", assistant=True, current_tasks=[])["task_id"] == "Late"


def test_restore_hands_its_objects_to_the_oldest_gc_generation(h: Harness, clock: FakeClock) -> None:
    """Restored tasks are not left for the young generations (the collector would scan them all
    again, twice), the collector ends up as restore found it, and frozen objects stay frozen."""
    for i in range(200):
        h.add(f"T{i}", deps=[f"T{i - 1}"] if i else None)
    snapshot = roundtrip(h.s.export())

    def young_tasks() -> int:
        return sum(isinstance(o, Task) for gen in (0, 1) for o in gc.get_objects(generation=gen))

    was_enabled = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            other = fresh(clock)
            other.restore(snapshot)
            assert gc.isenabled() is enabled
            assert len(other._tasks) == 200 and young_tasks() == 0
        gc.freeze()
        frozen = gc.get_freeze_count()
        fresh(clock).restore(snapshot)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
        (gc.enable if was_enabled else gc.disable)()


def test_restore_replaces_all_previous_state(h: Harness, clock: FakeClock) -> None:
    h.add("Old")
    snapshot = Snapshot(tasks=[], workers=[], meta={})
    h.s.restore(snapshot)
    assert h.s.task_list("", "") == {}
    assert h.s.status_counts()["PENDING"] == 0


def test_restore_keeps_pause_and_resource_overrides(h: Harness, clock: FakeClock) -> None:
    h.s.pause()
    h.s.update_resource("db", 7)
    other = fresh(clock, resources={"db": 1})
    other.restore(roundtrip(h.s.export()))
    assert other.is_paused() == {"paused": True}
    assert other.resource_list()[0]["num_total"] == 7


def test_restore_keeps_the_retry_and_disable_timers(make, clock: FakeClock) -> None:
    h = make(retry_delay=30, retry_count=1, disable_persist=100)
    h.add("Fails")
    h.next_id()
    h.finish("Fails", status="FAILED")  # retry_count=1: disabled by the scheduler
    other = fresh(clock, retry_delay=30, retry_count=1, disable_persist=100)
    other.restore(roundtrip(h.s.export()))
    assert other._tasks["Fails"].status == "DISABLED"
    clock.advance(101)
    other.grant_grace()
    other.prune()
    assert other._tasks["Fails"].status == "FAILED"
    clock.advance(31)
    other.grant_grace()
    other.prune()
    assert other._tasks["Fails"].status == "PENDING"


def test_restore_recreates_workers_known_only_from_tasks(h: Harness, clock: FakeClock) -> None:
    h.add("A", worker="W1")
    snapshot = roundtrip(h.s.export())
    snapshot.workers = []  # e.g. worker rows lost or never written
    other = fresh(clock)
    other.restore(snapshot)
    assert "W1" in other._workers
    other.prune()
    assert "W1" in other._workers
    assert other.get_work(worker="W1", current_tasks=[])["task_id"] == "A"


def test_restored_workers_keep_their_info(h: Harness, clock: FakeClock) -> None:
    h.add("A")
    h.s.add_worker("W1", [["host", "box"], ["assistant", True]])
    other = fresh(clock)
    other.restore(roundtrip(h.s.export()))
    assert other._workers["W1"].info == {"host": "box", "assistant": True}


def test_grant_grace_protects_running_tasks_after_a_takeover(make, clock: FakeClock) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A")
    assert h.next_id() == "A"
    snapshot = roundtrip(h.s.export())
    clock.advance(300)  # the failover took longer than worker_disconnect_delay
    other = fresh(clock, worker_disconnect_delay=60)
    other.restore(snapshot)
    other.grant_grace()
    other.prune()
    assert other._tasks["A"].status == "RUNNING"
    other.add_task(task_id="A", worker="W1", status="DONE", runnable=None)
    assert other._tasks["A"].status == "DONE"


def test_without_grace_a_silent_runner_still_fails_after_the_delay(make, clock: FakeClock) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A")
    h.next_id()
    other = fresh(clock, worker_disconnect_delay=60)
    other.restore(roundtrip(h.s.export()))
    other.grant_grace()
    clock.advance(61)
    other.prune()
    assert other._tasks["A"].status == "FAILED"


def test_grant_grace_creates_records_for_runners_without_one(h: Harness, clock: FakeClock) -> None:
    h.add("A", worker="W1")
    h.next_id("Helper", assistant=True)
    snapshot = roundtrip(h.s.export())
    snapshot.workers = [row for row in snapshot.workers if row["id"] != "Helper"]
    other = fresh(clock)
    other.restore(snapshot)
    other.grant_grace()
    assert "Helper" in other._workers


def test_restore_of_rows_without_optional_keys(h: Harness, clock: FakeClock) -> None:
    other = fresh(clock)
    other.restore(
        Snapshot(tasks=[{"id": "A", "status": "PENDING", "family": "A", "updated": clock.now}], workers=[], meta={})
    )
    assert other._tasks["A"].status == "PENDING"
    other.add_task(task_id="A", worker="W1")
    assert other.get_work(worker="W1", current_tasks=[])["task_id"] == "A"


def test_a_task_row_leaves_out_what_an_absent_key_means(h: Harness) -> None:
    h.add("A")
    row = h.s.take_changes().tasks["A"]
    assert "expl" not in row and "failures" not in row and "batchable" not in row and "resources" not in row
    assert {"id", "status", "family", "updated", "time", "seq", "retry_policy"} <= set(row)
    assert row["retry_policy"]["retry_count"] == h.s.settings.retry_count  # kept, not "today's default"


def test_full_rows_as_older_versions_wrote_them_restore_the_same_state(h: Harness, clock: FakeClock) -> None:
    build_busy_scheduler(h)
    compact = roundtrip(h.s.export())
    full_keys = {"module": None, "deps": [], "params": {}, "param_visibilities": {}, "priority": 0, "resources": {},
                 "resources_running": None, "stakeholders": [], "workers": [], "worker_running": None,
                 "time_running": None, "retry": None, "remove": None, "expl": None, "tracking_url": None,
                 "status_message": None, "progress_percentage": None, "accepts_messages": False, "failures": [],
                 "first_failure_time": None, "scheduler_disable_time": None, "runnable": False, "batchable": False,
                 "batch_id": None, "scheduler_message_responses": {}}
    full = Snapshot(tasks=[{**full_keys, **row} for row in compact.tasks], workers=compact.workers, meta=compact.meta)
    other = fresh(clock)
    other.restore(full)
    assert other.export() == h.s.export()


def test_tasks_decoded_from_their_stored_json_restore_the_same_state(h: Harness, clock: FakeClock) -> None:
    """What a node does at takeover: the store hands over tasks its new core's decoder built."""
    build_busy_scheduler(h)
    exported = h.s.export()
    other = fresh(clock)
    decode = other.task_decoder()
    other.restore(Snapshot(tasks=[decode(dumps(row)) for row in exported.tasks], workers=exported.workers,
                           meta=exported.meta))
    assert other.export() == exported
    assert other.get_work(worker="W2", current_tasks=[]) == h.s.get_work(worker="W2", current_tasks=[])


def test_status_counts_and_pending_count(h: Harness) -> None:
    h.add("A")
    h.add("B")
    h.add("C", status="DONE")
    h.next_id()
    counts = h.s.status_counts()
    assert (counts["PENDING"], counts["RUNNING"], counts["DONE"], counts["FAILED"]) == (1, 1, 1, 0)
    assert h.s.pending_count() == 1
