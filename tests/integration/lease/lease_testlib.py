"""Helpers shared by the lease's database tests (imported by name: this folder is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from lease import LeaseTimings, create_engine, create_schema

LEASE = "scheduler"

SHORT = LeaseTimings(ttl=1.0)  # renew every 0.2 s, step down after 0.6 s, expires after 1 s
LONG = LeaseTimings(ttl=30.0)  # never expires during a test


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_engine(url: str, **kw) -> sa.Engine:
    engine = create_engine(url, **kw)
    create_schema(engine)
    return engine


def scratch_table(engine: sa.Engine) -> sa.Table:
    """A table the tests write to under the fence; stands in for the task store."""
    md = sa.MetaData()
    table = sa.Table(
        "lh_test_writes",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("note", sa.String(64), nullable=False, server_default=""),
    )
    md.create_all(engine)
    return table


def written(engine: sa.Engine, table: sa.Table) -> list[tuple[str, int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.holder, table.c.epoch, table.c.note).order_by(table.c.id))
        return [tuple(r) for r in rows]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def stop_postgres(server) -> None:
    """Really stop a ``tests.support.dbservers.PostgresServer`` (fast shutdown).

    Workaround for support code that starts the postmaster under ``runuser`` when the tests run as
    root: there ``PostgresServer.stop()`` signals the ``runuser`` wrapper, which does not pass
    SIGINT on, waits 30 s, SIGKILLs only the wrapper and leaves the postmaster running (a later
    ``start()`` then "succeeds" by connecting to it). In that case we send the fast-shutdown signal
    to the postmaster PID recorded in its ``postmaster.pid`` (a process this test session started),
    wait for it to exit, then let ``stop()`` reap the wrapper. When the server process we hold *is*
    the postmaster, ``stop()`` alone does the job.
    """
    import os
    import signal

    proc = server.proc
    pidfile = server.data / "postmaster.pid"
    if proc is not None and proc.poll() is None and pidfile.exists():
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = proc.pid
        if pid != proc.pid:  # a wrapper sits between us and the postmaster
            try:
                os.kill(pid, signal.SIGINT)  # fast shutdown: disconnect clients, checkpoint, exit
                wait_until(lambda: proc.poll() is not None or _gone(pid), timeout=30)
            except ProcessLookupError:
                pass
    server.stop()


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
