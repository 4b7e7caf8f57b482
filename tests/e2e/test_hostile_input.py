"""Requests that used to give a 500 or a text body now get a 4xx JSON error, and hurt nothing.

Each case is one a fuzz of the HTTP boundary found; each runs against a real node process, which
must keep serving, keep its tasks and keep /metrics answering afterwards.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scheduler.localcluster import LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir: Path = tmp_path_factory.mktemp("hostile")
    cluster = LocalCluster(workdir, f"sqlite:///{workdir / 'state.db'}", size=1, lease_ttl=3)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def node(cluster: LocalCluster) -> Iterator[str]:
    url = cluster.nodes[0].url
    seeded = requests.post(f"{url}/api/add_task", timeout=5,
                           data={"data": json.dumps({"task_id": "Seed_1", "worker": "w", "family": "Seed"})})
    assert seeded.status_code == 200
    yield url


def assert_json_error(response: requests.Response, status: int, names: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert names in response.json()["error"]


def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def post(url: str, method: str, data: str, **kwargs: object) -> requests.Response:
    return requests.post(f"{url}/api/{method}", data={"data": data}, timeout=5, **kwargs)


def test_data_nested_a_thousand_levels_deep_is_a_400_not_a_recursion_error(node: str) -> None:
    deep = '{"task_id": "D_1", "worker": "w", "params": ' + "[" * 1000 + "]" * 1000 + "}"
    assert_json_error(post(node, "add_task", deep), 400, "nested too deeply")
    shallower = '{"task_id": "D_1", "worker": "w", "params": {"p": ' + "[" * 500 + "]" * 500 + "}}"
    assert_json_error(post(node, "add_task", shallower), 400, "nested too deeply")


def test_a_lone_surrogate_in_a_failed_tasks_family_is_refused_and_metrics_keep_answering(node: str) -> None:
    body = '{"task_id": "S_1", "family": "S\\ud800", "worker": "w", "status": "FAILED"}'
    assert_json_error(post(node, "add_task", body), 400, "lone surrogate")
    assert requests.get(f"{node}/metrics", timeout=5).status_code == 200
    failed = requests.get(f"{node}/api/task_list", timeout=5,
                          params={"data": json.dumps({"status": "FAILED", "upstream_status": ""})}).json()
    assert "S_1" not in failed["response"]


def test_an_unknown_form_charset_is_a_400_naming_it(node: str) -> None:
    r = requests.post(f"{node}/api/ping", data=b'data={"worker": "w"}', timeout=5,
                      headers={"Content-Type": "application/x-www-form-urlencoded; charset=bogus"})
    assert_json_error(r, 400, "unknown charset 'bogus'")


@pytest.mark.parametrize(("request_bytes", "names"), [
    (b"GET /api/ping?data=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "8190 bytes"),
    (b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", "8190 bytes"),
    (b"POST /api/ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    (b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", "HTTPS traffic"),
], ids=["url-over-8k", "header-over-8k", "bad-chunking", "bad-content-length", "tls-hello-on-http"])
def test_the_http_parsers_own_errors_are_json(node: str, request_bytes: bytes, names: str) -> None:
    status, headers, body = raw_exchange(node, request_bytes)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert names.lower() in error.lower(), error
    assert len(error) <= 300, "the rejected line is quoted only briefly"


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/visualiser", "/static/", "/static/../../etc/passwd",
                                  "/static/%2e%2e/%2e%2e/etc/passwd", "/static/visualiser/%00"])
def test_a_static_file_that_is_not_there_is_a_json_404(node: str, path: str) -> None:
    assert_json_error(requests.get(node + path, timeout=5), 404, "")
    assert requests.get(node + "/static/visualiser/index.html", timeout=5).status_code == 200


def test_after_all_of_it_the_node_serves_and_has_its_task(node: str) -> None:
    listed = requests.get(f"{node}/api/task_list", timeout=5,
                          params={"data": json.dumps({"status": "PENDING", "upstream_status": ""})}).json()
    assert "Seed_1" in listed["response"]
    assert requests.get(f"{node}/metrics", timeout=5).status_code == 200


def test_without_auth_the_node_warns_at_start_and_status_says_authentication_is_off(
    cluster: LocalCluster, node: str
) -> None:
    assert requests.get(f"{node}/status", timeout=5).json()["authentication"] == "off"
    start = [json.loads(line) for line in cluster.nodes[0].log_path.read_text().splitlines()
             if '"authentication_off"' in line]
    assert start and start[0]["level"] == "warning" and start[0]["listen"].startswith("127.0.0.1:")
