"""The one place where database dialect specifics are set, for the lease and the task store alike.

Why one place: the lease's safety argument depends on properties of the *connection* (isolation
level, time zone, timeouts, SQLite's ``BEGIN IMMEDIATE``). If the lease and the task store built
their engines differently, a fenced store transaction could run without the guarantees the lease
relies on. So both call :func:`create_engine`.

Accepted URLs (anything else is refused with a ``ValueError`` naming the accepted schemes):

========================================  ===========================================
given                                     used
========================================  ===========================================
``postgresql://``, ``postgres://``        ``postgresql+psycopg2://``
``postgresql+psycopg2://``                as is
``mysql://``                              ``mysql+pymysql://`` (luigid.cfg files often say plain mysql://)
``mysql+pymysql://``                      as is
``mariadb://``, ``mariadb+pymysql://``    ``mariadb+pymysql://``
``sqlite:///path``, ``sqlite+pysqlite``   as is (``sqlite://`` = in-memory, tests only)
========================================  ===========================================

What each dialect gets, and why:

PostgreSQL (psycopg2)
    libpq ``options`` ``-c statement_timeout=<ms> -c idle_in_transaction_session_timeout=<ms>``:
    no statement can hang past the lease budget, and a frozen ex-leader (SIGSTOP, VM pause) that
    sits in an open fenced transaction holding the lease row's share lock is disconnected by the
    server, so a takeover is never blocked for longer than the idle timeout. ``connect_timeout``
    (libpq rounds it to whole seconds, minimum 2), TCP keepalives and ``tcp_user_timeout`` so a
    vanished server is noticed. ``pool_pre_ping`` so a connection broken by a server restart is
    replaced instead of failing the next renew.

MySQL / MariaDB (PyMySQL)
    ``connect_timeout``, client-side ``read_timeout``/``write_timeout`` (the only bound on a
    server that stops answering; set a little above the statement timeout so the server reports
    its own timeout first), and one ``init_command`` per session:
    ``innodb_lock_wait_timeout`` (whole seconds, at least 1), ``time_zone='+00:00'`` (so
    ``UNIX_TIMESTAMP(SYSDATE(6))`` in :mod:`lease.clock` never meets a DST jump) and, on MariaDB
    only (``/*M!...*/`` executable comments, ignored by MySQL), ``max_statement_time`` and
    ``idle_transaction_timeout`` (MariaDB's idle-in-transaction timeout, same reason as on
    PostgreSQL). Isolation ``READ COMMITTED`` (locking reads and UPDATEs see the latest committed
    lease row; no gap locks), ``charset=utf8mb4``, ``pool_pre_ping``.

SQLite (sqlite3)
    ``journal_mode=WAL`` (readers never block the writer), ``busy_timeout`` (wait for the file
    lock instead of failing at once), ``foreign_keys=ON`` (behave like the server databases), and
    every transaction starts with ``BEGIN IMMEDIATE``: the driver's own transaction handling is
    switched off (``isolation_level = None`` in the "connect" event) and SQLAlchemy's "begin"
    event emits ``BEGIN IMMEDIATE``. The write lock is thus taken at the start of a transaction,
    so a fence check and the writes after it are atomic across every process sharing the file.
    ``check_same_thread=False`` because the pool hands connections to any thread.

``statement_timeout <= 0`` disables the server-side statement and idle timeouts (for example for
a migration run); the connect timeout then defaults to 10 s.

:func:`redact_url` renders a URL for logs with the password (and password-like query
parameters) replaced by ``***``: secrets are never logged.
"""

from __future__ import annotations

import math
import re
import sqlite3
import weakref
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

__all__ = ["DbTimeouts", "create_engine", "driver_connect_kwargs", "normalize_url", "redact_url", "timeouts_of"]

# Scheme as written -> driver we use. Only drivers installed with luigi-ha are accepted, because
# the connect arguments below are driver specific.
_DRIVERS: dict[str, str] = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "postgresql+psycopg2": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+pymysql": "mariadb+pymysql",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
}

# The timeouts each engine made here was configured with, so the lease can keep its own
# per-transaction limits no looser than the engine's (see LeaderLease._in_txn).
_ENGINE_TIMEOUTS: weakref.WeakKeyDictionary[sa.Engine, DbTimeouts] = weakref.WeakKeyDictionary()
# The driver arguments each engine made here connects with, for connections opened outside it.
_ENGINE_CONNECT_ARGS: weakref.WeakKeyDictionary[sa.Engine, dict[str, Any]] = weakref.WeakKeyDictionary()

