"""What a node's Prometheus registry shows after the core's hooks fire.

Dashboards and alert rules built for luigid read these series by name and ``family`` label, so
each hook must land on the right series of the right family, however many families there are.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from scheduler.metrics import NodeMetrics


@dataclass
class FinishedTask:
    family: str
    time_running: float | None = 100.0
    updated: float = 107.5


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_hook_counts_on_its_own_series_per_family() -> None:
    metrics = NodeMetrics()
    for _ in range(3):
        metrics.handle_task_started(FinishedTask("Extract"))
    metrics.handle_task_started(FinishedTask("Load"))
    metrics.handle_task_done(FinishedTask("Extract"))
    metrics.handle_task_done(FinishedTask("Extract"))
    metrics.handle_task_failed(FinishedTask("Load"))
    metrics.handle_task_disabled(FinishedTask("Load"), None)

    seen = samples(metrics)
    extract, load = (("family", "Extract"),), (("family", "Load"),)
    assert seen["luigi_task_started_total", extract] == 3
    assert seen["luigi_task_started_total", load] == 1
    assert seen["luigi_task_done_total", extract] == 2
    assert seen["luigi_tasks_success_total", extract] == 2
    assert seen["luigi_task_failed_total", load] == 1
    assert seen["luigi_tasks_failed_total", load] == 1
    assert seen["luigi_task_disabled_total", load] == 1
    assert ("luigi_task_done_total", load) not in seen
    assert ("luigi_task_failed_total", extract) not in seen


def test_execution_time_is_the_last_finished_run_and_skips_tasks_that_never_ran() -> None:
    metrics = NodeMetrics()
    metrics.handle_task_done(FinishedTask("Extract", time_running=100.0, updated=107.5))
    metrics.handle_task_done(FinishedTask("Extract", time_running=200.0, updated=202.0))
    metrics.handle_task_failed(FinishedTask("Load", time_running=None))

    seen = samples(metrics)
    assert seen["luigi_task_execution_time_seconds", (("family", "Extract"),)] == 2.0
    assert ("luigi_task_execution_time_seconds", (("family", "Load"),)) not in seen


def test_rpc_latency_is_kept_per_method() -> None:
    metrics = NodeMetrics()
    metrics.observe_rpc("get_work", 0.002)
    metrics.observe_rpc("get_work", 0.004)
    metrics.observe_rpc("ping", 0.0001)

    seen = samples(metrics)
    assert seen["luigi_ha_rpc_duration_seconds_count", (("method", "get_work"),)] == 2
    assert abs(seen["luigi_ha_rpc_duration_seconds_sum", (("method", "get_work"),)] - 0.006) < 1e-9
    assert seen["luigi_ha_rpc_duration_seconds_count", (("method", "ping"),)] == 1


def test_a_family_that_is_not_valid_unicode_text_never_breaks_the_exposition() -> None:
    # Such a family can only come from a database written before the HTTP layer refused lone
    # surrogates; one of them used to fail every scrape until the process restarted.
    metrics = NodeMetrics()
    metrics.handle_task_failed(FinishedTask("Bad\ud800Family"))
    metrics.handle_task_done(FinishedTask("Good"))

    seen = samples(metrics)

    assert seen[("luigi_task_failed_total", (("family", "Bad\\ud800Family"),))] == 1
    assert seen[("luigi_task_done_total", (("family", "Good"),))] == 1
