"""A wide, shallow real Luigi pipeline for bench/real_pipeline.py: ~2,000 tiny tasks.

    Root  <- Group x groups  <- Leaf x leaves (each)

Every task writes one small local file under ``outdir``; defaults give 1 + 40 + 40 x 49 = 2,001
tasks. Run with the stock CLI:

    PYTHONPATH=bench python -m luigi --module wide_pipeline Root --outdir /tmp/out --workers 4 \\
        --scheduler-url http://127.0.0.1:8082
"""

from __future__ import annotations

import os

import luigi


class Leaf(luigi.Task):
    outdir = luigi.Parameter()
    group = luigi.IntParameter()
    leaf = luigi.IntParameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(os.path.join(self.outdir, "leaves", f"g{self.group:03d}", f"l{self.leaf:03d}.txt"))

    def run(self) -> None:
        with self.output().open("w") as fh:
            fh.write(f"{self.group},{self.leaf},{self.group * 1000 + self.leaf}\n")


class Group(luigi.Task):
    outdir = luigi.Parameter()
    group = luigi.IntParameter()
    leaves = luigi.IntParameter(default=49)

    def requires(self) -> list[Leaf]:
        return [Leaf(outdir=self.outdir, group=self.group, leaf=i) for i in range(self.leaves)]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(os.path.join(self.outdir, "groups", f"g{self.group:03d}.txt"))

    def run(self) -> None:
        total = 0
        for target in self.input():
            with target.open("r") as fh:
                total += int(fh.read().strip().split(",")[2])
        with self.output().open("w") as fh:
            fh.write(f"{self.group},{total}\n")


class Root(luigi.Task):
    outdir = luigi.Parameter()
    groups = luigi.IntParameter(default=40)
    leaves = luigi.IntParameter(default=49)

    def requires(self) -> list[Group]:
        return [Group(outdir=self.outdir, group=g, leaves=self.leaves) for g in range(self.groups)]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(os.path.join(self.outdir, "root.txt"))

    def run(self) -> None:
        total = 0
        for target in self.input():
            with target.open("r") as fh:
                total += int(fh.read().strip().split(",")[1])
        with self.output().open("w") as fh:
            fh.write(f"{total}\n")
