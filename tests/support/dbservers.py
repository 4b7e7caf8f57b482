"""Throwaway PostgreSQL and MariaDB servers started from the installed server binaries.

Integration tests, failover drills and benchmarks need *real* database servers that they can
stop, restart and kill. We never touch the machine's own database services: every server here
lives in a private temporary directory, listens on a free loopback port, and is stopped by the
PID we started. PostgreSQL refuses to run as root, so when we are root its processes run as the
``postgres`` user; MariaDB is launched with ``--user=mysql`` for the same reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.localcluster import free_port


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def _run_as(user: str | None, argv: list[str], **kw) -> subprocess.CompletedProcess:
    if user and os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def postgres_bindir() -> str | None:
    """The newest installed PostgreSQL server bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def mariadb_available() -> bool:
    return bool(shutil.which("mariadbd") or os.path.exists("/usr/sbin/mariadbd")) and bool(
        shutil.which("mariadb-install-db")
    )


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster: initdb once, then start/stop/kill as often as a test needs."""

    durable: bool = False
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lha-pg-")))
    dbname: str = "luigi_ha"
    #: False: the data directory is made by someone else (e.g. ``pg_basebackup`` for a replica).
    initdb: bool = True
    #: ``-c name=value`` settings given on the command line, over the defaults below. Command-line
    #: settings are not copied by ``pg_basebackup``, so a primary's replication settings stay its own.
    settings: dict[str, str] = field(default_factory=dict)
    #: Address the server listens on (a network namespace's address for the packet-loss tests).
    listen: str = "127.0.0.1"
    #: A network namespace (``ip netns``) to run the server in, with ``listen`` one of its addresses.
    netns: str | None = None

    def __post_init__(self) -> None:
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.user = "postgres" if os.geteuid() == 0 else None
        self.data = self.root / "data"
        os.chmod(self.root, 0o755)
        if self.user:
            shutil.chown(self.root, self.user, self.user)
        if self.initdb:
            _run_as(
                self.user,
                [f"{self.bindir}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E",
                 "UTF8"],
            )
            if self.listen != "127.0.0.1":
                # initdb trusts loopback only; a server in a network namespace is reached from
                # outside it (its clients and its replicas).
                with open(self.data / "pg_hba.conf", "a") as hba:
                    hba.write(f"host all all {self.listen}/24 trust\nhost replication all {self.listen}/24 trust\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@{self.listen}:{self.port}/{self.dbname}"

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg2://postgres@{self.listen}:{self.port}/postgres"

    def start(self) -> None:
        """Start the postmaster as a child we can signal directly (no pg_ctl daemonising)."""
        settings = {
            "listen_addresses": self.listen,
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            **self.settings,
        }
        opts = ["-D", str(self.data), "-p", str(self.port), "-k", str(self.root)]
        for name, value in settings.items():
            opts += ["-c", f"{name}={value}"]
        argv = [f"{self.bindir}/postgres", *opts]
        # Drop to the postgres user in the child itself (no runuser in between), so the PID we
        # hold is the postmaster's and our signals reach it directly.
        as_user = {"user": self.user, "group": self.user, "extra_groups": []} if self.user else {}
        if self.netns:
            # Entering a namespace needs root, so the user is dropped after it, by setpriv; both
            # exec the next program, so the PID is still the postmaster's.
            drop = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups"] if self.user else []
            argv = ["ip", "netns", "exec", self.netns, *drop, *argv]
            as_user = {}
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, **as_user)
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'postgres.log').read_text()[-2000:]}")
            try:
                conn = psycopg2.connect(host=self.listen, port=self.port, user="postgres", dbname="postgres",
                                        connect_timeout=2)
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery()")
                    if not cur.fetchone()[0]:  # a replica has the primary's databases already
                        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
                        if cur.fetchone() is None:
                            cur.execute(f'CREATE DATABASE "{self.dbname}"')
                conn.close()
                return
            except psycopg2.OperationalError as exc:
                last = exc
                time.sleep(0.05)
        raise TimeoutError(f"postgres not ready: {last}")

    def stop(self, sig: str = "fast") -> None:
        """Stop the server: 'fast' (SIGINT, clean), or 'immediate' (SIGQUIT, crash-like)."""
        import signal

        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGINT if sig == "fast" else signal.SIGQUIT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        """Create a fresh database on this server and return its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(host=self.listen, port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return f"postgresql+psycopg2://postgres@{self.listen}:{self.port}/{name}"

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class MariaDBServer:
    """A private MariaDB server with its own data directory, socket and port."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lha-maria-")))
    dbname: str = "luigi_ha"
    #: Extra ``--name=value`` server options (replication: ``--server-id``, ``--log-bin``, ...). The
    #: binary log is off unless one of them turns it on.
    options: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.user = "mysql" if os.geteuid() == 0 else None
        self.data = self.root / "data"
        self.sock = self.root / "mysqld.sock"
        os.chmod(self.root, 0o755)
        if self.user:
            shutil.chown(self.root, self.user, self.user)
        argv = ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
                "--auth-root-authentication-method=normal", "--skip-test-db"]
        if self.user:
            argv.append(f"--user={self.user}")
        subprocess.run(argv, check=True, capture_output=True, text=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{self.dbname}"

    def start(self) -> None:
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        argv = [mariadbd, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.sock}", f"--pid-file={self.root}/mysqld.pid",
                f"--log-error={self.root}/err.log", "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=300"]
        if not any(opt.startswith("--log-bin") for opt in self.options):
            argv.append("--skip-log-bin")
        argv += self.options
        if self.user:
            argv.append(f"--user={self.user}")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import pymysql

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(self.root / 'err.log').read_text()[-2000:]}")
            try:
                conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
                with conn.cursor() as cur:
                    cur.execute("SELECT @@global.read_only")
                    if not int(cur.fetchone()[0]):  # a replica gets the primary's databases by replication
                        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.dbname}`")
                conn.close()
                return
            except pymysql.err.OperationalError as exc:
                last = exc
                time.sleep(0.05)
        raise TimeoutError(f"mariadb not ready: {last}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.terminate()
        try:
            # A clean shutdown takes well under a second, but mariadbd can sit for its network
            # timeout on an idle pooled client connection; crash recovery is cheap, so don't wait.
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL mariadbd: a crash, with no chance to tell its replicas or clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def create_database(self, name: str) -> str:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}`")
        conn.close()
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
