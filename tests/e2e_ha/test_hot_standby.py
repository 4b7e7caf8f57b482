"""A following standby on a real two-node cluster on PostgreSQL: it reads what the leader
committed, refuses writes, says when its copy is too old to read, and takes over without a reload.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from sqlalchemy.engine import make_url

from lease import create_engine
from scheduler.core import Scheduler
from scheduler.localcluster import LocalCluster
from scheduler.store import Store
from tests.conftest import SCHEDULER_TEST_CONFIG
from tests.support.acks import AckingWriter, leader_task_ids

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def rpc(url: str, method: str, **arguments: Any) -> requests.Response:
    return requests.post(f"{url}/api/{method}", data={"data": json.dumps(arguments)}, timeout=10)


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def replica_code(url: str) -> int:
    return requests.get(url + "/replica", timeout=5).status_code


def standby_lag_metric(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=5).text
    m = re.search(r"^luigi_ha_standby_lag_seconds ([^\s]+)$", text, re.M)
    assert m, "luigi_ha_standby_lag_seconds is missing"
    return float(m.group(1))


def admin(db_url: str, sql: str) -> None:
    u = make_url(db_url)
    conn = psycopg2.connect(host=u.host, port=u.port, user="postgres", dbname=u.database)
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def test_the_standby_reads_what_the_leader_committed_refuses_writes_and_reports_when_it_cannot_follow(
    pg_url: str, tmp_path: Path
) -> None:
    # The standby reaches the database as a login role of its own, so the test can cut it off
    # (no new logins, its sessions ended) while the leader keeps writing.
    role = "follower_" + make_url(pg_url).database
    admin(pg_url, f"CREATE ROLE {role} LOGIN SUPERUSER")
    cluster = LocalCluster(tmp_path / "pair", pg_url, size=2, lease_ttl=2.0, extra_config=SCHEDULER_TEST_CONFIG)
    leader, standby = cluster.nodes
    standby.env = {"LUIGI_HA_DATABASE_CONNECTION": make_url(pg_url).set(username=role).render_as_string(False)}
    try:
        leader.start()
        cluster.wait_for_leader(timeout=30)
        standby.start()
        wait_until(lambda: standby.responds() and replica_code(standby.url) == 200, 30, "the standby to follow")

        for n in range(30):
            added = rpc(leader.url, "add_task", task_id=f"Seen_{n}", family="Seen", worker="w1",
                        status="DONE" if n % 3 == 0 else "PENDING", deps=[f"Seen_{n - 1}"] if n else [])
            assert added.status_code == 200
        acked = time.monotonic()
        on_leader = rpc(leader.url, "task_list", status="", upstream_status="", limit=False).json()["response"]
        listing = wait_until(
            lambda: (r := rpc(standby.url, "task_list", status="", upstream_status="", limit=False)).status_code == 200
            and len(r.json()["response"]) == len(on_leader) and r.json()["response"],
            5, "the standby to list what the leader committed")
        visible_after = time.monotonic() - acked
        assert {k: v["status"] for k, v in listing.items()} == {k: v["status"] for k, v in on_leader.items()}
        graph = rpc(standby.url, "dep_graph", task_id="Seen_29").json()["response"]
        assert set(graph) == {f"Seen_{n}" for n in range(30)}
        assert rpc(standby.url, "worker_list").status_code == 200

        refused = rpc(standby.url, "add_task", task_id="Nope", worker="w1")
        assert refused.status_code == 503 and refused.json()["leader"] == leader.node_id
        assert rpc(standby.url, "count_pending", worker="w1").status_code == 503, "a read that writes is the leader's"
        assert "Nope" not in rpc(leader.url, "task_list", limit=False).json()["response"]

        status = requests.get(standby.url + "/status", timeout=5).json()
        assert status["role"] == "following"
        assert status["replica"]["ready"] and status["replica"]["lag_seconds"] <= status["replica"]["max_lag_seconds"]
        assert 0 <= standby_lag_metric(standby.url) <= 5
        assert replica_code(leader.url) == 503, "the leader is no replica to read from"

        # Cut the standby off the database: its copy can no longer be trusted, it is dropped.
        admin(pg_url, f"ALTER ROLE {role} NOLOGIN")
        admin(pg_url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        assert rpc(leader.url, "add_task", task_id="Later", worker="w1").status_code == 200
        wait_until(lambda: replica_code(standby.url) == 503, 10, "the cut-off standby to stop reporting ready")
        assert rpc(standby.url, "task_list", limit=False).status_code == 503
        assert requests.get(standby.url + "/status", timeout=5).json()["role"] == "standby"
        assert math.isinf(standby_lag_metric(standby.url))

        admin(pg_url, f"ALTER ROLE {role} LOGIN")
        wait_until(lambda: replica_code(standby.url) == 200, 20, "the standby to follow again")
        assert "Later" in rpc(standby.url, "task_list", limit=False).json()["response"]
        print(f"\n[hot standby] visible on the standby {visible_after:.3f} s after the leader's ack")
    finally:
        cluster.stop()
        admin(pg_url, f"DROP ROLE IF EXISTS {role}")


def populate(db_url: str, n: int) -> None:
    engine = create_engine(db_url)
    try:
        store = Store(engine)
        store.upgrade()
        core = Scheduler()
        core.add_worker(worker="seed", info={"host": "seed"})
        for i in range(n):
            core.add_task(task_id=f"Seed_{i}", family="Seed", worker="seed", status="DONE" if i % 2 else "PENDING",
                          deps=[f"Seed_{i - 1}"] if i % 10 else [], params={"i": str(i)})
        store.apply(core.take_changes(), epoch=1)
    finally:
        engine.dispose()


def cold_load_seconds(db_url: str, rounds: int = 3) -> float:
    """A node's cold takeover load, in this process: read every row and build the core."""
    engine = create_engine(db_url)
    try:
        store = Store(engine)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            core = Scheduler()
            core.restore(store.load_all(decode_task=core.task_decoder()))
            core.grant_grace()
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        engine.dispose()


