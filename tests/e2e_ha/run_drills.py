"""Run N failover drills against a local two-node cluster behind a real HAProxy; print p50/p99.

Not collected by pytest (no ``test_`` prefix). It starts a throwaway PostgreSQL (or uses SQLite),
two ``luigi-ha scheduler`` nodes and ``haproxy -db`` rendered from haproxy/haproxy.cfg.j2, then
for each drill runs the real CLI::

    luigi-ha drill --url VIP --node-url N1 --node-url N2 --action 'kill -9 <leader pid>' --json

restarts the killed node as a standby, waits until both nodes answer, and goes on. At the end it
prints each drill's figures, p50/p99 of "action -> the VIP answered a write again" and of the
time without a leader, the totals of tasks run twice / lost / pipelines failed, and the HAProxy
check timings in force.

    python tests/e2e_ha/run_drills.py --drills 20 [--action kill|switchover] [--lease-ttl 2]
                                      [--tasks 200] [--workers 4] [--db postgres|sqlite] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from scheduler.drill import percentile, wait_until_nodes_answer  # noqa: E402
from scheduler.localcluster import LocalCluster  # noqa: E402
from tests.e2e_ha.harness import haproxy_check_timings, luigi_ha, start_ha_cluster  # noqa: E402
from tests.support.dbservers import PostgresServer, postgres_bindir  # noqa: E402

CLUSTER_CONFIG = "[scheduler]\nretry_delay = 1\nworker_disconnect_delay = 60\n\n[server]\nprune_interval = 5\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drills", type=int, default=20)
    parser.add_argument("--action", choices=["kill", "switchover"], default="kill")
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--json", action="store_true", help="print the reports as one JSON object at the end")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (node logs, drill files)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="luigi-ha-drills-"))
    pg = None
    if args.db == "postgres":
        if postgres_bindir() is None:
            print("PostgreSQL server binaries are not installed; use --db sqlite", file=sys.stderr)
            return 2
        pg = PostgresServer()
        pg.start()
        db_url = pg.create_database("drills")
    else:
        db_url = f"sqlite:///{workdir / 'state.db'}"
    cluster = LocalCluster(workdir / "cluster", db_url, size=2, lease_ttl=args.lease_ttl, extra_config=CLUSTER_CONFIG)
    ha = None
    reports: list[dict] = []
    try:
        cluster.start()
        ha = start_ha_cluster(workdir / "haproxy", cluster)
        node_flags = sum((["--node-url", u] for u in cluster.urls), [])
        for i in range(args.drills):
            leader = cluster.wait_for_leader(timeout=60)
            action = f"kill -9 {leader.pid}" if args.action == "kill" else "switchover"
            done = subprocess.run(
                luigi_ha("drill", "--url", ha.vip, *node_flags, "--action", action, "--tasks", str(args.tasks),
                         "--workers", str(args.workers), "--json", "--no-progress",
                         "--workdir", str(workdir / "drills")),
                capture_output=True, text=True, timeout=600, cwd=REPO)
            try:
                report = json.loads(done.stdout)
            except ValueError:
                print(f"drill {i + 1}: no report (exit {done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
                return 1
            reports.append(report)
            print(f"drill {i + 1:2d}/{args.drills}: {'OK ' if report['ok'] else 'BAD'} "
                  f"{report['leader_before']}->{report['leader_after']} "
                  f"without_leader={report['time_without_leader_s']}s write_recovery={report['write_recovery_s']}s "
                  f"worker_retries={report['worker_rpc_retries']} twice={report['tasks_run_twice']} "
                  f"lost={report['tasks_lost']} completed={report['pipeline_completed']} "
                  f"{'; '.join(report['problems'])}", flush=True)
            if args.action == "kill":
                leader.proc.wait(timeout=10)
                leader.start()  # back as a standby for the next drill
            if not wait_until_nodes_answer(cluster.urls, timeout=60):
                print("a node did not come back", file=sys.stderr)
                return 1
            time.sleep(1.0)
    finally:
        if ha is not None:
            ha.haproxy.stop()
        cluster.stop()
        if pg is not None:
            pg.destroy()
        if args.keep:
            print(f"files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    recov = [r["write_recovery_s"] for r in reports if r["write_recovery_s"] is not None]
    gaps = [r["time_without_leader_s"] for r in reports if r["time_without_leader_s"] is not None]
    retries = [r["worker_rpc_retries"] for r in reports]
    summary = {
        "drills": len(reports),
        "action": args.action,
        "lease_ttl": args.lease_ttl,
        "db": args.db,
        "tasks_per_pipeline": reports[0]["tasks_expected"] if reports else None,
        "write_recovery_s": {"p50": percentile(recov, 50), "p99": percentile(recov, 99),
                             "max": max(recov, default=None), "min": min(recov, default=None)},
        "time_without_leader_s": {"p50": percentile(gaps, 50), "p99": percentile(gaps, 99),
                                  "max": max(gaps, default=None), "min": min(gaps, default=None)},
        "worker_rpc_retries_per_failover": {"p50": percentile(retries, 50), "max": max(retries, default=None)},
        "tasks_run_twice": sum(r["tasks_run_twice"] for r in reports),
        "tasks_lost": sum(r["tasks_lost"] for r in reports),
        "pipelines_failed": sum(not r["pipeline_completed"] for r in reports),
        "haproxy_checks": haproxy_check_timings(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps({"summary": summary, "drills": reports}))
    ok = all(r["ok"] for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
