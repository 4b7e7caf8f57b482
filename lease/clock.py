"""The database's clock, in seconds since the Unix epoch: the only clock that decides expiry.

Nodes never compare their own wall clocks with each other or with the database (ShedLock #231,
Quartz's "clocks within 1 s" rule). Every expiry is computed and compared *inside* one SQL
statement against the database server's clock; a node only uses its own *monotonic* clock to
decide when to stop trusting its lease (:mod:`lease.lease`).

:func:`db_now` is a SQL expression compiled per dialect:

PostgreSQL: ``CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)``
    ``clock_timestamp()`` is the time *at execution*. ``now()``/``CURRENT_TIMESTAMP`` would be
    the start of the transaction, which goes stale inside a long transaction: the fence check of a
    transaction opened seconds ago must still compare against the present. ``EXTRACT`` returns
    numeric on PostgreSQL 14+, hence the cast.
MySQL / MariaDB: ``UNIX_TIMESTAMP(SYSDATE(6))``
    ``SYSDATE()`` is evaluated at execution, unlike ``NOW()`` (statement start); microsecond
    precision. ``UNIX_TIMESTAMP(datetime)`` interprets its argument in the session time zone, which
    :func:`lease.create_engine` pins to ``+00:00`` so no DST jump can move the clock. (With
    ``--sysdate-is-now`` SYSDATE degrades to the statement start, which is still safe: every lease
    decision is a single statement.)
SQLite: ``((julianday('now') - 2440587.5) * 86400.0)``
    ``julianday('now')`` is stable within one statement; 2440587.5 is the Julian day of
    1970-01-01T00:00Z. SQLite has no server: this is the clock of the host that shares the file,
    which is why SQLite is for single-host use only.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["db_now"]


class _DbEpochNow(FunctionElement[float]):
    """``db_now()``: the database's current time in epoch seconds, evaluated at execution."""

    type = sa.Double(asdecimal=False)
    name = "lh_db_now"
    inherit_cache = True


@compiles(_DbEpochNow)
def _compile_default(element: _DbEpochNow, compiler: Any, **kw: Any) -> str:
    raise sa.exc.CompileError(
        f"lease: no database clock expression for dialect {compiler.dialect.name!r}; "
        "supported: postgresql, mysql, mariadb, sqlite"
    )


@compiles(_DbEpochNow, "postgresql")
def _compile_postgresql(element: _DbEpochNow, compiler: Any, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(_DbEpochNow, "mysql")
@compiles(_DbEpochNow, "mariadb")
def _compile_mysql(element: _DbEpochNow, compiler: Any, **kw: Any) -> str:
    return "UNIX_TIMESTAMP(SYSDATE(6))"


@compiles(_DbEpochNow, "sqlite")
def _compile_sqlite(element: _DbEpochNow, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


def db_now() -> sa.ColumnElement[float]:
    """A SQL expression for "the database's now" in seconds since the Unix epoch (a double)."""
    return _DbEpochNow()
