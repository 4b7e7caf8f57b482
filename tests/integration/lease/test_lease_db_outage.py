"""The database goes away while a node holds the lease (real PostgreSQL server stopped).

The leader must find out within its renew deadline, bounded by connect/statement timeouts
rather than hanging, and stop; once the database is back, leadership starts over with a new epoch.
The PostgreSQL server is shared by the whole test session, so it is always restarted.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from lease_testlib import LEASE, make_engine, stop_postgres

from lease import LeaderLease, LeaseTimings, LeaseUnavailable


def test_renew_fails_within_the_deadline_while_postgres_is_down_and_acquire_works_after_restart(
    postgres_server, pg_url
):
    engine = make_engine(pg_url, statement_timeout=1.0)
    timings = LeaseTimings(ttl=2.0)  # renew every 0.4 s, step down after 1.2 s
    a = LeaderLease(engine, LEASE, "A", timings)
    try:
        assert a.try_acquire() == 1
        assert a.renew()
        stop_postgres(postgres_server)
        try:
            left = a.deadline_remaining()
            started = time.monotonic()
            assert a.renew() is False
            took = time.monotonic() - started

            assert took <= left + 0.3, f"renew took {took:.2f}s with {left:.2f}s of deadline left"
            assert not a.is_held() and a.epoch is None
            assert isinstance(a.last_error, sa.exc.OperationalError)

            started = time.monotonic()
            with pytest.raises(LeaseUnavailable):
                a.read()
            assert time.monotonic() - started <= timings.deadline + 0.3
        finally:
            postgres_server.start()

        assert a.try_acquire() == 2  # the row survived the restart; the new term gets a new token
        record = a.read()
        assert (record.holder, record.epoch) == ("A", 2)
    finally:
        engine.dispose()
