"""What lease.create_engine sets up on each real database, and the database clock it relies on."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from lease import create_engine
from lease.clock import db_now
from lease.retry import is_transient
from tests.support.together import errors_of_calls_started_together


def test_the_database_clock_is_unix_time_and_advances_inside_a_transaction(db_url):
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            first = conn.scalar(sa.select(db_now()))
            time.sleep(0.3)
            second = conn.scalar(sa.select(db_now()))
        assert isinstance(first, float)
        assert first == pytest.approx(time.time(), abs=1.0)  # same host: same wall clock
        # Evaluated at execution, not at transaction start (PostgreSQL now() would give 0 here).
        assert 0.25 <= second - first < 1.0
    finally:
        engine.dispose()


def test_sqlite_uses_wal_a_busy_timeout_and_foreign_keys(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 3000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_engines_opening_a_fresh_sqlite_file_at_the_same_instant_all_connect_in_wal_mode(tmp_path):
    """Switching a new file to WAL needs its exclusive lock, which SQLite does not wait for with
    the busy handler: before the connect hook retried it, nodes starting together on a new file
    failed about one race in ten with "database is locked"."""
    failures: list[BaseException] = []
    for race in range(30):
        engines = [create_engine(f"sqlite:///{tmp_path / f'race-{race}.db'}") for _ in range(4)]
        failures += errors_of_calls_started_together(_connect_then_write, engines, timeout=30)
        for engine in engines:
            engine.dispose()
    assert failures == []


def _connect_then_write(engine: sa.Engine) -> None:
    """What a starting node does first: connect, then write (its migration)."""
    with engine.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")


def test_sqlite_transactions_take_the_write_lock_at_begin(sqlite_url):
    """BEGIN IMMEDIATE: even a transaction that has only read holds the write lock, so a second
    transaction cannot begin (it waits busy_timeout, then fails). A deferred BEGIN would let both
    start, and a fence check could be separated from the writes that follow it."""
    engine = create_engine(sqlite_url, statement_timeout=0.3)
    try:
        with engine.connect() as first:
            first.begin()
            first.execute(sa.select(1))
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="locked") as caught, engine.begin() as second:
                second.execute(sa.select(1))
            assert time.monotonic() - started >= 0.25
            assert is_transient(caught.value)
    finally:
        engine.dispose()


def test_postgres_sessions_get_statement_and_idle_in_transaction_timeouts(pg_url):
    engine = create_engine(pg_url, statement_timeout=3.0)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "3s"
            assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "6s"
            assert conn.exec_driver_sql("SHOW application_name").scalar() == "luigi-ha"
    finally:
        engine.dispose()


def test_postgres_statement_timeout_cancels_and_counts_as_transient(pg_url):
    engine = create_engine(pg_url, statement_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as caught, engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 2.0
        assert is_transient(caught.value)
        with pytest.raises(sa.exc.ProgrammingError) as missing, engine.connect() as conn:
            conn.exec_driver_sql("SELECT * FROM no_such_table")
        assert not is_transient(missing.value)
    finally:
        engine.dispose()


def test_mariadb_sessions_get_lock_wait_timezone_isolation_and_charset(mariadb_url):
    plain = mariadb_url.replace("mysql+pymysql://", "mysql://")  # as luigid.cfg files often say
    engine = create_engine(plain, statement_timeout=3.0)
    try:
        assert engine.url.drivername == "mysql+pymysql"
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT @@session.innodb_lock_wait_timeout, @@session.time_zone, @@session.tx_isolation,"
                " @@session.max_statement_time, @@session.idle_transaction_timeout, @@character_set_client"
            ).one()
        assert tuple(row) == (3, "+00:00", "READ-COMMITTED", 3.0, 6, "utf8mb4")
    finally:
        engine.dispose()


def test_mariadb_max_statement_time_interrupts_and_counts_as_transient(mariadb_url):
    engine = create_engine(mariadb_url, statement_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as caught, engine.connect() as conn:
            conn.exec_driver_sql("SELECT SLEEP(5)")
        assert time.monotonic() - started < 2.0
        assert is_transient(caught.value)
        with pytest.raises(sa.exc.ProgrammingError) as missing, engine.connect() as conn:
            conn.exec_driver_sql("SELECT * FROM no_such_table")
        assert not is_transient(missing.value)
    finally:
        engine.dispose()
