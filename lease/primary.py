"""Writing only to the primary, knowing which server that is, and never waiting on it forever.

A node's database is often an HA pair itself (streaming replication, Patroni, a managed service),
reached through a libpq multi-host URL. When it fails over, three things must hold for the node to
find the new primary by itself:

* **A server that is not the primary is never used.** libpq's ``target_session_attrs=read-write``
  (which :func:`lease.engine.create_engine` sets by default) skips a read-only server while it
  connects; :func:`check_primary` asks the server itself on every new connection as well
  (``pg_is_in_recovery()``, ``transaction_read_only``), so a libpq that cannot check, or a proxy
  in front of the servers, cannot hand the node a replica. A refusal is an ordinary connection
  error: transient, so the caller's retry moves on to the next attempt.
* **No commit waits forever.** PostgreSQL does not apply ``statement_timeout`` to the wait for a
  synchronous standby at COMMIT: a primary whose ``synchronous_standby_names`` names a standby
  that is not there (typically a promoted replica that inherited its old primary's
  configuration) blocks every commit for good, holding the locks it took, the lease row's
  included. :class:`CommitGuard` cancels a transaction that is not confirmed within its budget
  and reports it as :class:`CommitNotConfirmed`, a transient error: the server may have
  committed it locally (it answers a cancelled synchronous-replication wait with a warning and
  success) but it is not known to be replicated, so nothing that depends on it is acknowledged.
  The cancel also ends the wait, so the locks are released and other nodes are not blocked.
* **Operators see where the node writes.** :class:`HostTracker` (one per engine) records the
  server each new connection reached, whether it is the primary and how it replicates, counts
  reconnects after a lost connection and the time of the last confirmed commit; ``/status`` and
  the metrics read it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import pymysql
import sqlalchemy as sa

__all__ = [
    "CommitGuard",
    "CommitNotConfirmed",
    "DatabaseHost",
    "HostTracker",
    "MySQLNotPrimary",
    "NotPrimary",
    "check_mysql_primary",
    "check_primary",
    "tracker_of",
]

#: One round trip on every new connection: is this the primary, and how does it replicate?
_PRIMARY_CHECK = (
    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'),"
    " current_setting('synchronous_standby_names'), current_setting('synchronous_commit')"
)
_SYNCHRONOUS_COMMIT_WAITS = {"on", "remote_write", "remote_apply"}


class NotPrimary(psycopg2.OperationalError):
    """The server answered but is a replica or read-only: not a place to write (transient)."""


class CommitNotConfirmed(sa.exc.OperationalError):
    """A transaction was not confirmed within its budget and was cancelled: outcome unknown.

    A ``sqlalchemy`` OperationalError so :func:`lease.retry.is_transient` treats it like a lost
    connection: try again, on a fresh connection, perhaps on another server.
    """

    def __init__(self, what: str, seconds: float) -> None:
        message = (
            f"{what} not confirmed within {seconds:.2f}s and cancelled; if the server is a primary whose "
            "synchronous_standby_names names a standby that is not connected, every commit waits for it"
        )
        super().__init__(what, None, psycopg2.OperationalError(message))


@dataclass(frozen=True)
class DatabaseHost:
    """The server a connection reached, as libpq saw it (host and port from the node's URL).

    ``replication`` is ``"synchronous"`` when the server waits for a standby at commit
    (``synchronous_standby_names`` set and ``synchronous_commit`` one of on/remote_write/
    remote_apply), else ``"asynchronous"``: then a failover can lose the last commits.
    """

    host: str | None
    port: int | None
    primary: bool
    replication: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.port else str(self.host)

    def describe(self) -> dict[str, Any]:
        return {"host": self.address, "primary": self.primary, "replication": self.replication}


class HostTracker:
    """Where this process's connections to one database go, and how they fare (thread-safe).

    ``reconnects`` counts connections opened after a connection was lost (a failover, a server
    restart, a dead host): the first connection, and pool growth, are not reconnects.
    """

    def __init__(self, monotonic: Any = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self.current: DatabaseHost | None = None
        self.reconnects = 0
        self.last_commit: float | None = None
        self.last_error: str | None = None
        self._lost = False

    def connected(self, host: DatabaseHost) -> None:
        with self._lock:
            if self._lost:
                self.reconnects += 1
                self._lost = False
            self.current = host

    def lost(self, why: str | None = None) -> None:
        """A connection broke (or was dropped as unusable): the next connect is a reconnect."""
        with self._lock:
            self._lost = True
            if why:
                self.last_error = why[:300]

    @property
    def connected_now(self) -> bool:
        """False from a lost connection until the next successful connect."""
        return not self._lost and self.current is not None

    def committed(self) -> None:
        self.last_commit = self._monotonic()

    def seconds_since_commit(self) -> float | None:
        last = self.last_commit
        return None if last is None else self._monotonic() - last

    def describe(self) -> dict[str, Any]:
        """For ``/status``: the host written to, whether it is the primary, reconnects, last commit."""
        current = self.current
        since = self.seconds_since_commit()
        out: dict[str, Any] = current.describe() if current else {"host": None, "primary": None, "replication": None}
        out["connected"] = self.connected_now
        out["reconnects"] = self.reconnects
        out["seconds_since_commit"] = None if since is None else round(since, 3)
        out["last_error"] = self.last_error
        return out


_TRACKERS: weakref.WeakKeyDictionary[sa.Engine, HostTracker] = weakref.WeakKeyDictionary()


def tracker_of(engine: sa.Engine) -> HostTracker:
    """The engine's tracker (made on first use, so engines made elsewhere get one too)."""
    tracker = _TRACKERS.get(engine)
    if tracker is None:
        tracker = _TRACKERS.setdefault(engine, HostTracker())
    return tracker


def check_primary(dbapi_connection: Any) -> DatabaseHost:
    """Ask a fresh psycopg2 connection's server whether it is a writable primary.

    :raises NotPrimary: it is in recovery (a replica) or its transactions are read-only.
    """
    cur = dbapi_connection.cursor()
    try:
        cur.execute(_PRIMARY_CHECK)
        in_recovery, read_only, standby_names, sync_commit = cur.fetchone()
    finally:
        cur.close()
    # psycopg2 opened a transaction for the query (not in autocommit): end it before the pool
    # hands the connection out.
    if not dbapi_connection.autocommit:
        dbapi_connection.rollback()
    info = dbapi_connection.info
    port = int(info.port) if info.port else None
    if in_recovery or read_only == "on":
        why = "in recovery (a replica)" if in_recovery else "read-only (transaction_read_only = on)"
        raise NotPrimary(f"server at {info.host}:{port} is {why}: not the primary")
    synchronous = bool(standby_names.strip()) and sync_commit in _SYNCHRONOUS_COMMIT_WAITS
    return DatabaseHost(info.host, port, True, "synchronous" if synchronous else "asynchronous")


def install_postgres_hooks(engine: sa.Engine) -> HostTracker:
    """Check every new pooled connection with :func:`check_primary` and keep the tracker current.

    A refused connection is closed at once: no session is left open on a replica while the pool
    gives up on it.
    """
    return _install_hooks(engine, check_primary, NotPrimary, close_refused=True)


class CommitGuard:
    """Cancel a psycopg2 connection's work if it is not finished within ``seconds``.

    ``with CommitGuard(dbapi, seconds, "renew lease"): ...`` around a whole transaction, COMMIT
    included. A timer thread calls ``cancel()`` (libpq's cancel request, safe from any thread)
    when the budget runs out; on leaving the block after that, :class:`CommitNotConfirmed` is
    raised whatever the block returned, because a cancelled synchronous-replication wait makes
    COMMIT return success for a transaction that is only committed locally.
    """

    def __init__(self, dbapi_connection: Any, seconds: float, what: str) -> None:
        self._dbapi = dbapi_connection
        self._seconds = max(0.05, seconds)
        self._what = what
        self._fired = threading.Event()
        self._timer = threading.Timer(self._seconds, self._cancel)
        self._timer.daemon = True

    @property
    def fired(self) -> bool:
        return self._fired.is_set()

    def _cancel(self) -> None:
        self._fired.set()
        with contextlib.suppress(Exception):
            self._dbapi.cancel()

    def __enter__(self) -> CommitGuard:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        if self._fired.is_set():
            raise CommitNotConfirmed(self._what, self._seconds)


@contextlib.contextmanager
def guarded_transaction(
    engine: sa.Engine, seconds: float, what: str, *, writes: bool = True
) -> Iterator[sa.Connection]:
    """``engine.begin()`` whose statements and COMMIT are cancelled after ``seconds`` (see
    :class:`CommitGuard`); a cancelled transaction's connection is discarded, not pooled.

    ``writes``: a successful commit counts as the engine's last commit (a read-only transaction
    never waits for a standby, so it says nothing about whether commits complete)."""
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        try:
            with CommitGuard(dbapi, seconds, what), conn.begin():
                yield conn
        except CommitNotConfirmed:
            # Also when the guard fired mid-statement (the statement then failed as cancelled):
            # the connection is in an unknown state, and it is never handed out again.
            conn.invalidate()
            raise
        if writes:
            tracker_of(engine).committed()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class MySQLNotPrimary(pymysql.err.OperationalError):
    """A MySQL/MariaDB server with ``read_only = ON``: a replica, or a primary not yet promoted."""


def check_mysql_primary(dbapi_connection: Any) -> DatabaseHost:
    """Ask a fresh PyMySQL connection's server whether it accepts writes.

    ``read_only`` does not stop a user with SUPER (or MariaDB's READ ONLY ADMIN), so the server's
    setting is read rather than trusted to refuse: a read-only server is "not the primary" for
    every user. PyMySQL takes one host, so this is what keeps a node off a replica when a proxy
    or a moved address leads it there.

    :raises MySQLNotPrimary: the server has ``read_only`` on.
    """
    cur = dbapi_connection.cursor()
    try:
        cur.execute("SELECT @@global.read_only")
        (read_only,) = cur.fetchone()
    finally:
        cur.close()
    dbapi_connection.rollback()
    host, port = getattr(dbapi_connection, "host", None), getattr(dbapi_connection, "port", None)
    if int(read_only):
        raise MySQLNotPrimary(2013, f"server at {host}:{port} has read_only = ON: not the primary")
    return DatabaseHost(host, port, True, None)


def install_mysql_hooks(engine: sa.Engine) -> HostTracker:
    """Check every new pooled MySQL/MariaDB connection with :func:`check_mysql_primary`."""
    return _install_hooks(engine, check_mysql_primary, MySQLNotPrimary, close_refused=False)


def _install_hooks(
    engine: sa.Engine,
    check: Callable[[Any], DatabaseHost],
    refused: type[Exception],
    *,
    close_refused: bool,
) -> HostTracker:
    """The pool's connect and invalidate hooks: ``check`` each new connection, track the host."""
    tracker = tracker_of(engine)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        try:
            host = check(dbapi_connection)
        except refused as exc:
            tracker.lost(str(exc))
            if close_refused:
                with contextlib.suppress(Exception):
                    dbapi_connection.close()
            raise
        tracker.connected(host)

    @sa.event.listens_for(engine, "invalidate")
    def _on_invalidate(_dbapi_connection: Any, _record: Any, exception: BaseException | None) -> None:
        tracker.lost(None if exception is None else _first_line(exception))

    return tracker
