"""A crash loses nothing: kill -9 the scheduler mid-pipeline, start it again, finish the run.

An independent client keeps writing while the pipeline runs and records every write the node
acknowledged (HTTP 200). After the crash and restart each acknowledged write must be there,
because the node answers only after its group commit.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
import requests

pytestmark = pytest.mark.e2e


class AckRecorder(threading.Thread):
    """Registers tasks ``Ack_<n>`` one by one and keeps the ids the node acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acked: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            task_id = f"Ack_{n}"
            payload = {"task_id": task_id, "worker": "ack-recorder", "status": "PENDING", "runnable": False,
                       "family": "Ack", "params": {"n": str(n)}}
            try:
                r = requests.post(f"{self.url}/api/add_task", data={"data": json.dumps(payload)}, timeout=2)
                if r.status_code == 200:
                    self.acked.append(task_id)
                    n += 1
            except requests.RequestException:
                time.sleep(0.05)


def task_ids(url: str, status: str) -> set[str]:
    r = requests.get(f"{url}/api/task_list", params={"data": json.dumps({"status": status, "upstream_status": ""})},
                     timeout=10)
    return set(r.json()["response"])


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_kill_9_mid_pipeline_then_restart_loses_no_acknowledged_state_and_the_rerun_completes(
    db, request, make_cluster, luigi_runner
):
    db_url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    cluster = make_cluster(db_url)
    node = cluster.nodes[0]
    runner = luigi_runner(node.url)
    recorder = AckRecorder(node.url)
    recorder.start()

    first = runner.start("SlowPipeline", "--count", "40", "--seconds", "0.2", "--workers", "4")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(task_ids(node.url, "DONE")) < 10:
        time.sleep(0.05)
    done_before = task_ids(node.url, "DONE")
    acked_before_kill = list(recorder.acked)
    assert len(done_before) >= 10 and acked_before_kill

    node.kill()
    time.sleep(0.5)
    node.start()
    cluster.wait_for_leader(timeout=30)
    recorder.stop.set()
    recorder.join(timeout=10)

    pending_after = task_ids(node.url, "PENDING")
    assert set(recorder.acked) <= pending_after, "an acknowledged add_task was lost"
    assert done_before <= task_ids(node.url, "DONE"), "a DONE task was lost"

    first.communicate(timeout=180)
    rerun = runner.run("SlowPipeline", "--count", "40", "--seconds", "0.2", "--workers", "4", timeout=180)
    assert rerun.returncode == 0, rerun.output
    slow_runs = Counter(task_id for family, task_id, *_ in runner.read_runs() if family == "Slow")
    assert len(slow_runs) == 40, "every task of the pipeline ran"
    assert max(slow_runs.values()) == 1, f"tasks ran twice: {[t for t, n in slow_runs.items() if n > 1]}"
