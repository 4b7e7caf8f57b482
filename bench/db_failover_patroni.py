"""How long the scheduler accepts no write while its Patroni database fails over, over many drills.

    python bench/db_failover_patroni.py                        # 20 rounds of each failure, multi-host URL
    python bench/db_failover_patroni.py --rounds 5 --only switchover --route haproxy

Real parts: etcd and two PostgreSQL 15 servers under Patroni (tests/support/patroni.py:
``synchronous_mode``, ttl 20, loop_wait 1, retry_timeout 3, primary_start_timeout 0), two
``luigi-ha scheduler`` processes (lease TTL ``--lease-ttl``, default 2 s) reaching the primary
through ``--route`` (``multihost``: a libpq URL naming both servers with
``target_session_attrs=read-write``; ``haproxy``: haproxy/haproxy-db.cfg.j2 checking Patroni's
``GET /primary``), behind the real HAProxy of haproxy/haproxy.cfg.j2.

Each round, for each failure of ``--only`` (tests/support/dbdrills.py: ``kill-postgres``,
``kill-patroni-and-postgres``, ``switchover``): a stock ``luigi`` pipeline (the drill probe,
``--tasks`` leaves, 4 workers) is started through the scheduler front, the database is failed
once a few of its tasks have run, the old primary rejoins as a synchronous standby, and the
pipeline must then complete with every task run exactly once. An acknowledged-write client
writes through the front all along. Reported per failure: the time no write was accepted
(p50/p99/max), from the SIGKILL to the first accepted write (kills), Patroni's own promotion
time, how often a crashed PostgreSQL was restarted in place instead of failed over, acknowledged
writes lost, pipelines failed, tasks run twice or never.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, log, machine_line, percentile, table  # noqa: E402

from deploy import render_haproxy_db_cfg  # noqa: E402
from scheduler.drill import expected_task_ids  # noqa: E402
from scheduler.localcluster import LocalCluster, free_port  # noqa: E402
from tests.e2e_ha.harness import (  # noqa: E402
    EXAMPLES,
    HAProxyProcess,
    probe_env,
    read_runs,
    start_ha_cluster,
    wait_for_runs,
)
from tests.support.acks import AckingWriter, LeaderSampler, leader_task_ids  # noqa: E402
from tests.support.dbdrills import FAILURES, drill  # noqa: E402
from tests.support.patroni import TIMINGS, PatroniCluster  # noqa: E402

CLIENT_CFG = ("[core]\nrpc_retry_attempts = 60\nrpc_retry_wait = 1\nrpc_connect_timeout = 10\n\n"
              "[worker]\nwait_interval = 0.1\nwait_jitter = 0.1\nping_interval = 0.5\n")


def _pipeline(workdir: Path, vip: str, run_id: str, tasks: int, seconds: float) -> subprocess.Popen[str]:
    env = probe_env(workdir, LUIGI_CONFIG_PATH=str(workdir / "client.cfg"))
    return subprocess.Popen(
        [sys.executable, "-m", "luigi", "--module", "drill_probe", "DrillProbe", "--run-id", run_id,
         "--tasks", str(tasks), "--seconds", str(seconds), "--workers", "4", "--scheduler-url", vip],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="lha-bench-patroni-"))
    (work / "client.cfg").write_text(CLIENT_CFG)
    patroni = PatroniCluster().start()
    proxy = None
    schedulers = None
    front = None
    results: dict[str, Any] = {}
    try:
        if args.route == "haproxy":
            port = free_port()
            cfg = work / "haproxy-db.cfg"
            cfg.write_text(render_haproxy_db_cfg(db_nodes=patroni.haproxy_db_nodes(), db_bind=f"127.0.0.1:{port}"))
            proxy = HAProxyProcess(cfg).start()
            url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/luigi_ha"
        else:
            url = patroni.multihost_url()
        schedulers = LocalCluster(work / "schedulers", url, size=2, lease_ttl=args.lease_ttl)
        schedulers.start(wait=60)
        front = start_ha_cluster(work / "front", schedulers)
        sampler = LeaderSampler(schedulers.urls)
        sampler.start()
        for how in args.only:
            writer = AckingWriter([front.vip], prefix=f"Bench_{how.replace('-', '_')}")
            writer.start()
            rows: list[dict[str, Any]] = []
            failed = twice = never = 0
            try:
                for i in range(args.rounds):
                    run_dir = work / f"{how}-{i}"
                    run_dir.mkdir()
                    (run_dir / "client.cfg").write_text(CLIENT_CFG)
                    run_id = f"{how}-{i}"
                    expected = expected_task_ids(EXAMPLES, run_id, args.tasks)
                    proc = _pipeline(run_dir, front.vip, run_id, args.tasks, args.task_seconds)
                    try:
                        wait_for_runs(run_dir / "runs.log", 4, timeout=120, proc=proc)
                        result = drill(patroni, writer, how)
                        output, _ = proc.communicate(timeout=300)
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                            proc.communicate()
                    counts = read_runs(run_dir / "runs.log")
                    ok = proc.returncode == 0 and f"{len(expected)} ran successfully" in output
                    failed += 0 if ok else 1
                    twice += sum(1 for c in counts.values() if c > 1)
                    never += len(expected - set(counts))
                    row = {"no_write_s": result.no_write_s, "since_kill_s": result.since_kill_s,
                           "promotion_s": result.promotion_s, "moved": result.new_primary != result.old_primary,
                           "pipeline_ok": ok}
                    rows.append(row)
                    log(f"{how} {i + 1}/{args.rounds}: no write for {result.no_write_s:.2f}s "
                        f"(promotion {result.promotion_s:.2f}s, {result.old_primary}->{result.new_primary}), "
                        f"pipeline {'ok' if ok else 'FAILED'}")
            finally:
                writer.stop()
            leader = schedulers.wait_for_leader(timeout=60)
            acked = {a.task_id for a in writer.acks}
            lost = acked - leader_task_ids(leader.url, writer.prefix)
            results[how] = {"rounds": rows, "acked": len(acked), "lost": len(lost), "pipelines_failed": failed,
                            "tasks_run_twice": twice, "tasks_never_ran": never}
        sampler.stop()
        results["max_scheduler_leaders_at_once"] = sampler.max_leaders
    finally:
        if front is not None:
            front.haproxy.stop()
        if schedulers is not None:
            schedulers.stop()
        if proxy is not None:
            proxy.stop()
        patroni.destroy()
    return results


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    rows = []
    for how in args.only:
        r = results[how]
        no_write = [x["no_write_s"] for x in r["rounds"]]
        since = [x["since_kill_s"] for x in r["rounds"] if x["since_kill_s"] is not None]
        promo = [x["promotion_s"] for x in r["rounds"]]
        rows.append([how, len(no_write), fmt(percentile(no_write, 50), 2), fmt(percentile(no_write, 99), 2),
                     fmt(max(no_write), 2), fmt(percentile(since, 50), 2) if since else "-",
                     fmt(percentile(since, 99), 2) if since else "-", fmt(percentile(promo, 50), 2),
                     sum(1 for x in r["rounds"] if not x["moved"]), r["acked"], r["lost"], r["pipelines_failed"],
                     r["tasks_run_twice"], r["tasks_never_ran"]])
    settings = (f"route {args.route}, scheduler lease_ttl {args.lease_ttl}s, Patroni "
                + ", ".join(f"{k} {v}" for k, v in TIMINGS.items())
                + f", synchronous_mode on; pipeline {args.tasks} leaves x {args.task_seconds}s, 4 workers")
    return "\n".join([
        machine_line(), settings,
        table(["failure", "n", "no write p50", "p99", "max", "kill->write p50", "p99", "promotion p50",
               "restarted in place", "acked", "lost", "pipelines failed", "ran twice", "never ran"], rows),
        f"most scheduler leaders at once: {results['max_scheduler_leaders_at_once']}",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--only", nargs="+", choices=FAILURES, default=list(FAILURES))
    parser.add_argument("--route", choices=["multihost", "haproxy"], default="multihost")
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--task-seconds", type=float, default=0.2)
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()
    started = time.monotonic()
    results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(args, results))
    print(f"took {time.monotonic() - started:.0f}s")
    bad = any(results[h]["lost"] or results[h]["pipelines_failed"] or results[h]["tasks_run_twice"]
              for h in args.only) or results["max_scheduler_leaders_at_once"] > 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
