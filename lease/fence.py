"""Fencing: refuse a write inside the caller's transaction unless it still holds the lease.

Usage, in the writer's own transaction, before its writes::

    with engine.begin() as conn:
        lease.fence(conn)            # or check_fence(conn, table, name, holder, epoch)
        conn.execute(...writes...)   # commit happens when the block ends

Why this is safe (docs/ha-rules.md, "The fence is checked by the storage"):

* The check reads the lease row with a **shared row lock** and compares holder, epoch and
  ``expires_at > database now`` (:mod:`lease.clock`). The lock is held until the caller's
  transaction ends.
* Every change of holder (acquire) and every renew/release is an UPDATE of that row, which needs
  the row **exclusively**. A takeover therefore waits until every in-flight fenced transaction of
  the old holder has committed or rolled back; once it has committed, any later fence check of
  the old holder sees the new epoch and raises :class:`FencedOut`. No write made under epoch N can
  commit after epoch N+1 was granted.
* ``FOR KEY SHARE`` (PostgreSQL) would be too weak: it does not conflict with UPDATEs of non-key
  columns. A plain SELECT without a lock (pg_lease's ``VerifyLeaseHeld``) is the race this closes.

Keep fenced transactions short (well under ``renew_deadline``): the holder's own renew also
needs the row exclusively, so it waits for them too.

SQL per dialect (``SELECT holder, epoch, expires_at, <db now> FROM lh_leases WHERE name = :n``
followed by):

PostgreSQL: ``FOR SHARE``
    Under READ COMMITTED a ``FOR SHARE`` that meets a concurrently updated row waits for the
    updater and then re-reads the newest version, so it never checks a stale epoch. Database now is
    ``clock_timestamp()`` (execution time), not the transaction start. A frozen writer holding the
    share lock is disconnected by ``idle_in_transaction_session_timeout`` (:mod:`lease.engine`).
MySQL / MariaDB: ``LOCK IN SHARE MODE`` (what SQLAlchemy renders; same as MySQL 8's ``FOR SHARE``)
    A locking read in InnoDB reads the latest committed version, whatever the isolation level.
    MariaDB's ``idle_transaction_timeout`` plays the role of PostgreSQL's idle timeout.
SQLite: no lock clause (SQLite has no row locks)
    :func:`lease.create_engine` starts every transaction with ``BEGIN IMMEDIATE``, which takes
    the database's single write lock *before* the check, so no other process can change the lease
    row between the check and this transaction's commit. Single host only (no shared clock, no
    safe file locking over NFS).
"""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from lease.clock import db_now
from lease.errors import FencedOut
from lease.schema import define_lease_table

__all__ = [
    "FENCE_SQLSTATE",
    "check_fence",
    "fenced_out_from",
    "postgres_fence_call",
    "postgres_fence_function",
    "postgres_fence_statement",
]

#: SQLSTATE raised by :func:`postgres_fence_statement` (class "LH": luigi-ha's own, unused by PostgreSQL).
FENCE_SQLSTATE = "LHFEN"
_DOLLAR_TAG = "$lh_fence$"


@lru_cache(maxsize=32)
def _table_named(name: str) -> sa.Table:
    return define_lease_table(sa.MetaData(), name)


def check_fence(conn: sa.Connection, table: sa.Table | str, lease_name: str, holder: str, epoch: int) -> None:
    """Lock the lease row in shared mode and verify ``holder``/``epoch`` still own an unexpired lease.

    Must run inside the caller's transaction (it begins one if none is open), before the writes it
    protects; the shared lock lasts until that transaction ends.

    :param table: the lease :class:`~sqlalchemy.Table` or its name (``"lh_leases"``).
    :raises FencedOut: the row is missing, names another holder or epoch, or has expired by the
        database's clock. The caller must roll back (leaving ``engine.begin()`` by the exception
        does).
    """
    t = _table_named(table) if isinstance(table, str) else table
    stmt = (
        sa.select(t.c.holder, t.c.epoch, t.c.expires_at, db_now().label("db_now"))
        .where(t.c.name == lease_name)
        .with_for_update(read=True)
    )
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise FencedOut(lease_name, expected_holder=holder, expected_epoch=epoch)
    remaining = float(row.expires_at) - float(row.db_now)
    if row.holder != holder or int(row.epoch) != epoch or remaining <= 0:
        raise FencedOut(
            lease_name,
            expected_holder=holder,
            expected_epoch=epoch,
            found_holder=row.holder,
            found_epoch=int(row.epoch),
            remaining=remaining,
        )


