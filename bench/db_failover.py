"""Database failover figures: a PostgreSQL primary killed under acknowledged writes, and a silent
database host.

    python bench/db_failover.py                       # 20 promote drills + 5 silent-host rounds
    python bench/db_failover.py --drills 30 --ttl 2 --silent 10
    python bench/db_failover.py --json

* Plain promote drills. A PostgreSQL 15 primary with one synchronous streaming replica
  (``synchronous_standby_names = '*'``, ``synchronous_commit = on``; fsync off, since a SIGKILL
  of the postmaster is survived by replication, not by the disk) and two real ``luigi-ha
  scheduler`` processes whose URL names both servers
  (``?host=..&host=..&target_session_attrs=read-write``). A writer thread sends ``add_task``
  RPCs back to back to whichever node accepts them and records, for each acknowledged one, when
  it was SENT and when the 200 came. One drill: SIGKILL of the primary's postmaster, ``pg_ctl
  promote -w`` of the replica; one sample = from the kill to the first acknowledgement of a
  request sent after the kill (an answer in flight at the kill does not count). Then the old
  primary is cloned again from the new one (``pg_basebackup``) and rejoins as its synchronous
  standby, and the next drill kills the new primary: the scheduler nodes are never restarted.
  Also reported: the promote time, acknowledged writes missing from the final leader (target 0).
* Silent host. A PostgreSQL server in a network namespace, both ends of its veth then made to
  drop every packet. Reported per round: how long a statement on an open connection takes to
  fail, and how long a new connection through a URL that names the silent host first takes to
  reach a healthy second server. Needs root (skipped otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lease.engine import DbTimeouts  # noqa: E402
from scheduler.localcluster import LocalCluster  # noqa: E402
from tests.support.acks import leader_task_ids  # noqa: E402
from tests.support.pgreplication import ReplicatedPostgres  # noqa: E402


@dataclass(eq=False)
class TimedWriter(threading.Thread):
    """add_task RPCs one after another; each acknowledged one with its send and answer times."""

    urls: list[str]
    prefix: str = "Dbf"
    acks: list[tuple[str, float, float]] = field(default_factory=list)  # (task_id, sent, acked)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self._halt = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        n, start = 0, 0
        while not self._halt.is_set():
            task_id = f"{self.prefix}_{n}"
            data = {"data": json.dumps({"task_id": task_id, "worker": "bench", "status": "PENDING",
                                        "runnable": False, "family": self.prefix})}
            for i in range(len(self.urls)):
                url = self.urls[(start + i) % len(self.urls)]
                sent = time.monotonic()
                try:
                    r = session.post(f"{url}/api/add_task", data=data, timeout=3)
                except requests.RequestException:
                    continue
                if r.status_code == 200:
                    self.acks.append((task_id, sent, time.monotonic()))
                    n += 1
                    start = (start + i) % len(self.urls)
                    break
            else:
                time.sleep(0.01)

    def first_sent_after(self, moment: float) -> float | None:
        for _, sent, acked in self.acks:
            if sent > moment:
                return acked
        return None

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def promote_drills(drills: int, ttl: float, workdir: Path) -> dict[str, Any]:
    pair = ReplicatedPostgres(synchronous=True).start()
    cluster = None
    writer = None
    samples: list[float] = []
    promotes: list[float] = []
    try:
        url = pair.create_database("bench")
        cluster = LocalCluster(workdir / "cluster", url, size=2, lease_ttl=ttl)
        cluster.start()
        pids = [n.pid for n in cluster.nodes]
        writer = TimedWriter(cluster.urls)
        writer.start()
        for i in range(drills):
            time.sleep(1.0)  # steady writes on a synchronous pair
            killed = pair.kill_primary()
            pair.promote()
            promotes.append(time.monotonic() - killed)
            deadline = time.monotonic() + 60
            while writer.first_sent_after(killed) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"drill {i}: no write accepted within 60 s")
                time.sleep(0.01)
            samples.append(writer.first_sent_after(killed) - killed)
            print(f"drill {i + 1}/{drills}: promote {promotes[-1]:.3f}s, first write accepted after "
                  f"{samples[-1]:.3f}s", flush=True)
            pair.rejoin_old_primary()
            pair.make_synchronous()
        time.sleep(0.5)
        writer.stop()
        leader = cluster.wait_for_leader(timeout=30)
        have = leader_task_ids(leader.url, writer.prefix)
        lost = [task_id for task_id, _, _ in writer.acks if task_id not in have]
        restarted = [n.node_id for n, pid in zip(cluster.nodes, pids, strict=True) if n.pid != pid or not n.alive()]
        return {
            "drills": drills, "lease_ttl": ttl, "acknowledged": len(writer.acks), "lost": len(lost),
            "nodes_restarted": restarted,
            "first_write_p50": statistics.median(samples), "first_write_p99": pct(samples, 0.99),
            "first_write_max": max(samples), "promote_p50": statistics.median(promotes),
            "promote_max": max(promotes), "samples": [round(s, 4) for s in samples],
        }
    finally:
        if writer is not None and writer.is_alive():
            writer.stop()
        if cluster is not None:
            cluster.stop()
        pair.destroy()


def silent_host_rounds(rounds: int) -> dict[str, Any] | None:
    import sqlalchemy as sa

    from lease import create_engine
    from lease.primary import tracker_of
    from tests.support.dbservers import PostgresServer
    from tests.support.netns import SilentableHost, netns_unavailable_reason

    reason = netns_unavailable_reason()
    if reason:
        print(f"silent host: skipped ({reason})")
        return None
    healthy = PostgresServer()
    healthy.start()
    open_fail: list[float] = []
    connect_skip: list[float] = []
    try:
        for i in range(rounds):
            host = SilentableHost().create()
            server = PostgresServer(listen=host.inside, netns=host.ns)
            try:
                server.start()
                engine = create_engine(server.url)
                multi = create_engine(f"postgresql://postgres@/postgres?host={server.listen}:{server.port}"
                                      f"&host=127.0.0.1:{healthy.port}")
                conn = engine.connect()
                conn.execute(sa.text("SELECT 1"))
                host.silence()
                started = time.monotonic()
                try:
                    conn.execute(sa.text("SELECT 1"))
                    raise AssertionError("a statement on a silent host succeeded")
                except sa.exc.OperationalError:
                    open_fail.append(time.monotonic() - started)
                conn.invalidate()
                conn.close()
                started = time.monotonic()
                with multi.connect() as c:
                    c.execute(sa.text("SELECT 1"))
                connect_skip.append(time.monotonic() - started)
                assert tracker_of(multi).current.port == healthy.port
                print(f"silent host {i + 1}/{rounds}: open connection failed after {open_fail[-1]:.3f}s, "
                      f"multi-host connect reached the next host after {connect_skip[-1]:.3f}s", flush=True)
                engine.dispose()
                multi.dispose()
            finally:
                host.restore()
                server.destroy()
                host.destroy()
    finally:
        healthy.destroy()
    return {
        "rounds": rounds, "dead_host_setting": DbTimeouts.from_statement_timeout(3.0).dead_host,
        "open_connection_fail_p50": statistics.median(open_fail), "open_connection_fail_max": max(open_fail),
        "connect_skip_p50": statistics.median(connect_skip), "connect_skip_max": max(connect_skip),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drills", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=2.0, help="lease_ttl of the scheduler nodes")
    parser.add_argument("--silent", type=int, default=5, help="silent-host rounds (0: none)")
    parser.add_argument("--json", action="store_true", help="only the JSON line, no readable summary")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lha-dbfail-") as tmp:
        result: dict[str, Any] = {"promote": promote_drills(args.drills, args.ttl, Path(tmp))}
    if args.silent:
        result["silent_host"] = silent_host_rounds(args.silent)
    if not args.json:
        p = result["promote"]
        print(f"\nplain promote, {p['drills']} drills, lease_ttl {p['lease_ttl']:g}s, statement_timeout 3s "
              "(defaults), synchronous replica:")
        print(f"  primary SIGKILL -> first write accepted: p50 {p['first_write_p50']:.3f}s  "
              f"p99 {p['first_write_p99']:.3f}s  max {p['first_write_max']:.3f}s")
        print(f"  pg_ctl promote -w (from the kill): p50 {p['promote_p50']:.3f}s  max {p['promote_max']:.3f}s")
        print(f"  acknowledged writes {p['acknowledged']}, lost {p['lost']}, nodes restarted {p['nodes_restarted']}")
        s = result.get("silent_host")
        if s:
            print(f"silent host, {s['rounds']} rounds, dead_host {s['dead_host_setting']:g}s:")
            print(f"  statement on an open connection fails after: p50 {s['open_connection_fail_p50']:.3f}s  "
                  f"max {s['open_connection_fail_max']:.3f}s")
            print(f"  multi-host connect past the silent host: p50 {s['connect_skip_p50']:.3f}s  "
                  f"max {s['connect_skip_max']:.3f}s")
    print(json.dumps(result, separators=(",", ":")))
    lost = result["promote"]["lost"]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
