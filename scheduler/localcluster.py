"""Scheduler node processes on this machine: start, find the leader, kill, restart.

Used by the demo, the end-to-end tests, the failover drills and the benchmarks, so all of them
exercise real ``luigi-ha scheduler`` processes the same way. Processes are always ended by the
PID we started (never by name).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NodeProcess:
    """One ``luigi-ha scheduler`` child process."""

    node_id: str
    port: int
    config_path: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    ca_file: str | None = None  # set when the node serves HTTPS ([server] tls_cert) signed by this CA

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    @property
    def _verify(self) -> str | bool:
        return self.ca_file or True

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        argv = [sys.executable, "-m", "scheduler.cli", "scheduler", "--config", str(self.config_path),
                "--host", "127.0.0.1", "--port", str(self.port), "--node-id", self.node_id]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, **self.env},
                                     start_new_session=True)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to release the lease."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: a clean stop that releases the lease."""
        if self.proc is None:
            return
        if self.alive():
            self.signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def is_leader(self, timeout: float = 0.5) -> bool:
        try:
            return requests.get(self.url + "/leader", timeout=timeout, verify=self._verify).status_code == 200
        except requests.RequestException:
            return False

    def responds(self, timeout: float = 0.5) -> bool:
        try:
            requests.get(self.url + "/healthz", timeout=timeout, verify=self._verify)
            return True
        except requests.RequestException:
            return False


@dataclass
class LocalCluster:
    """N scheduler nodes sharing one database, each a real process on a loopback port."""

    workdir: Path
    db_url: str
    size: int = 2
    lease_ttl: float = 5.0
    extra_config: str = ""
    nodes: list[NodeProcess] = field(default_factory=list)
    ca_file: str | None = None  # the nodes serve HTTPS (extra_config sets [server] tls_cert/tls_key)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "luigi-ha.cfg"
        self.config_path.write_text(
            "[database]\n"
            f"connection = {self.db_url}\n"
            "auto_upgrade = true\n\n"
            "[ha]\n"
            f"lease_ttl = {self.lease_ttl}\n\n"
            "[logging]\nformat = json\n\n" + self.extra_config
        )
        names = "abcdefghijklmnopqrstuvwxyz"
        self.nodes = [
            NodeProcess(f"node-{names[i]}", free_port(), self.config_path, self.workdir / f"node-{names[i]}.log",
                        ca_file=self.ca_file)
            for i in range(self.size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, wait: float = 30.0) -> NodeProcess:
        """Start every node; return the leader once there is one and every node answers HTTP."""
        for node in self.nodes:
            node.start()
        leader = self.wait_for_leader(timeout=wait)
        deadline = time.monotonic() + wait
        while not all(n.responds() for n in self.nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("not every scheduler node answered HTTP in time")
            time.sleep(0.02)
        return leader

    def leaders(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.alive() and n.is_leader()]

    def leader(self) -> NodeProcess | None:
        found = self.leaders()
        return found[0] if found else None

    def wait_for_leader(self, timeout: float = 30.0, exclude: NodeProcess | None = None) -> NodeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node is not exclude and node.alive() and node.is_leader(timeout=0.3):
                    return node
            dead = [n for n in self.nodes if n.proc is not None and not n.alive() and n is not exclude]
            if dead and len(dead) == len([n for n in self.nodes if n is not exclude]):
                logs = "\n".join(n.log_path.read_text()[-1500:] for n in dead)
                raise RuntimeError(f"every scheduler node exited:\n{logs}")
            time.sleep(0.02)
        raise TimeoutError(f"no leader within {timeout}s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
