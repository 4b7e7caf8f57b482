"""The SQL the lease sends, per dialect, compiled without a database.

These pin the choices the safety argument depends on: an execution-time clock, and a fence that
locks the lease row in shared mode.
"""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from lease import FencedOut, define_lease_table
from lease.clock import db_now
from lease.fence import (
    FENCE_SQLSTATE,
    fenced_out_from,
    postgres_fence_call,
    postgres_fence_function,
    postgres_fence_statement,
)
from lease.retry import is_transient, run_with_deadline


def _sql(stmt, dialect) -> str:
    return " ".join(str(stmt.compile(dialect=dialect)).split())


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (postgresql.dialect(), "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"),
        (mysql.dialect(), "UNIX_TIMESTAMP(SYSDATE(6))"),
        (mysql.dialect(is_mariadb=True), "UNIX_TIMESTAMP(SYSDATE(6))"),
        (sqlite.dialect(), "((julianday('now') - 2440587.5) * 86400.0)"),
    ],
)
def test_the_clock_is_evaluated_by_the_database_at_execution(dialect, expected):
    assert _sql(sa.select(db_now()), dialect) == f"SELECT {expected} AS lh_db_now_1"


def test_the_clock_refuses_an_unknown_dialect():
    from sqlalchemy.dialects import mssql

    with pytest.raises(sa.exc.CompileError, match="no database clock expression"):
        _sql(sa.select(db_now()), mssql.dialect())


@pytest.mark.parametrize(
    ("dialect", "lock"),
    [(postgresql.dialect(), "FOR SHARE"), (mysql.dialect(is_mariadb=True), "LOCK IN SHARE MODE")],
)
def test_the_fence_locks_the_lease_row_in_shared_mode(dialect, lock):
    table = define_lease_table(sa.MetaData())
    stmt = sa.select(table.c.epoch).where(table.c.name == "x").with_for_update(read=True)
    assert _sql(stmt, dialect).endswith(lock)


def test_the_lease_table_uses_double_precision_times_and_a_bigint_epoch():
    table = define_lease_table(sa.MetaData())
    assert [c.name for c in table.primary_key.columns] == ["name"]
    ddl = str(sa.schema.CreateTable(table).compile(dialect=mysql.dialect()))
    assert "expires_at DOUBLE NOT NULL" in ddl  # not FLOAT, a 4-byte float on MySQL
    assert "epoch BIGINT NOT NULL DEFAULT 0" in ddl
    assert table.c.holder.nullable
    assert define_lease_table(table.metadata) is table  # idempotent on one MetaData


def test_fenced_out_names_expected_and_found_holder_and_epoch():
    err = FencedOut("sched", expected_holder="a", expected_epoch=3, found_holder="b", found_epoch=4, remaining=2.5)
    assert str(err) == (
        "fenced out of lease 'sched': expected holder 'a' epoch 3, found holder 'b' epoch 4, expiring in 2.500s"
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _locked() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))


def test_transient_errors_are_retried_but_never_past_the_deadline():
    clock = _Clock()
    calls = []

    def always_locked():
        calls.append(clock.now)
        clock.now += 0.3  # each attempt takes 0.3 s
        raise _locked()

    with pytest.raises(sa.exc.OperationalError):
        run_with_deadline(always_locked, deadline=1.0, monotonic=clock, what="test")
    assert len(calls) >= 2
    assert all(start < 1.0 for start in calls)  # no attempt started after the deadline


def test_a_transient_error_that_clears_up_is_retried_until_success():
    outcomes = iter([_locked(), _locked(), "ok"])

    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert run_with_deadline(flaky, deadline=10.0, monotonic=_Clock(), what="test") == "ok"


def test_errors_that_will_not_clear_up_are_not_retried():
    calls = []
    no_table = sa.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: lh_leases"))
    assert not is_transient(no_table)

    def broken():
        calls.append(1)
        raise no_table

    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        run_with_deadline(broken, deadline=10.0, monotonic=_Clock(), what="test")
    assert calls == [1]
    assert not is_transient(ValueError("not a database error"))


def test_the_one_statement_fence_locks_the_row_and_checks_holder_epoch_and_expiry() -> None:
    sql = postgres_fence_statement("lh_leases", "scheduler", "node-a:12:ab", 7)
    assert 'FROM "lh_leases" WHERE name = \'scheduler\' FOR SHARE' in sql
    assert "r.holder IS DISTINCT FROM 'node-a:12:ab' OR r.epoch <> 7 OR r.remaining <= 0" in sql
    assert "clock_timestamp()" in sql and f"ERRCODE = '{FENCE_SQLSTATE}'" in sql


def test_the_one_statement_fence_quotes_what_it_inlines_and_refuses_what_it_cannot() -> None:
    assert "'it''s:1:x'" in postgres_fence_statement("lh_leases", "scheduler", "it's:1:x", 1)
    for bad in ("a$lh_fence$b", "nul\x00"):
        with pytest.raises(ValueError, match="cannot fence"):
            postgres_fence_statement("lh_leases", "scheduler", bad, 1)


def test_the_stored_fence_function_runs_the_same_check_on_its_parameters() -> None:
    ddl = postgres_fence_function("lh_leases", "lh_fence")
    signature = '"lh_fence"(lease_name text, lease_holder text, lease_epoch bigint)'
    assert ddl.startswith(f"CREATE OR REPLACE FUNCTION {signature} RETURNS void LANGUAGE plpgsql")
    assert 'FROM "lh_leases" WHERE name = lease_name FOR SHARE' in ddl
    assert "r.holder IS DISTINCT FROM lease_holder OR r.epoch <> lease_epoch OR r.remaining <= 0" in ddl
    block = postgres_fence_statement("lh_leases", "scheduler", "node-a:12:ab", 7)
    assert ddl.count(f"ERRCODE = '{FENCE_SQLSTATE}'") == block.count(f"ERRCODE = '{FENCE_SQLSTATE}'") == 2
    call = postgres_fence_call("lh_fence", "scheduler", "it's:1:x", 7)
    assert call == "SELECT \"lh_fence\"('scheduler', 'it''s:1:x', 7)"


class _PgError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        self.pgcode = code
        self.diag = type("Diag", (), {"message_detail": detail})()


def test_a_fence_error_from_the_server_becomes_fenced_out_naming_the_row_it_found() -> None:
    fenced = fenced_out_from(_PgError(FENCE_SQLSTATE, "8 -0.25 node-b:3:cd"), "scheduler", "node-a:12:ab", 7)
    assert isinstance(fenced, FencedOut)
    assert (fenced.found_holder, fenced.found_epoch, fenced.remaining) == ("node-b:3:cd", 8, -0.25)
    freed = fenced_out_from(_PgError(FENCE_SQLSTATE, "8 -0.25"), "scheduler", "node-a:12:ab", 7)
    assert freed is not None and freed.found_holder is None
    assert fenced_out_from(_PgError("23505", ""), "scheduler", "node-a:12:ab", 7) is None
