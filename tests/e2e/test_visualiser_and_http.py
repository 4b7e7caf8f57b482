"""Luigi's own web visualiser works against a node, and bad input never hurts it.

The visualiser is served from the installed ``luigi`` package and calls ``../../api/<method>``
with GET and a ``data=<json>`` query; these tests make exactly those calls. The bad-input tests
send each kind of malformed request and check the node answers with a 4xx JSON error naming the
problem, keeps serving, and still has every task it had.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import requests

pytestmark = pytest.mark.e2e


@pytest.fixture
def node_with_pipeline(sqlite_url, make_cluster, luigi_runner):
    cluster = make_cluster(sqlite_url)
    url = cluster.nodes[0].url
    result = luigi_runner(url).run("Top", "--width", "2", "--fan", "2", "--workers", "2")
    assert result.returncode == 0, result.output
    return url


def ui_get(url: str, method: str, data: object | None = None) -> requests.Response:
    query = "" if data is None else json.dumps(data)
    return requests.get(f"{url}/api/{method}", params={"data": query}, timeout=5)


def test_root_redirects_relatively_to_the_visualiser_and_its_files_are_served(node_with_pipeline):
    url = node_with_pipeline
    r = requests.get(url + "/", allow_redirects=False, timeout=5)
    assert r.status_code == 302
    assert r.headers["Location"] == "static/visualiser/index.html"
    page = requests.get(url + "/static/visualiser/index.html", timeout=5)
    assert page.status_code == 200 and "visualiserApp" in page.text
    assert requests.get(url + "/static/visualiser/js/luigi.js", timeout=5).status_code == 200
    assert requests.head(url + "/", timeout=5).status_code == 204


def test_the_calls_the_visualiser_makes_on_page_load_answer_in_the_shapes_it_reads(node_with_pipeline):
    url = node_with_pipeline
    assert ui_get(url, "has_task_history", {}).json()["response"] is False
    assert ui_get(url, "is_pause_enabled", {}).json()["response"] == {"enabled": True}
    assert ui_get(url, "is_paused", {}).json()["response"] == {"paused": False}
    workers = ui_get(url, "worker_list", {}).json()["response"]
    assert workers and {"name", "state", "num_running", "num_pending", "num_uniques"} <= set(workers[0])
    assert isinstance(ui_get(url, "resource_list", {}).json()["response"], list)
    done = ui_get(url, "task_list", {"status": "DONE", "upstream_status": "", "search": ""}).json()["response"]
    assert len(done) == 7
    top_id, top = next((k, v) for k, v in done.items() if v["name"] == "Top")
    assert {"display_name", "status", "params", "priority", "workers", "last_updated"} <= set(top)
    graph = ui_get(url, "dep_graph", {"task_id": top_id, "include_done": True}).json()["response"]
    assert len(graph) == 7 and isinstance(graph[top_id]["deps"], list) and len(graph[top_id]["deps"]) == 2
    leaf_id = next(k for k, v in done.items() if v["name"] == "Leaf")
    inverse = ui_get(url, "inverse_dep_graph", {"task_id": leaf_id, "include_done": True}).json()["response"]
    assert top_id in inverse
    error = ui_get(url, "fetch_error", {"task_id": top_id}).json()["response"]
    assert error["taskId"] == top_id and error["taskFamily"] == "Top"


def test_the_pause_toggle_works_with_the_empty_data_the_visualiser_sends(node_with_pipeline):
    url = node_with_pipeline
    assert ui_get(url, "pause").status_code == 200  # sends "data=" exactly like jQuery does
    assert ui_get(url, "is_paused", {}).json()["response"] == {"paused": True}
    assert ui_get(url, "unpause").status_code == 200
    assert ui_get(url, "is_paused", {}).json()["response"] == {"paused": False}


@pytest.mark.parametrize(
    ("method", "body", "status", "names"),
    [
        ("no_such_method", {"data": "{}"}, 404, "no_such_method"),
        ("add_task", {"data": "{not json"}, 400, "not valid JSON"),
        ("add_task", {"data": "[1, 2]"}, 400, "JSON object"),
        ("set_task_status_message", {"data": json.dumps({"task_id": "x"})}, 400, "status_message"),
        ("set_task_status_message", {"data": json.dumps({"task_id": "x", "status_message": "m", "bogus": 1})},
         400, "bogus"),
        ("add_task", {"data": json.dumps({"task_id": "T_1", "worker": "w", "priority": "high"})}, 400, "priority"),
        ("add_task", {"data": json.dumps({"task_id": "T_1", "worker": "w", "deps": 7})}, 400, "deps"),
        ("get_work", {"data": json.dumps({"host": "h"})}, 400, "worker"),
        ("add_task", {"data": json.dumps({"task_id": "T_" + "x" * 600, "worker": "w"})}, 400, "the limit is 512"),
        ("add_task", {"data": json.dumps({"task_id": "T_1", "worker": "w", "deps": ["ok", "bad\u0000id"]})},
         400, "NUL"),
    ],
)
def test_bad_input_gets_a_4xx_json_error_naming_the_problem_and_loses_nothing(
    node_with_pipeline, method, body, status, names
):
    url = node_with_pipeline
    before = ui_get(url, "task_list", {"status": "DONE", "upstream_status": ""}).json()["response"]

    r = requests.post(f"{url}/api/{method}", data=body, timeout=5)

    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    assert names in r.json()["error"]
    after = ui_get(url, "task_list", {"status": "DONE", "upstream_status": ""}).json()["response"]
    assert after.keys() == before.keys()
    assert "T_1" not in ui_get(url, "task_list", {"status": "PENDING", "upstream_status": ""}).json()["response"]


def test_an_oversized_body_gets_413_json_and_the_node_keeps_serving(node_with_pipeline):
    url = node_with_pipeline
    huge = {"data": json.dumps({"task_id": "big", "status_message": "x" * (11 * 1024 * 1024)})}
    r = requests.post(f"{url}/api/set_task_status_message", data=huge, timeout=30)
    assert r.status_code == 413
    assert "too large" in r.json()["error"]
    assert ui_get(url, "is_paused", {}).status_code == 200


def test_an_unreachable_database_at_start_is_a_clear_message_and_a_nonzero_exit(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "scheduler", "--port", "0",
         "--db", f"postgresql://luigi:s3cret@127.0.0.1:{closed_port}/luigi"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "cannot reach the database" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout, "a password must never be printed"


def test_a_tasks_durable_history_is_served_as_json_newest_first(node_with_pipeline):
    url = node_with_pipeline
    done = ui_get(url, "task_list", {"status": "DONE", "upstream_status": ""}).json()["response"]
    top_id = next(k for k, v in done.items() if v["name"] == "Top")
    events = requests.get(f"{url}/history/by_task_id/{top_id}", timeout=5).json()["events"]
    statuses = [e["status"] for e in events]
    assert statuses[0] == "DONE"
    assert "RUNNING" in statuses and statuses[-1] == "PENDING"
    assert requests.get(f"{url}/history", timeout=5).status_code == 404
