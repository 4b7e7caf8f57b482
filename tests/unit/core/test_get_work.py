"""get_work: ordering, dependency gating, counts, resources and greedy accounting (docs/luigi-semantics.md)."""

from __future__ import annotations

from core_harness import Harness


def test_the_highest_priority_ready_task_is_handed_out_first(h: Harness) -> None:
    h.add("Low", priority=1)
    h.add("High", priority=9)
    h.add("Mid", priority=5)
    assert [h.next_id() for _ in range(3)] == ["High", "Mid", "Low"]


def test_equal_priorities_go_to_the_task_the_scheduler_saw_first(h: Harness) -> None:
    h.add("First")
    h.clock.advance(1)
    h.add("Second")
    h.add("First", status="FAILED")  # later status changes do not change the creation time
    h.add("First")
    assert h.next_id() == "First"


def test_a_task_waits_until_every_dep_is_done(h: Harness) -> None:
    h.add("A", deps=["B", "C"])
    h.add("B")
    h.add("C")
    first, second = h.next_id(), h.next_id()
    assert {first, second} == {"B", "C"}
    assert h.next_id() is None
    h.finish("B")
    assert h.next_id() is None
    h.finish("C")
    assert h.next_id() == "A"


def test_an_unknown_placeholder_dep_blocks_its_dependent(h: Harness) -> None:
    h.add("A", deps=["B"])
    assert h.status("B") == "UNKNOWN"
    assert h.next_id() is None


def test_a_worker_only_gets_tasks_it_reported_as_runnable(h: Harness) -> None:
    h.add("Mine", worker="W1")
    h.add("Theirs", worker="W2", priority=10)
    assert h.next_id("W1") == "Mine"


def test_the_reply_describes_the_task_with_all_its_params(h: Harness) -> None:
    h.add("A_1", family="A", module="pipeline", params={"day": "1", "secret": "s"}, param_visibilities={"secret": 1})
    reply = h.work()
    assert reply["task_id"] == "A_1"
    assert reply["task_family"] == "A"
    assert reply["task_module"] == "pipeline"
    assert reply["task_params"] == {"day": "1", "secret": "s"}
    assert "batch_id" not in reply


def test_an_empty_scheduler_answers_no_task_and_zero_counts(h: Harness) -> None:
    reply = h.work("Fresh")
    assert reply == {
        "n_pending_tasks": 0,
        "n_unique_pending": 0,
        "n_pending_last_scheduled": 0,
        "worker_state": "active",
        "running_tasks": [],
        "task_id": None,
    }


def test_pending_counts_include_failed_tasks(h: Harness) -> None:
    h.add("A")
    h.add("B")
    assert h.next_id() == "A"
    h.finish("A", status="FAILED")
    assert h.counts("W1") == (2, 2, 2)


def test_unique_and_last_scheduled_counts_follow_the_runnable_list(h: Harness) -> None:
    h.add("Shared", worker="W1")
    h.add("Shared", worker="W2")
    h.add("Only1", worker="W1")
    assert h.counts("W1") == (2, 1, 1)
    assert h.counts("W2") == (1, 0, 1)


def test_counts_are_taken_before_the_hand_out(h: Harness) -> None:
    h.add("A")
    reply = h.work()
    assert reply["task_id"] == "A"
    assert reply["n_pending_tasks"] == 1
    assert h.counts() == (0, 0, 0)


def test_tasks_behind_a_disabled_task_are_not_counted_as_pending(h: Harness) -> None:
    h.add("A", deps=["B"])
    h.add("B", deps=["C"])
    h.add("C", status="DISABLED")
    h.add("D")
    assert h.counts() == (1, 1, 1)
    h.add("C", status="DONE")
    assert h.counts() == (3, 3, 3)


def test_running_tasks_lists_running_tasks_of_the_worker_with_the_runners_info(h: Harness) -> None:
    h.add("A", worker="W1")
    h.add("A", worker="W2")
    h.s.add_worker("W1", [["host", "box1"], ["workers", 2]])
    assert h.next_id("W1") == "A"
    reply = h.work("W2")
    assert reply["task_id"] is None
    assert reply["running_tasks"] == [{"task_id": "A", "worker": "W1", "host": "box1", "workers": 2}]