_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)


@dataclass(frozen=True)
class DbTimeouts:
    """Every timeout derived from the one ``statement_timeout`` knob (seconds; 0 = disabled).

    Derived rather than separately configured so they cannot contradict each other:

    * ``connect``: at least 2 s (libpq's minimum), else the statement timeout.
    * ``idle_in_transaction``: twice the statement timeout, at least 1 s; long enough for a
      healthy writer between two statements, short enough that a frozen one cannot block a
      takeover for long.
    * ``lock_wait``: InnoDB only takes whole seconds, at least 1.
    * ``client_read``: the client's socket timeout (PyMySQL), above the server-side timeouts.
    * ``sqlite_busy``: how long SQLite waits for the file lock.
    """

    statement: float
    connect: float
    idle_in_transaction: float
    lock_wait: int
    client_read: float | None
    sqlite_busy: float

    @classmethod
    def from_statement_timeout(cls, statement_timeout: float) -> DbTimeouts:
        s = float(statement_timeout)
        if not math.isfinite(s):
            raise ValueError(f"statement_timeout must be a finite number of seconds, got {statement_timeout!r}")
        if s <= 0:
            return cls(
                statement=0.0,
                connect=10.0,
                idle_in_transaction=0.0,
                lock_wait=50,
                client_read=None,
                sqlite_busy=30.0,
            )
        return cls(
            statement=s,
            connect=max(2.0, s),
            idle_in_transaction=max(1.0, 2.0 * s),
            lock_wait=max(1, math.ceil(s)),
            client_read=s + 2.0,
            sqlite_busy=s,
        )


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and rewrite its scheme to the driver luigi-ha uses (see the module docstring).

    :raises ValueError: the URL cannot be parsed or names an unsupported database/driver.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {redact_url(url)}") from exc
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        accepted = ", ".join(f"{k}://" for k in _DRIVERS)
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}; accepted: {accepted}")
    return parsed.set(drivername=driver)


