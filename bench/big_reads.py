"""A leader serving a big visualiser read, and the memory a leader, a follower and luigid hold.

    python bench/big_reads.py                          # N = 100,000
    python bench/big_reads.py --tasks 20000 --phase 10
    python bench/big_reads.py --before /tmp/old-tree   # the same figures for another checkout too

For each code tree (this checkout, and ``--before`` if given: a checkout of an older commit, to
compare), on a fresh database of a throwaway PostgreSQL (fsync off) filled with N tasks of the
throughput DAG through the real core and store (40% DONE):

1. **Loop stall.** One luigi-ha node loads the state. A probe sends ``ping`` every 2 ms on a
   keep-alive connection while a client in another process asks for ``task_list`` of every
   task (the visualiser's call, ``limit`` off) 5 times. The longest ping during a listing, less the ping's
   median when nothing else runs, is how long the node's event loop was held at a stretch (an
   upper bound: it also holds the time the probe waited for a CPU).
2. **Workers' get_work while someone polls task_list.** 4 worker processes drain (``get_work``,
   then ``add_task(DONE)``) for ``--phase`` seconds alone, then ``--phase`` seconds while one
   client calls ``task_list`` every 2 s like an open visualiser page. get_work p50/p99 of each.
3. **Resident memory** (VmRSS of the process, after a full collection is not forced: what the OS
   holds) of: the node right after it loaded N tasks, and of an empty node; a follower process
   (``scheduler.follower``: store + replica core, no HTTP server) after its cold start on the
   same N tasks; and luigid (the installed luigi) loading a state file of the same N tasks built
   by luigi's own scheduler, beside an empty luigid. Per 100,000 tasks = (RSS with N - RSS
   empty) * 100,000 / N.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REPO,
    Procs,
    RpcError,
    clean_env,
    fmt,
    free_port,
    log,
    machine_line,
    make_client,
    percentile,
    start_luigid,
    table,
    wait_http,
)
from throughput import build_dag, done_payload, schedule_payload, worker_identity  # noqa: E402

from tests.support.dbservers import PostgresServer  # noqa: E402

LISTINGS = 5
PROBE_INTERVAL = 0.002
POLL_INTERVAL = 2.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def populate(tree: Path, db_url: str, n: int) -> None:
    """Fill ``db_url`` with ``n`` tasks using ``tree``'s own core and store (its own schema)."""
    code = (
        f"import sys; sys.path[:0] = [{str(tree)!r}, {str(tree / 'bench')!r}]; "
        f"from ha_figures import populate; populate({db_url!r}, {n})"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, stdout=subprocess.DEVNULL)


def start_node(procs: Procs, tree: Path, workdir: Path, db_url: str) -> tuple[str, subprocess.Popen[bytes]]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "scheduler.cli", "scheduler", "--db", db_url, "--host", "127.0.0.1",
            "--port", str(port), "--node-id", "bench-a"]
    log_path = workdir / "node.log"
    proc = procs.start(argv, cwd=tree, env=clean_env(workdir, PYTHONPATH=str(tree)), log=log_path)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/leader", ok=(200,), proc=proc, log=log_path, timeout=300)
    return url, proc


# -- 1. loop stall ---------------------------------------------------------------------------------


