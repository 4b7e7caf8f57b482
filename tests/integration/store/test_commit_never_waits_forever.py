"""A primary whose every commit waits for a synchronous standby that is not there (what a promoted
replica does when it kept its old primary's ``synchronous_standby_names``). PostgreSQL's
``statement_timeout`` does not end that wait, so without a bound of its own the leader would wait
for good, holding the lease row's lock. With a real server:

* the leader's batch commit is cancelled within the engine's client timeout and fails: nothing
  is acknowledged, and the cancel ends the server's wait, so the lease row's lock is free again;
* a lease renewal returns False at about its deadline instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lease import LeaderLease, LeaseTimings, create_engine
from lease.engine import timeouts_of
from lease.primary import tracker_of
from scheduler.store import Store
from scheduler.store.errors import StoreError
from scheduler.store.tables import FENCE_FUNCTION, leases
from scheduler.store.writer import open_writer
from tests.integration.store.helpers import changes, task_row
from tests.support.dbservers import PostgresServer, postgres_bindir
from tests.support.pgreplication import _query

SLACK = 1.0


@pytest.fixture
def waiting_primary() -> Iterator[PostgresServer]:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    server = PostgresServer(settings={"synchronous_commit": "on"})
    server.start()
    yield server
    server.destroy()


def test_a_commit_waiting_for_a_missing_standby_is_cancelled_and_not_acknowledged(waiting_primary):
    engine = create_engine(waiting_primary.url, statement_timeout=3.0)
    try:
        store = Store(engine)
        store.upgrade()
        lease = LeaderLease(engine, "scheduler", "node-a:1:x", LeaseTimings(ttl=3.0), table=leases,
                            fence_function=FENCE_FUNCTION)
        epoch = lease.try_acquire()
        assert epoch is not None
        writer = open_writer(store, lease)
        asyncio.run(writer.apply(changes(tasks={"A": task_row("A")}), epoch))  # connected, commits fine

        _query(waiting_primary, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        _query(waiting_primary, "SELECT pg_reload_conf()")
        time.sleep(0.2)

        started = time.monotonic()
        with pytest.raises(StoreError, match="not confirmed"):
            asyncio.run(writer.apply(changes(tasks={"B": task_row("B")}), epoch))
        assert time.monotonic() - started <= timeouts_of(engine).client_read + SLACK
        writer.close()
        # The cancel ended the server's wait: the fence's share lock on the lease row is gone.
        time.sleep(0.5)
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT epoch FROM lh_leases WHERE name = 'scheduler' FOR UPDATE NOWAIT")
            ).scalar()
            assert row == epoch
            conn.rollback()

        started = time.monotonic()
        assert lease.renew() is False
        assert time.monotonic() - started <= lease.timings.deadline + SLACK
        assert not lease.is_held()
        assert "not confirmed" in (tracker_of(engine).last_error or "")
    finally:
        _query(waiting_primary, "ALTER SYSTEM RESET synchronous_standby_names")
        _query(waiting_primary, "SELECT pg_reload_conf()")
        engine.dispose()
