"""Where a luigi-ha node spends its time on the hot paths of bench/throughput.py.

    python bench/profile_ha.py                 # all three parts, N = 10000,30000 (~3 minutes)
    python bench/profile_ha.py --only core --sizes 30000 --cprofile
    python bench/profile_ha.py --only core --sizes 2000 --external 10000
    python bench/profile_ha.py --only core --sizes 10000 --blocked 200

Three parts, each isolating one layer:

* ``core``: the scheduling core in-process, no I/O: register N tasks (the DAG of throughput.py)
  with ``add_task``, then drain them as 4 assistants (``get_work`` + completion ``add_task``),
  calling ``take_changes()`` after every pair and JSON-encoding the changed rows as the store
  does. Reports microseconds per call (CPU cost of the core itself and of building the rows).
  ``--external K`` first registers K external tasks that wait for their data (PENDING, no deps,
  runnable by nobody), ranked before the DAG, as a daily run waiting on upstream data has them.
  ``--blocked K`` first registers K tasks that need one unit of a resource with capacity 1 and
  hands the first of them out, so the other K - 1 wait on top of the ready tasks all drain long.
* ``store``: ``Store.apply`` of the change sets one ``get_work`` and one completion report
  really produce, fenced as the node does, on a durable PostgreSQL (fsync=on,
  synchronous_commit=on) and on a non-durable one (fsync=off, synchronous_commit=off), split
  into: the SQL statements (count and time, via SQLAlchemy cursor events), the COMMIT, and the
  rest (pool checkout with pre-ping, SQLAlchemy). Plus the floor: a bare one-row INSERT+COMMIT
  with psycopg2.
* ``node``: one real node process on a durable PostgreSQL; sequential ``ping`` (answered
  without a commit: HTTP + queue + the writer loop) and sequential ``add_task`` (+ one group
  commit each) round trips from one client; then a throughput.py drain of N tasks with 4
  worker processes while the node's own /metrics are read before and after: commits, requests
  per commit, mean commit time and the share of the drain the single writer spent committing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Procs, fmt, log, machine_line, node_counters, percentile, rpc, start_ha_node, table  # noqa: E402
from throughput import build_dag, done_payload, measure, schedule_payload, worker_identity  # noqa: E402

US = 1e6


def _us(values: list[float]) -> tuple[str, str, str]:
    return (fmt(statistics.fmean(values) * US, 1), fmt(percentile(values, 50) * US, 1),
            fmt(percentile(values, 99) * US, 1))


# -- part 1: the core ---------------------------------------------------------------------------


def profile_core(n: int, use_cprofile: bool, external: int = 0, blocked: int = 0) -> dict[str, Any]:
    from scheduler.core import Scheduler
    from scheduler.store.codec import dumps

    core = Scheduler(resources={"bench_db": 1})
    reg, info = worker_identity(workers=4)
    core.add_worker(worker=reg, info=info)
    for i in range(external):
        core.add_task(worker=reg, task_id=f"External_{i}", family="External", status="PENDING", runnable=False)
    for i in range(blocked):
        core.add_task(worker=reg, task_id=f"Load_{i}", family="Load", resources={"bench_db": 1}, priority=10)
    if blocked:  # the first one runs (and holds the resource) for the whole drain
        core.get_work(host="bench", assistant=True, current_tasks=[], worker="holder")
    dag = build_dag(n)
    t: dict[str, list[float]] = defaultdict(list)
    for task in dag:
        payload = schedule_payload(reg, task)
        s = time.perf_counter()
        core.add_task(**payload)
        t["add_task (register)"].append(time.perf_counter() - s)
    core.take_changes()
    assistants = []
    for _ in range(4):
        wid, winfo = worker_identity()
        core.add_worker(worker=wid, info=winfo)
        assistants.append(wid)
    prof = cProfile.Profile() if use_cprofile else None
    done = 0
    i = 0
    started = time.perf_counter()
    if prof:
        prof.enable()
    while done < n:
        wid = assistants[i % 4]
        i += 1
        s = time.perf_counter()
        reply = core.get_work(host="bench", assistant=True, current_tasks=[], worker=wid)
        t["get_work"].append(time.perf_counter() - s)
        if reply.get("task_id") is None:
            raise RuntimeError("in-process drain got no task: the DAG should always have one runnable")
        s = time.perf_counter()
        core.add_task(**done_payload(wid, reply))
        t["add_task (DONE report)"].append(time.perf_counter() - s)
        s = time.perf_counter()
        changes = core.take_changes()
        t["take_changes (per pair)"].append(time.perf_counter() - s)
        s = time.perf_counter()
        for row in changes.tasks.values():
            dumps(row)
        for row in changes.workers.values():
            dumps(row)
        t["JSON-encode changed rows (per pair)"].append(time.perf_counter() - s)
        done += 1
    if prof:
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
        print(f"\ncProfile of the in-process drain, N={n} (cumulative):\n{out.getvalue()}", file=sys.stderr)
    drain_s = time.perf_counter() - started
    return {"n": n, "calls": {k: v for k, v in t.items()}, "drain_s": drain_s}


# -- part 2: the store --------------------------------------------------------------------------


def _sample_changes() -> tuple[Any, Any]:
    """The Changes of one real get_work (assistant) and of one real completion report."""
    from scheduler.core import Scheduler

    core = Scheduler()
    reg, info = worker_identity(workers=4)
    core.add_worker(worker=reg, info=info)
    for task in build_dag(2000):
        core.add_task(**schedule_payload(reg, task))
    wid, winfo = worker_identity()
    core.add_worker(worker=wid, info=winfo)
    # a first hand-out and report, so the worker's own row (host, assistant) is no longer new
    core.add_task(**done_payload(wid, core.get_work(host="bench", assistant=True, current_tasks=[], worker=wid)))
    core.take_changes()
    reply = core.get_work(host="bench", assistant=True, current_tasks=[], worker=wid)
    got = core.take_changes()
    core.add_task(**done_payload(wid, reply))
    done = core.take_changes()
    return got, done


def profile_store(durable: bool, runs: int) -> dict[str, Any]:
    import psycopg2
    import sqlalchemy as sa
    from sqlalchemy import event

    from lease import create_engine
    from lease.fence import check_fence
    from scheduler.store import Store
    from scheduler.store.tables import leases
    from tests.support.dbservers import PostgresServer

    pg = PostgresServer(durable=durable)
    engine = None
    try:
        pg.start()
        url = pg.create_database("prof")
        engine = create_engine(url)
        store = Store(engine)
        store.upgrade()
        with engine.begin() as conn:
            conn.execute(sa.insert(leases).values(name="prof", holder="me", epoch=1, expires_at=1e12))
        fence = partial(check_fence, table=leases, lease_name="prof", holder="me", epoch=1)
        got, done = _sample_changes()
        stmt_t: dict[str, float] = defaultdict(float)
        stmt_n: dict[str, int] = defaultdict(int)
        marks: dict[str, float] = {}

        def kind(sql: str) -> str:
            s = sql.lstrip().upper()
            if s.startswith("SELECT"):
                return "fence SELECT ... FOR SHARE"
            table_name = s.split("INTO", 1)[1].split()[0].strip('"').lower() if "INTO" in s[:30] else "?"
            return ("upsert " if "ON CONFLICT" in s else "insert ") + table_name

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            marks["stmt"] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            k = kind(statement)
            stmt_t[k] += time.perf_counter() - marks["stmt"]
            stmt_n[k] += 1

        @event.listens_for(engine, "commit")
        def _commit(conn):  # noqa: ANN001
            marks["commit"] = time.perf_counter()

        results: dict[str, Any] = {}
        for label, changes in (("get_work (task RUNNING + event)", got), ("add_task DONE (task + event)", done)):
            for _ in range(30):  # warm-up: pool, statement cache
                store.apply(changes, epoch=1, fence=fence)
            stmt_t.clear()
            stmt_n.clear()
            totals, commits = [], []
            for _ in range(runs):
                s = time.perf_counter()
                store.apply(changes, epoch=1, fence=fence)
                e = time.perf_counter()
                totals.append(e - s)
                commits.append(e - marks["commit"])
            statements = {k: {"per_apply": stmt_n[k] / runs, "mean_ms": stmt_t[k] / stmt_n[k] * 1000}
                          for k in stmt_t}
            sql_ms = sum(stmt_t.values()) / runs * 1000
            results[label] = {
                "rows": {"tasks": len(changes.tasks), "workers": len(changes.workers), "events": len(changes.events)},
                "total_mean_ms": statistics.fmean(totals) * 1000, "total_p50_ms": percentile(totals, 50) * 1000,
                "total_p99_ms": percentile(totals, 99) * 1000, "statements": statements, "sql_ms": sql_ms,
                "commit_ms": statistics.fmean(commits) * 1000,
                "other_ms": statistics.fmean(totals) * 1000 - sql_ms - statistics.fmean(commits) * 1000,
            }
        conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="prof")
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE floor (x int)")
        conn.commit()
        floor = []
        for _ in range(runs):
            s = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("INSERT INTO floor VALUES (1)")
            conn.commit()
            floor.append(time.perf_counter() - s)
        conn.close()
        results["floor: psycopg2 INSERT 1 row + COMMIT"] = {
            "total_mean_ms": statistics.fmean(floor) * 1000, "total_p50_ms": percentile(floor, 50) * 1000,
            "total_p99_ms": percentile(floor, 99) * 1000}
        return results
    finally:
        if engine is not None:
            engine.dispose()
        pg.destroy()


# -- part 3: a real node --------------------------------------------------------------------------


def profile_node(n: int, runs: int) -> dict[str, Any]:
    from tests.support.dbservers import PostgresServer

    procs = Procs()
    pg = PostgresServer(durable=True)
    tmp = tempfile.TemporaryDirectory(prefix="lha-profile-")
    try:
        pg.start()
        url, proc = start_ha_node(procs, Path(tmp.name), pg.create_database("node"))
        session = requests.Session()
        wid, _info = worker_identity()
        rtt: dict[str, list[float]] = defaultdict(list)
        for _ in range(50):
            rpc(session, url, "ping", {"worker": wid})
        for _ in range(runs):
            s = time.perf_counter()
            rpc(session, url, "ping", {"worker": wid})
            rtt["ping (no commit)"].append(time.perf_counter() - s)
        for i, task in enumerate(build_dag(runs)):
            s = time.perf_counter()
            # tasks of their own (no deps, not runnable): they must not join the drain below
            solo = {**task, "task_id": f"Solo_{i}", "family": "Solo", "deps": []}
            rpc(session, url, "add_task", {**schedule_payload(wid, solo), "runnable": False})
            rtt["add_task (1 commit)"].append(time.perf_counter() - s)
        before = node_counters(url)
        run = measure("luigi-ha", url, proc.pid, build_dag(n), 4, 600, "lean", 4)
        after = node_counters(url)
        d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        commits = d.get("luigi_ha_commit_duration_seconds_count", 0.0)
        commit_s = d.get("luigi_ha_commit_duration_seconds_sum", 0.0)
        batches = d.get("luigi_ha_commit_batch_requests_count", 0.0)
        requests_in_batches = d.get("luigi_ha_commit_batch_requests_sum", 0.0)
        total_s = run.register_seconds + run.drain_seconds
        per_method = {}
        for method in ("add_task", "get_work", "ping", "add_worker"):
            c = d.get(f'luigi_ha_rpc_duration_seconds_count{{method="{method}"}}', 0.0)
            s = d.get(f'luigi_ha_rpc_duration_seconds_sum{{method="{method}"}}', 0.0)
            if c:
                per_method[method] = {"count": int(c), "server_mean_ms": s / c * 1000}
        return {
            "rtt": {k: {"mean_ms": statistics.fmean(v) * 1000, "p50_ms": percentile(v, 50) * 1000,
                        "p99_ms": percentile(v, 99) * 1000} for k, v in rtt.items()},
            "run": run.as_json(), "commits": int(commits), "batches": int(batches),
            "requests_per_batch": requests_in_batches / batches if batches else None,
            "commit_mean_ms": commit_s / commits * 1000 if commits else None,
            "commit_share_of_wall": commit_s / total_s if total_s else None, "wall_s": total_s,
            "server_rpc": per_method,
        }
    finally:
        procs.stop_all()
        pg.destroy()
        tmp.cleanup()


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["core", "store", "node"], default=None)
    ap.add_argument("--sizes", default="10000,30000", help="task counts for the core part (default 10000,30000)")
    ap.add_argument("--node-tasks", type=int, default=10000, help="DAG size for the node part (default 10000)")
    ap.add_argument("--runs", type=int, default=500, help="samples per store/RTT measurement (default 500)")
    ap.add_argument("--cprofile", action="store_true", help="also print a cProfile of the in-process drain")
    ap.add_argument("--external", type=int, default=0,
                    help="core part: external tasks nobody may run, ranked before the DAG (default 0)")
    ap.add_argument("--blocked", type=int, default=0,
                    help="core part: tasks waiting for a busy resource, ranked before the DAG (default 0)")
    args = ap.parse_args()
    report: dict[str, Any] = {"benchmark": "profile_ha"}
    print(machine_line())
    if args.only in (None, "core"):
        rows = []
        core_json = []
        for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
            log(f"core: N={n}, {args.external} external tasks and {args.blocked} blocked tasks waiting")
            res = profile_core(n, args.cprofile, args.external, args.blocked)
            for name, values in res["calls"].items():
                rows.append([fmt(n), name, fmt(len(values)), *_us(values)])
            core_json.append({"n": n, "external": args.external, "blocked": args.blocked,
                              "in_process_drain_tasks_per_s": round(n / res["drain_s"], 1),
                              **{k: round(statistics.fmean(v) * US, 2) for k, v in res["calls"].items()}})
            rows.append([fmt(n), "=> in-process drain, tasks/s", "", fmt(n / res["drain_s"], 0), "", ""])
        print("\ncore (in-process, no I/O): CPU cost per call, microseconds")
        print(table(["N", "call", "calls", "mean us", "p50 us", "p99 us"], rows))
        report["core_us"] = core_json
    if args.only in (None, "store"):
        rows = []
        store_json = {}
        for durable in (True, False):
            label = "durable (fsync=on, sync_commit=on)" if durable else "fsync=off, sync_commit=off"
            log(f"store: {label}")
            res = profile_store(durable, args.runs)
            store_json["durable" if durable else "non_durable"] = res
            for what, r in res.items():
                detail = ""
                if "statements" in r:
                    detail = "; ".join(f"{k} x{v['per_apply']:.0f} {v['mean_ms']:.2f} ms"
                                       for k, v in r["statements"].items())
                rows.append([label, what, fmt(r["total_mean_ms"], 2), fmt(r["total_p50_ms"], 2),
                             fmt(r["total_p99_ms"], 2), fmt(r.get("sql_ms"), 2), fmt(r.get("commit_ms"), 2),
                             fmt(r.get("other_ms"), 2), detail])
        print("\nstore: one fenced Store.apply, milliseconds (other = pool checkout with pre-ping + SQLAlchemy)")
        print(table(["PostgreSQL", "change set", "mean", "p50", "p99", "SQL", "COMMIT", "other", "statements"],
                    rows))
        report["store_ms"] = store_json
    if args.only in (None, "node"):
        log(f"node: RTTs and a drain of {args.node_tasks} tasks on durable PostgreSQL")
        res = profile_node(args.node_tasks, args.runs)
        print("\nnode (one process, durable PostgreSQL): sequential round trips from one client, ms")
        print(table(["RPC", "mean", "p50", "p99"], [[k, fmt(v["mean_ms"], 2), fmt(v["p50_ms"], 2),
                                                      fmt(v["p99_ms"], 2)] for k, v in res["rtt"].items()]))
        r = res["run"]
        print(f"\nnode during register + drain of {r['n']:,} tasks (4 worker processes): "
              f"{r['add_task_per_s']:,.0f} add_task/s, {r['tasks_per_s']:,.1f} tasks/s, get_work p50 "
              f"{r['get_work_p50_ms']:.2f} ms p99 {r['get_work_p99_ms']:.2f} ms")
        print(f"  group commits: {res['commits']:,}, requests per commit (mean): {res['requests_per_batch']:.2f}, "
              f"commit mean {res['commit_mean_ms']:.2f} ms, the writer was committing "
              f"{100 * res['commit_share_of_wall']:.0f}% of the {res['wall_s']:.1f} s wall time")
        print(table(["RPC", "count", "server-side mean ms (HTTP in -> reply, incl. queue + commit wait)"],
                    [[k, fmt(v["count"]), fmt(v["server_mean_ms"], 2)] for k, v in res["server_rpc"].items()]))
        report["node"] = res
    print()
    print(json.dumps(_rounded(report), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
