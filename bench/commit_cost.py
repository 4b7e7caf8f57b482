"""The cost of one commit round through the leader's writer, for this checkout and an older one.

    python bench/commit_cost.py --before /tmp/old-tree        # A B A B A B, 3,000 rounds each
    python bench/commit_cost.py --before DIR --durable        # ... on fsync'd PostgreSQL

Each run is a fresh process of one code tree (``PYTHONPATH``) on a fresh database of one
throwaway PostgreSQL. It takes the lease, then commits ``--rounds`` batches shaped like a drain's
(``--tasks`` changed task rows, one event each) through ``open_writer`` (the one-script writer),
awaited one at a time as the node does, and prints the median and p99 round time. Runs of the
two trees alternate so that both see the same machine load; the figures are medians over runs.
What it isolates is what a checkout adds to a round (SQL, server work, client CPU); the drain
benchmark (throughput.py) shows the same rounds among everything else a node does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.dbservers import PostgresServer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, sys, time
from lease import LeaderLease, LeaseTimings, create_engine
from scheduler.core import Changes
from scheduler.store import Store
from scheduler.store.tables import FENCE_FUNCTION, leases
from scheduler.store.writer import open_writer

url, rounds, n_tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = Store(create_engine(url))
store.upgrade()
lease = LeaderLease(store.engine, "scheduler", "bench:1:x", LeaseTimings(ttl=600, renew_interval=100,
                    renew_deadline=500), table=leases, fence_function=FENCE_FUNCTION)
assert lease.try_acquire() == 1
writer = open_writer(store, lease)

def row(i, r):
    return {"id": f"Transform_{i}", "status": "DONE" if r % 2 else "RUNNING", "family": "Transform",
            "updated": 1.7e9 + r, "time": 1.7e9, "seq": i, "retry_policy": {"retry_count": 999999999},
            "params": {"date": "2024-06-01", "i": str(i)}, "deps": [f"Extract_{i}"],
            "workers": ["Worker(salt=1)"], "stakeholders": ["Worker(salt=1)"], "worker_running": "Worker(salt=1)"}

async def main():
    times = []
    for r in range(rounds):
        tasks = {f"Transform_{(r * n_tasks + k) % 5000}": row((r * n_tasks + k) % 5000, r) for k in range(n_tasks)}
        events = [{"task_id": t, "status": "DONE", "at": 1.7e9 + r, "worker": "w", "host": "h"} for t in tasks]
        started = time.perf_counter()
        await writer.apply(Changes(tasks=tasks, events=events), 1)
        times.append(time.perf_counter() - started)
    return times

times = asyncio.run(main())
writer.close()
times = times[len(times) // 10:]  # warm-up: the connection, the statement cache, the pages
times.sort()
print(json.dumps({"median_us": times[len(times) // 2] * 1e6, "p99_us": times[int(len(times) * 0.99)] * 1e6}))
"""


def one_run(tree: Path, url: str, rounds: int, tasks: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, url, str(rounds), str(tasks)], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="the older checkout to compare with")
    ap.add_argument("--runs", type=int, default=3, help="runs per tree, alternating (default 3)")
    ap.add_argument("--rounds", type=int, default=3000, help="commit rounds per run (default 3,000)")
    ap.add_argument("--tasks", type=int, default=2, help="changed task rows per round (default 2)")
    ap.add_argument("--durable", action="store_true", help="PostgreSQL with fsync and synchronous_commit on")
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "this": REPO}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    pg = PostgresServer(durable=args.durable)
    try:
        pg.start()
        for run in range(args.runs):
            for name, tree in trees.items():
                url = pg.create_database(f"commit_cost_{name}_{run}")
                results[name].append(one_run(tree, url, args.rounds, args.tasks))
                print(f"run {run + 1} {name}: {results[name][-1]}", flush=True)
    finally:
        pg.destroy()
    summary = {
        name: {
            "median_us": statistics.median(r["median_us"] for r in runs),
            "p99_us": statistics.median(r["p99_us"] for r in runs),
        }
        for name, runs in results.items()
    }
    fsync = "on" if args.durable else "off"
    print(f"\ncommit round, {args.tasks} task rows + {args.tasks} events, fsync {fsync}, "
          f"medians of {args.runs} runs x {args.rounds} rounds")
    for name, s in summary.items():
        print(f"  {name:6}  median {s['median_us']:7.0f} us   p99 {s['p99_us']:7.0f} us")
    print(json.dumps({"benchmark": "commit_cost", "durable": args.durable, "tasks": args.tasks, "runs": results,
                      "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
