"""A database lost while serving: writes get 503 (never a false 200) until it returns, then the
node recovers by itself, without a restart, with its state intact."""

from __future__ import annotations

import json
import time

import pytest
import requests

pytestmark = pytest.mark.e2e


def add_task(url: str, task_id: str) -> requests.Response:
    payload = {"task_id": task_id, "worker": "w1", "status": "PENDING", "family": "T", "runnable": True}
    return requests.post(f"{url}/api/add_task", data={"data": json.dumps(payload)}, timeout=15)


def test_database_restart_gives_503_then_recovery_without_a_node_restart(postgres_server, make_cluster):
    db_url = postgres_server.create_database("outage")
    cluster = make_cluster(db_url, lease_ttl=3.0)
    node = cluster.nodes[0]
    assert add_task(node.url, "T_before").status_code == 200

    postgres_server.stop()
    try:
        r = add_task(node.url, "T_during")
        assert r.status_code == 503
        assert r.headers.get("Retry-After")
        assert "error" in r.json()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and requests.get(node.url + "/healthz", timeout=5).status_code == 200:
            time.sleep(0.1)
        assert requests.get(node.url + "/healthz", timeout=5).status_code == 503
        assert requests.get(node.url + "/leader", timeout=5).status_code == 503
    finally:
        postgres_server.start()

    cluster.wait_for_leader(timeout=30)
    assert node.alive(), "the node must recover without a restart"
    assert add_task(node.url, "T_after").status_code == 200
    pending = requests.get(f"{node.url}/api/task_list",
                           params={"data": json.dumps({"status": "PENDING", "upstream_status": ""})},
                           timeout=10).json()["response"]
    assert {"T_before", "T_after"} <= set(pending)
    assert "T_during" not in pending, "a request answered 503 must not have been applied"
