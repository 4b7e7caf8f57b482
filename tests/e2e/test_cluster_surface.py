"""What operators and tools see of a two-node cluster: roles, the standby's answers, the CLI,
metrics and logs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def pair(sqlite_url, make_cluster):
    cluster = make_cluster(sqlite_url, size=2, lease_ttl=3.0)
    leader = cluster.leader()
    standby = next(n for n in cluster.nodes if n is not leader)
    return cluster, leader, standby


def test_exactly_one_node_answers_leader_with_200(pair):
    cluster, leader, standby = pair
    assert requests.get(leader.url + "/leader", timeout=5).status_code == 200
    assert requests.get(standby.url + "/leader", timeout=5).status_code == 503
    assert requests.head(standby.url + "/leader", timeout=5).status_code == 503


def test_a_standby_refuses_the_task_api_with_503_retry_after_and_names_the_leader(pair):
    _, leader, standby = pair
    r = requests.post(standby.url + "/api/get_work", data={"data": json.dumps({"worker": "w"})}, timeout=5)
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    assert r.json()["leader"] == leader.node_id
    assert requests.get(standby.url + "/healthz", timeout=5).status_code == 200, "a standby with its DB is healthy"


def test_status_command_shows_each_nodes_role_epoch_and_lease(pair):
    cluster, leader, standby = pair
    result = cli("status", "--url", leader.url, "--url", standby.url, "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["node_id"]: row for row in json.loads(result.stdout)}
    assert rows[leader.node_id]["role"] == "leader"
    assert rows[standby.node_id]["role"] in ("standby", "following")
    assert rows[leader.node_id]["epoch"] == rows[standby.node_id]["lease"]["epoch"] >= 1
    assert rows[standby.node_id]["lease"]["holder_node"] == leader.node_id
    assert rows[standby.node_id]["lease"]["holder"].startswith(leader.node_id + ":"), "one holder per incarnation"
    assert rows[standby.node_id]["database_reachable"] is True


def test_switchover_command_hands_over_in_well_under_a_second(pair):
    cluster, leader, standby = pair
    result = cli("switchover", "--url", leader.url, "--url", standby.url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["released_by"] == leader.node_id
    assert report["new_leader"] == standby.node_id
    assert report["seconds"] < 1.0
    assert cluster.leaders() == [standby]


def test_switchover_sent_to_a_standby_is_refused_with_409(pair):
    _, _, standby = pair
    assert requests.post(standby.url + "/switchover", timeout=5).status_code == 409


def test_metrics_use_luigid_names_by_family_and_report_leadership(pair, luigi_runner):
    _, leader, standby = pair
    result = luigi_runner(leader.url).run("Top", "--width", "2", "--fan", "2", "--workers", "2")
    assert result.returncode == 0, result.output
    text = requests.get(leader.url + "/metrics", timeout=5).text
    assert 'luigi_task_done_total{family="Leaf"} 4.0' in text
    assert 'luigi_task_started_total{family="Top"} 1.0' in text
    assert 'luigi_tasks_success_total{family="Middle"} 2.0' in text
    assert "luigi_task_running 0.0" in text
    assert "luigi_pending_tasks 0.0" in text
    assert 'luigi_ha_rpc_duration_seconds_count{method="get_work"}' in text
    assert "luigi_ha_is_leader 1.0" in text
    assert "luigi_ha_is_leader 0.0" in requests.get(standby.url + "/metrics", timeout=5).text


def test_logs_are_json_lines_and_task_events_carry_the_task_id(pair, luigi_runner):
    _, leader, _ = pair
    luigi_runner(leader.url).run("Top", "--width", "1", "--fan", "1", "--workers", "1")
    events = [json.loads(line) for line in leader.log_path.read_text().splitlines() if line.startswith("{")]
    task_events = [e for e in events if e.get("event") == "task_status"]
    assert any(e["status"] == "DONE" and e["task_id"].startswith("Top_") for e in task_events)
    assert all(e["node_id"] == leader.node_id for e in task_events)


def test_a_restarted_leader_does_not_reclaim_its_old_lease_the_standby_takes_over(pair):
    cluster, leader, standby = pair
    leader.kill()
    leader.start()  # restarted at once, as systemd's Restart=on-failure would
    assert cluster.wait_for_leader(timeout=10) is standby
    assert not leader.is_leader()


def test_seconds_since_renew_is_computed_when_scraped(pair):
    _, leader, _ = pair
    values = [
        float(line.split(" ")[1])
        for line in requests.get(leader.url + "/metrics", timeout=5).text.splitlines()
        if line.startswith("luigi_ha_seconds_since_renew ")
    ]
    assert len(values) == 1 and 0.0 <= values[0] < 3.0
