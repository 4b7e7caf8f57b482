"""``luigi-ha worker`` and ``luigi-ha run`` as systemd runs them: readiness and watchdog
notifications, SIGTERM drain, ``--pipeline`` from the config file, ``is-leader``.

These use a single SQLite node (fast); the failover behaviour is in test_ha_failover.py.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from scheduler.drill import expected_task_ids
from tests.e2e_ha.harness import EXAMPLES, REPO, luigi_ha, probe_env, read_runs

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CLIENT_CFG = "[worker]\nwait_interval = 0.1\nwait_jitter = 0.1\nping_interval = 0.3\n"


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET; collects the messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def seen(self, text: str) -> list[float]:
        return [t for t, m in self.messages if text in m.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_sigterm_drains_an_assistant_the_running_task_finishes_and_is_reported_then_it_exits(
    sqlite_url, make_cluster, tmp_path
):
    cluster = make_cluster(sqlite_url)
    url = cluster.nodes[0].url
    (tmp_path / "client.cfg").write_text(CLIENT_CFG)
    notify = NotifySocket(tmp_path / "notify.sock")
    env = probe_env(tmp_path, LUIGI_CONFIG_PATH=str(tmp_path / "client.cfg"), NOTIFY_SOCKET=str(notify.path),
                    WATCHDOG_USEC="400000")
    log = tmp_path / "assistant.log"
    with open(log, "wb") as out:
        assistant = subprocess.Popen(luigi_ha("worker", "--scheduler-url", url, "--module", "drill_probe"),
                                     stdout=out, stderr=subprocess.STDOUT, env=env)
    trigger = None
    try:
        deadline = time.monotonic() + 20
        while not notify.seen("READY=1"):
            assert time.monotonic() < deadline and assistant.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        trigger = subprocess.Popen(
            luigi_ha("run", "--scheduler-url", url, "--module", "drill_probe", "--workers", "0",
                     "DrillProbe", "--run-id", "drain", "--tasks", "4", "--seconds", "1.5"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        while '"task_started"' not in log.read_text():
            assert time.monotonic() < deadline + 20, log.read_text()[-3000:]
            time.sleep(0.02)
        sigterm_at = time.monotonic()
        assistant.send_signal(signal.SIGTERM)
        code = assistant.wait(timeout=20)
        exited_after = time.monotonic() - sigterm_at
        # The trigger is left alone with the rest of the pipeline: SIGTERM drains it too.
        time.sleep(0.5)
        assert trigger.poll() is None, "the trigger waits while tasks are pending"
        trigger.send_signal(signal.SIGTERM)
        trigger_output, _ = trigger.communicate(timeout=20)
    finally:
        notify.close()
        for p in (assistant, trigger):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    text = log.read_text()
    assert code == 0, text[-3000:]
    assert 0.5 < exited_after < 10, "it waited for the running task, and no longer"
    runs = read_runs(tmp_path / "runs.log")
    assert len(runs) == 1 and set(runs.values()) == {1}, "exactly the running task finished, no new one started"
    (task_id,) = runs
    done = requests.get(url + "/api/task_list", params={"data": json.dumps({"status": "DONE", "upstream_status": ""})},
                        timeout=5).json()["response"]
    assert task_id in done, "the drained task's completion was reported to the scheduler"
    assert text.count('"task_started"') == 1 and '"drain_requested"' in text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    started = next(e for e in events if e["event"] == "task_started")
    assert started["task_id"] == task_id and started["status"] == "RUNNING" and started["family"] == "ProbeTask"
    assert notify.seen("READY=1") and notify.seen("STOPPING=1")
    assert len(notify.seen("WATCHDOG=1")) >= 3, "WATCHDOG=1 every WATCHDOG_USEC/2 while the task ran"
    assert trigger.returncode == 1, "a drained trigger did not complete its pipeline"
    assert '"drain_requested"' in trigger_output


def test_run_pipeline_reads_module_task_and_date_from_the_config_file(sqlite_url, make_cluster, tmp_path):
    cluster = make_cluster(sqlite_url)
    data = tmp_path / "daily-data"
    cfg = tmp_path / "luigi-ha.cfg"
    cfg.write_text(
        f"[luigi-ha-worker]\nscheduler_url = {cluster.nodes[0].url}\nworkers = 3\n\n"
        "[pipeline:daily]\nmodule = daily_pipeline\ntask = DailyAggregations\n\n"
        f"[daily_pipeline]\ndata_dir = {data}\nhours = 6\n\n"
        "[worker]\nwait_interval = 0.1\nwait_jitter = 0.1\n"
    )
    env = probe_env(tmp_path)
    done = subprocess.run(luigi_ha("run", "--config", str(cfg), "--pipeline", "daily", "--date", "2026-11-23"),
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((data / "2026-11-23" / "daily_aggregations.json").read_text())
    assert result["date"] == "2026-11-23"
    assert len((data / "runs.log").read_text().splitlines()) == 6 + 6 + 1

    # Without --date: yesterday in UTC.
    done = subprocess.run(luigi_ha("run", "--config", str(cfg), "--pipeline", "daily"),
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    import datetime as dt

    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert (data / yesterday.isoformat() / "daily_aggregations.json").exists()


FAILING_PIPELINE = """
import luigi