class Probe(threading.Thread):
    """``ping`` every PROBE_INTERVAL; remembers (start time, latency) of each."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float]] = []
        self.errors: list[tuple[float, str]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        client = make_client("curl", self.url)
        wid, info = worker_identity()
        client.rpc("add_worker", {"worker": wid, "info": info})
        try:
            while not self._halt.is_set():
                started = time.monotonic()
                try:
                    client.rpc("ping", {"worker": wid})
                except RpcError as exc:
                    self.errors.append((started, str(exc)[:200]))
                    time.sleep(0.1)
                    continue
                self.samples.append((started, time.monotonic() - started))
                time.sleep(PROBE_INTERVAL)
        finally:
            client.close()

    def stop(self) -> None:
        self._halt.set()
        self.join()


def list_all(url: str) -> tuple[float, float, int]:
    """One ``task_list`` of every task: ``(start, end, reply bytes)``; the body is not decoded."""
    query = urllib.parse.urlencode({"data": json.dumps(LIST_ALL)})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{url}/api/task_list?{query}", timeout=300) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:
        log(f"  task_list answered {exc.code}: {exc.read()[:200]!r}")
        return started, time.monotonic(), -1
    return started, time.monotonic(), len(body)


LIST_ALL = {"status": "", "upstream_status": "", "search": "", "limit": False}


def loop_stall(url: str) -> dict[str, Any]:
    probe = Probe(url)
    probe.start()
    time.sleep(2.0)
    idle = [lat for _, lat in probe.samples]
    windows = []
    # The listings come from another process: reading a 50 MB reply here would hold this
    # process's interpreter lock in 5 ms slices and delay the probe thread, not the node.
    with mp.get_context("spawn").Pool(1) as lister:
        try:
            for _ in range(LISTINGS):
                windows.append(lister.apply(list_all, (url,)))
                time.sleep(0.5)
        finally:
            probe.stop()
    during = [max((lat for t, lat in probe.samples if a - 0.01 <= t <= b), default=0.0) for a, b, _ in windows]
    base = statistics.median(idle)
    if probe.errors:
        log(f"  {len(probe.errors)} pings failed, first: {probe.errors[0][1]}")
    return {
        "ping_errors": len(probe.errors),
        "listings_failed": sum(1 for *_, size in windows if size < 0),
        "reply_mb": max(size for *_, size in windows) / 1e6,
        "task_list_s_median": statistics.median(b - a for a, b, _ in windows),
        "ping_idle_p50_ms": base * 1000,
        "longest_ping_during_listing_ms_median": statistics.median(during) * 1000,
        "longest_ping_during_listing_ms_max": max(during) * 1000,
        "stall_ms_median": (statistics.median(during) - base) * 1000,
    }


# -- 2. workers' get_work with and without a task_list poller --------------------------------------


def worker_loop(url: str, until: float, out: Any) -> None:
    client = make_client("curl", url, timeout=300)
    wid, info = worker_identity()
    host = socket.gethostname()
    samples: list[tuple[float, float]] = []
    try:
        client.rpc("add_worker", {"worker": wid, "info": info})
        get_work = {"host": host, "assistant": True, "current_tasks": [], "worker": wid}
        while time.time() < until:
            started = time.time()
            try:
                reply = client.rpc("get_work", get_work)
            except RpcError:
                time.sleep(0.1)
                continue
            samples.append((started, time.time() - started))
            if reply and reply.get("task_id"):
                try:
                    client.rpc("add_task", done_payload(wid, reply))
                except RpcError:
                    time.sleep(0.1)
            else:
                time.sleep(0.005)
    finally:
        client.close()
        out.put(samples)


def get_work_under_polling(url: str, phase: float, workers: int = 4) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 3.0  # the workers' interpreters start meanwhile
    poll_from = start + phase
    until = poll_from + phase
    procs = [ctx.Process(target=worker_loop, args=(url, until, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    time.sleep(max(0.0, poll_from - time.time()))
    polls = []
    while time.time() < until:
        a, b, _ = list_all(url)
        polls.append(b - a)
        time.sleep(max(0.0, POLL_INTERVAL - (b - a)))
    samples = [s for _ in procs for s in out.get(timeout=120)]
    for p in procs:
        p.join(30)
    alone = [lat for t, lat in samples if start <= t < poll_from]
    polled = [lat for t, lat in samples if t >= poll_from]
    return {
        "get_work_alone_p50_ms": percentile(alone, 50) * 1000,
        "get_work_alone_p99_ms": percentile(alone, 99) * 1000,
        "get_work_polled_p50_ms": percentile(polled, 50) * 1000,
        "get_work_polled_p99_ms": percentile(polled, 99) * 1000,
        "get_work_calls_alone": len(alone),
        "get_work_calls_polled": len(polled),
        "task_list_during_drain_s_median": statistics.median(polls) if polls else None,
    }


# -- 3. memory -------------------------------------------------------------------------------------


def follower_rss(tree: Path, db_url: str) -> float:
    code = (
        "import sys, json; "
        "from lease import create_engine; from scheduler.core import Scheduler; from scheduler.store import Store; "
        "from scheduler.follower import Follower; "
        f"f = Follower(Store(create_engine({db_url!r})), Scheduler()); f.start(); "
        "rss = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]; "
        "print(json.dumps({'rss_kb': rss, 'tasks': sum(f.core.status_counts().values())}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=clean_env(Path(tempfile.gettempdir())),
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["rss_kb"] / 1024


def luigid_state(path: Path, n: int) -> None:
    """A luigid state file holding the same DAG, built by luigi's own scheduler."""
    from luigi.scheduler import Scheduler as LuigiScheduler

    sch = LuigiScheduler(state_path=str(path), record_task_history=False)
    wid, info = worker_identity(workers=4)
    sch.add_worker(worker=wid, info=dict(info))
    dag = build_dag(n)
    for t in dag:
        sch.add_task(**schedule_payload(wid, t))
    done = [t for t in dag if not t["deps"]][: int(n * 0.4)]
    for t in done:
        sch.add_task(task_id=t["task_id"], status="DONE", worker=wid)
    sch.dump()


def luigid_rss(procs: Procs, workdir: Path, n: int) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    if n:
        luigid_state(workdir / "state.pickle", n)
    url, proc = start_luigid(procs, workdir)
    time.sleep(1.0)
    client = make_client("curl", url)
    try:
        counts = client.rpc("task_list", {"status": "PENDING", "upstream_status": "", "search": "", "limit": False})
        log(f"  luigid with {n:,} tasks: {len(counts):,} PENDING listed")
    finally:
        client.close()
    rss = rss_mb(proc.pid)
    Procs.stop(proc)
    return rss


