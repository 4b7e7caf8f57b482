"""A real Luigi pipeline (~2,000 tiny tasks, ``luigi --workers 4``) against luigid and luigi-ha.

    python bench/real_pipeline.py                 # 3 repeats each, alternating luigid, luigi-ha, ...
    python bench/real_pipeline.py --repeats 5 --groups 40 --leaves 49

The pipeline is bench/wide_pipeline.py (Root <- 40 Groups <- 49 Leaves each = 2,001 tasks, each
writing one small local file). Each run is the stock luigi CLI, unmodified:

    python -m luigi --module wide_pipeline Root --outdir DIR --workers 4 --scheduler-url URL

with PYTHONPATH=bench, an empty luigi config (so luigi's defaults apply: rpc_retry_wait,
rpc_connect_timeout, wait_interval, ...), a fresh output directory and fresh scheduler state:
a new luigid with its own new state file, or a new luigi-ha node on a NEW database of a durable
throwaway PostgreSQL (fsync=on, synchronous_commit=on). Runs alternate A B A B. The time is the
wall time of the luigi process, from its start to its exit; a run counts only if it exits 0,
the root's output exists and every task's file was written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, Procs, clean_env, fmt, log, machine_line, ratio, start_ha_node, start_luigid, table  # noqa: E402


def run_pipeline(url: str, workdir: Path, groups: int, leaves: int, workers: int, timeout: float) -> float:
    outdir = workdir / "out"
    outdir.mkdir(parents=True, exist_ok=True)
    env = clean_env(workdir, PYTHONPATH=os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")])))
    argv = [sys.executable, "-m", "luigi", "--module", "wide_pipeline", "Root", "--outdir", str(outdir),
            "--groups", str(groups), "--leaves", str(leaves), "--workers", str(workers), "--scheduler-url", url]
    log_path = workdir / "luigi.log"
    with open(log_path, "wb") as fh:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=fh, stderr=fh, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"luigi did not finish within {timeout}s; see {log_path}") from None
        elapsed = time.perf_counter() - started
    written = sum(1 for _ in outdir.rglob("*.txt"))
    expected = 1 + groups + groups * leaves
    if code != 0 or not (outdir / "root.txt").exists() or written != expected:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"luigi run failed (exit {code}, {written}/{expected} files):\n{tail}")
    text = log_path.read_text(errors="replace")
    if "This progress looks :)" not in text:
        raise RuntimeError(f"luigi's summary does not report success; see {log_path}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs per scheduler (default 3)")
    ap.add_argument("--groups", type=int, default=40)
    ap.add_argument("--leaves", type=int, default=49, help="leaves per group (default 49: 2,001 tasks)")
    ap.add_argument("--workers", type=int, default=4, help="luigi --workers (default 4)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per luigi run (default 600 s)")
    ap.add_argument("--workdir", default=None, help="keep logs and outputs here (default: temp dir, removed)")
    args = ap.parse_args()
    n_tasks = 1 + args.groups + args.groups * args.leaves

    from tests.support.dbservers import PostgresServer

    tmp = tempfile.TemporaryDirectory(prefix="lha-pipeline-")
    workdir = Path(args.workdir) if args.workdir else Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    pg: PostgresServer | None = None
    times: dict[str, list[float]] = {"luigid": [], "luigi-ha": []}
    order: list[str] = []
    try:
        pg = PostgresServer(durable=True)
        pg.start()
        log(f"durable PostgreSQL (fsync=on, synchronous_commit=on) on port {pg.port}")
        for i in range(args.repeats):
            for scheduler in ("luigid", "luigi-ha"):
                where = workdir / f"{i + 1}-{scheduler}"
                where.mkdir(parents=True, exist_ok=True)
                if scheduler == "luigid":
                    url, proc = start_luigid(procs, where / "scheduler")
                else:
                    url, proc = start_ha_node(procs, where / "scheduler", pg.create_database(f"pipeline_{i}"))
                try:
                    elapsed = run_pipeline(url, where, args.groups, args.leaves, args.workers, args.timeout)
                finally:
                    procs.stop(proc)
                times[scheduler].append(elapsed)
                order.append(scheduler)
                log(f"run {i + 1} {scheduler}: {elapsed:.2f} s for {n_tasks} tasks")
    finally:
        procs.stop_all()
        if pg is not None:
            pg.destroy()
        if not args.workdir:
            tmp.cleanup()

    print()
    print(f"real Luigi pipeline: {n_tasks:,} tasks (Root <- {args.groups} Groups <- {args.leaves} Leaves each), "
          f"`luigi --workers {args.workers}`, stock luigi CLI, fresh state and outputs per run; order "
          + " ".join("A" if s == "luigid" else "B" for s in order) + " (A = luigid, B = luigi-ha)")
    print(machine_line() + "; luigi-ha = one node on durable PostgreSQL (fsync=on, synchronous_commit=on)")
    print()
    rows = []
    summary: dict[str, dict[str, float | list[float]]] = {}
    for scheduler, values in times.items():
        summary[scheduler] = {"runs_s": [round(v, 3) for v in values], "min_s": round(min(values), 3),
                              "median_s": round(statistics.median(values), 3),
                              "tasks_per_s_median": round(n_tasks / statistics.median(values), 1)}
        rows.append([scheduler, " ".join(f"{v:.2f}" for v in values), fmt(min(values), 2),
                     fmt(statistics.median(values), 2), fmt(n_tasks / statistics.median(values), 1)])
    print(table(["scheduler", "wall times s (in run order)", "min s", "median s", "tasks/s (median)"], rows))
    r_min = ratio(summary["luigi-ha"]["min_s"], summary["luigid"]["min_s"])  # type: ignore[arg-type]
    r_med = ratio(summary["luigi-ha"]["median_s"], summary["luigid"]["median_s"])  # type: ignore[arg-type]
    print()
    verdict = "met" if r_med <= 1.0 else "MISSED"
    print(f"ratio luigi-ha / luigid wall time: min {r_min:.3f}, median {r_med:.3f}  "
          f"(target <= 1.0: {verdict} on the median)")
    print()
    print(json.dumps({"benchmark": "real_pipeline", "tasks": n_tasks, "workers": args.workers,
                      "repeats": args.repeats, "order": order, "results": summary,
                      "ratio_ha_over_luigid": {"min": round(r_min, 4), "median": round(r_med, 4)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
