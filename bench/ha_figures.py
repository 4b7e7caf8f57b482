"""The HA figures of luigi-ha: crash failover, planned switchover, and the takeover load time.

    python bench/ha_figures.py                      # everything, defaults (~6 minutes)
    python bench/ha_figures.py --cycles 10 --switchovers 5 --takeover-sizes 10000
    python bench/ha_figures.py --only failover      # failover | switchover | takeover

All on a throwaway PostgreSQL (fsync off: these figures are about the HA machinery, not the
disk), two real ``luigi-ha scheduler`` node processes on loopback ports (``LocalCluster``).

* Crash failover, for each lease TTL in ``--ttls`` (default 2 and 5 s): ``kill_restart_soak``
  (tests/support/drills.py) kills the leader with SIGKILL ``--cycles`` times under a steady
  ``AckingWriter`` (add_task RPCs sent to whichever node accepts them, as HAProxy would) and
  restarts each victim as a standby. One sample = from the SIGKILL to the first write
  acknowledged afterwards. Also reported: acknowledged writes missing from the final leader
  (must be 0) and the most leaders ever seen at once (must be 1).
* Switchover: ``POST /switchover`` to the leader under an ``AckingWriter``; one sample = from
  sending the request to the first write acknowledged by the OTHER node. ``--switchovers``
  times (default 10), so the role alternates between the two nodes.
* Takeover load (lease TTL ``--takeover-ttl``, default 10 s, because the whole load must fit in
  the renew deadline of 0.6 x TTL): a database is filled with N tasks (default 10,000 and 100,000; a layered DAG of
  real luigi task ids with deps, 40 % of them DONE) by driving an in-process core and writing its
  changes with the store; then two nodes start, the leader is killed, and the new leader's
  ``GET /status`` -> ``takeover_load_seconds`` (and the ``luigi_ha_takeover_load_seconds`` gauge
  of its /metrics) is read; ``--takeover-kills`` times per size (default 3). Twice per size:
  with following standbys (``[ha] follow``, the default: the standby is caught up before each
  kill, and takes over reading only the commits after its copy) and with cold ones (follow off:
  every takeover loads everything).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, log, machine_line, percentile, table  # noqa: E402
from throughput import build_dag, done_payload, schedule_payload, worker_identity  # noqa: E402

from scheduler.localcluster import LocalCluster  # noqa: E402
from tests.support.acks import AckingWriter, leader_task_ids  # noqa: E402
from tests.support.dbservers import PostgresServer  # noqa: E402
from tests.support.drills import kill_restart_soak  # noqa: E402

IN_FLIGHT = 0.05  # failover samples below this are replies already on their way at the kill
SWITCHOVER_GAP = 3.6  # > scheduler.node.SWITCHOVER_HOLD_OFF: the releasing node must be eligible again


def _stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "min": min(values), "max": max(values), "mean": statistics.fmean(values)}


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


# -- crash failover -------------------------------------------------------------------------------


def crash_failover(pg: PostgresServer, workdir: Path, ttl: float, cycles: int) -> dict[str, Any]:
    db = pg.create_database(f"failover_ttl{str(ttl).replace('.', '_')}")
    cluster = LocalCluster(workdir / f"failover-ttl{ttl}", db, size=2, lease_ttl=ttl)
    try:
        cluster.start()
        log(f"crash failover, lease_ttl {ttl} s: {cycles} kill -9 cycles")
        result = kill_restart_soak(cluster, cycles, prefix=f"Soak{str(ttl).replace('.', '_')}")
        log("  " + result.summary())
    finally:
        cluster.stop()
    # A sample of a few ms is a reply the old leader sent just before the SIGKILL and the writer
    # read just after it, not a failover: report how many, and the percentiles without them.
    real = [s for s in result.failover_seconds if s >= IN_FLIGHT]
    return {"lease_ttl_s": ttl, **_stats(result.failover_seconds), "acked": result.acked,
            "lost": len(result.lost), "max_leaders_at_once": result.max_leaders_seen,
            "in_flight_samples": len(result.failover_seconds) - len(real),
            "p50_without_in_flight": percentile(real, 50), "p99_without_in_flight": percentile(real, 99)}


# -- switchover -----------------------------------------------------------------------------------


def switchovers(pg: PostgresServer, workdir: Path, count: int, ttl: float) -> dict[str, Any]:
    db = pg.create_database("switchover")
    cluster = LocalCluster(workdir / "switchover", db, size=2, lease_ttl=ttl)
    samples: list[float] = []
    moves: list[str] = []
    writer: AckingWriter | None = None
    try:
        cluster.start()
        writer = AckingWriter(cluster.urls, prefix="Switch")
        writer.start()
        time.sleep(0.5)
        log(f"switchover: {count} planned handovers under a steady writer")
        for _ in range(count):
            old = cluster.wait_for_leader(timeout=60)
            asked = time.monotonic()
            r = requests.post(old.url + "/switchover", timeout=10)
            if r.status_code != 200:
                raise RuntimeError(f"switchover refused by {old.node_id}: {r.status_code} {r.text}")
            first = None
            deadline = asked + 60
            while first is None and time.monotonic() < deadline:
                first = next((a.at for a in list(writer.acks) if a.at > asked and a.node_url != old.url), None)
                time.sleep(0.005)
            if first is None:
                raise RuntimeError("no write was acknowledged by the new leader within 60 s of the switchover")
            samples.append(first - asked)
            new = next(n for n in cluster.nodes if n.url != old.url)
            moves.append(f"{old.node_id}->{new.node_id}")
            time.sleep(SWITCHOVER_GAP)
        writer.stop()
        final = cluster.wait_for_leader(timeout=60)
        acked = {a.task_id for a in writer.acks}
        lost = acked - leader_task_ids(final.url, "Switch")
    finally:
        if writer is not None and writer.is_alive():
            writer.stop()
        cluster.stop()
    log(f"  switchover p50 {percentile(samples, 50):.3f} s, max {max(samples):.3f} s, lost {len(lost)}")
    return {"lease_ttl_s": ttl, **_stats(samples), "moves": moves, "acked": len(acked), "lost": len(lost),
            "writer_errors": writer.errors if writer else None}


# -- takeover load time ---------------------------------------------------------------------------


def populate(db_url: str, n: int, done_fraction: float = 0.4, chunk: int = 5000) -> float:
    """Fill ``db_url`` with ``n`` tasks through the real core and store; returns seconds taken."""
    from lease import create_engine
    from scheduler.core import Scheduler
    from scheduler.store import Store

    started = time.monotonic()
    engine = create_engine(db_url)
    try:
        store = Store(engine)
        store.upgrade()
        core = Scheduler()
        wid, info = worker_identity(workers=4)
        core.add_worker(worker=wid, info=info)
        dag = build_dag(n)
        leaves = [t for t in dag if not t["deps"]]
        n_done = int(n * done_fraction)
        done_ids = leaves[:n_done] + [t for t in dag if t["family"] == "Transform"][: max(0, n_done - len(leaves))]
        pending = 0
        for t in dag:
            core.add_task(**schedule_payload(wid, t))
            pending += 1
            if pending >= chunk:
                store.apply(core.take_changes(), epoch=1)
                pending = 0
        for t in done_ids:
            reply = {"task_id": t["task_id"], "task_family": t["family"], "task_module": "bench_dag",
                     "task_params": t["params"]}
            core.add_task(**{**done_payload(wid, reply), "assistant": False})
            pending += 1
            if pending >= chunk:
                store.apply(core.take_changes(), epoch=1)
                pending = 0
        store.apply(core.take_changes(), epoch=1)
        counts = store.counts() if hasattr(store, "counts") else None
        log(f"  populated {n:,} tasks ({len(done_ids):,} DONE) in {time.monotonic() - started:.1f} s"
            + (f": {counts}" if counts else ""))
    finally:
        engine.dispose()
    return time.monotonic() - started


def _gauge(url: str, name: str) -> float | None:
    text = requests.get(url + "/metrics", timeout=10).text
    m = re.search(rf"^{name}\s+([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def takeover_loads(pg: PostgresServer, workdir: Path, n: int, kills: int, ttl: float) -> list[dict[str, Any]]:
    """The takeover load of ``n`` tasks by a following standby, then by cold standbys (follow off)."""
    db = pg.create_database(f"takeover_{n}")
    log(f"takeover load: populating {n:,} tasks")
    fill_s = populate(db, n)
    return [takeover_load(db, workdir, n, kills, ttl, fill_s, follow) for follow in (True, False)]


def takeover_load(db: str, workdir: Path, n: int, kills: int, ttl: float, fill_s: float,
                  follow: bool) -> dict[str, Any]:
    # The whole load must fit in the renew deadline (0.6 x lease_ttl), or the winner gives the
    # lease up again: with lease_ttl 2 s (deadline 1.2 s) 100,000 tasks never get a leader.
    cluster = LocalCluster(workdir / f"takeover-{n}-{'follow' if follow else 'cold'}", db, size=2, lease_ttl=ttl)
    for node in cluster.nodes:  # without a follower every takeover is a full (cold) load
        node.env = {"LUIGI_HA_HA_FOLLOW": "true" if follow else "false"}
    loads: list[float] = []
    gauges: list[float | None] = []
    failovers: list[float] = []
    kinds: list[str | None] = []
    try:
        first = cluster.start(wait=120)
        initial = requests.get(first.url + "/status", timeout=10).json()
        total = sum((initial.get("tasks") or {}).values())
        if total != n:
            raise RuntimeError(f"the leader loaded {total} tasks, expected {n}")
        log(f"  first leader {first.node_id} loaded {total:,} tasks in {initial['takeover_load_seconds']} s")
        for _ in range(kills):
            old = cluster.wait_for_leader(timeout=60)
            # wait until the standby is up (not just started) and, when it follows, caught up
            while not all(node.responds() for node in cluster.nodes):
                time.sleep(0.05)
            standby = next(node for node in cluster.nodes if node is not old)
            waited = time.monotonic()
            while follow and requests.get(standby.url + "/replica", timeout=10).status_code != 200:
                if time.monotonic() - waited > 120:
                    raise RuntimeError("the standby did not catch up within 120 s")
                time.sleep(0.05)
            killed = time.monotonic()
            old.kill()
            new = cluster.wait_for_leader(timeout=120, exclude=old)
            failovers.append(time.monotonic() - killed)
            status = requests.get(new.url + "/status", timeout=10).json()
            if sum((status.get("tasks") or {}).values()) != n:
                raise RuntimeError(f"the new leader has {status.get('tasks')} tasks, expected {n}")
            loads.append(float(status["takeover_load_seconds"]))
            kinds.append(status.get("takeover_kind"))
            gauges.append(_gauge(new.url, "luigi_ha_takeover_load_seconds"))
            log(f"  {old.node_id} killed -> {new.node_id} ({kinds[-1]}) took over {n:,} tasks in {loads[-1]:.3f} s "
                f"(gauge {gauges[-1]})")
            old.start()
    finally:
        cluster.stop()
    return {"tasks": n, "lease_ttl_s": ttl, "fill_s": round(fill_s, 2),
            "initial_load_s": initial["takeover_load_seconds"], "follow": follow, "kinds": kinds,
            **_stats(loads), "loads_s": loads, "gauge_s": gauges,
            "kill_to_leader_s": [round(x, 3) for x in failovers]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=30, help="kill -9 cycles per lease TTL (default 30)")
    ap.add_argument("--ttls", default="2,5", help="lease TTLs in seconds (default 2,5)")
    ap.add_argument("--switchovers", type=int, default=10, help="planned switchovers (default 10)")
    ap.add_argument("--switchover-ttl", type=float, default=5.0, help="lease TTL for the switchover run")
    ap.add_argument("--takeover-sizes", default="10000,100000", help="task counts (default 10000,100000)")
    ap.add_argument("--takeover-kills", type=int, default=3, help="leader kills per size (default 3)")
    ap.add_argument("--takeover-ttl", type=float, default=10.0,
                    help="lease TTL for the takeover runs (default 10 s: the load must fit in 0.6 x TTL)")
    ap.add_argument("--only", choices=["failover", "switchover", "takeover"], default=None)
    ap.add_argument("--workdir", default=None, help="keep node logs here (default: temp dir, removed)")
    args = ap.parse_args()
    ttls = [float(x) for x in args.ttls.split(",") if x.strip()]
    sizes = [int(x) for x in args.takeover_sizes.split(",") if x.strip()]

    tmp = tempfile.TemporaryDirectory(prefix="lha-ha-figures-")
    workdir = Path(args.workdir) if args.workdir else Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    pg = PostgresServer(durable=False)
    failover: list[dict[str, Any]] = []
    switch: dict[str, Any] | None = None
    takeover: list[dict[str, Any]] = []
    try:
        pg.start()
        log(f"PostgreSQL (fsync off) on port {pg.port}")
        if args.only in (None, "failover"):
            failover = [crash_failover(pg, workdir, ttl, args.cycles) for ttl in ttls]
        if args.only in (None, "switchover"):
            switch = switchovers(pg, workdir, args.switchovers, args.switchover_ttl)
        if args.only in (None, "takeover"):
            takeover = [row for n in sizes
                        for row in takeover_loads(pg, workdir, n, args.takeover_kills, args.takeover_ttl)]
    finally:
        pg.destroy()
        if not args.workdir:
            tmp.cleanup()

    print()
    print("luigi-ha HA figures: 2 scheduler node processes on one PostgreSQL (fsync off), loopback")
    print(machine_line())
    if failover:
        print()
        print("crash failover: SIGKILL of the leader -> first write acknowledged afterwards (kill_restart_soak)")
        print(table(["lease_ttl s", "cycles", "p50 s", "p99 s", "max s", "mean s", "acked writes", "lost",
                     "max leaders at once", "in-flight (<50 ms)", "p50 / p99 without them s"],
                    [[fmt(f["lease_ttl_s"], 1), f["n"], fmt(f["p50"], 3), fmt(f["p99"], 3), fmt(f["max"], 3),
                      fmt(f["mean"], 3), fmt(f["acked"]), f["lost"], f["max_leaders_at_once"],
                      f["in_flight_samples"], f"{f['p50_without_in_flight']:.3f} / {f['p99_without_in_flight']:.3f}"]
                     for f in failover]))
        print("(in-flight: a reply the old leader sent just before the SIGKILL, read by the writer just after)")
    if switch:
        print()
        print("switchover: POST /switchover -> first write acknowledged by the new leader (AckingWriter)")
        print(table(["lease_ttl s", "switchovers", "p50 s", "max s", "min s", "mean s", "acked writes", "lost"],
                    [[fmt(switch["lease_ttl_s"], 1), switch["n"], fmt(switch["p50"], 3), fmt(switch["max"], 3),
                      fmt(switch["min"], 3), fmt(switch["mean"], 3), fmt(switch["acked"]), switch["lost"]]]))
    if takeover:
        print()
        print("takeover load: new leader's /status takeover_load_seconds after kill -9 of the old leader "
              f"(target <= 1 s at 100,000; lease_ttl {takeover[0]['lease_ttl_s']:g} s)")
        print(table(["tasks", "standby", "kills", "load p50 s", "load max s", "loads s (each kill)",
                     "/metrics gauge s", "first start load s", "kill -> new leader s"],
                    [[fmt(t["tasks"]), "following" if t["follow"] else "cold", t["n"], fmt(t["p50"], 3),
                      fmt(t["max"], 3),
                      " ".join(f"{x:.3f}" for x in t["loads_s"]),
                      " ".join(fmt(x, 3) for x in t["gauge_s"]), fmt(float(t["initial_load_s"]), 3),
                      " ".join(f"{x:.2f}" for x in t["kill_to_leader_s"])] for t in takeover]))
    print()
    print(json.dumps({"benchmark": "ha_figures", "crash_failover": [_rounded(f) for f in failover],
                      "switchover": _rounded(switch) if switch else None,
                      "takeover_load": [_rounded(t) for t in takeover]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
