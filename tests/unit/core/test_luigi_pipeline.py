"""A real luigi 3.8 pipeline run in-process against the core (luigi's own Worker, no HTTP).

The pipeline: three ``Extract`` tasks with different priorities, a ``Transform`` per day that
needs the single ``db`` resource, an ``Aggregate`` over the transforms, and a ``Report`` that
also needs a task that always fails.  Two worker processes run it, so the ``db`` capacity of 1
must keep the transforms from overlapping.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import luigi
import luigi.worker
import pytest

from scheduler.core import Scheduler, SchedulerSettings


class Logged(luigi.Task):
    root = luigi.Parameter(significant=False)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(self.root) / f"{self.task_id}.out"))

    def record(self, event: str) -> None:
        with open(Path(self.root) / "events.jsonl", "a") as log:
            log.write(json.dumps({"task": self.task_family, "id": self.task_id, "event": event, "at": time.time()}))
            log.write("\n")

    def finish(self) -> None:
        with self.output().open("w") as out:
            out.write("ok")


class Extract(Logged):
    day = luigi.IntParameter()

    @property
    def priority(self) -> int:  # type: ignore[override]
        return {1: 1, 2: 5, 3: 3}[self.day]

    def run(self) -> None:
        self.record("start")
        self.finish()


class Transform(Logged):
    day = luigi.IntParameter()
    resources = {"db": 1}  # luigi reads this class attribute

    def requires(self) -> Extract:
        return Extract(root=self.root, day=self.day)

    def run(self) -> None:
        self.record("start")
        time.sleep(0.3)
        self.record("end")
        self.finish()


class Aggregate(Logged):
    def requires(self) -> list[Transform]:
        return [Transform(root=self.root, day=day) for day in (1, 2, 3)]

    def run(self) -> None:
        self.record("start")
        self.finish()


class Broken(Logged):
    def run(self) -> None:
        self.record("start")
        raise RuntimeError("this task always fails")


class Report(Logged):
    def requires(self) -> list[luigi.Task]:
        return [Aggregate(root=self.root), Broken(root=self.root)]

    def run(self) -> None:
        self.record("start")
        self.finish()


class CoreFactory:
    """luigi's worker_scheduler_factory protocol, handing luigi our scheduler."""

    def __init__(self) -> None:
        self.scheduler: Scheduler | None = None

    def create_local_scheduler(self) -> Scheduler:
        self.scheduler = Scheduler(
            settings=SchedulerSettings(prune_on_get_work=True, resources={"db": 1}, retry_delay=900)
        )
        return self.scheduler

    def create_remote_scheduler(self, url: str) -> Any:
        raise AssertionError("the test runs with local_scheduler=True")

    def create_worker(
        self, scheduler: Scheduler, worker_processes: int, assistant: bool = False
    ) -> luigi.worker.Worker:
        return luigi.worker.Worker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant)


@pytest.fixture
def run_pipeline(tmp_path: Path):
    def run() -> tuple[bool, CoreFactory, list[dict[str, Any]]]:
        factory = CoreFactory()
        ok = luigi.build(
            [Report(root=str(tmp_path))],
            worker_scheduler_factory=factory,
            local_scheduler=True,
            workers=2,
            no_lock=True,
            log_level="WARNING",
        )
        log = tmp_path / "events.jsonl"
        events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return ok, factory, events

    return run


def test_a_real_luigi_pipeline_runs_everything_it_can_and_stops_at_the_failure(run_pipeline) -> None:
    ok, factory, events = run_pipeline()
    started = [event["task"] for event in events if event["event"] == "start"]
    assert ok is False  # Broken failed, so Report could not run
    assert sorted(started) == sorted(["Extract"] * 3 + ["Transform"] * 3 + ["Aggregate", "Broken"])
    assert "Report" not in started

    statuses = {
        task.family + str(task.params.get("day", "")): task.status for task in factory.scheduler._tasks.values()
    }
    assert statuses == {
        "Extract1": "DONE",
        "Extract2": "DONE",
        "Extract3": "DONE",
        "Transform1": "DONE",
        "Transform2": "DONE",
        "Transform3": "DONE",
        "Aggregate": "DONE",
        "Broken": "FAILED",
        "Report": "PENDING",
    }
    broken = next(task for task in factory.scheduler._tasks.values() if task.family == "Broken")
    assert "this task always fails" in broken.expl


def test_the_pipeline_respects_priorities_dependencies_and_the_resource(run_pipeline) -> None:
    _ok, factory, events = run_pipeline()
    handed_out = [event["task_id"] for event in factory.scheduler.take_changes().events if event["status"] == "RUNNING"]
    extracts = [task_id for task_id in handed_out if task_id.startswith("Extract")]
    assert [task_id.split("_")[1] for task_id in extracts] == ["2", "3", "1"]  # priority 5, 3, 1

    def at(task: str, event: str) -> list[float]:
        return sorted(e["at"] for e in events if e["task"] == task and e["event"] == event)

    assert min(at("Transform", "start")) >= min(at("Extract", "start"))
    assert at("Aggregate", "start")[0] >= max(at("Transform", "end"))
    transform_windows = sorted(zip(at("Transform", "start"), at("Transform", "end"), strict=True))
    for (_start, end), (next_start, _next_end) in zip(transform_windows, transform_windows[1:], strict=False):
        assert next_start >= end  # db capacity 1: never two transforms at once


def test_a_second_run_finds_everything_complete_except_the_failing_branch(run_pipeline) -> None:
    run_pipeline()
    ok, factory, events = run_pipeline()
    second_run = [event["task"] for event in events if event["event"] == "start"][8:]
    assert ok is False
    assert second_run == ["Broken"]
    assert factory.scheduler._tasks[Aggregate(root="x").task_id].status == "DONE"
