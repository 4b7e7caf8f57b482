"""Status transitions (docs/luigi-semantics.md, "Status changes"), including the retry policy."""

from __future__ import annotations

from core_harness import Harness


def fail_once(h: Harness, task_id: str = "A", worker: str = "W1") -> None:
    """Run the task and report it FAILED, then bring it back to PENDING as a worker would."""
    assert h.next_id(worker) == task_id
    h.finish(task_id, worker, status="FAILED")


def test_get_work_moves_a_pending_task_to_running(h: Harness) -> None:
    h.add("A")
    reply = h.work()
    task = h.s._tasks["A"]
    assert reply["task_id"] == "A"
    assert (task.status, task.worker_running, task.time_running) == ("RUNNING", "W1", h.clock.now)


def test_the_runner_reports_running_to_done(h: Harness) -> None:
    h.add("A")
    h.next_id()
    h.clock.advance(3)
    h.finish("A")
    task = h.s._tasks["A"]
    assert task.status == "DONE"
    assert task.updated == h.clock.now
    assert task.worker_running == "W1"  # kept after completion, as luigid does


def test_a_failed_task_returns_to_pending_after_retry_delay(make) -> None:
    h = make(retry_delay=60)
    h.add("A")
    fail_once(h)
    h.clock.advance(59)
    h.s.prune()
    assert h.status("A") == "FAILED"
    h.clock.advance(2)
    h.s.prune()
    assert h.status("A") == "PENDING"


def test_a_negative_retry_delay_never_retries_automatically(make) -> None:
    h = make(retry_delay=-1)
    h.add("A")
    fail_once(h)
    h.clock.advance(10_000)
    h.s.prune()
    assert h.status("A") == "FAILED"


def test_a_pending_report_brings_a_failed_task_back_immediately(h: Harness) -> None:
    h.add("A")
    fail_once(h)
    h.add("A", worker="W2")
    assert h.status("A") == "PENDING"


def test_forgive_failures_makes_a_failed_task_pending_but_keeps_its_history(h: Harness) -> None:
    h.add("A")
    fail_once(h)
    assert h.s.forgive_failures("A") == {"task_id": "A", "status": "PENDING"}
    assert len(h.s._tasks["A"].failures) == 1


def test_forgive_failures_leaves_other_statuses_alone(h: Harness) -> None:
    h.add("A")
    assert h.s.forgive_failures("A") == {"task_id": "A", "status": "PENDING"}
    assert h.s.forgive_failures("nope") == {"task_id": "nope", "status": None}


def test_too_many_failures_in_the_window_disable_the_task(make) -> None:
    h = make(retry_count=2, disable_window=100)
    h.add("A")
    fail_once(h)
    h.add("A")
    fail_once(h)
    task = h.s._tasks["A"]
    assert task.status == "DISABLED"
    assert task.scheduler_disable_time == h.clock.now


def test_failures_outside_the_window_do_not_count(make) -> None:
    h = make(retry_count=2, disable_window=100)
    h.add("A")
    fail_once(h)
    h.clock.advance(101)
    h.add("A")
    fail_once(h)
    assert h.status("A") == "FAILED"


def test_a_task_retry_count_overrides_the_scheduler_default(h: Harness) -> None:
    policy = {"retry_count": 1, "disable_hard_timeout": None, "disable_window": None}
    h.add("A", retry_policy_dict=policy)
    fail_once(h)
    assert h.status("A") == "DISABLED"


def test_any_failure_after_the_hard_timeout_disables_the_task(make) -> None:
    h = make(disable_hard_timeout=100)
    h.add("A")
    fail_once(h)
    h.clock.advance(100)
    h.add("A")
    fail_once(h)
    assert h.status("A") == "DISABLED"


def test_a_scheduler_disable_expires_after_disable_persist(make) -> None:
    h = make(retry_count=1, disable_persist=50, retry_delay=10)
    h.add("A")
    fail_once(h)
    h.clock.advance(51)
    h.s.prune()
    task = h.s._tasks["A"]
    assert task.status == "FAILED"
    assert len(task.failures) == 0 and task.first_failure_time is None
    h.clock.advance(11)
    h.s.prune()
    assert h.status("A") == "PENDING"


def test_workers_cannot_override_a_scheduler_disable(make) -> None:
    h = make(retry_count=1)
    h.add("A")
    fail_once(h)
    h.add("A", status="PENDING")
    h.add("A", status="FAILED")
    assert h.status("A") == "DISABLED"


def test_a_worker_reported_disable_never_expires_and_can_be_replaced(make) -> None:
    h = make(disable_persist=10)
    h.add("A", status="DISABLED")
    assert h.s._tasks["A"].scheduler_disable_time is None
    h.clock.advance(1000)
    h.s.prune()
    assert h.status("A") == "DISABLED"
    h.add("A", status="PENDING")
    assert h.status("A") == "PENDING"


def test_disabled_never_replaces_a_running_task(h: Harness) -> None:
    h.add("A")
    h.next_id()
    h.s.add_task(task_id="A", worker="W1", status="DISABLED")
    assert h.status("A") == "RUNNING"


def test_a_done_report_re_enables_a_disabled_task_and_clears_its_failures(make) -> None:
    h = make(retry_count=1)
    h.add("A")
    fail_once(h)
    h.add("A", status="DONE", runnable=False)
    task = h.s._tasks["A"]
    assert task.status == "DONE"
    assert task.scheduler_disable_time is None and len(task.failures) == 0


def test_re_enable_task_turns_a_scheduler_disable_into_a_failure_with_clean_history(make) -> None:
    h = make(retry_count=1, retry_delay=30)
    h.add("A", deps=["B"])
    h.add("B", status="DONE", runnable=False)
    fail_once(h)
    reply = h.s.re_enable_task("A")
    assert reply["status"] == "FAILED"
    assert reply["deps"] == ["B"]
    assert "re_enable_able" not in reply
    assert h.s._tasks["A"].failures == type(h.s._tasks["A"].failures)()
    assert h.s._tasks["A"].retry == h.clock.now + 30


def test_re_enable_task_ignores_tasks_the_scheduler_did_not_disable(h: Harness) -> None:
    h.add("A", status="DISABLED")
    assert h.s.re_enable_task("A") == {}
    assert h.s.re_enable_task("missing") == {}
    assert h.status("A") == "DISABLED"


def test_mark_as_done_finishes_running_failed_or_disabled_tasks(make) -> None:
    h = make(retry_count=1)
    for task_id in ("R", "F", "D", "P"):
        h.add(task_id)
    h.s.add_task(task_id="F", worker="W1", status="FAILED")
    h.s.add_task(task_id="D", worker="W1", status="DISABLED")
    assert h.next_id() == "R"
    assert h.s.mark_as_done("R") == {"task_id": "R", "status": "DONE"}
    assert h.s.mark_as_done("F") == {"task_id": "F", "status": "DONE"}
    assert h.s.mark_as_done("D") == {"task_id": "D", "status": "DONE"}
    assert h.s.mark_as_done("P") == {"task_id": "P", "status": "PENDING"}
    assert h.s.mark_as_done("missing") == {"task_id": "missing", "status": None}


def test_a_failure_schedules_the_next_retry(make) -> None:
    h = make(retry_delay=42)
    h.add("A")
    fail_once(h)
    assert h.s._tasks["A"].retry == h.clock.now + 42


def test_unknown_is_a_reportable_status_that_blocks_dependents(h: Harness) -> None:
    h.add("A", deps=["B"])
    h.add("B", status="UNKNOWN", runnable=False)
    assert h.status("B") == "UNKNOWN"
    assert h.next_id() is None
