"""``luigi-ha demo``: a two-node cluster on the embedded SQLite default, a daily run, a failover.

What it does, step by step, printing as it goes:

1. starts two scheduler nodes on one SQLite file and a local leader-following forwarder (the
   laptop stand-in for HAProxy on a VIP);
2. runs the example daily pipeline (24 x Extract -> 24 x Transform -> 1 aggregation) with the
   stock ``luigi`` CLI and 4 worker processes pointed at the forwarder;
3. kills the leader with SIGKILL in the middle of the run, shows the standby taking over, and
   restarts the killed node, which rejoins as a standby;
4. waits for the pipeline and prints a summary: what ran, how often, and what the failover cost.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests

from scheduler.localcluster import LocalCluster, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"


def _say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _done_count(url: str) -> int:
    try:
        r = requests.get(url + "/api/task_list", params={"data": '{"status": "DONE", "upstream_status": ""}'},
                         timeout=2)
        if r.status_code == 200:
            return len(r.json()["response"])
    except (requests.RequestException, ValueError, KeyError):
        pass
    return -1


def run_demo(workdir: str = ".demo", date: str | None = None, keep: bool = False) -> int:
    root = Path(workdir).resolve()
    if root.exists() and not keep:
        shutil.rmtree(root)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    run_date = date or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()

    cluster = LocalCluster(root, f"sqlite:///{root / 'luigi-ha.db'}", size=2, lease_ttl=3.0)
    proxy_port = free_port()
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    client_cfg = root / "client.cfg"
    client_cfg.write_text(
        "[core]\n"
        f"default_scheduler_url = {proxy_url}\n"
        "rpc_retry_attempts = 20\nrpc_retry_wait = 1\nrpc_connect_timeout = 10\n\n"
        "[daily_pipeline]\n"
        f"data_dir = {data}\ntask_seconds = 0.4\n"
    )
    env = {
        **os.environ,
        "LUIGI_CONFIG_PATH": str(client_cfg),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLES), str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    proxy = None
    pipeline = None
    try:
        _say(f"starting 2 scheduler nodes on {root / 'luigi-ha.db'} (lease_ttl 3 s)")
        leader = cluster.start()
        _say(f"leader is {leader.node_id} at {leader.url}; standby is "
             f"{next(n.node_id for n in cluster.nodes if n is not leader)}")
        proxy = subprocess.Popen(
            [sys.executable, "-m", "scheduler.leader_proxy", "--port", str(proxy_port),
             *sum((["--backend", u] for u in cluster.urls), [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        _say(f"workers talk to {proxy_url} (the laptop stand-in for HAProxy on a VIP)")
        _say(f"running: luigi --module daily_pipeline DailyAggregations --date {run_date} --workers 4")
        pipeline = subprocess.Popen(
            [sys.executable, "-m", "luigi", "--module", "daily_pipeline", "DailyAggregations",
             "--date", run_date, "--workers", "4", "--scheduler-url", proxy_url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _done_count(leader.url) < 12 and pipeline.poll() is None:
            time.sleep(0.1)
        _say(f"{_done_count(leader.url)} tasks DONE so far; killing the leader {leader.node_id} "
             f"(pid {leader.pid}) with SIGKILL")
        killed_at = time.monotonic()
        leader.kill()
        new_leader = cluster.wait_for_leader(timeout=30, exclude=leader)
        failover = time.monotonic() - killed_at
        _say(f"{new_leader.node_id} took over after {failover:.2f} s with the full task state "
             f"({_done_count(new_leader.url)} tasks DONE)")
        leader.start()
        _say(f"restarted {leader.node_id}; it rejoins as a standby")
        output, _ = pipeline.communicate(timeout=300)
        code = pipeline.returncode
        runs = Counter((data / "runs.log").read_text().split()) if (data / "runs.log").exists() else Counter()
        twice = [t for t, n in runs.items() if n > 1]
        summary_prefixes = ("*", "-", "Scheduled", "This progress")
        summary = [line for line in output.splitlines() if line.lstrip().startswith(summary_prefixes)]
        print("\n===== Luigi's own summary =====")
        print("\n".join(summary[-12:]) or output[-2000:])
        print("===== luigi-ha demo summary =====")
        print(f"pipeline exit code      : {code}")
        print(f"tasks run (run() calls) : {sum(runs.values())} for {len(runs)} distinct tasks")
        print(f"tasks run twice         : {len(twice)}")
        print(f"failover (kill -> lead) : {failover:.2f} s")
        print(f"tasks DONE on the leader: {_done_count(proxy_url)}")
        out = data / run_date / "daily_aggregations.json"
        if out.exists():
            print(f"daily aggregation       : {out.read_text()}")
        for node in cluster.nodes:
            status = requests.get(node.url + "/status", timeout=2).json() if node.responds() else {}
            print(f"node {node.node_id:<7}          : role={status.get('role')} epoch={status.get('epoch')}")
        print(f"logs and state          : {root}")
        return 0 if code == 0 and not twice else 1
    finally:
        if pipeline is not None and pipeline.poll() is None:
            pipeline.terminate()
            pipeline.wait()
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        cluster.stop()
