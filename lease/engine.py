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
    server, so a takeover is never blocked for longer than the idle timeout. ``pool_pre_ping`` so
    a connection broken by a server restart is replaced instead of failing the next renew.

    Following the primary (see :mod:`lease.primary` for why each matters in a failover):

    * several servers in one URL, in any of libpq's spellings: ``?host=h1:p1&host=h2:p2``
      (SQLAlchemy's), ``postgresql://u@h1:p1,h2:p2/db`` (libpq's URI) or a libpq keyword string
      ``host=h1,h2 port=p1,p2 dbname=db user=u``; libpq tries them in order;
    * ``target_session_attrs=read-write`` unless the URL says ``read-write`` or ``primary``
      (anything else is refused: the node writes), so libpq skips replicas while it connects,
      and every new connection is checked by the server itself (:func:`lease.primary.check_primary`);
    * a silent server (host gone, packets dropped: no RST) is noticed within ``dead_host``
      seconds (:class:`DbTimeouts`): ``connect_timeout`` per host (libpq: whole seconds, at least
      2), TCP keepalives on idle connections and ``tcp_user_timeout`` on unanswered sends;
    * a key the URL sets itself (``connect_timeout``, ``keepalives_idle`` ...) wins over ours.

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

import psycopg2.extensions
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

from lease.primary import install_mysql_hooks, install_postgres_hooks

__all__ = [
    "DbTimeouts",
    "create_engine",
    "driver_connect_kwargs",
    "normalize_url",
    "redact_url",
    "single_host_connect_kwargs",
    "timeouts_of",
]

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

#: The target_session_attrs a writer may use: both make libpq skip replicas and read-only servers.
WRITABLE_SESSION_ATTRS = ("read-write", "primary")
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")


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
    * ``dead_host``: a server that stops answering (no RST) is given up within about this long:
      the connect timeout per host, and the TCP keepalive / ``tcp_user_timeout`` bound of an
      open connection.
    """

    statement: float
    connect: float
    idle_in_transaction: float
    lock_wait: int
    client_read: float | None
    sqlite_busy: float

    @property
    def dead_host(self) -> float:
        return float(max(2, math.ceil(self.connect)))

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
    except (ArgumentError, ValueError) as exc:
        # libpq's own spellings that SQLAlchemy cannot parse: a multi-host URI or a keyword string.
        parsed = _from_libpq(url) if isinstance(url, str) else None
        if parsed is None:
            raise ValueError(f"not a database URL: {redact_url(url)}") from exc
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        accepted = ", ".join(f"{k}://" for k in _DRIVERS)
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}; accepted: {accepted}")
    return parsed.set(drivername=driver)


def _from_libpq(text: str) -> URL | None:
    """A libpq multi-host URI (``postgresql://u@h1:p1,h2:p2/db``) or keyword string
    (``host=h1,h2 port=p1,p2 dbname=db``) as a SQLAlchemy URL with one ``host=h:p`` per server;
    None when ``text`` is neither."""
    scheme, sep, _ = text.partition("://")
    if sep and scheme not in _PG_SCHEMES:
        return None
    if not sep and "=" not in text:
        return None
    libpq_text = f"postgresql://{text.partition('://')[2]}" if sep else text
    try:
        params = psycopg2.extensions.parse_dsn(libpq_text)
    except psycopg2.ProgrammingError:
        return None
    hosts = params.pop("host", "").split(",") if params.get("host") else []
    ports = params.pop("port", "").split(",") if params.get("port") else []
    if len(ports) == 1 and len(hosts) > 1:
        ports = ports * len(hosts)
    if ports and len(ports) != len(hosts):
        return None
    query: dict[str, str | list[str]] = {k: v for k, v in params.items() if k not in ("user", "password", "dbname")}
    if hosts:
        query["host"] = [f"{h}:{p}" if p else h for h, p in zip(hosts, ports or [""] * len(hosts), strict=True)]
    return URL.create(
        scheme if sep else "postgresql",
        username=params.get("user"),
        password=params.get("password"),
        database=params.get("dbname"),
        query=query,
    )


def redact_url(url: str | URL) -> str:
    """Render ``url`` for a log line with its password and password-like query values hidden."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = _from_libpq(url) if isinstance(url, str) else None
        if parsed is None:
            # Not parseable: still never echo anything between "://user:" and "@", nor a password=.
            text = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))
            return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
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
    elif backend == "postgresql":
        install_postgres_hooks(engine)
    else:
        install_mysql_hooks(engine)
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


def single_host_connect_kwargs(engine: sa.Engine, host: str, port: int | None) -> dict[str, Any]:
    """:func:`driver_connect_kwargs` aimed at one server of a multi-host URL.

    For psycopg2's asynchronous mode, where libpq leaves every timeout to the caller: a connect
    that must try a silent first host before the primary would spend the caller's whole budget
    on it. The pool has already found the primary (libpq's per-host timeouts apply there); this
    connection goes straight to it, and ``target_session_attrs`` still refuses it if it is no
    longer the primary.
    """
    kwargs = driver_connect_kwargs(engine)
    kwargs["host"] = host
    if port is None:
        kwargs.pop("port", None)
    else:
        kwargs["port"] = str(port)
    return kwargs


def _uses_queue_pool(u: URL, kw: dict[str, Any]) -> bool:
    poolclass = kw.get("poolclass")
    if poolclass is not None:
        return issubclass(poolclass, sa.pool.QueuePool)
    if u.get_backend_name() == "sqlite":
        database = u.database or ""
        return database not in ("", ":memory:") and not database.startswith("file::memory:")
    return True


def _postgres_connect_args(u: URL, t: DbTimeouts) -> dict[str, Any]:
    dead = int(t.dead_host)
    ours: dict[str, Any] = {
        # libpq applies it to each host in turn, so a silent first host costs this much, once.
        "connect_timeout": dead,
        # Notice a vanished server (cable pulled, VM gone, packets dropped) within ``dead_host``
        # instead of the kernel's two-hour default: keepalive probes on an idle connection
        # (first after 1 s, then every second), and tcp_user_timeout on data sent but never
        # acknowledged. TCP acknowledgements come from the server's kernel at once, however long
        # a statement runs, so this never cuts a slow query short.
        "keepalives": 1,
        "keepalives_idle": 1,
        "keepalives_interval": 1,
        "keepalives_count": max(1, dead - 1),
        "tcp_user_timeout": dead * 1000,
        "application_name": "luigi-ha",
        "target_session_attrs": "read-write",
    }
    given = u.query.get("target_session_attrs")
    if given is not None and given not in WRITABLE_SESSION_ATTRS:
        raise ValueError(
            f"target_session_attrs={given!r} in the database URL: luigi-ha writes, so it must be one of "
            f"{', '.join(WRITABLE_SESSION_ATTRS)} (the default is read-write)"
        )
    args = {k: v for k, v in ours.items() if k not in u.query}
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
