"""A database host that stops answering (packets dropped, no RST, no ICMP) is given up within
the bounds :mod:`lease.engine` promises, with a real PostgreSQL server in a network namespace
whose link is silenced:

* a statement on an open connection fails within ``dead_host`` (``tcp_user_timeout``);
* a new connection through a URL that names the silent host first reaches the next host within
  ``dead_host`` (libpq's per-host ``connect_timeout``);
* a leader stops holding its lease at its renew deadline, and its renew call returns (False)
  instead of hanging: within one unanswered send plus one reconnect attempt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lease import LeaderLease, create_engine
from lease.engine import timeouts_of
from lease.primary import tracker_of
from lease.timings import LeaseTimings
from tests.support.dbservers import PostgresServer, postgres_bindir
from tests.support.netns import SilentableHost, netns_unavailable_reason

SLACK = 1.0  # scheduling noise on a shared 2-core machine


@pytest.fixture
def silent_host() -> Iterator[tuple[SilentableHost, PostgresServer]]:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    host = SilentableHost().create()
    server = None
    try:
        server = PostgresServer(listen=host.inside, netns=host.ns)
        server.start()
        yield host, server
    finally:
        host.restore()
        if server is not None:
            server.destroy()
        host.destroy()


def test_a_silent_database_host_is_given_up_within_the_keepalive_bound(silent_host, postgres_server):
    host, server = silent_host
    engine = create_engine(server.url, statement_timeout=3.0)
    dead_host = timeouts_of(engine).dead_host
    lease = LeaderLease(engine, "silent", "me", LeaseTimings(ttl=3.0))
    try:
        with engine.begin() as conn:
            lease.table.metadata.create_all(conn)
        assert lease.try_acquire() is not None
        open_conn = engine.connect()
        open_conn.execute(sa.text("SELECT 1"))

        host.silence()

        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError):
            open_conn.execute(sa.text("SELECT 1"))
        assert time.monotonic() - started <= dead_host + SLACK, "an open connection: tcp_user_timeout"
        open_conn.invalidate()
        open_conn.close()

        started = time.monotonic()
        assert lease.renew() is False
        assert not lease.is_held()
        assert time.monotonic() - started <= 2 * dead_host + SLACK, "one unanswered send, one reconnect"

        multi = create_engine(
            f"postgresql://postgres@/postgres?host={server.listen}:{server.port}"
            f"&host=127.0.0.1:{postgres_server.port}"
        )
        try:
            started = time.monotonic()
            with multi.connect() as conn:
                assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            assert time.monotonic() - started <= dead_host + SLACK, "a silent first host: connect_timeout"
            assert tracker_of(multi).current.port == postgres_server.port
        finally:
            multi.dispose()
    finally:
        engine.dispose()
