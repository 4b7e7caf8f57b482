"""The e-mail outbox: what luigid would have e-mailed, for the server to deliver."""

from __future__ import annotations


def test_a_scheduler_disable_queues_an_immediate_notice(make) -> None:
    h = make(retry_count=1, disable_persist=77)
    h.add("A")
    h.next_id()
    h.finish("A", status="FAILED")
    assert h.s.take_notifications() == [
        {"kind": "disabled", "task_id": "A", "family": "A", "failures": 1, "window": 3600, "persist": 77}
    ]
    assert h.s.take_notifications() == []


def test_with_batch_emails_failures_are_queued_for_the_digest(make) -> None:
    h = make(batch_emails=True)
    h.add("A_1", family="A", params={"day": "1"})
    h.next_id()
    h.finish("A_1", status="FAILED")
    (notice,) = h.s.take_notifications()
    assert notice["kind"] == "failure"
    assert notice["task"] == "A(day=1)"
    assert notice["expl"] == "Traceback: boom"  # the worker's JSON text, decoded


def test_with_batch_emails_a_failure_without_explanation_does_not_raise(make) -> None:
    h = make(batch_emails=True)
    h.add("A")
    h.s.add_task(task_id="A", worker="W1", status="FAILED", expl=None)
    assert h.status("A") == "FAILED"
    assert h.s.take_notifications()[0]["expl"] is None


def test_scheduling_failures_are_queued_only_with_batch_emails(make) -> None:
    quiet = make()
    quiet.s.announce_scheduling_failure("A()", "A", {}, "boom", [], worker="W1")
    assert quiet.s.take_notifications() == []
    batched = make(batch_emails=True)
    batched.s.announce_scheduling_failure("A()", "A", {"x": "1"}, "boom", ["a@b"], worker="W1")
    assert batched.s.take_notifications() == [
        {
            "kind": "scheduling_failure",
            "task": "A()",
            "family": "A",
            "params": {"x": "1"},
            "expl": "boom",
            "owners": ["a@b"],
        }
    ]