def _sql_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings, the default since 9.1)."""
    if _DOLLAR_TAG in value or "\x00" in value:
        raise ValueError(f"cannot fence with {value!r}: it contains {_DOLLAR_TAG} or a NUL character")
    return "'" + value.replace("'", "''") + "'"


def postgres_fence_statement(table: str, lease_name: str, holder: str, epoch: int) -> str:
    """The fence as ONE self-contained PostgreSQL statement, for writers that send a whole
    transaction in one round trip (``BEGIN; <this>; <writes>; COMMIT``).

    Same check and same lock as :func:`check_fence` (``FOR SHARE`` on the lease row, then holder,
    epoch and expiry by the database's clock), but it cannot hand a row back for the caller to
    inspect, so it raises inside the server instead: SQLSTATE :data:`FENCE_SQLSTATE`, which aborts
    the transaction before any later statement of the script runs. The detail field carries
    ``"<epoch> <seconds remaining> <holder>"`` of the row it found (empty when there is none), for
    :func:`fenced_out_from`. Values are inlined as literals because an anonymous ``DO`` block takes
    no bind parameters; they are this node's own ids, quoted here.

    The server compiles an anonymous block on every call; where the schema owner installed
    :func:`postgres_fence_function`, :func:`postgres_fence_call` does the same check for less.
    """
    body = _fence_body(_identifier(table), _sql_literal(lease_name), _sql_literal(holder), str(int(epoch)))
    return f"DO {_DOLLAR_TAG} DECLARE r record; BEGIN {body} END {_DOLLAR_TAG}"


def postgres_fence_function(table: str, function: str) -> str:
    """DDL creating (or replacing) ``function(lease_name text, lease_holder text, lease_epoch bigint)``:
    the check of :func:`postgres_fence_statement` for ``table``, compiled once per session instead
    of once per call. For a migration to run; :func:`postgres_fence_call` calls it."""
    body = _fence_body(_identifier(table), "lease_name", "lease_holder", "lease_epoch")
    return (
        f"CREATE OR REPLACE FUNCTION {_identifier(function)}(lease_name text, lease_holder text, lease_epoch bigint) "
        f"RETURNS void LANGUAGE plpgsql AS {_DOLLAR_TAG} DECLARE r record; BEGIN {body} END {_DOLLAR_TAG}"
    )


def postgres_fence_call(function: str, lease_name: str, holder: str, epoch: int) -> str:
    """The statement that runs a :func:`postgres_fence_function`: same lock, same error, same detail."""
    return f"SELECT {_identifier(function)}({_sql_literal(lease_name)}, {_sql_literal(holder)}, {int(epoch)})"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fence_body(table: str, lease_name: str, holder: str, epoch: str) -> str:
    """The PL/pgSQL statements of the fence; the arguments are SQL expressions (literals or parameters)."""
    now = str(db_now().compile(dialect=postgresql.dialect()))
    return (
        f"SELECT holder, epoch, expires_at - {now} AS remaining INTO r FROM {table} "
        f"WHERE name = {lease_name} FOR SHARE; "
        f"IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = '{FENCE_SQLSTATE}', "
        f"MESSAGE = 'fenced out: no lease row', DETAIL = ''; "
        f"ELSIF r.holder IS DISTINCT FROM {holder} OR r.epoch <> {epoch} OR r.remaining <= 0 THEN "
        f"RAISE EXCEPTION USING ERRCODE = '{FENCE_SQLSTATE}', MESSAGE = 'fenced out: the lease row names '"
        f" || coalesce(r.holder, 'no holder') || ' at epoch ' || r.epoch, "
        f"DETAIL = concat_ws(' ', r.epoch, r.remaining, r.holder); "
        f"END IF;"
    )


def fenced_out_from(exc: BaseException, lease_name: str, holder: str, epoch: int) -> FencedOut | None:
    """The :class:`FencedOut` that a failed :func:`postgres_fence_statement` stands for, else None.

    Accepts the driver's error or SQLAlchemy's wrapper of it.
    """
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "pgcode", None) != FENCE_SQLSTATE:
        return None
    diag = getattr(orig, "diag", None)
    detail = (getattr(diag, "message_detail", None) or "").split(" ", 2)
    if len(detail) < 2:
        return FencedOut(lease_name, expected_holder=holder, expected_epoch=epoch)
    return FencedOut(
        lease_name,
        expected_holder=holder,
        expected_epoch=epoch,
        found_holder=detail[2] if len(detail) == 3 else None,
        found_epoch=int(detail[0]),
        remaining=float(detail[1]),
    )
