"""Worker liveness and pruning (docs/luigi-semantics.md, "Pruning")."""

from __future__ import annotations


def test_a_silent_worker_is_removed_after_worker_disconnect_delay(make) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A", worker="W1")
    h.clock.advance(60)
    h.s.prune()
    assert "W1" in h.s._workers
    h.clock.advance(1)
    h.s.prune()
    assert "W1" not in h.s._workers
    assert not h.s._tasks["A"].stakeholders and list(h.s._tasks["A"].workers) == []


def test_pings_keep_a_worker_alive(make) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A", worker="W1")
    for _ in range(5):
        h.clock.advance(50)
        h.s.ping(worker="W1")
        h.s.prune()
    assert "W1" in h.s._workers


def test_add_worker_and_count_pending_do_not_refresh_liveness(make) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A", worker="W1")
    h.clock.advance(40)
    h.s.add_worker("W1", {"workers": 2})
    h.s.count_pending("W1")
    h.clock.advance(21)
    h.s.prune()
    assert "W1" not in h.s._workers


def test_running_tasks_of_a_dead_worker_fail(make) -> None:
    h = make(worker_disconnect_delay=60, retry_delay=900)
    h.add("A", worker="W1")
    h.next_id("W1")
    h.clock.advance(61)
    h.s.prune()
    task = h.s._tasks["A"]
    assert task.status == "FAILED"
    assert task.worker_running is None
    assert task.retry == h.clock.now + 900
    assert len(task.failures) == 1


def test_a_running_task_survives_while_its_runner_pings(make) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A", worker="W1")
    h.next_id("W1")
    h.clock.advance(59)
    h.s.ping(worker="W1")
    h.clock.advance(59)
    h.s.prune()
    assert h.status("A") == "RUNNING"


def test_a_running_task_of_a_live_assistant_is_protected(make) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A", worker="W1")
    assert h.next_id("Helper", assistant=True) == "A"
    h.clock.advance(61)
    h.s.ping(worker="Helper")
    h.s.prune()  # W1, the only stakeholder, is gone; the runner is a registered assistant
    assert h.status("A") == "RUNNING"


def test_a_running_task_of_an_assistant_fails_once_the_assistant_is_gone(make) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A", worker="W1")
    h.next_id("Helper", assistant=True)
    h.clock.advance(61)
    h.s.prune()
    assert h.status("A") == "FAILED"


def test_a_task_without_stakeholders_is_deleted_remove_delay_after_they_left(make) -> None:
    h = make(worker_disconnect_delay=60, remove_delay=600)
    h.add("A", worker="W1", status="DONE", runnable=False)
    h.clock.advance(61)
    h.s.prune()  # W1 gone, A marked for removal at now + 600
    assert h.s._tasks["A"].remove == h.clock.now + 600
    h.clock.advance(599)
    h.s.prune()
    assert h.status("A") == "DONE"
    h.clock.advance(1)
    h.s.prune()
    assert h.status("A") is None


def test_a_new_report_cancels_a_pending_deletion(make) -> None:
    h = make(worker_disconnect_delay=60, remove_delay=600)
    h.add("A", worker="W1", status="DONE", runnable=False)
    h.clock.advance(61)
    h.s.prune()
    h.add("A", worker="W2", status="DONE", runnable=False)
    assert h.s._tasks["A"].remove is None
    h.clock.advance(601)
    h.s.ping(worker="W2")
    h.s.prune()
    assert h.status("A") == "DONE"


def test_running_tasks_are_never_marked_for_deletion(make) -> None:
    h = make(worker_disconnect_delay=60, remove_delay=10)
    h.add("A", worker="W1")
    assert h.next_id("Helper", assistant=True) == "A"
    for _ in range(3):
        h.clock.advance(50)
        h.s.ping(worker="Helper")
        h.s.prune()
    assert h.status("A") == "RUNNING"
    assert h.s._tasks["A"].remove is None


def test_a_deleted_dep_blocks_its_dependent_again(make) -> None:
    h = make(worker_disconnect_delay=60, remove_delay=0)
    h.add("B", worker="W1", status="DONE", runnable=False)
    h.clock.advance(61)
    h.s.prune()
    h.s.prune()
    assert h.status("B") is None
    h.add("A", worker="W2", deps=["B"])
    assert h.status("B") == "UNKNOWN"
    assert h.next_id("W2") is None


def test_listings_prune_first(make) -> None:
    h = make(worker_disconnect_delay=60)
    h.add("A", worker="W1")
    h.clock.advance(61)
    assert h.s.worker_list() == []
