"""add_task: protocol section 3.4, step by step."""

from __future__ import annotations

from core_harness import Harness


def test_first_report_creates_a_pending_task_with_its_description(h: Harness) -> None:
    h.add("A_1", family="A", module="mod", params={"x": "1"}, priority=3, resources={"db": 1})
    task = h.s._tasks["A_1"]
    assert (task.status, task.family, task.module, task.params, task.priority) == (
        "PENDING",
        "A",
        "mod",
        {"x": "1"},
        3,
    )
    assert task.resources == {"db": 1}
    assert task.time == task.updated == h.clock.now


def test_add_task_returns_none_and_ignores_unknown_keywords(h: Harness) -> None:
    assert h.s.add_task(task_id="A", worker="W1", some_future_argument=1) is None
    assert h.status("A") == "PENDING"


def test_a_task_first_reported_done_is_created_done(h: Harness) -> None:
    h.add("A", status="DONE", runnable=False)
    assert h.status("A") == "DONE"


def test_unreported_deps_become_unknown_placeholders(h: Harness) -> None:
    h.add("A", deps=["B", "C"])
    assert h.status("B") == "UNKNOWN"
    assert h.status("C") == "UNKNOWN"
    assert h.s._tasks["B"].family == ""


def test_a_placeholder_learns_its_description_when_reported(h: Harness) -> None:
    h.add("A", deps=["B_1"])
    h.add("B_1", family="B", module="m", params={"p": "1"}, param_visibilities={"p": 0})
    task = h.s._tasks["B_1"]
    assert (task.status, task.family, task.module, task.params) == ("PENDING", "B", "m", {"p": "1"})


def test_a_placeholder_takes_the_priority_of_the_call_that_named_it(h: Harness) -> None:
    h.add("Root", deps=["Ext"], priority=5)
    assert h.s._tasks["Ext"].priority == 5


def test_the_reporting_worker_is_a_stakeholder_of_the_task_and_its_deps(h: Harness) -> None:
    h.add("A", deps=["B"], worker="W1")
    assert h.s._tasks["A"].stakeholders.keys() == {"W1"}
    assert h.s._tasks["B"].stakeholders.keys() == {"W1"}


def test_runnable_workers_are_kept_in_first_insertion_order(h: Harness) -> None:
    h.add("A", worker="W1")
    h.add("A", worker="W2")
    h.add("A", worker="W1")
    assert list(h.s._tasks["A"].workers) == ["W1", "W2"]


def test_a_non_runnable_report_makes_the_worker_a_stakeholder_only(h: Harness) -> None:
    h.add("A", worker="W1", status="DONE", runnable=False)
    task = h.s._tasks["A"]
    assert task.stakeholders.keys() == {"W1"}
    assert list(task.workers) == []
    assert task.runnable is False


def test_a_failed_report_does_not_add_the_worker_to_the_runnable_list(h: Harness) -> None:
    h.add("A", worker="W1", status="FAILED", runnable=True)
    assert list(h.s._tasks["A"].workers) == []


def test_a_completion_report_with_null_runnable_keeps_the_runnable_list(h: Harness) -> None:
    h.add("A", worker="W1")
    assert h.next_id("W1") == "A"
    h.finish("A", "W1")
    assert list(h.s._tasks["A"].workers) == ["W1"]


def test_priority_is_raised_but_never_lowered(h: Harness) -> None:
    h.add("A", priority=5)
    h.add("A", priority=1)
    assert h.s._tasks["A"].priority == 5
    h.add("A", priority=9)
    assert h.s._tasks["A"].priority == 9


def test_a_priority_raise_is_pushed_down_through_every_lower_priority_dep(h: Harness) -> None:
    h.add("C")
    h.add("B", deps=["C"])
    h.add("A", deps=["B"], priority=7)
    assert h.s._tasks["B"].priority == 7
    assert h.s._tasks["C"].priority == 7


def test_a_task_pushes_its_priority_to_deps_even_on_a_priority_zero_report(h: Harness) -> None:
    h.add("A", priority=4)
    h.add("B")
    h.add("A", deps=["B"], priority=0)
    assert h.s._tasks["B"].priority == 4


def test_deps_are_replaced_by_deps_and_extended_by_new_deps(h: Harness) -> None:
    h.add("A", deps=["B", "C"])
    h.add("A", deps=["D"])
    assert list(h.s._tasks["A"].deps) == ["D"]
    h.add("A", new_deps=["E"])
    assert set(h.s._tasks["A"].deps) == {"D", "E"}


def test_null_deps_keep_the_known_deps(h: Harness) -> None:
    h.add("A", deps=["B"])
    h.add("A", deps=None)
    assert list(h.s._tasks["A"].deps) == ["B"]


def test_every_report_overwrites_the_declared_resources(h: Harness) -> None:
    h.add("A", resources={"db": 1})
    h.add("A", resources=None)
    assert h.s._tasks["A"].resources == {}


