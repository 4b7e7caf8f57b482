"""Reports from inside running tasks, and scheduler -> task messages (docs/luigi-semantics.md)."""

from __future__ import annotations

import uuid

from core_harness import Harness


def start_batch(h: Harness) -> tuple[str, list[str]]:
    h.s.add_task_batcher(worker="W1", task_family="Load", batched_args=["day"])
    ids = []
    for day in (1, 2):
        task_id = f"Load_{day}"
        h.add(task_id, family="Load", params={"day": str(day)}, batchable=True, resources={"db": 2})
        ids.append(task_id)
    h.s.update_resource("db", 4)
    reply = h.work()
    h.s.add_task(task_id="Load_1_2", worker="W1", family="Load", status="RUNNING", batch_id=reply["batch_id"])
    return "Load_1_2", ids


def test_status_message_is_stored_and_read_back(h: Harness) -> None:
    h.add("A")
    h.s.set_task_status_message("A", "50 rows loaded")
    assert h.s.get_task_status_message("A") == {"taskId": "A", "statusMessage": "50 rows loaded"}
    assert h.s.get_task_status_message("missing") == {"taskId": "missing", "statusMessage": ""}


def test_progress_percentage_is_stored_and_read_back(h: Harness) -> None:
    h.add("A")
    h.s.set_task_progress_percentage("A", 42)
    assert h.s.get_task_progress_percentage("A") == {"taskId": "A", "progressPercentage": 42}
    assert h.s.get_task_progress_percentage("missing") == {"taskId": "missing", "progressPercentage": None}


def test_a_batch_representatives_status_message_and_progress_reach_its_siblings(h: Harness) -> None:
    combined, ids = start_batch(h)
    h.s.set_task_status_message(combined, "halfway")
    h.s.set_task_progress_percentage(combined, 50)
    for task_id in ids:
        assert h.s._tasks[task_id].status_message == "halfway"
        assert h.s._tasks[task_id].progress_percentage == 50


def test_decreasing_running_resources_lowers_what_the_task_holds_never_below_zero(h: Harness) -> None:
    h.s.update_resource("db", 4)
    h.add("A", resources={"db": 3, "cpu": 1})
    h.next_id()
    h.s.decrease_running_task_resources("A", {"db": 2, "cpu": 5, "other": 1})
    assert h.s.get_running_task_resources("A") == {"taskId": "A", "resources": {"db": 1, "cpu": 0}}


def test_decreased_resources_become_available_to_other_tasks(h: Harness) -> None:
    h.s.update_resource("db", 2)
    h.add("A", resources={"db": 2})
    h.add("B", resources={"db": 1})
    assert h.next_id() == "A"
    assert h.next_id() is None
    h.s.decrease_running_task_resources("A", {"db": 1})
    assert h.next_id() == "B"


def test_decreasing_resources_of_a_task_that_is_not_running_does_nothing(h: Harness) -> None:
    h.add("A", resources={"db": 1})
    h.s.decrease_running_task_resources("A", {"db": 1})
    assert h.s.get_running_task_resources("A") == {"taskId": "A", "resources": None}


def test_a_batch_representatives_resource_decrease_reaches_its_siblings(h: Harness) -> None:
    combined, ids = start_batch(h)
    h.s.decrease_running_task_resources(combined, {"db": 1})
    assert h.s._tasks[combined].resources_running == {"db": 1}
    for task_id in ids:
        assert h.s._tasks[task_id].resources_running == {"db": 1}


def test_send_scheduler_message_queues_it_for_the_next_ping_which_drains_the_queue(h: Harness) -> None:
    h.add("A")
    reply = h.s.send_scheduler_message(worker="W1", task="A", content="stop please")
    message_id = reply["message_id"]
    assert str(uuid.UUID(message_id)) == message_id
    assert h.s.ping(worker="W1") == {
        "rpc_messages": [
            {
                "name": "dispatch_scheduler_message",
                "kwargs": {"task_id": "A", "message_id": message_id, "content": "stop please"},
            }
        ]
    }
    assert h.s.ping(worker="W1") == {"rpc_messages": []}


def test_no_message_ids_are_issued_when_messages_are_disabled(make) -> None:
    h = make(send_messages=False)
    assert h.s.send_scheduler_message(worker="W1", task="A", content="x") == {"message_id": None}
    assert h.s.ping(worker="W1") == {"rpc_messages": []}


def test_a_message_response_can_be_read_exactly_once(h: Harness) -> None:
    h.add("A")
    h.s.add_scheduler_message_response("A", "m1", "ok")
    assert h.s.get_scheduler_message_response("A", "m1") == {"response": "ok"}
    assert h.s.get_scheduler_message_response("A", "m1") == {"response": None}


def test_a_response_for_an_unknown_task_is_ignored(h: Harness) -> None:
    h.s.add_scheduler_message_response("missing", "m1", "ok")
    assert h.s.get_scheduler_message_response("missing", "m1") == {"response": None}


def test_set_worker_processes_is_delivered_by_ping(h: Harness) -> None:
    h.s.set_worker_processes("W1", 4)
    assert h.s.ping(worker="W1") == {"rpc_messages": [{"name": "set_worker_processes", "kwargs": {"n": 4}}]}


def test_unread_messages_are_counted_in_the_worker_list(h: Harness) -> None:
    h.add("A")
    h.s.set_worker_processes("W1", 2)
    h.s.send_scheduler_message(worker="W1", task="A", content="x")
    assert h.s.worker_list()[0]["num_unread_rpc_messages"] == 2


def test_report_task_statistics_reaches_the_metrics_collector(make) -> None:
    seen = []

    class Collector:
        def handle_task_statistics(self, task, statistics):
            seen.append((task.id, statistics))

    h = make(metrics=Collector())
    h.add("A")
    h.s.report_task_statistics("A", {"rows": 3})
    h.s.report_task_statistics("missing", {"rows": 1})
    assert seen == [("A", {"rows": 3})]
