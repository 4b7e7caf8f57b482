"""Pipelines of 200+ tasks ride through failovers behind a real HAProxy, every task run exactly once.

Real parts only: two ``luigi-ha scheduler`` processes on a throwaway PostgreSQL, ``haproxy -db``
rendered from the deployed template in front of them, the stock ``luigi`` CLI with 4 worker
processes, ``luigi-ha worker`` assistants, ``luigi-ha run`` and ``luigi-ha drill``. The leader is
killed with SIGKILL, handed over with POST /switchover, or frozen with SIGSTOP past the lease TTL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from scheduler.drill import expected_task_ids
from tests.e2e_ha.conftest import LEASE_TTL
from tests.e2e_ha.harness import EXAMPLES, VipWriter, luigi_ha, probe_env, read_runs, wait_for_runs

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres]

TASKS = 200  # leaf tasks; the probe pipeline has 200 + 20 groups + 1 root = 221 tasks
TASK_SECONDS = "0.05"
KILL_AFTER_RUNS = 50
FREEZE_SECONDS = LEASE_TTL + 1.5  # SIGSTOP lasts well past the lease TTL

# How soon the VIP must answer a write again after the failure. A frozen leader is different:
# HAProxy needs ~2.75 s (inter + timeout check, twice) to mark it DOWN, and a request it forwarded
# there before that waits until the node wakes up and answers 503 (the template keeps
# on-marked-down shutdown-sessions off on purpose), so there recovery follows the freeze.
RECOVERY_BOUND = {"sigkill": LEASE_TTL + 3, "switchover": LEASE_TTL + 3, "sigstop": FREEZE_SECONDS + LEASE_TTL + 3}


def stock_luigi_client_cfg(workdir: Path) -> Path:
    """What the README recommends for riding through a failover with the stock luigi client."""
    cfg = workdir / "client.cfg"
    cfg.write_text(
        "[core]\nrpc_retry_attempts = 30\nrpc_retry_wait = 1\nrpc_connect_timeout = 10\n\n"
        "[worker]\nwait_interval = 0.1\nwait_jitter = 0.1\nping_interval = 0.5\n"
    )
    return cfg


def fail_leader(ha, how: str) -> tuple[float, str]:
    """Fail the current leader; return (monotonic time of the failure, old leader id)."""
    leader = ha.cluster.leader()
    assert leader is not None
    at = time.monotonic()
    if how == "sigkill":
        leader.kill()
    elif how == "switchover":
        r = requests.post(leader.url + "/switchover", timeout=5)
        assert r.status_code == 200, r.text
    elif how == "sigstop":
        leader.signal(signal.SIGSTOP)
        try:
            ha.cluster.wait_for_leader(timeout=LEASE_TTL + 10, exclude=leader)
            time.sleep(max(0.0, at + FREEZE_SECONDS - time.monotonic()))
        finally:
            leader.signal(signal.SIGCONT)
    else:
        raise ValueError(how)
    return at, leader.node_id


def assert_exactly_once(runs_log: Path, expected: set[str]) -> tuple[int, int]:
    counts = read_runs(runs_log)
    twice = sorted(t for t, c in counts.items() if c > 1)
    lost = sorted(expected - set(counts))
    assert not twice, f"{len(twice)} task(s) ran more than once: {twice[:5]}"
    assert not lost, f"{len(lost)} task(s) never ran: {lost[:5]}"
    return len(twice), len(lost)


@pytest.mark.parametrize("how", ["sigkill", "switchover", "sigstop"])
def test_the_stock_luigi_cli_with_4_workers_completes_200_tasks_once_through_a_failover(
    ha_cluster, tmp_path, figures, how
):
    run_id = f"cli-{how}"
    expected = expected_task_ids(EXAMPLES, run_id, TASKS)
    env = probe_env(tmp_path, LUIGI_CONFIG_PATH=str(stock_luigi_client_cfg(tmp_path)))
    writer = VipWriter(ha_cluster.vip).start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "luigi", "--module", "drill_probe", "DrillProbe", "--run-id", run_id,
         "--tasks", str(TASKS), "--seconds", TASK_SECONDS, "--workers", "4", "--scheduler-url", ha_cluster.vip],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        wait_for_runs(tmp_path / "runs.log", KILL_AFTER_RUNS, proc=proc)
        failed_at, old = fail_leader(ha_cluster, how)
        recovery = writer.wait_recovered(failed_at)
        output, _ = proc.communicate(timeout=180)
    finally:
        writer.stop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    new = ha_cluster.cluster.wait_for_leader(timeout=10)
    rpc_errors = output.count("Failed connecting to remote scheduler")
    figures(failure=how, old_leader=old, new_leader=new.node_id, vip_write_recovery_s=recovery,
            worker_rpc_errors=rpc_errors, tasks=len(expected), pipeline_exit=proc.returncode)
    assert proc.returncode == 0, output[-5000:]
    assert new.node_id != old
    assert_exactly_once(tmp_path / "runs.log", expected)
    assert "Uncaught exception" not in output and "died unexpectedly" not in output, output[-5000:]
    assert "because there were no failed tasks or missing dependencies" in output, output[-3000:]
    assert f"{len(expected)} ran successfully" in output, output[-3000:]
    assert recovery < RECOVERY_BOUND[how]


def test_luigi_ha_worker_assistants_and_a_run_trigger_complete_a_pipeline_once_through_sigkill(
    ha_cluster, tmp_path, figures
):
    run_id = "assist-kill"
    expected = expected_task_ids(EXAMPLES, run_id, TASKS)
    retry_log = tmp_path / "rpc-retries.log"
    client_cfg = tmp_path / "client.cfg"
    client_cfg.write_text("[worker]\nwait_interval = 0.1\nwait_jitter = 0.1\nping_interval = 0.5\n")
    env = probe_env(tmp_path, LUIGI_CONFIG_PATH=str(client_cfg), LUIGI_HA_RPC_RETRY_LOG=str(retry_log))
    logs = [tmp_path / f"assistant-{i}.log" for i in range(2)]
    assistants = []
    for log in logs:
        with open(log, "wb") as out:
            assistants.append(subprocess.Popen(
                luigi_ha("worker", "--scheduler-url", ha_cluster.vip, "--module", "drill_probe", "--workers", "2"),
                stdout=out, stderr=subprocess.STDOUT, env=env))
    writer = VipWriter(ha_cluster.vip).start()
    trigger = None
    try:
        deadline = time.monotonic() + 30
        while not all("worker_connected" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "the assistants did not connect"
            assert all(a.poll() is None for a in assistants), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.05)
        trigger = subprocess.Popen(
            luigi_ha("run", "--scheduler-url", ha_cluster.vip, "--module", "drill_probe", "--workers", "0",
                     "DrillProbe", "--run-id", run_id, "--tasks", str(TASKS), "--seconds", TASK_SECONDS),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        wait_for_runs(tmp_path / "runs.log", KILL_AFTER_RUNS, proc=trigger)
        failed_at, old = fail_leader(ha_cluster, "sigkill")
        recovery = writer.wait_recovered(failed_at)
        output, _ = trigger.communicate(timeout=180)
        # SIGTERM drains the assistants: they take no new work and exit 0.
        for a in assistants:
            a.send_signal(signal.SIGTERM)
        codes = [a.wait(timeout=30) for a in assistants]
    finally:
        writer.stop()
        for p in [*assistants, trigger]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    retries = [json.loads(line) for line in retry_log.read_text().splitlines()] if retry_log.exists() else []
    per_assistant = [log.read_text().count('"task_started"') for log in logs]
    figures(failure="sigkill", vip_write_recovery_s=recovery, worker_rpc_retries=len(retries),
            tasks_per_assistant=per_assistant, trigger_exit=trigger.returncode, assistant_exits=codes)
    assert trigger.returncode == 0, output[-5000:]
    assert '"run_finished"' in output and '"ok": true' in output
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]
    assert_exactly_once(tmp_path / "runs.log", expected)
    assert all(n > 0 for n in per_assistant), "both assistants should have run tasks"
    assert sum(per_assistant) == len(expected), "with --workers 0 the trigger runs nothing itself"
    assert retries, "the workers' client must have seen (and retried) the failover"
    assert not any('"scheduler_unavailable"' in log.read_text() for log in logs)


def _drill(ha_cluster, tmp_path: Path, action: str) -> tuple[dict, subprocess.CompletedProcess]:
    workdir = tmp_path / "drills"
    argv = luigi_ha("drill", "--url", ha_cluster.vip, *sum((["--node-url", u] for u in ha_cluster.node_urls), []),
                    "--action", action, "--tasks", str(TASKS), "--workers", "4", "--json", "--keep",
                    "--workdir", str(workdir), "--no-progress")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout), done


@pytest.mark.parametrize("action", ["kill", "switchover"])
def test_the_drill_report_matches_what_the_test_observes(ha_cluster, tmp_path, figures, action):
    leader = ha_cluster.cluster.leader()
    assert leader is not None
    other = next(n for n in ha_cluster.cluster.nodes if n is not leader)
    command = f"kill -9 {leader.pid}" if action == "kill" else "switchover"

    report, done = _drill(ha_cluster, tmp_path, command)

    figures(drill=command, time_without_leader_s=report["time_without_leader_s"],
            write_recovery_s=report["write_recovery_s"], worker_rpc_retries=report["worker_rpc_retries"],
            tasks_run_twice=report["tasks_run_twice"], tasks_lost=report["tasks_lost"],
            pipeline_completed=report["pipeline_completed"])
    assert done.returncode == 0, (report, done.stderr[-3000:])
    assert report["ok"] is True and report["problems"] == []
    # What the test sees for itself:
    if action == "kill":
        assert leader.proc is not None and leader.proc.wait(timeout=5) == -signal.SIGKILL
    assert ha_cluster.cluster.wait_for_leader(timeout=10) is other
    assert report["leader_before"] == leader.node_id and report["leader_after"] == other.node_id
    run_dir = Path(report["workdir"])
    counts = read_runs(run_dir / "runs.log")
    expected = expected_task_ids(EXAMPLES, report["run_id"], TASKS)
    assert set(counts) == expected and set(counts.values()) == {1}
    assert report["tasks_expected"] == len(expected) == report["tasks_run"] == sum(counts.values())
    assert report["pipeline_completed"] is True and report["pipeline_exit_code"] == 0
    assert report["tasks_run_twice"] == 0 and report["tasks_lost"] == 0
    assert 0 < report["time_without_leader_s"] < LEASE_TTL + 2
    assert 0 < report["write_recovery_s"] < LEASE_TTL + 3
    assert report["tasks_run_before_action"] < len(expected), "the action must hit the pipeline mid-run"
    retry_log = run_dir / "rpc-retries.log"
    retry_lines = retry_log.read_text().splitlines() if retry_log.exists() else []
    assert report["worker_rpc_retries"] == len(retry_lines)
