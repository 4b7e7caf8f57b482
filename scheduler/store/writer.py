"""The leader's writer: commits each group-commit batch, fenced, on a connection of its own.

Every acknowledged write RPC waits for one of these commits, so a commit's round trips are the
floor under the whole node's latency. The portable path (:meth:`Store.apply`) costs six of them
on PostgreSQL: the pool's pre-ping, ``BEGIN``, the fence, one statement per table, ``COMMIT``.
On PostgreSQL the writer sends the same transaction as ONE simple-query script instead::

    BEGIN; DO <fence>; INSERT ... ON CONFLICT ...; DELETE ...; INSERT <events>; COMMIT

* **Fenced exactly like the portable path.** The fence (:meth:`lease.LeaderLease.fence_statement`)
  comes first and takes the lease row's share lock; when it fails it raises inside the server,
  which abandons the rest of the script, ``COMMIT`` included. The lock is held to the commit, so
  a takeover waits for an in-flight batch and every later batch of a deposed leader fails.
* **All or nothing.** Any error leaves the transaction aborted; the writer rolls it back (or drops
  the connection) and raises. The node then steps down, as after any failed commit.
* **Its own connection, outside the pool**, in driver autocommit mode (the script carries its own
  ``BEGIN``/``COMMIT``), so no other user of the engine can ever receive a connection in that
  mode. It inherits the engine's connect arguments, statement and idle timeouts included.

MySQL/MariaDB and SQLite keep the portable path (their drivers run one statement per call).
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.dialects import postgresql

from scheduler.store.errors import StoreError, describe
from scheduler.store.store import BatchRows, ChangesLike, batch_rows
from scheduler.store.tables import meta, task_events, tasks, workers

if TYPE_CHECKING:
    import sqlalchemy as sa

    from lease import FencedOut
    from scheduler.store.store import Store


class LeaseFence(Protocol):
    """What the writer needs of :class:`lease.LeaderLease`."""

    def fence(self, conn: sa.Connection) -> None: ...

    def fence_statement(self) -> str: ...

    def fenced_out(self, exc: BaseException, epoch: int) -> FencedOut | None: ...


class BatchWriter(Protocol):
    """Commits batches for one leadership term; ``close()`` when the term ends."""

    def apply(self, changes: ChangesLike, epoch: int) -> None: ...

    def close(self) -> None: ...


def open_writer(store: Store, fence: LeaseFence) -> BatchWriter:
    """The fastest correct writer for the store's database."""
    if store.engine.dialect.name == "postgresql":
        return PostgresScriptWriter(store, fence)
    return StatementWriter(store, fence)


class StatementWriter:
    """The portable path: :meth:`Store.apply` with the lease's fence, on the engine's pool."""

    def __init__(self, store: Store, fence: LeaseFence) -> None:
        self._store = store
        self._fence = fence

    def apply(self, changes: ChangesLike, epoch: int) -> None:
        self._store.apply(changes, epoch=epoch, fence=self._fence.fence)

    def close(self) -> None:
        """Nothing to release: connections belong to the engine's pool."""


_quote = postgresql.dialect().identifier_preparer.quote


@functools.lru_cache(maxsize=64)
def _insert_sql(table: sa.Table, columns: tuple[str, ...], rows: int, *, upsert: bool) -> str:
    """``INSERT INTO t (cols) VALUES (%s, ...), ...`` for ``rows`` rows, with ``ON CONFLICT (key)
    DO UPDATE`` of every other column if ``upsert``. Cached: batch sizes repeat under load."""
    one = "(" + ",".join(["%s"] * len(columns)) + ")"
    sql = f"INSERT INTO {_quote(table.name)} ({', '.join(map(_quote, columns))}) VALUES " + ",".join([one] * rows)
    if upsert:
        keys = [c.name for c in table.primary_key.columns]
        updates = ", ".join(f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in columns if c not in keys)
        sql += f" ON CONFLICT ({', '.join(map(_quote, keys))}) DO UPDATE SET {updates}"
    return sql


class PostgresScriptWriter:
    """One fenced transaction per batch, sent in one round trip (see the module docstring)."""

    def __init__(self, store: Store, fence: LeaseFence) -> None:
        self._store = store
        self._fence = fence
        self._dbapi: Any = None  # psycopg2 connection, detached from the engine's pool

    def apply(self, changes: ChangesLike, epoch: int) -> None:
        """Persist one batch or raise (``FencedOut`` from the lease, else :class:`StoreError`)."""
        rows = batch_rows(changes, epoch)
        if rows.empty:
            return
        fence = self._fence.fence_statement()  # raises FencedOut at once past the renew deadline
        try:
            dbapi = self._connection()
            with dbapi.cursor() as cur:
                cur.execute(self._script(cur, rows, fence))
        except Exception as exc:
            self._abandon_transaction()
            fenced = self._fence.fenced_out(exc, epoch)
            if fenced is not None:
                raise fenced from exc
            raise StoreError(describe("apply", self._store.engine, exc)) from exc

    def close(self) -> None:
        dbapi, self._dbapi = self._dbapi, None
        if dbapi is not None:
            with contextlib.suppress(Exception):
                dbapi.close()

    # -- internals ---------------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._dbapi is None or self._dbapi.closed:
            self.close()
            proxied = self._store.engine.raw_connection()  # the engine's connect arguments, timeouts included
            dbapi = proxied.driver_connection
            proxied.detach()  # never back into the pool: it is about to be in autocommit mode
            dbapi.autocommit = True
            self._dbapi = dbapi
        return self._dbapi

    def _abandon_transaction(self) -> None:
        """After an error the server holds an aborted transaction: end it, or drop the connection."""
        dbapi = self._dbapi
        if dbapi is None or dbapi.closed:
            self.close()
            return
        try:
            with dbapi.cursor() as cur:
                cur.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - a broken connection is simply replaced next time
            self.close()

    @staticmethod
    def _script(cur: Any, rows: BatchRows, fence: str) -> bytes:
        parts = [b"BEGIN", fence.encode()]
        for table, upserts, deletes in (
            (tasks, rows.tasks, rows.task_deletes),
            (workers, rows.workers, rows.worker_deletes),
            (meta, rows.meta, ()),
        ):
            if upserts:
                parts.append(_insert(cur, table, upserts, upsert=True))
            if deletes:
                key = _quote(next(iter(table.primary_key.columns)).name)
                parts.append(cur.mogrify(f"DELETE FROM {_quote(table.name)} WHERE {key} = ANY(%s)", (list(deletes),)))
        if rows.events:
            parts.append(_insert(cur, task_events, rows.events, upsert=False))
        parts.append(b"COMMIT")
        return b";\n".join(parts)


def _insert(cur: Any, table: sa.Table, rows: list[dict[str, Any]], *, upsert: bool) -> bytes:
    """One multi-row INSERT (an upsert on the primary key if asked), values quoted by the driver."""
    columns = tuple(rows[0])
    return cur.mogrify(_insert_sql(table, columns, len(rows), upsert=upsert), [row[c] for row in rows for c in columns])