def redact_url(url: str | URL) -> str:
    """Render ``url`` for a log line with its password and password-like query values hidden."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not parseable: still never echo anything between "://user:" and "@".
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))
    if parsed.query:
        hidden = {k: ("***" if _SECRET_QUERY_KEYS.search(k) else v) for k, v in parsed.query.items()}
        parsed = parsed.set(query=hidden)
    # render_as_string percent-encodes the query placeholder; show it as typed.
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def create_engine(url: str | URL, *, statement_timeout: float = 3.0, pool_size: int = 5, **kw: Any) -> sa.Engine:
    """Create a SQLAlchemy engine with luigi-ha's per-dialect settings (see the module docstring).

    :param url: database URL; plain ``mysql://`` is rewritten to ``mysql+pymysql://``.
    :param statement_timeout: seconds any one statement may run (server-side where the database
        supports it); every other timeout is derived from it (:class:`DbTimeouts`). ``<= 0``
        disables the statement and idle-in-transaction timeouts.
    :param pool_size: connections kept in the pool (ignored for in-memory SQLite).
    :param kw: passed to :func:`sqlalchemy.create_engine`; a ``connect_args`` dict is merged
        over ours key by key, so a caller can still override any single driver argument.
    """
    u = normalize_url(url)
    t = DbTimeouts.from_statement_timeout(statement_timeout)
    backend = u.get_backend_name()
    user_connect_args = dict(kw.pop("connect_args", None) or {})

    engine_kw: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "postgresql":
        connect_args = _postgres_connect_args(u, t)
    elif backend in ("mysql", "mariadb"):
        connect_args = _mysql_connect_args(u, t)
        engine_kw["isolation_level"] = "READ COMMITTED"
    elif backend == "sqlite":
        connect_args = {"check_same_thread": False, "timeout": t.sqlite_busy}
    else:  # pragma: no cover - normalize_url only lets the three through
        raise ValueError(f"unsupported backend {backend!r}")
    connect_args.update(user_connect_args)
    engine_kw["connect_args"] = connect_args

    if _uses_queue_pool(u, kw):
        engine_kw["pool_size"] = pool_size
        # SQLAlchemy's default is to wait 30 s for a free pooled connection; a lease renew
        # queued that long would outlive its deadline. Fail at about the connect timeout.
        engine_kw["pool_timeout"] = t.connect
    engine_kw.update(kw)

    engine = sa.create_engine(u, **engine_kw)
    if backend == "sqlite":
        _install_sqlite_hooks(engine, t)
    _ENGINE_TIMEOUTS[engine] = t
    _ENGINE_CONNECT_ARGS[engine] = connect_args
    return engine


def timeouts_of(engine: sa.Engine) -> DbTimeouts | None:
    """The timeouts ``engine`` was created with by :func:`create_engine` (None for other engines)."""
    return _ENGINE_TIMEOUTS.get(engine)


def driver_connect_kwargs(engine: sa.Engine) -> dict[str, Any]:
    """Keyword arguments for the driver's ``connect()`` that reach the database exactly as the
    engine's own connections do (address, credentials, timeouts, keepalives).

    For a connection that cannot come from the engine's pool, such as psycopg2's asynchronous
    mode; it keeps every guarantee the module docstring lists for the dialect.
    """
    _, params = engine.dialect.create_connect_args(engine.url)
    return {**params, **_ENGINE_CONNECT_ARGS.get(engine, {})}


def _uses_queue_pool(u: URL, kw: dict[str, Any]) -> bool:
    poolclass = kw.get("poolclass")
    if poolclass is not None:
        return issubclass(poolclass, sa.pool.QueuePool)
    if u.get_backend_name() == "sqlite":
        database = u.database or ""
        return database not in ("", ":memory:") and not database.startswith("file::memory:")
    return True


def _postgres_connect_args(u: URL, t: DbTimeouts) -> dict[str, Any]:
    args: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(t.connect)),
        # Notice a vanished server (cable pulled, VM gone) instead of waiting for the kernel's
        # default two-hour keepalive; tcp_user_timeout bounds unacknowledged sends.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": int(max(t.connect, t.statement) * 2 * 1000),
    }
    if "application_name" not in u.query:
        args["application_name"] = "luigi-ha"
    if t.statement > 0:
        ours = (
            f"-c statement_timeout={int(t.statement * 1000)}"
            f" -c idle_in_transaction_session_timeout={int(t.idle_in_transaction * 1000)}"
        )
        given = u.query.get("options")
        given = given if isinstance(given, str) else " ".join(given or ())
        args["options"] = f"{given} {ours}".strip()
    return args


def _mysql_connect_args(u: URL, t: DbTimeouts) -> dict[str, Any]:
    args: dict[str, Any] = {"connect_timeout": t.connect}
    if t.client_read is not None:
        args["read_timeout"] = t.client_read
        args["write_timeout"] = t.client_read
    if "charset" not in u.query:
        args["charset"] = "utf8mb4"
    init = f"SET SESSION innodb_lock_wait_timeout={t.lock_wait}, time_zone='+00:00'"
    if t.statement > 0:
        # MariaDB executes /*M!NNNNNN ... */ when its version is >= NNNNNN; MySQL ignores it.
        init += f" /*M!100108 , max_statement_time={t.statement:.3f} */"
        init += f" /*M!100300 , idle_transaction_timeout={math.ceil(t.idle_in_transaction)} */"
    args["init_command"] = init
    return args


def _install_sqlite_hooks(engine: sa.Engine, t: DbTimeouts) -> None:
    busy_ms = int(t.sqlite_busy * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 driver (it would emit a deferred BEGIN
        # only before DML); the "begin" hook below emits our own BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            _enter_wal(cur, t.sqlite_busy)
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _enter_wal(cur: sqlite3.Cursor, within: float) -> None:
    """Switch the file to WAL, retrying "database is locked" for up to ``within`` seconds.

    Switching a new file to WAL needs its exclusive lock, and SQLite answers SQLITE_BUSY for it at
    once instead of calling the busy handler: nodes that open a fresh file at the same instant (two
    nodes of the demo, four in the migration race test) failed about one start in ten. Once the
    file is in WAL mode the statement changes nothing and succeeds at once.
    """
    for attempt in Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)),
        stop=stop_after_delay(within),
        wait=wait_random(0.005, 0.05),
        reraise=True,
    ):
        with attempt:
            cur.execute("PRAGMA journal_mode = WAL")
