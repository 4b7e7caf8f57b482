"""A lab of VM-like hosts: systemd-nspawn containers in network namespaces joined by a bridge.

Topology (one /24 on a bridge that lives in its own namespace; nothing is routed to or from the
machine's own network, and every address below exists only inside namespaces this lab creates)::

    <p>-lan    br0 ------+----------+-----------+-----------+----------+
                         |          |           |           |          |
    <p>-sched1  .11 nspawn "sched1" (systemd, sshd, luigi-ha scheduler, HAProxy, keepalived)
    <p>-sched2  .12 nspawn "sched2" (same)                      VIP .100 (keepalived)
    <p>-worker1 .21 nspawn "worker1" (systemd, sshd, luigi-ha worker@, run@ timer)
    <p>-db      .5  PostgreSQL (the host's server binaries, run inside this namespace)
    <p>-ctl     .50 the Ansible controller and every test client (`ip netns exec`)

Each container boots the cached rootfs (scripts/build-test-rootfs.sh) read-only with
``--volatile=overlay``, so every lab starts from fresh "VMs" and nothing persists. Each nspawn
runs in its own cgroup subtree (``/sys/fs/cgroup/{systemd,unified}/<p>-<host>``): two
containers started from one cgroup share ``/payload`` and the second one boots degraded
(deploy-feasibility.md section 5, gotcha a).

Everything is stopped by the PID this module started, namespaces it created are deleted and its
cgroups removed, in :meth:`Lab.close` (also on failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.dbservers import PostgresServer
from tests.support.waiting import wait_for  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[2]
ROOTFS_SCRIPT = REPO / "scripts" / "build-test-rootfs.sh"
ANSIBLE_INSTALLER = REPO / "ansible" / "install-controller.sh"
CGROUP_HIERARCHIES = ("systemd", "unified")

SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=3",
    "-o", "BatchMode=yes",
]


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=timeout, **kw)


def build_rootfs() -> tuple[Path, float | None]:
    """The cached rootfs path, and how long building it took when this call built it."""
    started = time.monotonic()
    result = run(["bash", str(ROOTFS_SCRIPT)], timeout=900)
    rootfs = Path(result.stdout.strip().splitlines()[-1])
    built = "done in" in result.stderr
    return rootfs, (time.monotonic() - started) if built else None


def ansible_bin() -> Path:
    result = run(["bash", str(ANSIBLE_INSTALLER)], timeout=600)
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class Host:
    name: str
    address: str
    netns: str
    proc: subprocess.Popen | None = None
    log: Path | None = None


class NetnsPostgres(PostgresServer):
    """The test-suite's throwaway PostgreSQL, started inside a network namespace.

    It listens on ``listen`` (an address of that namespace) with password authentication for the
    lab subnet; the test itself talks to it over the Unix socket in its private directory (a
    filesystem socket works across network namespaces).
    """

    def __init__(self, netns: str, listen: str, subnet: str, port: int = 5432) -> None:
        super().__init__(port=port)
        self.netns = netns
        self.listen = listen
        with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as fh:
            fh.write(f"host all all {subnet} scram-sha-256\n")

    def start(self) -> None:
        opts = [
            "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
            "-c", f"listen_addresses={self.listen}", "-c", "max_connections=100",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]
        # `ip netns exec` and setpriv both exec (no fork), so the PID we hold is the postmaster's.
        argv = ["ip", "netns", "exec", self.netns]
        if self.user:
            argv += ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups"]
        argv += [f"{self.bindir}/postgres", *opts]
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self._wait_ready()

    def _connect(self, dbname: str = "postgres"):
        import psycopg2

        conn = psycopg2.connect(host=str(self.root), port=self.port, user="postgres", dbname=dbname)
        conn.autocommit = True
        return conn

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'postgres.log').read_text()[-2000:]}")
            try:
                self._connect().close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_app_database(self, name: str, user: str, password: str) -> None:
        conn = self._connect()
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD %s", (password,))
            cur.execute(f'CREATE DATABASE "{name}" OWNER "{user}"')
        conn.close()

    def query(self, dbname: str, sql: str) -> list[tuple]:
        conn = self._connect(dbname)
        with conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        conn.close()
        return rows


@dataclass
class Lab:
    workdir: Path
    rootfs: Path
    subnet_prefix: str = "10.231.0"
    prefix: str = field(default_factory=lambda: f"lhv{os.getpid() % 100000}")
    hosts: dict[str, Host] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)
    db: NetnsPostgres | None = None
    db_password: str = field(default_factory=lambda: secrets.token_hex(12))
    bindir: Path | None = None  # the controller's ansible venv bin/
    inventory: Path | None = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def vip(self) -> str:
        return f"{self.subnet_prefix}.100"

    @property
    def db_address(self) -> str:
        return f"{self.subnet_prefix}.5"

    @property
    def ctl(self) -> str:
        return f"{self.prefix}-ctl"

    @property
    def key(self) -> Path:
        return self.workdir / "id_ed25519"

    def url(self, host: str, path: str = "") -> str:
        address = self.vip if host == "vip" else self.hosts[host].address
        return f"http://{address}:8082{path}"

    # -- network -------------------------------------------------------------------------------

    def _netns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        run(["ip", "netns", "add", full])
        self.namespaces.append(full)
        run(["ip", "-n", full, "link", "set", "lo", "up"])
        return full

    def _attach(self, ns: str, address: str, index: int) -> None:
        peer = f"{self.prefix[:8]}p{index}"
        run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer,
             "netns", f"{self.prefix}-lan"])
        run(["ip", "-n", f"{self.prefix}-lan", "link", "set", peer, "master", "br0"])
        run(["ip", "-n", f"{self.prefix}-lan", "link", "set", peer, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def build_network(self, machines: dict[str, int]) -> None:
        lan = self._netns("lan")
        run(["ip", "-n", lan, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", lan, "link", "set", "br0", "up"])
        for index, (name, octet) in enumerate([*machines.items(), ("db", 5), ("ctl", 50)]):
            ns = self._netns(name)
            self._attach(ns, f"{self.subnet_prefix}.{octet}", index)
            if name in machines:
                self.hosts[name] = Host(name, f"{self.subnet_prefix}.{octet}", ns)

    def set_sysctl(self, host: str, key: str, value: str) -> None:
        """From the host: /proc/sys is read-only inside nspawn (deploy-feasibility section 5 gotcha c)."""
        run(["ip", "netns", "exec", self.hosts[host].netns, "sysctl", "-q", "-w", f"{key}={value}"])

    # -- database ------------------------------------------------------------------------------

    def start_database(self) -> NetnsPostgres:
        self.db = NetnsPostgres(f"{self.prefix}-db", self.db_address, f"{self.subnet_prefix}.0/24")
        self.db.start()
        self.db.create_app_database("luigi_ha", "luigi_ha", self.db_password)
        return self.db

    # -- machines ------------------------------------------------------------------------------

    def make_key(self) -> None:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        shutil.copy(f"{self.key}.pub", self.workdir / "authorized_keys")
        os.chmod(self.workdir / "authorized_keys", 0o600)

    def boot(self, name: str) -> None:
        host = self.hosts[name]
        cgroups = [Path(f"/sys/fs/cgroup/{h}/{self.prefix}-{name}") for h in CGROUP_HIERARCHIES]
        for cg in cgroups:
            cg.mkdir(exist_ok=True)
            self.cgroups.append(cg)

        def enter_own_cgroup() -> None:  # runs in the child before exec
            for cg in cgroups:
                (cg / "cgroup.procs").write_text(str(os.getpid()))

        host.log = self.workdir / f"{name}.console.log"
        argv = [
            "systemd-nspawn", "-q", "-D", str(self.rootfs), "--volatile=overlay", "-b",
            f"--network-namespace-path=/run/netns/{host.netns}",
            "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--register=no", "--keep-unit",
            f"--machine={name}", "--console=pipe",
            f"--bind-ro={self.workdir / 'authorized_keys'}:/root/.ssh/authorized_keys",
        ]
        with open(host.log, "wb") as log:
            host.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=enter_own_cgroup)

    def wait_ssh(self, name: str, timeout: float = 60) -> float:
        def ready() -> bool:
            proc = self.hosts[name].proc
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name}: nspawn exited: {self.hosts[name].log.read_text()[-2000:]}")
            return self.ssh(name, "true", check=False, timeout=10).returncode == 0

        return wait_for(ready, timeout, interval=0.2, what=f"ssh into {name}")

    # -- commands ------------------------------------------------------------------------------

    def in_ctl(self, argv: Sequence[str], *, check: bool = True, timeout: float = 120,
               **kw) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.ctl, *argv], check=check, timeout=timeout, **kw)

    def ssh(self, name: str, command: str, *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.in_ctl(["ssh", "-i", str(self.key), *SSH_OPTS, f"root@{self.hosts[name].address}", command],
                           check=check, timeout=timeout)

    def http(self, url: str, *, data: str | None = None, timeout: float = 2.0) -> tuple[int, str]:
        """(status, body) of one HTTP request from the controller namespace; status 0 = no answer."""
        argv = ["curl", "-sS", "--max-time", str(timeout), "-o", "-", "-w", "\n%{http_code}"]
        if data is not None:
            argv += ["--data-urlencode", f"data={data}"]
        result = self.in_ctl([*argv, url], check=False, timeout=timeout + 5)
        body, _, code = result.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def rpc(self, host: str, method: str, payload: dict, timeout: float = 2.0) -> tuple[int, dict | None]:
        status, body = self.http(self.url(host, f"/api/{method}"), data=json.dumps(payload), timeout=timeout)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    # -- teardown ------------------------------------------------------------------------------

    def _container_init_pids(self, name: str) -> list[int]:
        pids: list[int] = []
        base = Path(f"/sys/fs/cgroup/systemd/{self.prefix}-{name}")
        for procs in base.glob("payload/init.scope/cgroup.procs"):
            pids += [int(p) for p in procs.read_text().split()]
        return pids

    def poweroff(self, name: str, timeout: float = 30) -> None:
        host = self.hosts[name]
        if host.proc is None or host.proc.poll() is not None:
            return
        host.proc.send_signal(signal.SIGTERM)  # nspawn halts the container cleanly
        try:
            host.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Killing nspawn would orphan the container: kill its init (gotcha d), then nspawn.
            for pid in self._container_init_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                host.proc.wait(10)
            except subprocess.TimeoutExpired:
                host.proc.kill()
                host.proc.wait(10)

    def close(self) -> None:
        for name in list(self.hosts):
            with contextlib.suppress(Exception):
                self.poweroff(name)
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.destroy()
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns], check=False)
        for cg in self.cgroups:
            if cg.exists():
                for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    cg.rmdir()


_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {ok, changed, unreachable, failed}}."""
    return {
        m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                     "failed": int(m.group(5))}
        for m in _RECAP.finditer(output)
    }
