"""The probe pipeline of ``luigi-ha drill`` (and of the HA end-to-end tests).

``DrillProbe(run_id, tasks=N)`` needs ``ceil(N / group_size)`` ``ProbeGroup`` tasks, each needing
up to ``group_size`` ``ProbeTask`` leaves: N + ceil(N / group_size) + 1 tasks in all, three
levels deep. Every ``run()`` appends one line to ``$DRILL_RUNS_LOG``::

    <family> <task_id> <start> <end> <pid>

so a drill can count how often each task ran (exactly once is the goal) and which never ran.
Targets live under ``$DRILL_DATA/<run_id>/``; a fresh ``run_id`` makes a fresh set of tasks, so
drills can repeat against the same cluster.

    luigi --module drill_probe DrillProbe --run-id r1 --tasks 200 --seconds 0.05 \\
          --scheduler-url http://127.0.0.1:8082 --workers 4
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import luigi


def _data_dir() -> Path:
    return Path(os.environ.get("DRILL_DATA", "drill-data"))


class _Recorded(luigi.Task):
    run_id = luigi.Parameter()
    seconds = luigi.FloatParameter(default=0.0, significant=False)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(_data_dir() / self.run_id / f"{self.task_id}.done"))

    def run(self) -> None:
        start = time.time()
        if self.seconds:
            time.sleep(self.seconds)
        end = time.time()
        log = os.environ.get("DRILL_RUNS_LOG") or str(_data_dir() / "runs.log")
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{self.task_family} {self.task_id} {start:.6f} {end:.6f} {os.getpid()}\n")
        with self.output().open("w") as out:
            out.write("ok")


class ProbeTask(_Recorded):
    n = luigi.IntParameter()


class ProbeGroup(_Recorded):
    group = luigi.IntParameter()
    tasks = luigi.IntParameter()
    group_size = luigi.IntParameter(default=10)

    def requires(self) -> list[ProbeTask]:
        first = self.group * self.group_size
        last = min(self.tasks, first + self.group_size)
        return [ProbeTask(run_id=self.run_id, n=n, seconds=self.seconds) for n in range(first, last)]


class DrillProbe(_Recorded):
    tasks = luigi.IntParameter(default=200)
    group_size = luigi.IntParameter(default=10)

    def requires(self) -> list[ProbeGroup]:
        groups = math.ceil(self.tasks / self.group_size)
        return [ProbeGroup(run_id=self.run_id, group=g, tasks=self.tasks, group_size=self.group_size,
                           seconds=self.seconds) for g in range(groups)]


def expected_task_count(tasks: int, group_size: int = 10) -> int:
    return tasks + math.ceil(tasks / group_size) + 1
