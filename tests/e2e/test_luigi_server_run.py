"""luigid's own entry point, ``luigi.server.run``, serves luigi-ha's core unchanged.

It calls ``scheduler.load()`` at start and ``scheduler.dump()`` at exit, around Luigi's tornado
API handlers; a real ``luigi`` CLI pipeline then runs against it over HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from scheduler.localcluster import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import sys
    import luigi.server
    from scheduler.core import Scheduler
    luigi.server.run(api_port=int(sys.argv[1]), address="127.0.0.1", scheduler=Scheduler())
    """
)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={{}}", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def test_luigi_server_run_serves_a_real_pipeline(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "E2E_DATA": str(tmp_path), "E2E_RUNS_LOG": str(tmp_path / "runs.log")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests" / "e2e"), env.get("PYTHONPATH", "")])
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=tmp_path, env=env)
    try:
        wait_for(lambda: _answers(port), timeout=20, interval=0.1, what="luigi.server.run answers")
        luigi_cli = Path(sys.executable).with_name("luigi")
        run = subprocess.run(
            [
                str(luigi_cli),
                "--module",
                "pipelines",
                "Top",
                "--workers",
                "2",
                "--scheduler-host",
                "127.0.0.1",
                "--scheduler-port",
                str(port),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "This progress looks :)" in run.stdout + run.stderr
        families = [line.split()[0] for line in (tmp_path / "runs.log").read_text().splitlines()]
        assert "Top" in families and "Leaf" in families
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=20)
    assert code == 0  # the exit handler's dump() ran without error