def test_a_pending_report_within_the_cooldown_after_done_is_ignored_entirely(make) -> None:
    h = make(stable_done_cooldown_secs=10)
    h.add("A", worker="W1")
    assert h.next_id("W1") == "A"
    h.finish("A", "W1")
    h.clock.advance(5)
    h.add("A", worker="W2")
    task = h.s._tasks["A"]
    assert task.status == "DONE"
    assert "W2" not in task.workers and "W2" not in task.stakeholders


def test_a_pending_report_after_the_cooldown_reopens_a_done_task(make) -> None:
    h = make(stable_done_cooldown_secs=10)
    h.add("A", worker="W1")
    h.next_id("W1")
    h.finish("A", "W1")
    h.clock.advance(11)
    h.add("A", worker="W2")
    assert h.status("A") == "PENDING"


def test_nobody_else_can_reschedule_a_running_task(h: Harness) -> None:
    h.add("A", worker="W1")
    h.add("A", worker="W2")
    assert h.next_id("W1") == "A"
    h.add("A", worker="W2", status="PENDING")
    h.finish("A", "W2", status="FAILED")
    assert h.status("A") == "RUNNING"
    assert h.s._tasks["A"].worker_running == "W1"


def test_only_the_runner_can_finish_a_running_task(h: Harness) -> None:
    h.add("A", worker="W1")
    h.next_id("W1")
    h.finish("A", "W1")
    assert h.status("A") == "DONE"


def test_a_report_with_new_deps_moves_a_running_task_back_to_pending(h: Harness) -> None:
    h.add("A", worker="W1")
    h.next_id("W1")
    h.add("B", worker="W1")
    h.s.add_task(task_id="A", worker="W1", status="PENDING", new_deps=["B"], runnable=None)
    assert h.status("A") == "PENDING"
    assert set(h.s._tasks["A"].deps) == {"B"}


def test_suspended_is_treated_as_pending(h: Harness) -> None:
    h.add("A", status="FAILED")
    h.add("A", status="SUSPENDED")
    assert h.status("A") == "PENDING"


def test_an_assistants_report_does_not_make_it_a_stakeholder(h: Harness) -> None:
    h.add("A", worker="W1")
    h.add("A", worker="Helper", assistant=True, deps=["B"])
    assert h.s._tasks["A"].stakeholders.keys() == {"W1"}
    assert h.status("B") is None  # no placeholders on behalf of an assistant


def test_a_disabled_worker_cannot_create_or_update_tasks(h: Harness) -> None:
    h.add("A", worker="W1")
    h.s.disable_worker("W2")
    h.add("A", worker="W2", status="DONE")
    h.add("B", worker="W2")
    assert h.status("A") == "PENDING"
    assert h.status("B") is None


def test_a_disabled_worker_can_still_report_on_its_running_task(h: Harness) -> None:
    h.add("A", worker="W1")
    h.next_id("W1")
    h.s.disable_worker("W1")
    h.finish("A", "W1")
    assert h.status("A") == "DONE"


def test_a_tracking_url_report_from_the_runner_keeps_resources_and_accepts_messages(h: Harness) -> None:
    h.add("A", worker="W1", resources={"db": 1}, accepts_messages=True)
    h.next_id("W1")
    h.s.add_task(task_id="A", worker="W1", status="RUNNING", tracking_url="http://job/1")
    task = h.s._tasks["A"]
    assert task.tracking_url == "http://job/1"
    assert task.resources == {"db": 1}
    assert task.accepts_messages is True


def test_a_running_report_without_retry_policy_keeps_the_task_policy(h: Harness) -> None:
    h.add("A", worker="W1", retry_policy_dict={"retry_count": 2, "disable_hard_timeout": None})
    h.next_id("W1")
    h.s.add_task(task_id="A", worker="W1", status="RUNNING", retry_policy_dict=None)
    assert h.s._tasks["A"].retry_policy.retry_count == 2


def test_retry_policy_overrides_only_the_non_null_entries(h: Harness) -> None:
    h.add("A", retry_policy_dict={"retry_count": 3, "disable_window": None})
    policy = h.s._tasks["A"].retry_policy
    assert policy.retry_count == 3
    assert policy.disable_window == 3600
    assert policy.disable_hard_timeout == 999999999


def test_a_report_on_a_task_that_is_not_running_clears_its_tracking_url(h: Harness) -> None:
    h.add("A", worker="W1")
    h.next_id("W1")
    h.s.add_task(task_id="A", worker="W1", status="RUNNING", tracking_url="http://job/1")
    h.finish("A", "W1")
    h.add("A", worker="W1", status="DONE")
    assert h.s._tasks["A"].tracking_url is None


def test_the_explanation_is_stored_and_served_by_fetch_error(h: Harness) -> None:
    h.add("A_1", family="A", params={"x": "1"})
    h.next_id()
    h.finish("A_1", status="FAILED")
    reply = h.s.fetch_error("A_1")
    assert reply["error"] == '"Traceback: boom"'
    assert reply["displayName"] == "A(x=1)"
    assert reply["taskFamily"] == "A"
