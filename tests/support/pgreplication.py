"""A PostgreSQL primary with a synchronous streaming replica, from the installed binaries.

For the database-failover tests and the bench: kill the primary for real (SIGKILL of the
postmaster), promote the replica with ``pg_ctl promote``, and bring the old primary back as a
replica of the new one. Built on :class:`tests.support.dbservers.PostgresServer`, so every server
lives in a private directory on a free port and is stopped by the PID we started.

Why the primary is made synchronous only once its replica is attached (``ALTER SYSTEM`` and a
reload): a synchronous primary without a standby waits at every commit, ``CREATE DATABASE``
included; and a ``pg_basebackup`` copies the configuration files, so a replica cloned from a primary
whose files name ``synchronous_standby_names`` would, once promoted, wait at every commit for a
standby that does not exist (docs/runbook.md, "Database failover"). Cloned before, the replica is
promoted into a primary that commits on its own, as Patroni would leave it.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from tests.support.dbservers import PostgresServer, _run_as

#: Settings every server of the pair gets: enough WAL senders and a standby that answers reads.
_COMMON = {
    # Every commit waits for the standby once synchronous_standby_names names one (the server
    # default, which PostgresServer turns off for speed).
    "synchronous_commit": "on",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    # The pair is on one machine: replication, not fsync, is what survives a SIGKILL here.
    "fsync": "off",
    "full_page_writes": "on",
    "wal_log_hints": "on",
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "200ms",
}



@dataclass
class ReplicatedPostgres:
    """Two servers, ``servers[0]`` the primary at start; ``primary``/``replica`` follow promotions."""

    synchronous: bool = True
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lha-pgrep-")))
    netns: tuple[str | None, str | None] = (None, None)
    listen: tuple[str, str] = ("127.0.0.1", "127.0.0.1")
    servers: list[PostgresServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        os.chmod(self.root, 0o755)
        first = PostgresServer(
            root=self._dir("pg1"), settings=dict(_COMMON), listen=self.listen[0], netns=self.netns[0]
        )
        self.servers = [first]
        self._primary_index = 0

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir()
        return path

    # -- topology ------------------------------------------------------------------------------

    @property
    def primary(self) -> PostgresServer:
        return self.servers[self._primary_index]

    @property
    def replica(self) -> PostgresServer:
        return self.servers[1 - self._primary_index]

    def hosts(self) -> list[tuple[str, int]]:
        """``(host, port)`` of both servers, in the order they were created (never reordered)."""
        return [(s.listen, s.port) for s in self.servers]

    def url(self, dbname: str | None = None, *, target: str | None = "read-write", user: str = "postgres") -> str:
        """The multi-host URL a user writes: ``postgresql://u@/db?host=h1:p1&host=h2:p2&...``."""
        db = dbname or self.primary.dbname
        query = "&".join(f"host={h}:{p}" for h, p in self.hosts())
        if target:
            query += f"&target_session_attrs={target}"
        return f"postgresql://{user}@/{db}?{query}"

    def start(self) -> ReplicatedPostgres:
        """Start the primary, clone the replica from it with ``pg_basebackup`` and start it.

        On failure everything started so far is stopped and removed before the error propagates.
        """
        try:
            return self._start()
        except BaseException:
            self.destroy()
            raise

    def _start(self) -> ReplicatedPostgres:
        self.primary.start()
        replica = self._clone_from(self.primary, root=self._dir("pg2"), listen=self.listen[1], netns=self.netns[1])
        self.servers.append(replica)
        replica.start()
        if self.synchronous:
            self.make_synchronous()
        return self

    def make_synchronous(self) -> None:
        """From now on the primary waits at every commit until a standby has flushed it."""
        _query(self.primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        _query(self.primary, "SELECT pg_reload_conf()")
        self.wait_synchronous()

    def _clone_from(
        self, source: PostgresServer, *, root: Path, listen: str, netns: str | None, port: int | None = None
    ) -> PostgresServer:
        extra = {} if port is None else {"port": port}
        server = PostgresServer(
            root=root, initdb=False, settings=dict(_COMMON), listen=listen, netns=netns, **extra
        )
        server.settings["cluster_name"] = f"replica{server.port}"  # the walreceiver's application_name
        _run_as(
            server.user,
            [f"{server.bindir}/pg_basebackup", "-h", source.listen, "-p", str(source.port), "-U", "postgres",
             "-D", str(server.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"],
        )
        # A clone of a synchronous primary would inherit its synchronous_standby_names (ALTER
        # SYSTEM keeps it in postgresql.auto.conf) and, once promoted, wait for a standby at every
        # commit. Drop it: a promoted clone commits on its own until make_synchronous().
        auto = server.data / "postgresql.auto.conf"
        kept = [line for line in auto.read_text().splitlines() if not line.startswith("synchronous_standby_names")]
        auto.write_text("\n".join(kept) + "\n")
        return server

    def create_database(self, name: str) -> str:
        """A fresh database on the primary (replicated to the standby); returns the multi-host URL."""
        self.primary.create_database(name)
        if self.synchronous:
            self.wait_replayed()
        return self.url(name)

    # -- failure and recovery ------------------------------------------------------------------

    def kill_primary(self) -> float:
        """SIGKILL the primary's postmaster; return ``time.monotonic()`` of the kill."""
        server = self.primary
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        at = time.monotonic()
        server.proc.wait(timeout=10)
        server.proc = None
        return at

    def promote(self) -> None:
        """``pg_ctl promote`` the replica and wait until it accepts writes.

        The promoted server commits without a synchronous standby (there is none yet): it was
        cloned before its primary was made synchronous (see the module docstring).
        """
        server = self.replica
        _run_as(server.user, [f"{server.bindir}/pg_ctl", "promote", "-D", str(server.data), "-w", "-t", "30"])
        self._primary_index = 1 - self._primary_index
        _wait(lambda: not _in_recovery(server), 30, "the promoted server to leave recovery")

    def rejoin_old_primary(self) -> PostgresServer:
        """Bring the killed primary back, on its old address, as a replica of the new primary.

        Its data directory is replaced by a fresh ``pg_basebackup`` (what ``pg_rewind`` would save
        is time, not correctness).
        """
        old_index = 1 - self._primary_index
        old = self.servers[old_index]
        old.stop()
        shutil.rmtree(old.root, ignore_errors=True)
        old.root.mkdir()
        os.chmod(old.root, 0o755)
        if old.user:
            shutil.chown(old.root, old.user, old.user)
        clone = self._clone_from(self.primary, root=old.root, listen=old.listen, netns=old.netns, port=old.port)
        self.servers[old_index] = clone
        clone.start()
        return clone

    def wait_synchronous(self, timeout: float = 30.0) -> None:
        """Until the primary reports a standby in ``sync`` state."""
        _wait(lambda: _sync_standbys(self.primary) > 0, timeout, "a synchronous standby")

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the replica has replayed everything the primary has written."""
        primary_lsn = _query(self.primary, "SELECT pg_current_wal_lsn()")
        _wait(
            lambda: _query(self.replica, f"SELECT pg_last_wal_replay_lsn() >= '{primary_lsn}'::pg_lsn"),
            timeout,
            "the replica to replay the primary's WAL",
        )

    def destroy(self) -> None:
        for server in self.servers:
            server.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _query(server: PostgresServer, sql: str) -> object:
    conn = psycopg2.connect(host=server.listen, port=server.port, user="postgres", dbname="postgres", connect_timeout=2)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def _in_recovery(server: PostgresServer) -> bool:
    try:
        return bool(_query(server, "SELECT pg_is_in_recovery()"))
    except psycopg2.OperationalError:
        return True


def _sync_standbys(server: PostgresServer) -> int:
    try:
        return int(_query(server, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"))
    except psycopg2.OperationalError:
        return 0


def _wait(predicate, timeout: float, what: str) -> None:  # noqa: ANN001 - a tiny local poll
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


__all__ = ["ReplicatedPostgres"]
