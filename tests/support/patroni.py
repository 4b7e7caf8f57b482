"""A real Patroni cluster on loopback: one etcd and two PostgreSQL servers managed by Patroni.

This is the reference HA database the failover tests and ``bench/db_failover_patroni.py`` run
the scheduler on. Everything is started from the installed binaries (Debian's ``etcd`` and
PostgreSQL server, Patroni from the ``[test]`` extra of this project), lives in one private
temporary directory, listens on free loopback ports, and is ended by the PIDs we started.

PostgreSQL refuses to run as root, so when we are root etcd and Patroni run as the ``postgres``
user (Patroni starts PostgreSQL itself, as its own child).

Settings, and why:

* ``ttl 20`` (Patroni's minimum), ``loop_wait 1``, ``retry_timeout 3``: the fastest timings
  Patroni accepts (``loop_wait + 2 * retry_timeout <= ttl``). A primary whose Patroni died is
  replaced once its leader key expires, so about ``ttl`` seconds after the crash.
* ``primary_start_timeout 0``: when the primary's PostgreSQL crashes but its Patroni lives,
  Patroni fails over to the synchronous standby at once instead of restarting PostgreSQL in
  place (the default waits up to 300 s for a restart). A failover is what the tests are about.
* ``synchronous_mode: true``: Patroni keeps ``synchronous_standby_names`` pointing at the
  standby and only promotes a standby that was synchronous, so a commit that was acknowledged
  is on the new primary. Without ``synchronous_mode_strict`` the primary stops waiting when no
  standby is left (available but not durable against a second failure); the tests run with the
  default and ``strict=True`` selects the other.
* ``use_pg_rewind`` with ``wal_log_hints``: the old primary can rejoin as a standby after a
  crash even when it had written WAL its successor never received (unacknowledged commits).
* ``fsync off``: the tests kill processes, not the machine, so the page cache survives and the
  fsyncs would only cost the shared CPUs time; replication is what keeps a commit here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scheduler.localcluster import free_port
from tests.support.dbservers import postgres_bindir

DBNAME = "luigi_ha"
#: The timings written into Patroni's bootstrap DCS configuration (see the module docstring).
TIMINGS: dict[str, int] = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3, "primary_start_timeout": 0}


def patroni_available() -> str | None:
    """None when a Patroni cluster can be started here, else the reason it cannot."""
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian package etcd-server)"
    if postgres_bindir() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    try:
        import patroni  # noqa: F401
    except ImportError:
        return "Patroni is not installed (pip install 'luigi-ha[test]')"
    return None


def _as_user() -> dict[str, Any]:
    """Popen arguments that drop a child to the postgres user when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _http(url: str, timeout: float = 1.0, method: str = "GET", body: dict | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


class EtcdProcess:
    """A single-member etcd (v3 API) Patroni keeps its leader key in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.client_port, self.peer_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 30.0) -> None:
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        argv = ["etcd", "--name", "e1", "--data-dir", str(self.root / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"e1={peer}", "--log-level", "warn"]
        log = open(self.root / "etcd.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, **_as_user())
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {(self.root / 'etcd.log').read_text()[-2000:]}")
            try:
                if _http(f"{client}/health", timeout=0.5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"etcd not healthy within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class PatroniMember:
    """One Patroni daemon and the PostgreSQL it runs."""

    name: str
    root: Path
    pg_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: Every postmaster PID this member has had: cleanup ends each one still alive.
    postmaster_pids: set[int] = field(default_factory=set)

    @property
    def config_path(self) -> Path:
        return self.root / f"{self.name}.yml"

    @property
    def data_dir(self) -> Path:
        return self.root / self.name / "data"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.pg_port}"

    def start(self) -> None:
        log = open(self.root / f"{self.name}.log", "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "HOME": str(self.root), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "patroni", str(self.config_path)], stdout=log,
                                     stderr=log, env=env, start_new_session=True, cwd=str(self.root), **_as_user())
        log.close()

    def patroni_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def postmaster_pid(self) -> int | None:
        """The running postmaster's PID (first line of postmaster.pid), or None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        self.postmaster_pids.add(pid)
        return pid

    def status(self) -> dict[str, Any] | None:
        """Patroni's ``GET /patroni`` document, or None when the REST API does not answer."""
        try:
            code, body = _http(self.api + "/patroni", timeout=1.0)
        except OSError:
            return None
        return body if code in (200, 503) and isinstance(body, dict) else None

    def is_primary(self) -> bool:
        """What HAProxy's health check sees: ``GET /primary`` answers 200."""
        try:
            return _http(self.api + "/primary", timeout=1.0)[0] == 200
        except OSError:
            return False

    def kill_postgres(self) -> int:
        """SIGKILL the postmaster (its backends then exit on their own): a crashed PostgreSQL."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError(f"{self.name}: no running postmaster to kill")
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_patroni(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """End Patroni (it stops its PostgreSQL), then any postmaster of ours that survived."""
        self.postmaster_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in sorted(self.postmaster_pids):
            if _pid_alive(pid):
                os.kill(pid, signal.SIGQUIT)
                if not _wait_pid_gone(pid, 10):
                    os.kill(pid, signal.SIGKILL)
                    _wait_pid_gone(pid, 10)

    def write_config(self, scope: str, etcd: str, strict: bool) -> None:
        bindir = postgres_bindir()
        member_dir = self.root / self.name
        member_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "scope": scope,
            "name": self.name,
            "restapi": {"listen": f"127.0.0.1:{self.api_port}", "connect_address": f"127.0.0.1:{self.api_port}"},
            "etcd3": {"hosts": etcd},
            "bootstrap": {
                "dcs": {
                    **TIMINGS,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": True,
                    "synchronous_mode_strict": strict,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {
                            "wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on",
                            "max_connections": 200, "max_wal_senders": 10, "max_replication_slots": 10,
                            "fsync": "off",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}],
                "pg_hba": ["local all all trust", "host replication replicator 127.0.0.1/32 trust",
                           "host all all 127.0.0.1/32 trust"],
            },
            "postgresql": {
                "listen": self.hostport,
                "connect_address": self.hostport,
                "data_dir": str(self.data_dir),
                "bin_dir": bindir,
                "pgpass": str(member_dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "replicator"},
                    "rewind": {"username": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(member_dir)},
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


class PatroniCluster:
    """etcd + two Patroni members; ``start()`` returns once a primary and a sync standby stream."""

    def __init__(self, root: Path | None = None, size: int = 2, strict: bool = False) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="lha-patroni-"))
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.scope = f"lha{os.getpid()}"
        self.strict = strict
        self.etcd = EtcdProcess(self.root)
        self.members = [PatroniMember(f"pg{i + 1}", self.root) for i in range(size)]

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> PatroniCluster:
        try:
            self.etcd.start()
            for member in self.members:
                member.write_config(self.scope, self.etcd.endpoint, self.strict)
            if os.geteuid() == 0:
                subprocess.run(["chown", "-R", "postgres:postgres", str(self.root)], check=True)
            # The first member bootstraps (initdb); the second then clones it with pg_basebackup.
            self.members[0].start()
            self.wait_primary(timeout)
            for member in self.members[1:]:
                member.start()
            self.wait_healthy(timeout)
            self.create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        self.etcd.stop()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what the cluster looks like -----------------------------------------------------------

    def topology(self) -> dict[str, Any] | None:
        """Patroni's ``GET /cluster`` from the first member that answers."""
        for member in self.members:
            try:
                code, body = _http(member.api + "/cluster", timeout=1.0)
            except OSError:
                continue
            if code == 200 and isinstance(body, dict):
                return body
        return None

    def primary(self) -> PatroniMember | None:
        """The member whose ``GET /primary`` answers 200 (what HAProxy would route to)."""
        for member in self.members:
            if member.is_primary():
                return member
        return None

    def replicas(self) -> list[PatroniMember]:
        primary = self.primary()
        return [m for m in self.members if m is not primary]

    def member(self, name: str) -> PatroniMember:
        return next(m for m in self.members if m.name == name)

    def wait_primary(self, timeout: float = 60.0, not_: PatroniMember | None = None) -> PatroniMember:
        """Wait for a primary (other than ``not_``) that accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            primary = self.primary()
            if primary is not None and primary is not not_ and self._writable(primary):
                return primary
            time.sleep(0.1)
        raise TimeoutError(f"no writable Patroni primary within {timeout}s:\n{self.logs()}")

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Wait until every member runs: one leader, the others streaming synchronous standbys."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topo = self.topology() or {}
            members = topo.get("members", [])
            roles = sorted(m.get("role", "") for m in members if m.get("state") in ("running", "streaming"))
            if len(members) == len(self.members) and roles.count("leader") == 1 and \
                    roles.count("sync_standby") == len(self.members) - 1:
                return
            time.sleep(0.2)
        raise TimeoutError(f"Patroni cluster not healthy within {timeout}s: {self.topology()}\n{self.logs()}")

    def _writable(self, member: PatroniMember) -> bool:
        import psycopg2

        try:
            conn = psycopg2.connect(host="127.0.0.1", port=member.pg_port, user="postgres", dbname="postgres",
                                    connect_timeout=2)
        except psycopg2.OperationalError:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                return not cur.fetchone()[0]
        except psycopg2.Error:
            return False
        finally:
            conn.close()

    def create_database(self, name: str = DBNAME) -> None:
        import psycopg2

        primary = self.wait_primary()
        conn = psycopg2.connect(host="127.0.0.1", port=primary.pg_port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    # -- how nodes reach the primary -----------------------------------------------------------

    def multihost_url(self, dbname: str = DBNAME) -> str:
        """SQLAlchemy URL naming every member; libpq picks the one that accepts writes."""
        hosts = "&".join(f"host={m.hostport}" for m in self.members)
        return f"postgresql+psycopg2://postgres@/{dbname}?{hosts}&target_session_attrs=read-write"

    def haproxy_db_nodes(self) -> list[dict[str, Any]]:
        """The ``db_nodes`` variable of haproxy/haproxy-db.cfg.j2 for this cluster."""
        return [{"name": m.name, "address": "127.0.0.1", "port": m.pg_port, "check_port": m.api_port}
                for m in self.members]

    # -- failures and switchovers --------------------------------------------------------------

    def patronictl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        # patronictl is the console script installed next to this interpreter (patroni.ctl has no
        # ``__main__``).
        patronictl = Path(sys.executable).parent / "patronictl"
        argv = [str(patronictl), "-c", str(self.members[0].config_path), *args]
        env = {**os.environ, "HOME": str(self.root)}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=True)

    def switchover(self, candidate: PatroniMember | None = None) -> PatroniMember:
        """``patronictl switchover --force`` from the current primary; returns the new primary."""
        primary = self.wait_primary()
        candidate = candidate or next(m for m in self.members if m is not primary)
        self.patronictl("switchover", self.scope, "--leader", primary.name, "--candidate", candidate.name,
                        "--force")
        return self.wait_primary(not_=primary)

    def rejoin(self, member: PatroniMember, timeout: float = 90.0) -> None:
        """Restart ``member``'s Patroni if it was killed and wait until it is a sync standby again."""
        if not member.patroni_alive():
            member.postmaster_pid()
            for pid in sorted(member.postmaster_pids):  # a postmaster orphaned by its dead Patroni
                if _pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
                    _wait_pid_gone(pid, 10)
            member.start()
        self.wait_healthy(timeout)

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for member in self.members:
            path = self.root / f"{member.name}.log"
            if path.exists():
                parts.append(f"--- {member.name} ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)
