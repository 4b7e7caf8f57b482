"""luigi-ha vs the stock luigid, side by side in one run: register an N-task DAG, then drain it.

    python bench/throughput.py                                  # N = 10000,30000; W = 4; 120 s budget
    python bench/throughput.py --sizes 2000 --drain-budget 60   # a quick run
    python bench/throughput.py --schedulers luigi-ha            # luigi-ha only
    python bench/throughput.py --rounds 3                       # 3 rounds each; quote the medians

For each N and each scheduler (luigid from the installed luigi package, with its own state file
in a private cwd; luigi-ha as ONE node on a fresh database of a durable throwaway PostgreSQL,
fsync and synchronous_commit on) it

1. registers an N-task layered DAG over HTTP exactly as luigi workers do (every one of the 20
   keys of ``add_task``, parent before children, real luigi task ids), from ``--register-clients``
   processes at once (default 4, each a contiguous slice of the DAG, like four ``luigi`` runs
   scheduling their parts of one graph; 1 = a single sequential client), then ``add_worker``;
   that worker keeps pinging once a second for the whole run, as luigi's keep-alive thread does,
   so its tasks keep their stakeholder;
2. drains it with W assistant workers, each a separate process: ``add_worker`` once, then
   ``get_work`` -> ``add_task(DONE)`` (luigi's completion report) in a loop, plus a ping every
   second. A ``get_work`` that returns no task (everything runnable is already running, the rest
   waits on dependencies) is retried after 5 ms.

Every simulated worker speaks the protocol through a keep-alive libcurl handle (``--client curl``,
the default) rather than ``requests``, which costs ~1 ms of CPU per call on a 2-CPU VM and would
otherwise be what is measured; ``--client lean`` (``http.client``) and ``--client requests`` show
those cases. The clients share the machine's CPUs with the scheduler, so the cheaper the client,
the more of the machine the scheduler under test gets; both schedulers get the same client.

The DAG: ``Extract`` leaves, each with a ``Transform`` on top (a chain), ten Transforms fan into
one ``Aggregate``, and a few ``Report`` roots each need ~1/R of the Aggregates. So about half the
graph is runnable at the start and the rest is released by dependency gating as the drain runs.

Measured: add_task/s while registering (N / registration wall time), tasks/s while draining
(tasks completed / drain wall time, from the moment the workers are released to the last
completion report), the latency of every ``get_work`` (p50/p99), the scheduler process's CPU
time per drained task, and for luigi-ha the group commits of the drain (count, mean duration,
RPCs answered per commit, from the node's own ``/metrics``). A drain that exceeds
``--drain-budget`` is stopped and reported as PARTIAL over the tasks drained within the budget.
"""

from __future__ import annotations

import argparse
import getpass
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Procs,
    RpcError,
    cpu_seconds,
    fmt,
    log,
    machine_line,
    make_client,
    node_counters,
    percentile,
    ratio,
    start_ha_node,
    start_luigid,
    table,
)
from luigi.task import task_id_str  # noqa: E402

MODULE = "bench_dag"
RETRY_POLICY = {"retry_count": None, "disable_hard_timeout": None, "disable_window": None}
EMPTY_POLL_SLEEP = 0.005
FAN_IN = 10  # Transforms per Aggregate


# -- the DAG ----------------------------------------------------------------------------------


