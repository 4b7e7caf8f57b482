"""PostgreSQL specifics: a server outage, and a takeover-sized state."""

from __future__ import annotations

import csv
import io
import time

import pytest
import sqlalchemy as sa

from bench.store_load import task_row as bench_task_row
from scheduler.store import Store, StoreError
from scheduler.store.codec import dumps
from tests.integration.store.helpers import changes, event, task_row
from tests.support.dbservers import PostgresServer

# The ``store`` fixture (conftest.py), on PostgreSQL only.
pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def test_apply_fails_fast_while_the_server_is_down_and_works_again_after_restart(
    postgres_server: PostgresServer, store: Store
) -> None:
    store.apply(changes(tasks={"A": task_row("A")}), epoch=1)  # the pool now holds a live connection
    try:
        postgres_server.stop()
        started = time.monotonic()
        with pytest.raises(StoreError, match="apply failed on postgresql"):
            store.apply(changes(tasks={"B": task_row("B")}, events=[event("B", "PENDING", 1.0)]), epoch=1)
        assert time.monotonic() - started < 5
        assert store.ping() is False
        with pytest.raises(StoreError, match="load_all failed"):
            store.load_all()
    finally:
        postgres_server.start()
    # Same Store, same engine: the dead pooled connections are replaced, nothing to recreate.
    store.apply(changes(tasks={"C": task_row("C")}), epoch=1)
    assert store.ping() is True
    assert sorted(t["id"] for t in store.load_all().tasks) == ["A", "C"]


def test_load_all_of_100000_tasks(store: Store) -> None:
    """Correctness at takeover size; the time is printed (figures live in bench/store_load.py)."""
    n = 100_000
    rows = [bench_task_row(i) for i in range(n)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    for r in rows:
        writer.writerow((r["id"], r["status"], r["family"], repr(r["updated"]), 1, dumps(r)))
    buf.seek(0)
    with store.engine.begin() as conn:  # COPY: a fast fill, so the test times load_all, not apply
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # a bulk fill, not an RPC: no 3 s cap
        cur = conn.connection.dbapi_connection.cursor()
        cur.copy_expert("COPY lh_tasks (task_id, status, family, updated, epoch, data) FROM STDIN (FORMAT csv)", buf)

    timings = []
    for _ in range(2):  # the first scan after a bulk load also sets PostgreSQL's hint bits
        snap = None  # a standby taking over holds no other state
        started = time.perf_counter()
        snap = store.load_all()
        timings.append(time.perf_counter() - started)
    print(f"\nload_all of {n} tasks on PostgreSQL: first {timings[0]:.3f} s, then {timings[1]:.3f} s")

    assert len(snap.tasks) == n
    by_id = {t["id"]: t for t in snap.tasks}
    assert all(by_id[r["id"]] == r for r in rows)
    assert store.counts() == {"PENDING": n}
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM lh_tasks")).scalar() == n
