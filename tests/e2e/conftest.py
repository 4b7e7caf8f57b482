"""Fixtures for end-to-end tests: real scheduler processes and real ``luigi`` worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent



@dataclass
class Run:
    """What a luigi invocation did: its exit code, output and the runs it recorded."""

    returncode: int
    output: str
    runs: list[tuple[str, str, float, float, int]]


@dataclass
class LuigiRunner:
    workdir: Path
    scheduler_url: str

    @property
    def runs_log(self) -> Path:
        return self.workdir / "runs.log"

    def env(self, **extra: str) -> dict[str, str]:
        client_cfg = self.workdir / "client.cfg"
        if not client_cfg.exists():
            client_cfg.write_text(
                "[core]\nrpc_retry_attempts = 30\nrpc_retry_wait = 1\nrpc_connect_timeout = 10\n\n"
                "[worker]\nwait_interval = 0.1\nwait_jitter = 0.1\nping_interval = 0.5\n"
            )
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]),
            "LUIGI_CONFIG_PATH": str(client_cfg),
            "E2E_DATA": str(self.workdir / "data"),
            "E2E_RUNS_LOG": str(self.runs_log),
            **extra,
        }

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "luigi", "--module", "pipelines", *args, "--scheduler-url", self.scheduler_url]

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self.env(**env))

    def run(self, *args: str, timeout: float = 120, **env: str) -> Run:
        proc = self.start(*args, **env)
        output, _ = proc.communicate(timeout=timeout)
        return Run(proc.returncode, output, self.read_runs())

    def read_runs(self) -> list[tuple[str, str, float, float, int]]:
        if not self.runs_log.exists():
            return []
        rows = []
        for line in self.runs_log.read_text().splitlines():
            family, task_id, start, end, pid = line.split(" ")
            rows.append((family, task_id, float(start), float(end), int(pid)))
        return rows


@pytest.fixture
def luigi_runner(tmp_path: Path) -> Callable[[str], LuigiRunner]:
    def factory(url: str) -> LuigiRunner:
        workdir = tmp_path / "luigi"
        workdir.mkdir(exist_ok=True)
        return LuigiRunner(workdir, url)

    return factory