def test_a_lost_assignment_is_sent_again_to_the_same_worker(h: Harness) -> None:
    h.add("A")
    h.add("B")
    assert h.s.get_work(worker="W1", current_tasks=[])["task_id"] == "A"
    # the reply was lost: the worker asks again, not knowing it runs A
    assert h.s.get_work(worker="W1", current_tasks=[])["task_id"] == "A"
    assert h.s.get_work(worker="W1", current_tasks=["A"])["task_id"] == "B"


def test_retransmission_needs_the_current_tasks_list(h: Harness) -> None:
    h.add("A")
    h.add("B")
    assert h.next_id(current_tasks=None) == "A"
    assert h.next_id(current_tasks=None) == "B"


def test_a_disabled_worker_gets_the_fixed_disabled_reply(h: Harness) -> None:
    h.add("A")
    h.s.disable_worker("W1")
    assert h.work() == {
        "n_pending_tasks": 0,
        "running_tasks": [],
        "task_id": None,
        "n_unique_pending": 0,
        "worker_state": "disabled",
    }


def test_while_paused_nothing_is_handed_out_but_counts_are_returned(h: Harness) -> None:
    h.add("A")
    h.s.pause()
    reply = h.work()
    assert reply["task_id"] is None and reply["n_pending_tasks"] == 1
    h.s.unpause()
    assert h.next_id() == "A"


def test_pause_retransmits_a_lost_assignment(h: Harness) -> None:
    h.add("A")
    assert h.next_id() == "A"
    h.s.pause()
    assert h.s.get_work(worker="W1", current_tasks=[])["task_id"] == "A"


def test_pause_does_nothing_when_pause_is_not_enabled(make) -> None:
    h = make(pause_enabled=False)
    h.s.pause()
    assert h.s.is_paused() == {"paused": False}
    assert h.s.is_pause_enabled() == {"enabled": False}


def test_a_task_that_needs_a_busy_resource_waits(make) -> None:
    h = make(resources={"db": 1})
    h.add("A", resources={"db": 1})
    h.add("B", resources={"db": 1})
    assert h.next_id() == "A"
    assert h.next_id() is None
    h.finish("A", resources={"db": 1})
    assert h.next_id() == "B"


def test_an_unconfigured_resource_has_capacity_one(h: Harness) -> None:
    h.add("A", resources={"gpu": 1})
    h.add("B", resources={"gpu": 1})
    h.add("C", resources={"gpu": 2})
    assert h.next_id() == "A"
    assert h.next_id() is None


def test_a_lower_priority_task_does_not_take_a_resource_a_higher_ranked_task_of_another_worker_waits_for(
    make,
) -> None:
    h = make(resources={"db": 1})
    h.add("Blocker", worker="W2")
    h.add("Important", worker="W2", deps=["Blocker"], priority=10, resources={"db": 1})
    h.add("Minor", worker="W1", priority=1, resources={"db": 1})
    assert h.next_id("W2") == "Blocker"
    h.finish("Blocker", "W2")
    # W2 is a live get_work worker with a free slot: Important reserves the db for it
    assert h.next_id("W1") is None
    assert h.next_id("W2") == "Important"


def test_a_waiting_worker_that_stopped_asking_for_work_reserves_nothing(make) -> None:
    h = make(resources={"db": 1}, worker_disconnect_delay=60)
    h.add("Blocker", worker="W2")
    h.add("Important", worker="W2", deps=["Blocker"], priority=10, resources={"db": 1})
    h.add("Minor", worker="W1", priority=1, resources={"db": 1})
    assert h.next_id("W2") == "Blocker"
    h.finish("Blocker", "W2")
    h.clock.advance(61)
    assert h.next_id("W1") == "Minor"


def test_a_worker_with_several_processes_reserves_one_slot_per_process(make) -> None:
    h = make(resources={"db": 2})
    h.s.add_worker("W2", {"workers": 2})
    h.add("Gate", worker="W2")
    for name in ("I1", "I2"):
        h.add(name, worker="W2", deps=["Gate"], priority=10, resources={"db": 1})
    h.add("Minor", worker="W1", priority=1, resources={"db": 1})
    assert h.next_id("W2") == "Gate"
    h.finish("Gate", "W2")
    assert h.next_id("W1") is None


