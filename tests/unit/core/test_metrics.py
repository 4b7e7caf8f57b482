"""Metrics hooks are called as luigid calls its collector (protocol section 7)."""

from __future__ import annotations

from typing import Any

from core_harness import RecordingMetrics


def test_a_single_hand_out_counts_as_started_and_completion_as_done(make) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics)
    h.add("A")
    h.next_id()
    h.finish("A")
    assert metrics.calls == [("started", "A"), ("done", "A")]


def test_a_retransmission_counts_as_started_again(make) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics)
    h.add("A")
    h.s.get_work(worker="W1", current_tasks=[])
    h.s.get_work(worker="W1", current_tasks=[])
    assert metrics.calls == [("started", "A"), ("started", "A")]


def test_batches_are_not_counted_as_started(make) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics)
    h.s.add_task_batcher(worker="W1", task_family="Load", batched_args=["day"])
    for day in (1, 2):
        h.add(f"Load_{day}", family="Load", params={"day": str(day)}, batchable=True)
    assert "batch_id" in h.work()
    assert metrics.calls == []


def test_an_already_complete_task_reported_done_counts_as_done(make) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics)
    h.add("A", status="DONE", runnable=False)
    assert metrics.calls == [("done", "A")]


def test_a_failure_counts_as_failed(make) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics)
    h.add("A")
    h.next_id()
    h.finish("A", status="FAILED")
    assert metrics.calls[-1] == ("failed", "A")


def test_a_failure_that_disables_counts_only_as_disabled(make) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics, retry_count=1)
    h.add("A")
    h.next_id()
    h.finish("A", status="FAILED")
    assert metrics.calls == [("started", "A"), ("disabled", "A")]


def test_hooks_fire_only_on_a_real_status_change(make) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics)
    h.add("A", status="DONE", runnable=False)
    h.clock.advance(20)
    h.add("A", status="DONE", runnable=False)
    assert metrics.calls == [("done", "A")]


def test_the_hook_sees_the_task_fields_collectors_use(make) -> None:
    seen: list[dict[str, Any]] = []

    class Collector(RecordingMetrics):
        def handle_task_done(self, task: Any) -> None:
            seen.append(
                {
                    "id": task.id,
                    "family": task.family,
                    "params": task.params,
                    "status": task.status,
                    "time_running": task.time_running,
                    "updated": task.updated,
                }
            )

    h = make(metrics=Collector())
    h.add("A_1", family="A", params={"x": "1"})
    start = h.clock.now
    h.next_id()
    h.clock.advance(7)
    h.finish("A_1")
    assert seen == [
        {
            "id": "A_1",
            "family": "A",
            "params": {"x": "1"},
            "status": "DONE",
            "time_running": start,
            "updated": start + 7,
        }
    ]


def test_a_collector_that_raises_never_breaks_the_transition(make) -> None:
    class Broken:
        def handle_task_disabled(self, task: Any, config: Any) -> None:
            raise TypeError(task.updated - task.time_running)  # luigid's prometheus bug: time_running is None

    h = make(metrics=Broken())
    h.add("A", status="DISABLED")  # a worker-side disable of a task that never ran
    assert h.status("A") == "DISABLED"


def test_update_metrics_task_started_is_available_in_process(make) -> None:
    metrics = RecordingMetrics()
    h = make(metrics=metrics)
    h.add("A")
    h.s.update_metrics_task_started(h.s._tasks["A"])
    assert metrics.calls == [("started", "A")]