class Breaks(luigi.Task):
    def output(self):
        return luigi.LocalTarget("{data}/breaks.done")

    def run(self):
        raise RuntimeError("this task always fails")


class Top(luigi.WrapperTask):
    def requires(self):
        return Breaks()
"""


@pytest.mark.parametrize("workers", ["1", "0"])
def test_run_exits_1_soon_when_a_task_of_the_pipeline_fails(sqlite_url, make_cluster, tmp_path, workers):
    cluster = make_cluster(sqlite_url)
    url = cluster.nodes[0].url
    (tmp_path / "failing_pipeline.py").write_text(FAILING_PIPELINE.format(data=tmp_path))
    (tmp_path / "client.cfg").write_text(CLIENT_CFG)
    env = probe_env(tmp_path, LUIGI_CONFIG_PATH=str(tmp_path / "client.cfg"))
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    cfg = tmp_path / "worker.cfg"
    cfg.write_text("[luigi-ha-worker]\nrun_idle_grace = 2\n")
    assistant = None
    if workers == "0":
        assistant = subprocess.Popen(luigi_ha("worker", "--scheduler-url", url, "--module", "failing_pipeline"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        started = time.monotonic()
        done = subprocess.run(luigi_ha("run", "--config", str(cfg), "--scheduler-url", url, "--module",
                                       "failing_pipeline", "Top", "--workers", workers),
                              capture_output=True, text=True, env=env, timeout=90)
        elapsed = time.monotonic() - started
    finally:
        if assistant is not None:
            assistant.terminate()
            assistant.wait(timeout=30)
    assert done.returncode == 1, done.stderr[-3000:]
    assert elapsed < 30, "a failed task ends the run; it does not wait for the scheduler's retries"
    assert '"ok": false' in done.stderr


def test_run_of_an_unknown_task_or_pipeline_is_a_usage_error(sqlite_url, make_cluster, tmp_path):
    cluster = make_cluster(sqlite_url)
    env = probe_env(tmp_path)
    done = subprocess.run(luigi_ha("run", "--scheduler-url", cluster.nodes[0].url, "--module", "drill_probe",
                                   "NoSuchTask"), capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "NoSuchTask" in done.stderr
    cfg = tmp_path / "c.cfg"
    cfg.write_text("[pipeline:a]\nmodule = m\ntask = T\n")
    done = subprocess.run(luigi_ha("run", "--config", str(cfg), "--pipeline", "zzz"), capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 2 and "[pipeline:zzz]" in done.stderr


def test_run_fails_fast_with_the_servers_message_when_the_scheduler_rejects_a_call(tmp_path):
    """A 400 is a bug: no 120 s of retries, exit non-zero at once, the server's message logged."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Rejecting(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps({"error": "add_task: status 'BOGUS' is not a Luigi status", "status": 400}).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Rejecting)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        started = time.monotonic()
        done = subprocess.run(
            luigi_ha("run", "--scheduler-url", f"http://127.0.0.1:{server.server_address[1]}", "--module",
                     "drill_probe", "DrillProbe", "--run-id", "x", "--tasks", "1"),
            capture_output=True, text=True, env=probe_env(tmp_path), timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 4
    assert time.monotonic() - started < 15
    assert "is not a Luigi status" in done.stderr and "HTTP 400" in done.stderr


def test_is_leader_exits_0_on_the_leader_and_1_elsewhere(sqlite_url, make_cluster):
    cluster = make_cluster(sqlite_url, size=2, lease_ttl=2.0)
    leader = cluster.leader()
    standby = next(n for n in cluster.nodes if n is not leader)
    assert subprocess.run(luigi_ha("is-leader", "--url", leader.url), cwd=REPO).returncode == 0
    assert subprocess.run(luigi_ha("is-leader", "--url", standby.url), cwd=REPO).returncode == 1
    assert subprocess.run(luigi_ha("is-leader", "--url", "http://127.0.0.1:9"), cwd=REPO).returncode == 1


def test_the_probe_pipeline_has_the_documented_shape():
    ids = expected_task_ids(EXAMPLES, "shape", 25)
    assert len(ids) == 25 + 3 + 1
