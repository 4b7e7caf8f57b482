"""The database under the scheduler fails over: a PostgreSQL primary with a synchronous streaming
replica, the nodes' URL naming both (``?host=..&host=..&target_session_attrs=read-write``), the
primary killed with SIGKILL and the replica promoted with ``pg_ctl promote``.

What must hold, each with real servers and real scheduler processes:

* writes are accepted again without restarting any node, within the database's promotion time
  + ``lease_ttl`` + 1 s, and every acknowledged write is still there;
* the old primary, back as a replica on its old address (first in the URL), is never written to;
* a promoted primary that waits at every commit for a synchronous standby it does not have
  (it inherited ``synchronous_standby_names``) never gets a write acknowledged and does not
  wedge the nodes: they recover by themselves once the setting is cleared;
* the scheduler leader killed at the same moment as the database primary: one leader
  afterwards, nothing lost.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import psycopg2
import pytest
import requests

from lease.primary import NotPrimary, check_primary
from tests.support.acks import AckingWriter, LeaderSampler, leader_task_ids
from tests.support.dbservers import postgres_bindir
from tests.support.pgreplication import ReplicatedPostgres, _query
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

TTL = 2.0


@pytest.fixture
def pg_pair() -> Iterator[ReplicatedPostgres]:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    pair = ReplicatedPostgres(synchronous=True).start()
    yield pair
    pair.destroy()


def status(url: str) -> dict:
    return requests.get(f"{url}/status", timeout=5).json()


def metric(url: str, name: str) -> float:
    body = requests.get(f"{url}/metrics", timeout=5).text
    found = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert found, f"{name} not exported"
    return float(found.group(1))


def lost_writes(writer: AckingWriter, leader_url: str, prefix: str) -> list[str]:
    have = leader_task_ids(leader_url, prefix)
    return [ack.task_id for ack in writer.acks if ack.task_id not in have]


def add_task(url: str, task_id: str) -> requests.Response:
    payload = {"task_id": task_id, "worker": "w1", "status": "PENDING", "family": "T", "runnable": False}
    return requests.post(f"{url}/api/add_task", data={"data": json.dumps(payload)}, timeout=10)


def test_primary_killed_and_replica_promoted_writes_resume_without_restart_and_nothing_is_lost(
    pg_pair, make_cluster
):
    cluster = make_cluster(pg_pair.create_database("failover"), size=2, lease_ttl=TTL)
    pids = [node.pid for node in cluster.nodes]
    writer = AckingWriter(cluster.urls, prefix="Fo", pause=0.005)
    writer.start()
    try:
        wait_for(lambda: len(writer.acks) >= 30, 15, what="acknowledged writes before the failure")
        killed = pg_pair.kill_primary()
        pg_pair.promote()
        promoted = time.monotonic()
        wait_for(lambda: writer.first_ack_after(promoted) is not None, 30, what="a write accepted after promotion")
        resumed = writer.first_ack_after(promoted)
        wait_for(lambda: len([a for a in writer.acks if a.at > promoted]) >= 30, 15, what="writes after it")
    finally:
        writer.stop()

    assert resumed - killed <= (promoted - killed) + TTL + 1.0, "promotion time + lease_ttl + 1 s"
    assert [node.pid for node in cluster.nodes] == pids and all(node.alive() for node in cluster.nodes)
    leader = cluster.leader()
    assert leader is not None
    assert lost_writes(writer, leader.url, "Fo") == []
    database = status(leader.url)["database"]
    assert database["host"] == f"127.0.0.1:{pg_pair.primary.port}"
    assert database["primary"] is True and database["connected"] is True
    assert metric(leader.url, "luigi_ha_db_reconnects_total") >= 1
    assert metric(leader.url, "luigi_ha_db_is_primary") == 1
    assert metric(leader.url, "luigi_ha_seconds_since_last_commit") < TTL


def test_the_old_primary_back_as_a_replica_is_never_written_to(pg_pair, make_cluster):
    cluster = make_cluster(pg_pair.create_database("rejoin"), size=1, lease_ttl=TTL)
    node = cluster.nodes[0]
    old_port = pg_pair.primary.port  # first in the URL
    pg_pair.kill_primary()
    pg_pair.promote()
    cluster.wait_for_leader(timeout=20)
    writer = AckingWriter(cluster.urls, prefix="Rj", pause=0.01)
    writer.start()
    try:
        wait_for(lambda: len(writer.acks) >= 10, 15, what="writes on the promoted primary")
        replica = pg_pair.rejoin_old_primary()
        assert replica.port == old_port
        # A restart makes every connection new: each one tries the replica first.
        node.stop()
        node.start()
        cluster.wait_for_leader(timeout=20)
        written = len(writer.acks)
        wait_for(lambda: len(writer.acks) >= written + 20, 20, what="writes after the restart")
    finally:
        writer.stop()

    assert status(node.url)["database"]["host"] == f"127.0.0.1:{pg_pair.primary.port}"
    assert lost_writes(writer, node.url, "Rj") == []
    # The replica has every write, by replication, and no luigi-ha session stayed on it.
    pg_pair.wait_replayed()
    sessions = _query(replica, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'luigi-ha'")
    assert sessions == 0
    conn = psycopg2.connect(host=replica.listen, port=replica.port, user="postgres", dbname="rejoin")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM lh_tasks WHERE task_id LIKE 'Rj%'")
            assert cur.fetchone()[0] >= len(writer.acks)
        # Without libpq's target_session_attrs, the node's own check refuses the replica too.
        with pytest.raises(NotPrimary, match="in recovery"):
            check_primary(conn)
    finally:
        conn.close()


def test_a_promoted_primary_waiting_for_a_missing_sync_standby_gets_no_write_acknowledged_then_recovers(
    pg_pair, make_cluster
):
    # What a replica cloned from a synchronous primary's configuration does once promoted.
    _query(pg_pair.replica, "ALTER SYSTEM SET synchronous_standby_names = '*'")
    _query(pg_pair.replica, "SELECT pg_reload_conf()")
    cluster = make_cluster(pg_pair.create_database("wedge"), size=2, lease_ttl=TTL)
    assert add_task(cluster.leader().url, "W_before").status_code == 200
    pg_pair.kill_primary()
    pg_pair.promote()

    deadline = time.monotonic() + 4 * TTL
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            started = time.monotonic()
            answer = status(node.url)
            assert time.monotonic() - started < 1.0, "a node must keep answering while its database cannot commit"
            assert answer["role"] != "leader" or answer["seconds_since_renew"] < TTL
            assert add_task(node.url, "W_during").status_code == 503, "nothing is acknowledged without a commit"
        time.sleep(0.2)

    _query(pg_pair.primary, "ALTER SYSTEM SET synchronous_standby_names = ''")
    _query(pg_pair.primary, "SELECT pg_reload_conf()")
    fixed = time.monotonic()
    leader = cluster.wait_for_leader(timeout=20)
    assert time.monotonic() - fixed <= TTL + 1.0
    assert add_task(leader.url, "W_after").status_code == 200
    assert {"W_before", "W_after"} <= leader_task_ids(leader.url, "W")
    assert all(node.alive() for node in cluster.nodes)


def test_scheduler_leader_killed_while_the_database_fails_over_leaves_one_leader_and_loses_nothing(
    pg_pair, make_cluster
):
    cluster = make_cluster(pg_pair.create_database("double"), size=2, lease_ttl=TTL)
    sampler = LeaderSampler(cluster.urls)
    sampler.start()
    writer = AckingWriter(cluster.urls, prefix="Db", pause=0.005)
    writer.start()
    try:
        wait_for(lambda: len(writer.acks) >= 30, 15, what="acknowledged writes before the failure")
        old_leader = cluster.leader()
        assert old_leader is not None
        old_leader.kill()
        pg_pair.kill_primary()
        pg_pair.promote()
        promoted = time.monotonic()
        new_leader = cluster.wait_for_leader(timeout=30, exclude=old_leader)
        wait_for(lambda: len([a for a in writer.acks if a.at > promoted]) >= 30, 20, what="writes afterwards")
    finally:
        writer.stop()
        sampler.stop()

    assert sampler.max_leaders <= 1
    assert cluster.leaders() == [new_leader]
    assert lost_writes(writer, new_leader.url, "Db") == []