# -- main ------------------------------------------------------------------------------------------


def measure_tree(name: str, tree: Path, pg: PostgresServer, procs: Procs, workdir: Path, n: int,
                 phase: float, follower: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"code": name}
    empty_url = pg.create_database(f"big_reads_{name}_empty")
    url, proc = start_node(procs, tree, workdir / f"{name}-empty", empty_url)
    time.sleep(1.0)
    result["node_rss_empty_mb"] = rss_mb(proc.pid)
    Procs.stop(proc)

    db_url = pg.create_database(f"big_reads_{name}")
    log(f"{name}: populating {n:,} tasks")
    populate(tree, db_url, n)
    url, proc = start_node(procs, tree, workdir / name, db_url)
    time.sleep(1.0)
    result["node_rss_mb"] = rss_mb(proc.pid)
    log(f"{name}: node RSS {result['node_rss_mb']:.0f} MB with {n:,} tasks; measuring the loop stall")
    result.update(loop_stall(url))
    result["node_rss_after_listings_mb"] = rss_mb(proc.pid)
    log(f"{name}: stall {result['stall_ms_median']:.1f} ms; get_work with and without a task_list poller")
    result.update(get_work_under_polling(url, phase))
    Procs.stop(proc)
    if follower:
        result["follower_rss_mb"] = follower_rss(tree, db_url)
        result["follower_rss_empty_mb"] = follower_rss(tree, empty_url)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--phase", type=float, default=15.0, help="seconds of each get_work phase (default 15)")
    ap.add_argument("--before", type=Path, default=None, help="another checkout to measure the same way")
    ap.add_argument("--no-luigid", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the nodes' logs here (default: a temp dir)")
    args = ap.parse_args()
    n = args.tasks
    procs = Procs()
    pg = PostgresServer(durable=False)
    results = []
    luigid: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="big-reads-") as tmp:
        workdir = args.workdir or Path(tmp)
        try:
            pg.start()
            trees = [("before", args.before.resolve())] if args.before else []
            trees.append(("this", REPO))
            for name, tree in trees:
                results.append(measure_tree(name, tree, pg, procs, workdir, n, args.phase, follower=tree == REPO))
            if not args.no_luigid:
                log("luigid: building its state file and loading it")
                luigid["luigid_rss_empty_mb"] = luigid_rss(procs, workdir / "luigid-empty", 0)
                luigid["luigid_rss_mb"] = luigid_rss(procs, workdir / "luigid", n)
        finally:
            procs.stop_all()
            pg.destroy()

    def per_100k(full: float | None, empty: float | None) -> float | None:
        return None if full is None or empty is None else (full - empty) * 100_000 / n

    print(f"\nbig reads and memory, N = {n:,} tasks\n{machine_line()}\n")
    print(table(
        ["code", "task_list s", "reply MB", "ping idle ms", "longest ping in listing ms", "stall ms",
         "get_work p99 alone",
         "get_work p99 polled", "p50 alone", "p50 polled"],
        [[r["code"], fmt(r["task_list_s_median"], 3), fmt(r["reply_mb"], 1), fmt(r["ping_idle_p50_ms"], 2),
          f"{fmt(r['longest_ping_during_listing_ms_median'])} (max {fmt(r['longest_ping_during_listing_ms_max'])})",
          fmt(r["stall_ms_median"]), fmt(r["get_work_alone_p99_ms"]), fmt(r["get_work_polled_p99_ms"]),
          fmt(r["get_work_alone_p50_ms"], 2), fmt(r["get_work_polled_p50_ms"], 2)] for r in results],
    ))
    rows = []
    for r in results:
        rows.append([f"leader ({r['code']})", fmt(r["node_rss_empty_mb"], 0), fmt(r["node_rss_mb"], 0),
                     fmt(per_100k(r["node_rss_mb"], r["node_rss_empty_mb"]), 0),
                     fmt(r["node_rss_after_listings_mb"], 0)])
        if "follower_rss_mb" in r:
            rows.append([f"follower ({r['code']})", fmt(r["follower_rss_empty_mb"], 0), fmt(r["follower_rss_mb"], 0),
                         fmt(per_100k(r["follower_rss_mb"], r["follower_rss_empty_mb"]), 0), "-"])
    if luigid:
        rows.append(["luigid", fmt(luigid["luigid_rss_empty_mb"], 0), fmt(luigid["luigid_rss_mb"], 0),
                     fmt(per_100k(luigid["luigid_rss_mb"], luigid["luigid_rss_empty_mb"]), 0), "-"])
    print()
    print(table(["process", "RSS empty MB", f"RSS {n:,} tasks MB", "MB per 100,000 tasks", "after listings MB"],
                rows))
    print(json.dumps({"benchmark": "big_reads", "tasks": n, "results": results, "luigid": luigid}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
