"""The leader's writer: commits each group-commit batch, fenced, on a connection of its own.

Every acknowledged write RPC waits for one of these commits, so a commit's round trips and
hand-offs are the floor under the whole node's latency. The portable path (:meth:`Store.apply`)
costs six round trips on PostgreSQL (the pool's pre-ping, ``BEGIN``, the fence, one statement per
table, ``COMMIT``) and a worker thread. On PostgreSQL the writer sends the same transaction as ONE
simple-query script instead, from the event loop itself::

    BEGIN; <fence>; INSERT ... ON CONFLICT ...; DELETE ...; INSERT <events>; COMMIT

* **On the event loop, no thread.** The connection is psycopg2's asynchronous mode: the script is
  sent without blocking and the loop is told when the answer is readable. A thread per commit
  would cost two more wake-ups and a wait for the interpreter lock on every commit, while the
  loop is busiest.
* **Fenced exactly like the portable path.** The fence (:meth:`lease.LeaderLease.fence_statement`:
  a call of migration 0002's ``lh_fence`` function, or an anonymous ``DO`` block) comes first
  and takes the lease row's share lock; when it fails it raises inside the server,
  which abandons the rest of the script, ``COMMIT`` included. The lock is held to the commit, so
  a takeover waits for an in-flight batch and every later batch of a deposed leader fails.
* **All or nothing.** Any error leaves the transaction aborted; the writer rolls it back (or drops
  the connection) and raises. The node then steps down, as after any failed commit. A commit
  cancelled half way drops its connection: its outcome is unknown and it is never reused.
* **Its own connection, outside the pool**, opened with the engine's driver arguments
  (:func:`lease.engine.driver_connect_kwargs`: statement and idle timeouts, keepalives). Asynchronous
  connections are always in autocommit mode; the script carries its own ``BEGIN``/``COMMIT``.
* **To the server the pool found to be the primary.** In asynchronous mode libpq applies no
  connect timeout, so with a multi-host URL a silent first host would use up the whole connect
  budget; the pool (where libpq's per-host timeouts and ``target_session_attrs`` apply, and
  :func:`lease.primary.check_primary` runs) locates the primary and this connection goes
  straight to it (:func:`lease.engine.single_host_connect_kwargs`).
* **Never waits forever for a commit.** A script not answered within the engine's client timeout
  (``DbTimeouts.client_read``: the statement timeout plus 2 s) is cancelled and the connection
  dropped; the batch counts as failed. The server's ``statement_timeout`` does not cover COMMIT's
  wait for a synchronous standby (:mod:`lease.primary`), and a cancelled wait would even report
  success for a commit that is only local.

MySQL/MariaDB and SQLite keep the portable path in a worker thread (their drivers run one
statement per call and block).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from typing import TYPE_CHECKING, Any, Protocol

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from lease.engine import single_host_connect_kwargs, timeouts_of
from lease.primary import DatabaseHost, tracker_of
from scheduler.store.errors import StoreError, describe
from scheduler.store.store import BatchRows, ChangesLike, batch_rows
from scheduler.store.tables import meta, task_events, tasks, workers

if TYPE_CHECKING:
    from lease import FencedOut
    from scheduler.store.store import Store


class LeaseFence(Protocol):
    """What the writer needs of :class:`lease.LeaderLease`."""

    def fence(self, conn: sa.Connection) -> None: ...

    def fence_statement(self) -> str: ...

    def fenced_out(self, exc: BaseException, epoch: int) -> FencedOut | None: ...


class BatchWriter(Protocol):
    """Commits batches for one leadership term, one at a time; ``close()`` when the term ends."""

    async def apply(self, changes: ChangesLike, epoch: int) -> None: ...

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

    async def apply(self, changes: ChangesLike, epoch: int) -> None:
        await asyncio.to_thread(self._store.apply, changes, epoch=epoch, fence=self._fence.fence)

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
    """One fenced transaction per batch, sent in one round trip from the loop (see the module docstring)."""

    def __init__(self, store: Store, fence: LeaseFence) -> None:
        self._store = store
        self._fence = fence
        self._dbapi: Any = None  # psycopg2 connection in asynchronous mode
        self._host: DatabaseHost | None = None

    async def apply(self, changes: ChangesLike, epoch: int) -> None:
        """Persist one batch or raise (``FencedOut`` from the lease, else :class:`StoreError`)."""
        rows = batch_rows(changes, epoch)
        if rows.empty:
            return
        fence = self._fence.fence_statement()  # raises FencedOut at once past the renew deadline
        engine = self._store.engine
        try:
            dbapi = await self._connection()
            cur = dbapi.cursor()
            cur.execute(self._script(cur, rows, fence))
            try:
                async with asyncio.timeout(self._commit_budget()):
                    await _answered(dbapi)
            except TimeoutError:
                self._cancel_and_drop(dbapi)
                raise StoreError(
                    f"apply on {self._host.address if self._host else '?'}: commit not confirmed within "
                    f"{self._commit_budget():.1f}s, cancelled (a primary waiting for a synchronous standby "
                    "that is not connected does this)"
                ) from None
        except asyncio.CancelledError:
            self.close()
            raise
        except StoreError:
            raise
        except Exception as exc:
            await self._abandon_transaction()
            fenced = self._fence.fenced_out(exc, epoch)
            if fenced is not None:
                raise fenced from exc
            raise StoreError(describe("apply", engine, exc)) from exc
        tracker_of(engine).committed()

    def close(self) -> None:
        dbapi, self._dbapi = self._dbapi, None
        if dbapi is not None:
            with contextlib.suppress(Exception):
                dbapi.close()

    # -- internals ---------------------------------------------------------------------------------

    def _commit_budget(self) -> float:
        timeouts = timeouts_of(self._store.engine)
        return timeouts.client_read if timeouts is not None and timeouts.client_read else 10.0

    def _cancel_and_drop(self, dbapi: Any) -> None:
        """Cancel the server's work (ending a wait for a standby releases the fence's lock), then
        drop the connection. The cancel request opens a connection of its own, which a silent
        host would hold up, so it is sent from a daemon thread and not waited for."""
        threading.Thread(target=_cancel_quietly, args=(dbapi,), name="lh-cancel", daemon=True).start()
        self._dbapi = None
        tracker_of(self._store.engine).lost("commit not confirmed in time; cancelled")

    async def _connection(self) -> Any:
        if self._dbapi is None or self._dbapi.closed:
            self.close()
            engine = self._store.engine
            timeouts = timeouts_of(engine)
            budget = timeouts.connect if timeouts else 10.0
            # The pool finds the primary, with libpq's per-host timeouts (see the module docstring).
            host = await asyncio.to_thread(_locate_primary, engine)
            # libpq leaves connect_timeout to the caller in asynchronous mode.
            async with asyncio.timeout(budget):
                dbapi = psycopg2.connect(**single_host_connect_kwargs(engine, host.host, host.port), async_=True)
                try:
                    await _answered(dbapi)
                except BaseException:
                    dbapi.close()
                    raise
            self._dbapi = dbapi
            self._host = host
        return self._dbapi

    async def _abandon_transaction(self) -> None:
        """After an error the server holds an aborted transaction: end it, or drop the connection."""
        dbapi = self._dbapi
        if dbapi is None or dbapi.closed:
            self.close()
            return
        try:
            dbapi.cursor().execute("ROLLBACK")
            await _answered(dbapi)
        except asyncio.CancelledError:
            self.close()
            raise
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


def _locate_primary(engine: sa.Engine) -> DatabaseHost:
    """The server a pooled connection reaches (only a primary passes the pool's connect checks)."""
    with engine.connect() as conn:
        info = conn.connection.dbapi_connection.info
        return DatabaseHost(info.host, int(info.port) if info.port else None, True)


def _cancel_quietly(dbapi: Any) -> None:
    with contextlib.suppress(Exception):
        dbapi.cancel()
    with contextlib.suppress(Exception):
        dbapi.close()


async def _answered(dbapi: Any) -> None:
    """Drive an asynchronous psycopg2 connection until its pending work is done (or raises)."""
    loop = asyncio.get_running_loop()
    while True:
        state = dbapi.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        ready: asyncio.Future[None] = loop.create_future()
        fd = dbapi.fileno()
        if state == psycopg2.extensions.POLL_READ:
            loop.add_reader(fd, _wake, ready)
            remove = loop.remove_reader
        else:
            loop.add_writer(fd, _wake, ready)
            remove = loop.remove_writer
        try:
            await ready
        finally:
            remove(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _insert(cur: Any, table: sa.Table, rows: list[dict[str, Any]], *, upsert: bool) -> bytes:
    """One multi-row INSERT (an upsert on the primary key if asked), values quoted by the driver."""
    columns = tuple(rows[0])
    return cur.mogrify(_insert_sql(table, columns, len(rows), upsert=upsert), [row[c] for row in rows for c in columns])
