"""The example daily pipeline: ExtractUserEvents -> TransformUserEvents -> DailyAggregations.

A classic shape: extract one file of raw user events per hour of the day, clean each hour, then
aggregate the day. Targets are local files under ``[daily_pipeline] data_dir`` (or
``$DAILY_PIPELINE_DATA``), so the pipeline runs anywhere. ``[daily_pipeline] task_seconds`` makes
every task take a little while, which is what lets the demo kill a scheduler mid-run.

Run it with the stock Luigi CLI against any luigi-ha node or VIP::

    luigi --module daily_pipeline DailyAggregations --date 2026-11-23 \
          --scheduler-url http://127.0.0.1:8082 --workers 4
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import luigi


class pipeline_config(luigi.Config):  # noqa: N801 - Luigi config classes are named after their section
    """``[daily_pipeline]`` settings."""

    @classmethod
    def get_task_family(cls) -> str:
        return "daily_pipeline"

    data_dir = luigi.Parameter(default=os.environ.get("DAILY_PIPELINE_DATA", "daily-data"))
    task_seconds = luigi.FloatParameter(default=float(os.environ.get("DAILY_PIPELINE_TASK_SECONDS", "0")))
    hours = luigi.IntParameter(default=24)


def _root() -> Path:
    return Path(pipeline_config().data_dir)


def _pause() -> None:
    seconds = pipeline_config().task_seconds
    if seconds > 0:
        time.sleep(seconds)


def _record_run(task: luigi.Task) -> None:
    """Append one line per run() to runs.log: the demo and drills count executions with it."""
    with open(_root() / "runs.log", "a", encoding="utf-8") as fh:
        fh.write(f"{task.task_id}\n")


class ExtractUserEvents(luigi.Task):
    """Pull one hour of raw user events (synthesised deterministically from the date and hour)."""

    date = luigi.DateParameter()
    hour = luigi.IntParameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(_root() / f"{self.date:%Y-%m-%d}" / "raw" / f"{self.hour:02d}.jsonl"))

    def run(self) -> None:
        _pause()
        rng = random.Random(f"{self.date}-{self.hour}")
        with self.output().open("w") as out:
            for i in range(rng.randint(50, 150)):
                event = {
                    "user": f"u{rng.randint(1, 40)}",
                    "action": rng.choice(["view", "click", "purchase", "view", "view"]),
                    "seq": i,
                    "valid": rng.random() > 0.05,
                }
                out.write(json.dumps(event) + "\n")
        _record_run(self)


class TransformUserEvents(luigi.Task):
    """Drop invalid events and keep the columns the aggregation needs, as CSV."""

    date = luigi.DateParameter()
    hour = luigi.IntParameter()

    def requires(self) -> ExtractUserEvents:
        return ExtractUserEvents(date=self.date, hour=self.hour)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(_root() / f"{self.date:%Y-%m-%d}" / "clean" / f"{self.hour:02d}.csv"))

    def run(self) -> None:
        _pause()
        with self.input().open("r") as src, self.output().open("w") as out:
            writer = csv.writer(out)
            writer.writerow(["user", "action"])
            for line in src:
                event = json.loads(line)
                if event["valid"]:
                    writer.writerow([event["user"], event["action"]])
        _record_run(self)


class DailyAggregations(luigi.Task):
    """Count actions per kind and active users for the whole day."""

    date = luigi.DateParameter()

    def requires(self) -> list[TransformUserEvents]:
        return [TransformUserEvents(date=self.date, hour=h) for h in range(pipeline_config().hours)]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(_root() / f"{self.date:%Y-%m-%d}" / "daily_aggregations.json"))

    def run(self) -> None:
        _pause()
        actions: Counter[str] = Counter()
        users: set[str] = set()
        for target in self.input():
            with target.open("r") as fh:
                for row in csv.DictReader(fh):
                    actions[row["action"]] += 1
                    users.add(row["user"])
        with self.output().open("w") as out:
            json.dump({"date": str(self.date), "actions": dict(actions), "active_users": len(users)}, out)
        _record_run(self)
