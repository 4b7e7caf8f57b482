"""Unmodified Luigi 3.8 workers run their pipelines against a luigi-ha node exactly as against luigid.

Each test starts a real ``luigi-ha scheduler`` process and drives it with the real ``luigi`` CLI
(or ``luigi.build`` in a subprocess), then checks what actually ran, from the workers' own record.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import requests

pytestmark = pytest.mark.e2e


def api(url: str, method: str, **args: object) -> object:
    r = requests.post(f"{url}/api/{method}", data={"data": json.dumps(args)}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["response"]


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_multi_level_pipeline_with_four_worker_processes_runs_every_task_once_after_its_deps(
    db, request, make_cluster, luigi_runner
):
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    cluster = make_cluster(url)
    runner = luigi_runner(cluster.nodes[0].url)

    result = runner.run("Top", "--width", "4", "--fan", "3", "--seconds", "0.05", "--workers", "4")

    assert result.returncode == 0, result.output
    counts = Counter(task_id for _, task_id, *_ in result.runs)
    assert len(counts) == 1 + 4 + 12
    assert set(counts.values()) == {1}
    finished = {task_id: end for _, task_id, _, end, _ in result.runs}
    started = {task_id: start for _, task_id, start, _, _ in result.runs}
    top = next(t for f, t, *_ in result.runs if f == "Top")
    assert all(started[top] >= end for t, end in finished.items() if t != top)
    assert len({pid for *_, pid in result.runs}) > 1, "4 worker processes should share the work"
    done = api(cluster.nodes[0].url, "task_list", status="DONE", upstream_status="")
    assert top in done and len(done) == 17


def test_a_failing_task_is_retried_by_the_scheduler_and_the_pipeline_then_succeeds(
    sqlite_url, make_cluster, luigi_runner
):
    cluster = make_cluster(sqlite_url)
    runner = luigi_runner(cluster.nodes[0].url)
    (runner.workdir / "client.cfg").write_text(
        "[core]\nrpc_retry_attempts = 30\nrpc_retry_wait = 1\n\n"
        "[worker]\nkeep_alive = true\nwait_interval = 0.2\nwait_jitter = 0.1\nping_interval = 0.5\n"
    )

    result = runner.run("FlakyPipeline", "--workers", "2", timeout=90)

    assert result.returncode == 0, result.output
    assert (runner.workdir / "data" / "flaky-a.failed-once").exists(), "the first attempt must have failed"
    assert [f for f, *_ in result.runs].count("Flaky") == 1, "only the successful retry records a run"
    events = api(cluster.nodes[0].url, "task_search", task_str="Flaky")
    assert list(events) == ["DONE"]


def test_higher_priority_tasks_run_first_with_a_single_worker(sqlite_url, make_cluster, luigi_runner):
    cluster = make_cluster(sqlite_url)
    runner = luigi_runner(cluster.nodes[0].url)

    result = runner.run("Priorities", "--workers", "1")

    assert result.returncode == 0, result.output
    order = [task_id for family, task_id, *_ in result.runs if family == "Prioritised"]
    assert [int(t.split("_")[1]) for t in order] == [9, 7, 5, 3, 1]


def test_a_global_resource_of_capacity_one_is_never_used_by_two_tasks_at_once(sqlite_url, make_cluster,
                                                                            luigi_runner):
    cluster = make_cluster(sqlite_url)
    runner = luigi_runner(cluster.nodes[0].url)

    result = runner.run("ResourceLimited", "--count", "6", "--workers", "4")

    assert result.returncode == 0, result.output
    spans = sorted((start, end) for family, _, start, end, _ in result.runs if family == "UsesDb")
    assert len(spans) == 6
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert next_start >= end - 0.01, "two tasks held the db resource at the same time"


def test_an_assistant_worker_runs_tasks_another_worker_scheduled(sqlite_url, make_cluster, luigi_runner):
    cluster = make_cluster(sqlite_url)
    runner = luigi_runner(cluster.nodes[0].url)

    scheduling_only = runner.run("Top", "--width", "2", "--fan", "2", "--workers", "0")
    assert scheduling_only.returncode == 0, scheduling_only.output
    assert scheduling_only.runs == [], "a --workers 0 invocation only schedules"
    pending = api(cluster.nodes[0].url, "task_list", status="PENDING", upstream_status="")
    assert len(pending) == 7

    assistant = subprocess.run(
        [sys.executable, "-c",
         "import luigi, sys; sys.exit(0 if luigi.build([], assistant=True, workers=2, "
         f"scheduler_url={cluster.nodes[0].url!r}) is not None else 1)"],
        env=runner.env(), capture_output=True, text=True, timeout=120,
    )
    assert assistant.returncode == 0, assistant.stdout + assistant.stderr
    assert len(runner.read_runs()) == 7
    assert api(cluster.nodes[0].url, "task_list", status="PENDING", upstream_status="") == {}


def test_a_batchable_family_is_handed_to_one_worker_as_a_batch(sqlite_url, make_cluster, luigi_runner):
    cluster = make_cluster(sqlite_url)
    runner = luigi_runner(cluster.nodes[0].url)

    result = runner.run("Batched", "--workers", "1")

    assert result.returncode == 0, result.output
    batch_runs = [task_id for family, task_id, *_ in result.runs if family == "BatchLoad"]
    assert len(batch_runs) == 1, batch_runs
    assert sorted(batch_runs[0].split(",")) == ["k1", "k2", "k3", "k4", "k5"]
    done = api(cluster.nodes[0].url, "task_list", status="DONE", upstream_status="")
    assert sum(1 for t in done.values() if t["name"] == "BatchLoad") >= 5
