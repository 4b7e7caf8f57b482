"""The supported MariaDB shape fails over, and nothing the scheduler acknowledged is lost.

Real parts only, in exactly the shape the README and docs/runbook.md support: a MariaDB primary
with a GTID replica (``MASTER_USE_GTID=slave_pos``) and semi-synchronous replication waiting
``AFTER_SYNC``, every server but the primary started ``read_only = ON``; a real HAProxy rendered
from haproxy/haproxy-db.cfg.j2 (``db_check: mysql``, the replica a ``backup`` server) as the one
address of two ``luigi-ha scheduler`` processes; a client that keeps writing and remembers every
acknowledged write.

The primary's mariadbd is killed with SIGKILL and the operator promotes the replica with the
runbook's procedure. Writes must be accepted again without restarting a node, and every
acknowledged write must be in the state the new leader loaded from the promoted server. Then the
old primary restarts with its configuration's ``read_only = ON`` before the operator took it out of
HAProxy (the runbook's first step): HAProxy leads the nodes back to it, and nothing is written
there (root's SUPER would pass ``read_only``; the nodes' own check refuses the server).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from deploy import render_haproxy_db_cfg
from scheduler.localcluster import free_port
from tests.e2e_ha.harness import HAProxyProcess
from tests.support.acks import AckingWriter, leader_task_ids
from tests.support.dbservers import MariaDBServer, mariadb_available
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.mariadb]

LEASE_TTL = 2.0
# Writes resume within the promotion + lease_ttl + HAProxy's checks (fall 2 at 500 ms-1 s) and
# a margin for a loaded 2-CPU machine.
MARGIN_S = 4.0

#: What every server of the pair has in its configuration: a binary log with GTIDs (the replica
#: logs what it applies, so it can serve replicas once promoted) and the semi-sync replica side.
_COMMON = ["--log-bin=mariadb-bin", "--log-slave-updates", "--binlog-format=ROW",
           "--rpl-semi-sync-slave-enabled=ON", "--rpl-semi-sync-master-wait-point=AFTER_SYNC"]
#: The primary waits AFTER_SYNC: a commit is acknowledged only once the replica has it.
_PRIMARY = ["--server-id=1", *_COMMON, "--rpl-semi-sync-master-enabled=ON",
            "--rpl-semi-sync-master-timeout=10000"]
_REPLICA = ["--server-id=2", *_COMMON, "--read-only=ON"]


def sql(server: MariaDBServer, statement: str) -> list[dict[str, Any]]:
    conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True,
                           cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())
    finally:
        conn.close()


def status_var(server: MariaDBServer, name: str) -> str:
    return sql(server, f"SHOW GLOBAL STATUS LIKE '{name}'")[0]["Value"]


def replica_status(server: MariaDBServer) -> dict[str, Any]:
    rows = sql(server, "SHOW SLAVE STATUS")
    return rows[0] if rows else {}


def promote(replica: MariaDBServer) -> None:
    """The runbook's promotion: apply everything received, forget the primary, accept writes.

    ``STOP SLAVE`` stops the SQL thread too, and ``RESET SLAVE ALL`` deletes the relay log: a
    commit the dead primary acknowledged (the replica had it, AFTER_SYNC) but the replica had not
    applied yet would be lost. So the receiving thread stops first, and the replica applies up to
    the last GTID it received before it stops replicating.
    """
    sql(replica, "STOP SLAVE IO_THREAD")
    received = replica_status(replica)["Gtid_IO_Pos"]
    waited = sql(replica, f"SELECT MASTER_GTID_WAIT('{received}', 30) AS r")[0]["r"]
    assert waited == 0, f"the replica did not apply {received} within 30 s"
    sql(replica, "STOP SLAVE")
    sql(replica, "RESET SLAVE ALL")
    sql(replica, "SET GLOBAL read_only = OFF")


@pytest.fixture
def mariadb_pair() -> Iterator[tuple[MariaDBServer, MariaDBServer]]:
    if not mariadb_available():
        pytest.skip("MariaDB server binaries are not installed")
    primary, replica = MariaDBServer(options=_PRIMARY), MariaDBServer(options=_REPLICA)
    try:
        primary.start()
        replica.start()
        sql(replica, f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, MASTER_USER='root', "
                     "MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos")
        sql(replica, "START SLAVE")
        wait_for(lambda: status_var(primary, "Rpl_semi_sync_master_clients") == "1", 20,
                 what="the replica attached as a semi-synchronous replica")
        # HAProxy's mysql-check logs in as this user; created on the primary, replicated.
        sql(primary, "CREATE USER 'haproxy_check'@'127.0.0.1'")
        wait_for(lambda: sql(replica, "SELECT 1 FROM mysql.user WHERE user = 'haproxy_check'"), 20,
                 what="the check user replicated")
        yield primary, replica
    finally:
        primary.destroy()
        replica.destroy()


@pytest.fixture
def db_address(mariadb_pair, tmp_path: Path) -> Iterator[tuple[str, HAProxyProcess]]:
    primary, replica = mariadb_pair
    port = free_port()
    cfg = tmp_path / "haproxy-db.cfg"
    cfg.write_text(render_haproxy_db_cfg(
        db_check="mysql", db_bind=f"127.0.0.1:{port}",
        db_nodes=[{"name": "db1", "address": "127.0.0.1", "port": primary.port},
                  {"name": "db2", "address": "127.0.0.1", "port": replica.port, "backup": True}],
    ))
    proxy = HAProxyProcess(cfg).start()
    try:
        yield f"mysql+pymysql://root@127.0.0.1:{port}/{primary.dbname}", proxy
    finally:
        proxy.stop()


def test_primary_killed_and_replica_promoted_by_the_operator_writes_resume_and_nothing_is_lost(
    mariadb_pair, db_address, make_cluster, figures
):
    primary, replica = mariadb_pair
    url, proxy = db_address
    cluster = make_cluster(url, size=2, lease_ttl=LEASE_TTL, name="mariadb")
    pids = [node.pid for node in cluster.nodes]
    writer = AckingWriter(cluster.urls, prefix="Ma", pause=0.005)
    writer.start()
    try:
        wait_for(lambda: len(writer.acks) >= 50, 20, what="acknowledged writes before the failure")
        # The writes were acknowledged semi-synchronously, not after a fall-back to asynchronous.
        assert status_var(primary, "Rpl_semi_sync_master_status") == "ON"
        assert int(status_var(primary, "Rpl_semi_sync_master_yes_tx")) >= 50
        before_kill = len(writer.acks)
        primary.kill()
        killed = time.monotonic()
        promote(replica)
        promoted = time.monotonic()
        wait_for(lambda: writer.first_ack_after(promoted) is not None, 30, what="a write accepted after promotion")
        resumed = writer.first_ack_after(promoted)
        wait_for(lambda: len([a for a in writer.acks if a.at > promoted]) >= 30, 15, what="writes after it")
    finally:
        writer.stop()

    leader = cluster.wait_for_leader(timeout=10)
    acked = [a.task_id for a in writer.acks]
    lost = sorted(set(acked) - leader_task_ids(leader.url, "Ma"))
    figures(acked=len(acked), acked_before_kill=before_kill, promotion_s=promoted - killed,
            kill_to_first_write_s=resumed - killed, lost=len(lost))

    assert [node.pid for node in cluster.nodes] == pids and all(node.alive() for node in cluster.nodes)
    assert not lost, f"{len(lost)} acknowledged write(s) lost: {lost[:5]}"
    assert resumed - killed < (promoted - killed) + LEASE_TTL + MARGIN_S
    # The leader writes to the promoted server (it answers through HAProxy as db2, the backup).
    rows = sql(replica, f"SELECT count(*) AS n FROM `{primary.dbname}`.lh_tasks WHERE task_id LIKE 'Ma\\_%'")
    assert rows[0]["n"] >= len(acked)

    seen = len(proxy.log.read_text())
    primary.options.append("--read-only=ON")  # what its configuration file says
    primary.start()
    binlog_at_start = sql(primary, "SELECT @@global.gtid_binlog_pos AS p")[0]["p"]
    writer = AckingWriter(cluster.urls, prefix="Ro", pause=0.005)
    writer.start()
    try:
        wait_for(lambda: "db1 is UP" in proxy.log.read_text()[seen:], 10, what="HAProxy routing to the old primary")
        # Its first server again, HAProxy cuts the sessions on the backup: the leader cannot renew.
        wait_for(lambda: cluster.leader() is None, 10, what="the leader to step down")
        leaderless = time.monotonic()
        time.sleep(LEASE_TTL + 0.5)  # a lease's worth of nodes campaigning through HAProxy
        assert cluster.leaders() == []
    finally:
        writer.stop()
    assert writer.first_ack_after(leaderless) is None
    assert sql(primary, "SELECT @@global.gtid_binlog_pos AS p")[0]["p"] == binlog_at_start
    rows = sql(primary, f"SELECT count(*) AS n FROM `{primary.dbname}`.lh_tasks WHERE task_id LIKE 'Ro\\_%'")
    assert rows[0]["n"] == 0
