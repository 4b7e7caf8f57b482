"""Fixtures for the lease's database tests: an engine with the lease table on every database,
and lease factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from lease_testlib import LEASE, SHORT, make_engine, stop_postgres

from lease import LeaderLease, LeaseTimings


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """Engine on a fresh database (SQLite, PostgreSQL, MariaDB) with the lease table created."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(params=["postgres", "mariadb"])
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on a real server: the tests that need row locks across connections."""
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "mariadb_url")


@pytest.fixture
def server_engine(server_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(server_url)
    yield eng
    eng.dispose()


LeaseFactory = Callable[..., LeaderLease]


@pytest.fixture
def make_lease() -> LeaseFactory:
    def factory(engine: sa.Engine, holder: str, timings: LeaseTimings = SHORT, **kw) -> LeaderLease:
        return LeaderLease(engine, LEASE, holder, timings, **kw)

    return factory


@pytest.fixture(scope="session")
def _postgres_stops_cleanly(postgres_server):
    """Stop the session's PostgreSQL with ``lease_testlib.stop_postgres`` before the session
    fixture's own teardown: if the support code runs the postmaster under a ``runuser`` wrapper,
    its ``stop()`` waits 30 s and leaves the postmaster running; otherwise this is just ``stop()``."""
    yield postgres_server
    stop_postgres(postgres_server)


@pytest.fixture
def pg_url(pg_url: str, _postgres_stops_cleanly) -> str:
    """tests/conftest.py's ``pg_url``, plus a clean server stop at the end of the session."""
    return pg_url
