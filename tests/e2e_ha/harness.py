"""Two real scheduler nodes behind a real HAProxy, for the HA end-to-end tests and run_drills.py.

HAProxy runs in the foreground (``haproxy -db -f cfg``) as our child and is stopped by its PID.
Its configuration is rendered from ``haproxy/haproxy.cfg.j2`` with ``deploy.render_haproxy_cfg``
(the same template Ansible deploys), with only the settings a test run needs changed: loopback
binds, no chroot/user switch/admin socket, logs on stderr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from deploy import render_haproxy_cfg
from scheduler.localcluster import LocalCluster, free_port

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLES = REPO / "examples"

LOCAL_HAPROXY = {
    "stats_socket": "",
    "haproxy_chroot": "",
    "haproxy_user": "",
    "haproxy_group": "",
    "log_target": "stderr format short",
}


def haproxy_check_timings() -> dict[str, str]:
    """The health-check settings of the template's defaults, as rendered (for reports)."""
    text = render_haproxy_cfg(**LOCAL_HAPROXY)
    found: dict[str, str] = {}
    m = re.search(r"default-server check (.*)", text)
    if m:
        words = m.group(1).split()
        found.update(dict(zip(words[::2], words[1::2], strict=False)))
    for key in ("timeout check", "timeout connect", "timeout server", "retry-on", "retries"):
        m = re.search(rf"^\s*{key} (.*)$", text, re.M)
        if m:
            found[key] = m.group(1).strip()
    return found


class HAProxyProcess:
    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.log = cfg.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HAProxyProcess:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        check = subprocess.run([binary, "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c refused {self.cfg}:\n{check.stdout}{check.stderr}")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(self.cfg)], stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class HACluster:
    """``cluster`` (LocalCluster of real nodes) + ``haproxy`` in front: workers use ``vip``."""

    cluster: LocalCluster
    haproxy: HAProxyProcess
    vip: str
    stats: str

    @property
    def node_urls(self) -> list[str]:
        return self.cluster.urls

    def wait_routed(self, timeout: float = 30.0) -> str:
        """Wait until the VIP reaches a leader; return its node id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = requests.get(self.vip + "/leader", timeout=0.5)
                if r.status_code == 200:
                    return r.json()["node_id"]
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the VIP {self.vip} reached no leader within {timeout}s:\n{self.haproxy.log.read_text()}")

    def stop(self) -> None:
        self.haproxy.stop()
        self.cluster.stop()


def start_ha_cluster(workdir: Path, cluster: LocalCluster) -> HACluster:
    """Put a real HAProxy in front of an already started ``cluster``."""
    workdir.mkdir(parents=True, exist_ok=True)
    frontend, stats = free_port(), free_port()
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(
        scheduler_nodes=[{"name": n.node_id, "address": "127.0.0.1", "port": n.port} for n in cluster.nodes],
        frontend_bind=f"127.0.0.1:{frontend}",
        stats_bind=f"127.0.0.1:{stats}",
        **LOCAL_HAPROXY,
    ))
    ha = HACluster(cluster, HAProxyProcess(cfg).start(), f"http://127.0.0.1:{frontend}", f"http://127.0.0.1:{stats}")
    try:
        ha.wait_routed()
    except BaseException:
        ha.haproxy.stop()
        raise
    return ha


# -- observing a failover from the outside --------------------------------------------------------


@dataclass
class VipWriter:
    """Writes (add_task of one DONE marker) through the VIP every 20 ms; remembers each answer."""

    vip: str
    samples: list[tuple[float, float, bool]] = field(default_factory=list)  # (sent, done, ok)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._payload = json.dumps({"task_id": f"VipMarker_{os.getpid()}_{id(self)}", "status": "DONE",
                                    "runnable": False, "family": "VipMarker", "worker": "e2e-vip-writer"})

    def start(self) -> VipWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    ok = session.post(self.vip + "/api/add_task", data={"data": self._payload},
                                      timeout=(0.5, 2.0)).status_code == 200
                except requests.RequestException:
                    ok = False
                self.samples.append((sent, time.monotonic(), ok))
                self._stop.wait(0.02)

    def recovered_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first 200 for a write sent after it."""
        for sent, done, ok in list(self.samples):
            if sent >= moment and ok:
                return done - moment
        return None

    def wait_recovered(self, moment: float, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seconds = self.recovered_after(moment)
            if seconds is not None:
                return seconds
            time.sleep(0.02)
        raise AssertionError(f"the VIP answered no write within {timeout}s of the failure")


def read_runs(runs_log: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    if runs_log.exists():
        for line in runs_log.read_text().splitlines():
            counts[line.split()[1]] += 1
    return counts


def wait_for_runs(runs_log: Path, n: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while sum(read_runs(runs_log).values()) < n:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the pipeline exited ({proc.returncode}) before {n} tasks ran")
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} tasks ran within {timeout}s")
        time.sleep(0.02)


def probe_env(workdir: Path, **extra: str) -> dict[str, str]:
    """Environment for a process running examples/drill_probe.py tasks."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(REPO)]),
        "DRILL_DATA": str(workdir / "data"),
        "DRILL_RUNS_LOG": str(workdir / "runs.log"),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def luigi_ha(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler.cli", *args]
