"""Real-process helpers for the deploy tests: stub scheduler nodes, HAProxy, a polling client.

Every process is started with ``subprocess.Popen`` in the foreground (``haproxy -db``,
``keepalived -n``) and stopped by its own PID, then waited for, so nothing is left to PID 1.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.waiting import wait_for  # noqa: F401 - re-exported for the tests

HERE = Path(__file__).resolve().parent
STUB = HERE / "stub_scheduler.py"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
    """Signal ``proc`` by its PID and reap it (SIGKILL if it does not exit in ``timeout``)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


class StubNode:
    """One stub scheduler process; leader while ``leader_file`` exists."""

    def __init__(
        self,
        name: str,
        leader_file: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        netns: str | None = None,
        always_leader: bool = False,
    ):
        self.name = name
        self.leader_file = leader_file
        self.host = host
        self.port = port
        self.netns = netns
        self.always_leader = always_leader
        self.proc: subprocess.Popen | None = None
        self.applied: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> StubNode:
        cmd = [
            sys.executable,
            str(STUB),
            "--name",
            self.name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--leader-file",
            str(self.leader_file),
        ]
        if self.always_leader:
            cmd.append("--leader")
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                word, _, rest = line.strip().partition(" ")
                if word == "LISTENING":
                    self.port = int(rest)
                    ready.set()
                elif word == "APPLIED":
                    self.applied.append(rest)

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"stub {self.name} did not start")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)
            if self.proc.stdout is not None:
                if self._reader is not None:
                    self._reader.join(5)
                self.proc.stdout.close()


class HAProxy:
    """``haproxy -db -f cfg`` in the foreground, optionally inside a network namespace."""

    def __init__(self, cfg: Path, netns: str | None = None, log: Path | None = None):
        self.cfg = cfg
        self.netns = netns
        self.log = log or cfg.with_suffix(".log")
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    def start(self) -> HAProxy:
        cmd = [shutil.which("haproxy") or "haproxy", "-db", "-f", str(self.cfg)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log_fh, stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None


@dataclass
class Sample:
    sent: float  # monotonic time the request was sent
    done: float  # monotonic time the answer (or error) arrived
    status: int | None  # HTTP status, None on a client-side error
    node: str | None
    request_id: str
    error: str = ""


@dataclass
class Poller:
    """Hammers ``url`` from a thread with a keep-alive session (like a Luigi worker), GET and POST."""

    url: str
    interval: float = 0.005
    timeout: float = 5.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        counter = itertools.count()
        with requests.Session() as session:
            while not self._stop.is_set():
                n = next(counter)
                rid = f"r{n}"
                sent = time.monotonic()
                try:
                    if n % 2:
                        resp = session.post(
                            self.url,
                            data={"data": '{"worker": "w1"}'},
                            headers={"X-Request-Id": rid},
                            timeout=self.timeout,
                        )
                    else:
                        resp = session.get(self.url, headers={"X-Request-Id": rid}, timeout=self.timeout)
                    node = None
                    if resp.status_code == 200:
                        node = resp.json().get("node")
                    self.samples.append(Sample(sent, time.monotonic(), resp.status_code, node, rid))
                except requests.RequestException as exc:
                    error = f"{type(exc).__name__}: {exc}"[:200]
                    self.samples.append(Sample(sent, time.monotonic(), None, None, rid, error))
                time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def first_from(self, node: str, after: float) -> Sample | None:
        for s in list(self.samples):
            if s.sent >= after and s.node == node:
                return s
        return None

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in list(self.samples) if start <= s.sent < end]


def summary(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    ms = sorted(v * 1000 for v in values)
    return f"n={len(ms)} min={ms[0]:.0f}ms p50={statistics.median(ms):.0f}ms max={ms[-1]:.0f}ms"


def run(cmd: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=timeout)


def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"lhprobe{os.getpid()}"
    result = run(["ip", "netns", "add", probe], check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    run(["ip", "netns", "del", probe], check=False)
    return None


class NetLab:
    """Hosts in their own network namespaces on one bridge (which lives in a namespace too).

    Topology B of shared/research/deploy-feasibility.md: ``lan`` holds ``br0``; every host gets
    ``eth0`` (a veth whose peer is a port of br0) with 10.200.0.<n>/24. Names carry the PID and
    a per-process counter, so parallel runs never clash; :meth:`destroy` deletes everything.
    """

    _seq = itertools.count()

    def __init__(self, subnet: str = "10.200.0"):
        self.tag = f"{os.getpid()}x{next(self._seq)}"
        self.subnet = subnet
        self.lan = f"lhlan{self.tag}"
        self.hosts: dict[str, str] = {}  # short name -> namespace name
        self.created: list[str] = []

    def ns(self, host: str) -> str:
        return self.hosts[host]

    def create_lan(self) -> None:
        run(["ip", "netns", "add", self.lan])
        self.created.append(self.lan)
        run(["ip", "-n", self.lan, "link", "set", "lo", "up"])
        run(["ip", "-n", self.lan, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.lan, "link", "set", "br0", "up"])

    def add_host(self, host: str, last_octet: int, nonlocal_bind: bool = False) -> str:
        ns = f"lh{host}{self.tag}"
        run(["ip", "netns", "add", ns])
        self.created.append(ns)
        self.hosts[host] = ns
        port = f"p{host}"
        run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.lan])
        run(["ip", "-n", self.lan, "link", "set", port, "master", "br0"])
        run(["ip", "-n", self.lan, "link", "set", port, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{self.subnet}.{last_octet}/24", "dev", "eth0"])
        if nonlocal_bind:
            # HAProxy on the BACKUP balancer binds the VIP it does not hold (yet).
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"])
        return ns

    def has_address(self, host: str, address: str) -> bool:
        out = run(["ip", "-n", self.ns(host), "-o", "-4", "addr", "show", "dev", "eth0"], check=False).stdout
        return f" {address}/" in out

    def destroy(self) -> None:
        for ns in reversed(self.created):
            run(["ip", "netns", "del", ns], check=False)
        self.created.clear()


def _kill_if_keepalived(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"keepalived" in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Keepalived:
    """``keepalived -n`` (no daemon) in a namespace, with its own pid files and log."""

    def __init__(self, conf: Path, netns: str, workdir: Path, name: str):
        self.conf, self.netns, self.name = conf, netns, name
        self.pidfile = workdir / f"{name}.pid"
        self.vrrp_pidfile = workdir / f"{name}.vrrp.pid"
        self.checkers_pidfile = workdir / f"{name}.checkers.pid"
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    def start(self) -> Keepalived:
        for f in (self.pidfile, self.vrrp_pidfile, self.checkers_pidfile):
            f.unlink(missing_ok=True)
        self._log_fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                shutil.which("keepalived") or "keepalived",
                "-n",
                "-l",
                "-D",
                "--vrrp",
                "-f",
                str(self.conf),
                "-p",
                str(self.pidfile),
                "-r",
                str(self.vrrp_pidfile),
                "-c",
                str(self.checkers_pidfile),
            ],
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.pid() is not None, 10, 0.02, f"{self.name} pid file")
        return self

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal keepalived by the PID from its pid file (the brief's way), then reap it."""
        if self.proc is not None and self.proc.poll() is None:
            pid = self.pid() or self.proc.pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, signal.SIGKILL)
        # keepalived's VRRP child normally exits with its parent; make sure no orphan is left.
        for pidfile in (self.vrrp_pidfile, self.checkers_pidfile):
            _kill_if_keepalived(pidfile)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
