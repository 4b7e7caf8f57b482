"""The database under the scheduler fails over (Patroni), and nothing the scheduler acknowledged is lost.

Real parts only: etcd and two PostgreSQL 15 servers managed by Patroni with ``synchronous_mode``
(tests/support/patroni.py), two ``luigi-ha scheduler`` processes behind the real HAProxy of
haproxy/haproxy.cfg.j2, the stock ``luigi`` CLI with 4 worker processes, and a client that keeps
writing through the scheduler front and remembers every acknowledged write.

One pipeline spans all three database failures, one after the other: SIGKILL of the primary's
PostgreSQL, ``patronictl switchover``, then SIGKILL of the primary's Patroni and PostgreSQL
together. After each, the old primary rejoins as a synchronous standby before the next. The test
runs once for each way a node can reach the primary:

* ``multihost``: a libpq multi-host URL naming both servers with ``target_session_attrs=read-write``;
* ``haproxy``: one address, HAProxy (haproxy/haproxy-db.cfg.j2) health-checking Patroni's
  ``GET /primary`` and cutting the sessions of a server that stops being the primary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import render_haproxy_db_cfg
from scheduler.drill import expected_task_ids
from scheduler.localcluster import free_port
from tests.e2e_ha.harness import EXAMPLES, HAProxyProcess, probe_env, read_runs, start_ha_cluster, wait_for_runs
from tests.support.acks import AckingWriter, LeaderSampler, leader_task_ids
from tests.support.dbdrills import FAILURES, drill
from tests.support.patroni import PatroniCluster, patroni_available

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres]

LEASE_TTL = 2.0
TASKS = 240  # leaves; the probe pipeline has 240 + 24 groups + 1 root tasks
TASK_SECONDS = "0.3"  # 4 workers need about 20 s of task time: the pipeline outlives the failovers
START_AFTER_RUNS = 20

# Writes must be accepted again within the database's own promotion time plus the scheduler's
# lease TTL plus a margin for HAProxy's checks and a loaded 2-CPU machine.
MARGIN_S = 6.0


@pytest.fixture(scope="module")
def patroni() -> Iterator[PatroniCluster]:
    reason = patroni_available()
    if reason:
        pytest.skip(reason)
    cluster = PatroniCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["multihost", "haproxy"])
def db_url(request: pytest.FixtureRequest, patroni: PatroniCluster, tmp_path: Path) -> Iterator[str]:
    patroni.wait_healthy()
    if request.param == "multihost":
        yield patroni.multihost_url()
        return
    port = free_port()
    cfg = tmp_path / "haproxy-db.cfg"
    cfg.write_text(render_haproxy_db_cfg(db_nodes=patroni.haproxy_db_nodes(), db_bind=f"127.0.0.1:{port}"))
    proxy = HAProxyProcess(cfg).start()
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/luigi_ha"
    finally:
        proxy.stop()


def stock_luigi_client_cfg(workdir: Path) -> Path:
    """The README's settings for the stock client, with a retry budget past Patroni's ttl (20 s)."""
    cfg = workdir / "client.cfg"
    cfg.write_text(
        "[core]\nrpc_retry_attempts = 60\nrpc_retry_wait = 1\nrpc_connect_timeout = 10\n\n"
        "[worker]\nwait_interval = 0.1\nwait_jitter = 0.1\nping_interval = 0.5\n"
    )
    return cfg


def test_a_pipeline_and_acknowledged_writes_survive_three_patroni_failovers(
    patroni, db_url, make_cluster, tmp_path, figures
):
    schedulers = make_cluster(db_url, size=2, lease_ttl=LEASE_TTL, name=f"db-{tmp_path.name}")
    front = start_ha_cluster(tmp_path / "haproxy", schedulers)
    run_id = f"patroni-{tmp_path.name}"[:40]
    expected = expected_task_ids(EXAMPLES, run_id, TASKS)
    env = probe_env(tmp_path, LUIGI_CONFIG_PATH=str(stock_luigi_client_cfg(tmp_path)))
    writer = AckingWriter([front.vip], prefix="PatroniAck")
    sampler = LeaderSampler(schedulers.urls)
    writer.start()
    sampler.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "luigi", "--module", "drill_probe", "DrillProbe", "--run-id", run_id,
         "--tasks", str(TASKS), "--seconds", TASK_SECONDS, "--workers", "4", "--scheduler-url", front.vip],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    failovers = []
    try:
        wait_for_runs(tmp_path / "runs.log", START_AFTER_RUNS, proc=proc)
        for how in FAILURES:
            assert proc.poll() is None, f"the pipeline ended before the {how} failover"
            failovers.append(drill(patroni, writer, how, rejoin=True))
        output, _ = proc.communicate(timeout=240)
    finally:
        writer.stop()
        sampler.stop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        front.haproxy.stop()

    route = "multihost" if "target_session_attrs" in db_url else "haproxy"
    for f in failovers:
        figures(failure=f.how, route=route, old=f.old_primary, new=f.new_primary,
                promotion_s=f.promotion_s, no_write_s=f.no_write_s, since_kill_s=f.since_kill_s)
    final = schedulers.wait_for_leader(timeout=30)
    acked = {a.task_id for a in writer.acks}
    lost = sorted(acked - leader_task_ids(final.url, "PatroniAck"))
    counts = read_runs(tmp_path / "runs.log")
    twice = sorted(t for t, c in counts.items() if c > 1)
    missing = sorted(expected - set(counts))
    figures(acked=len(acked), lost=len(lost), tasks=len(expected), ran_twice=len(twice), never_ran=len(missing),
            pipeline_exit=proc.returncode, max_scheduler_leaders=sampler.max_leaders)

    assert [f.how for f in failovers] == list(FAILURES)
    # A crashed PostgreSQL may be restarted in place when Patroni finds no standby fit to take
    # over; the other two always move the primary.
    assert all(f.new_primary != f.old_primary for f in failovers if f.how != "kill-postgres")
    assert len(acked) > 100
    assert not lost, f"{len(lost)} acknowledged write(s) lost: {lost[:5]}"
    assert proc.returncode == 0, output[-5000:]
    assert not twice, f"{len(twice)} task(s) ran more than once: {twice[:5]}"
    assert not missing, f"{len(missing)} task(s) never ran: {missing[:5]}"
    assert f"{len(expected)} ran successfully" in output, output[-3000:]
    assert sampler.max_leaders == 1
    for f in failovers:
        assert f.no_write_s < f.promotion_s + LEASE_TTL + MARGIN_S, f


def test_luigi_ha_drill_runs_a_database_switchover_and_reports_it(patroni, make_cluster, tmp_path):
    patroni.wait_healthy()
    schedulers = make_cluster(patroni.multihost_url(), size=2, lease_ttl=LEASE_TTL, name="drill")
    front = start_ha_cluster(tmp_path / "haproxy", schedulers)
    old = patroni.wait_primary()
    new = next(m for m in patroni.members if m is not old)
    patronictl = Path(sys.executable).parent / "patronictl"
    action = (f"{patronictl} -c {old.config_path} switchover {patroni.scope} --leader {old.name} "
              f"--candidate {new.name} --force")
    argv = [sys.executable, "-m", "scheduler.cli", "drill", "--url", front.vip, "--target", "database",
            "--action", action, "--tasks", "60", "--task-seconds", "0.1", "--json", "--workdir", str(tmp_path)]
    for url in schedulers.urls:
        argv += ["--node-url", url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=probe_env(tmp_path))
    finally:
        front.haproxy.stop()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["problems"] == []
    assert report["tasks_run_twice"] == 0 and report["tasks_lost"] == 0 and report["pipeline_completed"]
    assert 0 < report["write_recovery_s"] < 30
    assert patroni.wait_primary() is new
    patroni.rejoin(old)
