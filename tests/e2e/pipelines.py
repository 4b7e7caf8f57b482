"""Luigi pipelines the end-to-end tests run with real ``luigi`` workers.

Every ``run()`` appends one line ``<family> <task_id> <start> <end> <pid>`` to
``$E2E_RUNS_LOG`` so tests can assert order, overlap and how often each task ran. Targets live
under ``$E2E_DATA``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import luigi


def data_dir() -> Path:
    return Path(os.environ["E2E_DATA"])


class Recorded(luigi.Task):
    """A task whose run sleeps ``seconds`` and records itself in the runs log."""

    seconds = luigi.FloatParameter(default=0.0, significant=False)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(data_dir() / "targets" / f"{self.task_id}.done"))

    def work(self) -> None:
        """Override for what the task does before it records success."""

    def run(self) -> None:
        start = time.time()
        if self.seconds:
            time.sleep(self.seconds)
        self.work()
        end = time.time()
        with open(os.environ["E2E_RUNS_LOG"], "a", encoding="utf-8") as fh:
            fh.write(f"{self.task_family} {self.task_id} {start:.6f} {end:.6f} {os.getpid()}\n")
        with self.output().open("w") as out:
            out.write("ok")


class Leaf(Recorded):
    n = luigi.IntParameter()


class Middle(Recorded):
    n = luigi.IntParameter()
    fan = luigi.IntParameter(default=3)

    def requires(self) -> list[Leaf]:
        return [Leaf(n=self.n * 10 + i, seconds=self.seconds) for i in range(self.fan)]


class Top(Recorded):
    """Three levels: Top <- Middle x width <- Leaf x fan each."""

    width = luigi.IntParameter(default=4)
    fan = luigi.IntParameter(default=3)

    def requires(self) -> list[Middle]:
        return [Middle(n=i, fan=self.fan, seconds=self.seconds) for i in range(self.width)]


class Flaky(Recorded):
    """Fails on its first run (leaving a marker), succeeds when the scheduler retries it."""

    name = luigi.Parameter()

    def work(self) -> None:
        marker = data_dir() / f"flaky-{self.name}.failed-once"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("x")
            raise RuntimeError("first attempt fails on purpose")


class FlakyPipeline(luigi.WrapperTask):
    def requires(self) -> list[luigi.Task]:
        return [Flaky(name="a"), Leaf(n=999)]


class Prioritised(Recorded):
    n = luigi.IntParameter()

    @property
    def priority(self) -> int:  # type: ignore[override]
        return self.n


class Priorities(luigi.WrapperTask):
    def requires(self) -> list[Prioritised]:
        return [Prioritised(n=n) for n in (3, 9, 1, 7, 5)]


class UsesDb(Recorded):
    """Needs the global resource ``db`` (capacity 1 on the scheduler): never two at once."""

    n = luigi.IntParameter()
    resources = {"db": 1}


class ResourceLimited(luigi.WrapperTask):
    count = luigi.IntParameter(default=6)

    def requires(self) -> list[UsesDb]:
        return [UsesDb(n=n, seconds=0.3) for n in range(self.count)]


class BatchLoad(luigi.Task):
    """A batchable family: the scheduler hands several keys to one run as "k1,k2,...". """

    key = luigi.Parameter(batch_method=",".join)

    def output(self) -> list[luigi.LocalTarget]:
        return [luigi.LocalTarget(str(data_dir() / "batch" / f"{k}.done")) for k in self.key.split(",")]

    def run(self) -> None:
        with open(os.environ["E2E_RUNS_LOG"], "a", encoding="utf-8") as fh:
            fh.write(f"BatchLoad {self.key} {time.time():.6f} {time.time():.6f} {os.getpid()}\n")
        for target in self.output():
            with target.open("w") as out:
                out.write("ok")


class Batched(luigi.WrapperTask):
    def requires(self) -> list[BatchLoad]:
        return [BatchLoad(key=k) for k in ("k1", "k2", "k3", "k4", "k5")]


class Slow(Recorded):
    """A long pipeline for durability tests: width x fan leaves that take a while."""

    n = luigi.IntParameter()


class SlowPipeline(luigi.WrapperTask):
    count = luigi.IntParameter(default=40)
    seconds = luigi.FloatParameter(default=0.2)

    def requires(self) -> list[Slow]:
        return [Slow(n=n, seconds=self.seconds) for n in range(self.count)]
