"""Wrongly typed arguments are rejected before any state changes; luigi's own variants are accepted."""

from __future__ import annotations

from typing import Any

import pytest
from core_harness import Harness

from scheduler.core import RPC_METHODS, InvalidArgument, Scheduler

BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("add_task", {"task_id": "A", "worker": "W1", "priority": "abc"}, "priority"),
    ("add_task", {"task_id": "A", "worker": "W1", "priority": float("nan")}, "priority"),
    ("add_task", {"task_id": "A", "worker": "W1", "deps": "B"}, "deps"),
    ("add_task", {"task_id": "A", "worker": "W1", "deps": ["B", 3]}, "deps"),
    ("add_task", {"task_id": "A", "worker": "W1", "new_deps": {"B": 1}}, "new_deps"),
    ("add_task", {"task_id": "A", "worker": "W1", "status": "FINISHED"}, "status"),
    ("add_task", {"task_id": "A", "worker": "W1", "resources": {"db": "one"}}, "resources"),
    ("add_task", {"task_id": "A", "worker": "W1", "resources": [1]}, "resources"),
    ("add_task", {"task_id": "A", "worker": "W1", "params": ["x"]}, "params"),
    ("add_task", {"task_id": "A", "worker": "W1", "retry_policy_dict": {"retry_count": "3"}}, "retry_count"),
    ("add_task", {"task_id": "A", "worker": "W1", "assistant": "yes"}, "assistant"),
    ("add_task", {"task_id": 7, "worker": "W1"}, "task_id"),
    ("add_task", {"task_id": "A"}, "worker"),
    ("add_task", {"task_id": "A", "worker": 12}, "worker"),
    ("get_work", {"worker": None}, "worker"),
    ("get_work", {"worker": "W1", "current_tasks": "A"}, "current_tasks"),
    ("get_work", {"worker": "W1", "host": 5}, "host"),
    ("ping", {}, "worker"),
    ("add_worker", {"worker": "W1", "info": "workers=2"}, "info"),
    ("add_worker", {"worker": "W1", "info": [["workers"]]}, "info"),
    ("add_task_batcher", {"worker": "W1", "task_family": "F", "batched_args": "day"}, "batched_args"),
    (
        "add_task_batcher",
        {"worker": "W1", "task_family": "F", "batched_args": ["d"], "max_batch_size": "9"},
        "max_batch_size",
    ),
    ("set_task_progress_percentage", {"task_id": "A", "progress_percentage": "half"}, "progress_percentage"),
    ("set_task_status_message", {"task_id": "A", "status_message": {"a": 1}}, "status_message"),
    ("decrease_running_task_resources", {"task_id": "A", "decrease_resources": {"db": "1"}}, "decrease_resources"),
    ("set_worker_processes", {"worker": "W1", "n": "4"}, "n"),
    ("task_list", {"status": 3}, "status"),
    ("task_list", {"max_shown_tasks": "10"}, "max_shown_tasks"),
    ("dep_graph", {"task_id": ["A"]}, "task_id"),
    ("update_resources", {"db": "many"}, "db"),
    ("update_resources", {"db": -1}, "db"),
    ("update_resource", {"resource": 5, "amount": 1}, "resource"),
    ("forgive_failures", {"task_id": 5}, "task_id"),
]


@pytest.mark.parametrize(("method", "kwargs", "argument"), BAD_CALLS)
def test_a_wrongly_typed_argument_is_rejected_without_changing_state(
    h: Harness, method: str, kwargs: dict[str, Any], argument: str
) -> None:
    h.add("A", resources={"db": 1})
    h.next_id()
    before = h.s.export()
    h.s.take_changes()
    with pytest.raises(InvalidArgument) as raised:
        getattr(h.s, method)(**kwargs)
    assert argument in str(raised.value)
    assert method in str(raised.value)
    assert h.s.export() == before
    assert h.s.take_changes().empty


def test_the_message_names_the_argument_and_what_was_expected(h: Harness) -> None:
    with pytest.raises(InvalidArgument, match=r"add_task: 'priority' must be a number, got 'abc'"):
        h.s.add_task(task_id="A", worker="W1", priority="abc")


def test_invalid_argument_is_a_value_error() -> None:
    assert issubclass(InvalidArgument, ValueError)


def test_luigis_legitimate_variants_are_accepted(h: Harness) -> None:
    h.s.add_worker("W1", [("salt", "123"), ("workers", 2), ("first_task", None)])
    h.s.add_worker("W1", {"workers": 3})
    h.s.add_task_batcher(worker="W1", task_family="F", batched_args=["d"], max_batch_size=float("inf"))
    h.s.add_task(task_id="A", worker="W1", priority=2.5, deps=("B",), runnable=None, accepts_messages=None)
    h.s.add_task(task_id="B", worker="W1", priority=1, deps=None, resources={"db": 1.0})
    h.s.get_work(worker="W1", host=None, assistant=None, current_tasks=None)
    assert h.s._workers["W1"].info["workers"] == 3
    assert h.s._tasks["A"].priority == 2.5


def test_methods_with_catch_all_arguments_ignore_unknown_keys(h: Harness) -> None:
    h.s.add_worker("W1", {"workers": 1}, surprise=True)
    h.s.get_work(worker="W1", surprise=True)
    h.s.ping(worker="W1", surprise=True)
    h.s.task_list("", "", surprise=True)
    h.s.worker_list(surprise=True)
    h.s.graph(surprise=True)
    h.s.task_search("A", surprise=True)
    h.s.fetch_error("A", surprise=True)


def test_every_registered_rpc_is_a_method_of_the_scheduler() -> None:
    assert len(RPC_METHODS) == 38
    assert "update_metrics_task_started" not in RPC_METHODS
    for name in RPC_METHODS:
        assert callable(getattr(Scheduler, name)), name


def test_luigi_workers_positional_calls_work(h: Harness) -> None:
    h.s.add_worker("W1", [("workers", 1)])
    assert h.s.count_pending("W1")["n_pending_tasks"] == 0
    h.add("A")
    h.next_id()
    h.s.set_task_status_message("A", "msg")
    h.s.set_task_progress_percentage("A", 10)
    h.s.decrease_running_task_resources("A", {})
    assert h.s.get_task_status_message("A")["statusMessage"] == "msg"