def test_an_assistant_runs_any_runnable_task(h: Harness) -> None:
    h.add("A", worker="W1")
    h.add("Ext", worker="W1", runnable=False)
    reply = h.work("Helper", assistant=True)
    assert reply["task_id"] == "A"
    assert h.s._workers["Helper"].info["assistant"] is True
    assert h.next_id("Helper", assistant=True) is None  # Ext was never runnable


def test_an_assistant_finds_the_runnable_task_behind_many_that_nobody_may_run(h: Harness) -> None:
    for i in range(50):
        h.add(f"Ext_{i}", runnable=False)  # external data not there yet: PENDING, ready, runnable by nobody
    h.add("Late")
    assert h.next_id("Helper", assistant=True) == "Late"
    assert h.next_id("Helper", assistant=True) is None


def test_a_ready_task_that_becomes_runnable_goes_to_assistants_in_its_rank(h: Harness) -> None:
    for i in range(5):
        h.add(f"Ext_{i}", runnable=False)
    h.add("Late")
    assert h.next_id("Helper", assistant=True) == "Late"
    h.finish("Late", "Helper")
    h.add("Ext_3", worker="W2")  # a worker that can run it reports it: assistants may run it too
    h.add("Later")
    assert h.next_id("Helper", assistant=True) == "Ext_3"
    assert h.next_id("Helper", assistant=True) == "Later"


def test_a_task_nobody_may_run_still_counts_in_the_greedy_reservation(make) -> None:
    """As in luigid: an assistant's walk reserves its own slot and the resources for the first
    schedulable task it may not run, so a later task needing that resource waits. Skipping the
    tasks nobody may run must start only after that accounting is over."""
    h = make(resources={"db": 1})
    h.add("Ext", runnable=False, resources={"db": 1}, priority=10)
    h.add("Helpful", resources={"db": 1}, priority=1)
    h.add("Free", priority=0)
    assert h.next_id("Helper", assistant=True) == "Free"
    assert h.next_id("W1") == "Helpful"  # W1 runs it itself: W1 is not an assistant


def test_a_task_nobody_may_run_that_cannot_get_its_resources_does_not_hide_the_next_one(make) -> None:
    """U1 waits for the db that Hold's worker keeps; U2 (also runnable by nobody) still takes the
    assistant's own slot and the cpu, so R, which needs the cpu, waits and F is handed out."""
    h = make(resources={"db": 1, "cpu": 1})
    h.add("Hold", worker="W2", resources={"db": 1}, priority=10)
    assert h.next_id("W2") == "Hold"
    h.add("U1", runnable=False, resources={"db": 1}, priority=9)
    h.add("U2", runnable=False, resources={"cpu": 1}, priority=8)
    h.add("R", resources={"cpu": 1}, priority=7)
    h.add("F", priority=0)
    assert h.next_id("Helper", assistant=True) == "F"


def test_tasks_of_one_resource_need_that_cannot_start_do_not_hide_tasks_of_another(make) -> None:
    h = make(resources={"db": 1, "cpu": 1})
    h.add("Hold", resources={"db": 1}, priority=10)
    assert h.next_id() == "Hold"
    for i in range(5):
        h.add(f"Load_{i}", resources={"db": 1}, priority=5)
    h.add("Crunch", resources={"cpu": 1}, priority=1)
    assert h.next_id("Helper", assistant=True) == "Crunch"
    h.finish("Hold")
    assert h.next_id("Helper", assistant=True) == "Load_0"


def test_get_work_records_the_host_as_the_worker_reference(h: Harness) -> None:
    h.work("W1", host="box7")
    assert h.s._workers["W1"].reference == {"host": "box7"}


def test_get_work_prunes_first_when_prune_on_get_work_is_set(make) -> None:
    h = make(prune_on_get_work=True, retry_delay=10)
    h.add("A")
    h.next_id()
    h.finish("A", status="FAILED")
    h.clock.advance(11)
    assert h.next_id() == "A"