TASKS = 20_000


def test_a_caught_up_standby_takes_over_after_sigkill_without_a_reload_and_loses_nothing(
    pg_url: str, make_cluster: Callable[..., LocalCluster], figures: Callable[..., None]
) -> None:
    populate(pg_url, TASKS)
    cluster = make_cluster(pg_url, size=2, lease_ttl=2.0)
    old = cluster.wait_for_leader()
    new = next(n for n in cluster.nodes if n is not old)
    wait_until(lambda: replica_code(new.url) == 200, 30, "the standby to follow")
    writer = AckingWriter(cluster.urls, prefix="Acked")
    writer.start()
    try:
        wait_until(lambda: len(writer.acks) >= 50, 20, "writes before the kill")
        killed = time.monotonic()
        old.kill()
        assert cluster.wait_for_leader(timeout=15, exclude=old) is new
        wait_until(lambda: writer.first_ack_after(killed), 15, "a write acknowledged by the new leader")
        time.sleep(0.3)
    finally:
        writer.stop()
    acknowledged = {ack.task_id for ack in writer.acks}
    missing = acknowledged - leader_task_ids(new.url, "Acked")
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
    status = requests.get(new.url + "/status", timeout=5).json()
    assert status["takeover_kind"] == "follower"
    assert sum(status["tasks"].values()) == TASKS + len(acknowledged)
    cold = cold_load_seconds(pg_url)
    figures(tasks=TASKS, takeover_from_follower_s=status["takeover_load_seconds"], cold_load_s=cold,
            acked=len(acknowledged))
    assert status["takeover_load_seconds"] < cold / 3, "a caught-up standby must not reload the state"


def rpc_count(url: str, method: str) -> float:
    text = requests.get(url + "/metrics", timeout=5).text
    m = re.search(rf'^luigi_ha_rpc_duration_seconds_count{{method="{method}"}} ([^\s]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def read_backend(stats_url: str) -> dict[str, str]:
    text = requests.get(f"{stats_url}/stats;csv", timeout=2).text.lstrip("# ")
    return {row["svname"]: row["status"] for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "luigi_ha_replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
            and not row["svname"].endswith("_leader")}


def test_haproxy_sends_reads_to_the_caught_up_standby_writes_to_the_leader_and_reads_to_the_leader_without_one(
    ha_cluster: Any,
) -> None:
    cluster = ha_cluster.cluster
    leader = cluster.wait_for_leader()
    standby = next(n for n in cluster.nodes if n is not leader)
    vip = ha_cluster.vip
    wait_until(lambda: replica_code(standby.url) == 200, 30, "the standby to follow")
    assert rpc(vip, "add_task", task_id="Routed", worker="w1").status_code == 200
    assert rpc_count(standby.url, "add_task") == 0, "a write reached the standby"
    # HAProxy starts with every server UP; its /replica checks take the leader out of the read backend.
    wait_until(lambda: read_backend(ha_cluster.stats) == {leader.node_id: "DOWN", standby.node_id: "UP"},
               10, "HAProxy to route reads to the standby only")
    before = (rpc_count(leader.url, "task_list"), rpc_count(standby.url, "task_list"))
    for _ in range(5):
        listing = rpc(vip, "task_list", limit=False)
        assert listing.status_code == 200 and "Routed" in listing.json()["response"]
    assert rpc_count(leader.url, "task_list") == before[0]
    assert rpc_count(standby.url, "task_list") == before[1] + 5
    assert requests.get(vip + "/static/visualiser/index.html", timeout=5).status_code == 200

    standby.stop()  # no standby left: the leader takes the reads
    wait_until(lambda: rpc(vip, "task_list", limit=False).status_code == 200
               and rpc_count(leader.url, "task_list") > before[0], 10, "the leader to serve the reads")