def build_dag(n: int) -> list[dict[str, Any]]:
    """Exactly ``n`` tasks, in the order a luigi worker reports them (parent before children)."""
    roots = max(1, n // 2000)
    group = 1 + 2 * FAN_IN  # one Aggregate, its Transforms and their Extracts
    aggregates = max(0, (n - roots) // group)
    extra_leaves = n - roots - aggregates * group

    def task(family: str, params: dict[str, str], deps: list[str]) -> dict[str, Any]:
        return {"task_id": task_id_str(family, params), "family": family, "params": params, "deps": deps}

    order: list[dict[str, Any]] = []
    agg_by_root: list[list[int]] = [list(range(r, aggregates, roots)) for r in range(roots)]
    for r in range(roots):
        subtree: list[dict[str, Any]] = []
        root_deps: list[str] = []
        for a in agg_by_root[r]:
            agg_params = {"date": "2024-06-01", "shard": str(a)}
            chain_tasks: list[dict[str, Any]] = []
            agg_deps: list[str] = []
            for k in range(FAN_IN):
                leaf_no = a * FAN_IN + k
                e = task("Extract", {"date": "2024-06-01", "part": str(leaf_no)}, [])
                t = task("Transform", {"date": "2024-06-01", "part": str(leaf_no)}, [e["task_id"]])
                chain_tasks += [t, e]
                agg_deps.append(t["task_id"])
            agg = task("Aggregate", agg_params, agg_deps)
            subtree += [agg, *chain_tasks]
            root_deps.append(agg["task_id"])
        if r == 0:
            for x in range(extra_leaves):
                leaf = task("Extract", {"date": "2024-06-01", "part": f"extra{x}"}, [])
                subtree.append(leaf)
                root_deps.append(leaf["task_id"])
        order.append(task("Report", {"date": "2024-06-01", "region": str(r)}, root_deps))
        order += subtree
    assert len(order) == n and len({t["task_id"] for t in order}) == n
    return order


def visibilities(params: dict[str, Any]) -> dict[str, int] | None:
    return {name: 0 for name in params} or None


def schedule_payload(worker: str, t: dict[str, Any]) -> dict[str, Any]:
    """What ``Worker._add`` sends for an incomplete task: all 20 named keys of add_task."""
    return {
        "task_id": t["task_id"], "status": "PENDING", "runnable": True, "deps": t["deps"], "new_deps": None,
        "expl": None, "resources": {}, "priority": 0, "family": t["family"], "module": MODULE,
        "params": t["params"], "param_visibilities": visibilities(t["params"]), "accepts_messages": False,
        "assistant": False, "tracking_url": None, "worker": worker, "batchable": False, "batch_id": None,
        "retry_policy_dict": RETRY_POLICY, "owners": [],
    }


def done_payload(worker: str, reply: dict[str, Any]) -> dict[str, Any]:
    """What ``Worker._handle_next_task`` sends when a task succeeded (an assistant worker)."""
    params = reply.get("task_params") or {}
    return {
        "task_id": reply["task_id"], "status": "DONE", "runnable": None, "deps": None, "new_deps": [],
        "expl": json.dumps(None), "resources": {}, "priority": 0, "family": reply.get("task_family", ""),
        "module": reply.get("task_module"), "params": params, "param_visibilities": visibilities(params),
        "accepts_messages": False, "assistant": True, "tracking_url": None, "worker": worker,
        "batchable": None, "batch_id": None, "retry_policy_dict": RETRY_POLICY, "owners": [],
    }


def worker_identity(workers: int = 1) -> tuple[str, list[list[Any]]]:
    salt = random.randint(100_000_000, 999_999_999)
    host, user, pid = socket.gethostname(), getpass.getuser(), os.getpid()
    wid = f"Worker(salt={salt}, workers={workers}, host={host}, username={user}, pid={pid})"
    info = [["salt", salt], ["workers", workers], ["host", host], ["username", user], ["pid", pid]]
    return wid, info


class Pinger(threading.Thread):
    """luigi's keep-alive thread: ping(worker) every ``interval`` seconds on its own connection."""

    def __init__(self, url: str, worker: str, client: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url, self.worker, self.client, self.interval = url, worker, client, interval
        self.halt = threading.Event()
        self.errors = 0

    def run(self) -> None:
        client = make_client(self.client, self.url, timeout=30)
        while not self.halt.wait(self.interval):
            try:
                client.rpc("ping", {"worker": self.worker})
            except (RpcError, OSError, ValueError, KeyError):
                self.errors += 1
        client.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=35)


# -- one registering client (a separate process) -----------------------------------------------


def register_client(url: str, client_kind: str, worker: str, tasks: list[dict[str, Any]], ready: Any, go: Any,
                    out: Any) -> None:
    """Send ``add_task`` for each of ``tasks`` in order, as one luigi worker's scheduling loop does."""
    client = make_client(client_kind, url, timeout=300)
    result: dict[str, Any] = {}
    try:
        client.rpc("ping", {"worker": worker})  # connect before the clock starts
        ready.put(True)
        go.wait()
        for t in tasks:
            client.rpc("add_task", schedule_payload(worker, t))
        result["finished"] = time.monotonic()
    except Exception as exc:  # reported to the parent, which fails the run loudly
        result["fatal"] = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
        out.put(result)


# -- one drain worker (a separate process) ------------------------------------------------------


def drain_worker(url: str, client_kind: str, n_total: int, budget: float, ready: Any, go: Any, t0: Any, done: Any,
                 out: Any) -> None:
    client = make_client(client_kind, url, timeout=300)
    wid, info = worker_identity()
    host = socket.gethostname()
    result: dict[str, Any] = {"latencies": [], "completed": [], "empty": 0, "errors": 0, "ids": []}
    pinger = None
    try:
        client.rpc("add_worker", {"worker": wid, "info": info})
        ready.put(wid)
        go.wait()
        deadline = t0.value + budget
        pinger = Pinger(url, wid, client_kind)
        pinger.start()
        get_work = {"host": host, "assistant": True, "current_tasks": [], "worker": wid}
        while time.monotonic() < deadline and done.value < n_total:
            started = time.perf_counter()
            try:
                reply = client.rpc("get_work", get_work)
            except (RpcError, OSError, ValueError, KeyError):
                result["errors"] += 1
                time.sleep(0.05)
                continue
            result["latencies"].append(time.perf_counter() - started)
            if not reply or reply.get("task_id") is None:
                result["empty"] += 1
                time.sleep(EMPTY_POLL_SLEEP)
                continue
            for attempt in range(5):
                try:
                    client.rpc("add_task", done_payload(wid, reply))
                    break
                except (RpcError, OSError):
                    result["errors"] += 1
                    if attempt == 4:
                        raise
                    time.sleep(0.2)
            result["completed"].append(time.monotonic())
            result["ids"].append(reply["task_id"])
            with done.get_lock():
                done.value += 1
    except Exception as exc:  # reported to the parent, which fails the run loudly
        result["fatal"] = f"{type(exc).__name__}: {exc}"
    finally:
        if pinger is not None:
            pinger.stop()
        client.close()
        out.put(result)


# -- one (scheduler, N) measurement ---------------------------------------------------------------


@dataclass
class Run:
    scheduler: str
    n: int
    round_no: int = 1
    register_seconds: float = float("nan")
    drain_seconds: float = float("nan")
    drained: int = 0
    partial: bool = False
    budget: float = 0.0
    get_work_count: int = 0
    empty_get_work: int = 0
    errors: int = 0
    server_cpu_ms_per_task: float = float("nan")  # the scheduler process's CPU per drained task
    commits: int = 0  # luigi-ha only: group commits during the drain,
    commit_ms: float = float("nan")  # their mean duration,
    per_commit: float = float("nan")  # and RPCs answered per commit
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def add_task_per_s(self) -> float:
        return self.n / self.register_seconds

    @property
    def tasks_per_s(self) -> float:
        return self.drained / self.drain_seconds if self.drain_seconds > 0 else float("nan")

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def drained_text(self) -> str:
        if self.partial:
            return f"PARTIAL: {self.drained}/{self.n} in {self.budget:.0f} s"
        return f"all {self.drained}"

    def as_json(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler, "n": self.n, "round": self.round_no,
            "add_task_per_s": round(self.add_task_per_s, 1), "register_seconds": round(self.register_seconds, 3),
            "tasks_per_s": round(self.tasks_per_s, 1),
            "drain_seconds": round(self.drain_seconds, 3), "drained": self.drained, "partial": self.partial,
            "get_work_p50_ms": round(self.p(50), 3), "get_work_p99_ms": round(self.p(99), 3),
            "get_work_mean_ms": round(statistics.fmean(self.latencies) * 1000, 3) if self.latencies else None,
            "get_work_calls": self.get_work_count, "empty_get_work": self.empty_get_work, "errors": self.errors,
            "server_cpu_ms_per_task": round(self.server_cpu_ms_per_task, 3),
            "drain_commits": self.commits, "drain_commit_mean_ms": round(self.commit_ms, 3),
            "drain_rpcs_per_commit": round(self.per_commit, 2),
        }


@dataclass
class Summary:
    """One (scheduler, N) over every round: the medians to quote and the spread behind them.

    On a shared machine one drain can land on a slow minute; the median of a few rounds, with
    its range beside it, is the figure that holds from one run of the script to the next.
    """

    scheduler: str
    n: int
    runs: list[Run]

    def median(self, figure: Callable[[Run], float]) -> float:
        return statistics.median(figure(r) for r in self.runs)

    @property
    def tasks_per_s(self) -> float:
        return self.median(lambda r: r.tasks_per_s)

    @property
    def add_task_per_s(self) -> float:
        return self.median(lambda r: r.add_task_per_s)

    @property
    def p50(self) -> float:
        return self.median(lambda r: r.p(50))

    @property
    def p99(self) -> float:
        return self.median(lambda r: r.p(99))

    @property
    def partial(self) -> bool:
        return any(r.partial for r in self.runs)

    def spread(self, figure: Callable[[Run], float]) -> tuple[float, float]:
        values = [figure(r) for r in self.runs]
        return min(values), max(values)

    def as_json(self) -> dict[str, Any]:
        low, high = self.spread(lambda r: r.tasks_per_s)
        return {
            "scheduler": self.scheduler, "n": self.n, "rounds": len(self.runs), "partial": self.partial,
            "tasks_per_s_median": round(self.tasks_per_s, 1), "tasks_per_s_min": round(low, 1),
            "tasks_per_s_max": round(high, 1), "add_task_per_s_median": round(self.add_task_per_s, 1),
            "get_work_p50_ms_median": round(self.p50, 3), "get_work_p99_ms_median": round(self.p99, 3),
        }


def summarize(runs: list[Run]) -> list[Summary]:
    """Group the runs by (scheduler, N), in the order they were first measured."""
    groups: dict[tuple[str, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.scheduler, r.n), []).append(r)
    return [Summary(scheduler, n, group) for (scheduler, n), group in groups.items()]


def run_together(procs: list[Any], ready: Any, go: Any, out: Any, *, result_timeout: float, what: str,
                 on_start: Callable[[float], None] | None = None) -> tuple[float, list[dict[str, Any]]]:
    """Start ``procs``, wait until each is ready, release them at once, collect one result each.

    Returns the release time (monotonic) and the results; raises if any process reported a fatal
    error. Every process is joined (killed if it hangs) before this returns.
    """
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        started = time.monotonic()
        if on_start is not None:
            on_start(started)
        go.set()
        results = [out.get(timeout=result_timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        raise RuntimeError(f"{what} failed: {fatal[0]}")
    return started, results


def shards(dag: list[dict[str, Any]], k: int) -> list[list[dict[str, Any]]]:
    """``k`` contiguous slices of the DAG's registration order (parents stay before children within each)."""
    size = -(-len(dag) // k)
    return [dag[i : i + size] for i in range(0, len(dag), size)]


def register(url: str, client_kind: str, worker: str, dag: list[dict[str, Any]], clients: int) -> float:
    """Register the DAG from ``clients`` processes at once (one worker id, as ``--workers`` would); seconds."""
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    parts = shards(dag, clients)
    procs = [ctx.Process(target=register_client, args=(url, client_kind, worker, part, ready, go, out), daemon=True)
             for part in parts]
    started, results = run_together(procs, ready, go, out, result_timeout=3600, what="a registering client")
    return max(r["finished"] for r in results) - started


def measure(scheduler: str, url: str, pid: int, dag: list[dict[str, Any]], workers: int, budget: float,
            client_kind: str, register_clients: int, round_no: int = 1) -> Run:
    n = len(dag)
    run = Run(scheduler, n, round_no, budget=budget)
    client = make_client(client_kind, url)
    reg_id, reg_info = worker_identity(workers=4)
    pinger = Pinger(url, reg_id, client_kind)
    pinger.start()
    try:
        log(f"{scheduler} N={n}: registering from {register_clients} client(s)")
        run.register_seconds = register(url, client_kind, reg_id, dag, register_clients)
        client.rpc("add_worker", {"worker": reg_id, "info": [*reg_info, ["first_task", dag[0]["task_id"]]]})
        log(f"{scheduler} N={n}: {run.add_task_per_s:,.0f} add_task/s; draining with {workers} workers")
        before = node_counters(url) if scheduler.startswith("luigi-ha") else {}
        cpu_before = cpu_seconds(pid)

        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        t0, done = ctx.Value("d", 0.0), ctx.Value("i", 0)
        procs = [ctx.Process(target=drain_worker, args=(url, client_kind, n, budget, ready, go, t0, done, out),
                             daemon=True)
                 for _ in range(workers)]
        _, results = run_together(procs, ready, go, out, result_timeout=budget + 660,
                                  what=f"{scheduler} N={n}: a drain worker",
                                  on_start=lambda at: setattr(t0, "value", at))
        deadline = t0.value + budget
        completions = sorted(c for r in results for c in r["completed"])
        ids = [i for r in results for i in r["ids"]]
        if len(ids) != len(set(ids)):
            raise RuntimeError(f"{scheduler} N={n}: {len(ids) - len(set(ids))} tasks were handed out twice")
        within = [c for c in completions if c <= deadline]
        run.partial = len(within) < n
        run.drained = len(within)
        run.drain_seconds = budget if run.partial else completions[-1] - t0.value
        run.latencies = [x for r in results for x in r["latencies"]]
        run.get_work_count = len(run.latencies)
        run.empty_get_work = sum(r["empty"] for r in results)
        run.errors = sum(r["errors"] for r in results) + pinger.errors
        run.server_cpu_ms_per_task = (cpu_seconds(pid) - cpu_before) / max(1, run.drained) * 1000
        if before:
            after = node_counters(url)
            delta = {k: after.get(k, 0.0) - v for k, v in before.items()}
            run.commits = int(delta.get("luigi_ha_commit_duration_seconds_count", 0))
            if run.commits:
                run.commit_ms = delta["luigi_ha_commit_duration_seconds_sum"] / run.commits * 1000
                rounds = delta.get("luigi_ha_commit_batch_requests_count", 0)
                run.per_commit = delta.get("luigi_ha_commit_batch_requests_sum", 0) / rounds if rounds else float("nan")
        log(f"{scheduler} N={n}: {run.drained_text()}, {run.tasks_per_s:,.1f} tasks/s, "
            f"get_work p50 {run.p(50):.2f} ms p99 {run.p(99):.2f} ms; "
            f"server CPU {run.server_cpu_ms_per_task:.2f} ms/task"
            + (f"; {run.commits} commits, {run.commit_ms:.2f} ms each, {run.per_commit:.1f} RPCs each"
               if run.commits else ""))
        return run
    finally:
        pinger.stop()
        client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,30000", help="comma-separated task counts (default 10000,30000)")
    ap.add_argument("--workers", type=int, default=4, help="assistant worker processes (default 4)")
    ap.add_argument("--drain-budget", type=float, default=120.0, help="seconds per drain (default 120)")
    ap.add_argument("--schedulers", default="luigid,luigi-ha", help="which to run (default luigid,luigi-ha)")
    ap.add_argument("--workdir", default=None, help="keep logs here (default: a temp dir, removed)")
    ap.add_argument("--client", choices=("curl", "lean", "requests"), default="curl",
                    help="HTTP client of every simulated worker: curl = libcurl keep-alive (default), "
                         "lean = http.client keep-alive, requests = what luigi's RemoteScheduler uses "
                         "(about 1 ms of client CPU per call here)")
    ap.add_argument("--auth", action="store_true",
                    help="also run luigi-ha with [auth] on (scheduler luigi-ha+auth; workers send HTTP Basic) "
                         "beside luigi-ha in every round, and print the ratio")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every (scheduler, N) this many times, alternating which scheduler goes first; "
                         "with more than one, the figures to quote and the targets are the medians over the "
                         "rounds (default 1)")
    ap.add_argument("--register-clients", type=int, default=4,
                    help="processes registering the DAG at once, each a slice of it (default 4; 1 = one "
                         "sequential client, whose rate is bounded by one durable commit per add_task)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    schedulers = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    unknown = set(schedulers) - {"luigid", "luigi-ha"}
    if unknown:
        ap.error(f"unknown scheduler(s): {', '.join(sorted(unknown))}")
    if args.auth:
        if "luigi-ha" not in schedulers:
            ap.error("--auth compares with luigi-ha: keep luigi-ha in --schedulers")
        schedulers.insert(schedulers.index("luigi-ha") + 1, "luigi-ha+auth")

    from tests.support.dbservers import PostgresServer

    tmp = tempfile.TemporaryDirectory(prefix="lha-throughput-")
    workdir = Path(args.workdir) if args.workdir else Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    pg: PostgresServer | None = None
    runs: list[Run] = []
    try:
        if "luigi-ha" in schedulers:
            pg = PostgresServer(durable=True)
            pg.start()
            log(f"durable PostgreSQL (fsync=on, synchronous_commit=on) on port {pg.port}")
        dags = {n: build_dag(n) for n in sizes}
        for round_no in range(1, args.rounds + 1):
            # Alternate who goes first, so neither scheduler always gets the same minutes.
            order = schedulers if round_no % 2 else schedulers[::-1]
            if args.rounds > 1:
                log(f"round {round_no} of {args.rounds}: {', '.join(order)}")
            for n in sizes:
                for scheduler in order:
                    where = workdir / f"{scheduler}-{n}-round{round_no}"
                    where.mkdir(parents=True, exist_ok=True)
                    if scheduler == "luigid":
                        url, proc = start_luigid(procs, where)
                    else:
                        assert pg is not None
                        auth = scheduler == "luigi-ha+auth"
                        db_url = pg.create_database(f"throughput_{n}_round{round_no}{'_auth' if auth else ''}")
                        url, proc = start_ha_node(procs, where, db_url, auth=auth)
                    try:
                        runs.append(measure(scheduler, url, proc.pid, dags[n], args.workers, args.drain_budget,
                                            args.client, args.register_clients, round_no))
                    finally:
                        procs.stop(proc)
    finally:
        procs.stop_all()
        if pg is not None:
            pg.destroy()
        if not args.workdir:
            tmp.cleanup()

    print()
    print(f"luigi-ha vs luigid: register + drain an N-task DAG; {args.workers} assistant worker processes; "
          f"drain budget {args.drain_budget:.0f} s")
    print(machine_line() + "; luigi-ha = one node on durable PostgreSQL (fsync=on, synchronous_commit=on)")
    print()
    rounds = args.rounds > 1
    rows = []
    for r in runs:
        rows.append([r.scheduler, fmt(r.n), *([fmt(r.round_no)] if rounds else []), fmt(r.add_task_per_s, 0),
                     fmt(r.tasks_per_s, 1), r.drained_text(), fmt(r.drain_seconds, 1), fmt(r.p(50), 2),
                     fmt(r.p(99), 2), fmt(r.server_cpu_ms_per_task, 2), fmt(r.get_work_count),
                     fmt(r.empty_get_work), fmt(r.errors)])
    print(table(["scheduler", "N", *(["round"] if rounds else []), "add_task/s", "tasks/s drain", "drained",
                 "drain s", "get_work p50 ms", "p99 ms", "CPU ms/task", "get_work calls", "empty", "errors"], rows))
    summaries = summarize(runs)
    if rounds:
        print()
        print(f"medians over {args.rounds} rounds (the figures to quote; min-max of the drain beside them)")
        print(table(["scheduler", "N", "add_task/s", "tasks/s drain", "min-max", "get_work p50 ms", "p99 ms"],
                    [[m.scheduler, fmt(m.n), fmt(m.add_task_per_s, 0), fmt(m.tasks_per_s, 1),
                      "{:,.1f}-{:,.1f}".format(*m.spread(lambda r: r.tasks_per_s)), fmt(m.p50, 2), fmt(m.p99, 2)]
                     for m in summaries]))
    by = {(m.scheduler, m.n): m for m in summaries}
    ratio_rows = []
    ratios: list[dict[str, Any]] = []
    for n in sizes:
        ha, ld = by.get(("luigi-ha", n)), by.get(("luigid", n))
        if ha is None or ld is None:
            continue
        rr = {"n": n, "add_task_per_s": ratio(ha.add_task_per_s, ld.add_task_per_s),
              "tasks_per_s": ratio(ha.tasks_per_s, ld.tasks_per_s),
              "get_work_p50": ratio(ha.p50, ld.p50), "get_work_p99": ratio(ha.p99, ld.p99)}
        ratios.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rr.items()})
        partial = [name for name, m in (("luigid", ld), ("luigi-ha", ha)) if m.partial]
        note = f" (partial: {', '.join(partial)})" if partial else ""
        ratio_rows.append([fmt(n), f"{rr['add_task_per_s']:.2f}x", f"{rr['tasks_per_s']:.2f}x{note}",
                           f"{rr['get_work_p50']:.3f}x", f"{rr['get_work_p99']:.3f}x"])
    if ratio_rows:
        print()
        print("ratios luigi-ha / luigid" + (" of the medians" if rounds else "")
              + " (throughput: higher is better for luigi-ha; latency: lower is better)")
        print(table(["N", "add_task/s", "tasks/s drain", "get_work p50", "get_work p99"], ratio_rows))
    auth_rows = []
    for n in sizes:
        off, on = by.get(("luigi-ha", n)), by.get(("luigi-ha+auth", n))
        if off is not None and on is not None:
            slower = 1 - ratio(on.tasks_per_s, off.tasks_per_s)
            auth_rows.append([fmt(n), fmt(off.tasks_per_s, 1), fmt(on.tasks_per_s, 1), f"{slower:+.1%}",
                              "met" if slower <= 0.05 else "MISSED"])
    if auth_rows:
        print()
        print("authentication on vs off" + (" (medians)" if rounds else "")
              + ": drain tasks/s, target at most 5% slower")
        print(table(["N", "auth off", "auth on", "slower by", "target"], auth_rows))
    targets = [[fmt(m.n), *(_judge(m, figure, ok, text) for figure, ok, text in TARGETS)]
               for m in summaries if m.scheduler == "luigi-ha"]
    if targets:
        print()
        print("luigi-ha targets" + (f" (on the medians of {args.rounds} rounds;" if rounds else " (")
              + " reported, not asserted)")
        print(table(["N", "drain", "get_work p99", "registering"], targets))
    partial = [m for m in summaries if m.partial]
    if partial:
        print()
    for m in partial:  # one note per (scheduler, N), naming every round that was cut
        cut = [r for r in m.runs if r.partial]
        rounds_text = f" in {len(cut)} of {len(m.runs)} rounds" if rounds else ""
        print(f"note: {m.scheduler} N={m.n} did not finish within the {cut[0].budget:.0f} s budget{rounds_text}; "
              f"its tasks/s is over the tasks drained in that time ({', '.join(str(r.drained) for r in cut)}: "
              "PARTIAL), and the get_work latencies are those of the calls made in that time.")
    print()
    print(json.dumps({"benchmark": "throughput", "workers": args.workers, "drain_budget_s": args.drain_budget,
                      "rounds": args.rounds, "runs": [r.as_json() for r in runs],
                      "medians": [m.as_json() for m in summaries], "ratios_ha_over_luigid": ratios}))
    return 0


#: The issue's targets for luigi-ha: (the figure, whether a value meets it, how to print the value).
TARGETS: list[tuple[Callable[[Run], float], Callable[[float], bool], Callable[[float], str]]] = [
    (lambda r: r.tasks_per_s, lambda v: v >= 1000, lambda v: f"{v:,.0f} tasks/s (>= 1,000)"),
    (lambda r: r.p(99), lambda v: v <= 10, lambda v: f"p99 {v:.2f} ms (<= 10)"),
    (lambda r: r.add_task_per_s, lambda v: v >= 1000, lambda v: f"{v:,.0f} add_task/s (>= 1,000)"),
]


def _judge(m: Summary, figure: Callable[[Run], float], ok: Callable[[float], bool],
           text: Callable[[float], str]) -> str:
    """``met: <median>`` or ``MISSED: <median>``, and with several rounds how many of them met it."""
    value = m.median(figure)
    verdict = ("met: " if ok(value) else "MISSED: ") + text(value)
    if len(m.runs) > 1:
        verdict += f"; {sum(ok(figure(r)) for r in m.runs)} of {len(m.runs)} rounds"
    return verdict


if __name__ == "__main__":
    sys.exit(main())
