"""A property-based fuzz of a real node's HTTP boundary: nothing a client sends can hurt it.

Every RPC of the protocol gets arguments built from its own parameter names and from anything
else JSON can hold (deep nesting, huge numbers, NaN, NUL, lone surrogates, ids the node knows and
ids it does not), by GET query or POST form, sometimes with a hostile Content-Type; the other
routes get arbitrary paths, verbs and queries; the socket gets bytes that are not HTTP at all.
For all of it:

* no answer is a 5xx, and every error (every ``/api`` answer) is a JSON body;
* the node process stays alive and ``/metrics`` answers 200;
* the tasks seeded before the fuzz are all still there;
* a restart loads exactly the tasks the fuzz left in memory, so whatever was accepted was stored
  in a form the node can read back.

The CI run is small and derandomized (``LUIGI_HA_FUZZ_EXAMPLES`` examples per test, default 8);
``bench/fuzz_http.py --examples N`` runs the same suite long and random and prints the requests
per method and the 5xx found.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.core import RPC_METHODS
from scheduler.http import _SIGNATURES
from scheduler.localcluster import LocalCluster

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("LUIGI_HA_FUZZ_EXAMPLES", "8"))
LONG = "LUIGI_HA_FUZZ_EXAMPLES" in os.environ
REPORT = os.environ.get("LUIGI_HA_FUZZ_REPORT")

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not LONG,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

SEED_IDS = ["Seed_done_1", "Seed_pending_2", "Seed_failed_3", "Seed_batch_4"]
SEED_WORKER = "seed-worker"

#: What the fuzz sent and what came back, per method or route: for the long run's report.
SENT: Counter[str] = Counter()
SERVER_ERRORS: Counter[str] = Counter()


# -- what to send ------------------------------------------------------------------------------

hostile_text = st.sampled_from([
    "\ud800", "x\udfffy", "\x00", "NUL\x00id", "T" * 600, "", " ", "\\ud800", "☃", "\U0001f40d",
    "DONE", "PENDING", "FAILED", "RUNNING", "DISABLED", "BATCH_RUNNING", "UNKNOWN", "null", "{}", "[]",
])
texts = st.one_of(st.text(max_size=40), hostile_text, st.sampled_from([*SEED_IDS, SEED_WORKER]))
numbers = st.one_of(
    st.integers(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(texts, children, max_size=5),
    ),
    max_leaves=20,
)


def deeply_nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def arguments_for(method: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects keyed mostly by the method's own parameter names, with values of any JSON kind."""
    names = [p for p in list(_SIGNATURES[method].parameters)[1:] if p != "kwargs"] or ["worker"]
    own = st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))
    return st.one_of(
        own,
        st.builds(lambda a, b: {**a, **b}, own, st.dictionaries(texts, json_values, max_size=3)),
    )


def data_field(method: str) -> st.SearchStrategy[str]:
    """The text of Luigi's ``data`` field: mostly JSON objects, sometimes anything at all."""
    as_json = arguments_for(method).map(lambda value: json.dumps(value, allow_nan=True))
    return st.one_of(
        as_json, as_json, as_json,
        st.text(max_size=60),
        st.integers(min_value=60, max_value=3000).map(lambda d: '{"x": ' + deeply_nested(d) + "}"),
        json_values.map(lambda value: json.dumps(value, allow_nan=True)),
    )


content_types = st.sampled_from([
    None,
    "application/x-www-form-urlencoded; charset=bogus",
    "application/x-www-form-urlencoded; charset=ascii",
    "application/x-www-form-urlencoded; charset=utf-16",
    "multipart/form-data",
    "multipart/form-data; boundary=zzz",
    "application/json",
    "text/plain; charset=latin-1",
])


# -- the node ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    # remove_delay and worker_disconnect_delay long: nothing the fuzz leaves may be pruned before
    # the restart compares what is in memory with what was stored.
    cluster = LocalCluster(workdir, f"sqlite:///{workdir / 'state.db'}", size=1, lease_ttl=5, extra_config=(
        "[scheduler]\nremove_delay = 3600\nworker_disconnect_delay = 3600\nretry_delay = 3600\n"
    ))
    cluster.start()
    url = cluster.nodes[0].url
    call(url, "add_worker", {"worker": SEED_WORKER, "info": [["host", "h"]]})
    for task_id, status in zip(SEED_IDS, ["DONE", "PENDING", "FAILED", "PENDING"], strict=True):
        call(url, "add_task", {"worker": SEED_WORKER, "task_id": task_id, "family": task_id.split("_")[1],
                               "status": status, "params": {"n": task_id[-1]}, "deps": SEED_IDS[:1]})
    yield cluster
    cluster.stop()
    if REPORT:
        Path(REPORT).write_text(json.dumps({"sent": SENT, "server_errors": SERVER_ERRORS}, indent=1))


@pytest.fixture(scope="module")
def url(cluster: LocalCluster) -> str:
    return cluster.nodes[0].url


def call(url: str, method: str, arguments: dict[str, Any]) -> Any:
    r = requests.post(f"{url}/api/{method}", data={"data": json.dumps(arguments)}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["response"]


def all_tasks(url: str) -> dict[str, str]:
    """Every task id and its status, as the node's memory holds them."""
    tasks: dict[str, str] = {}
    for status in ("PENDING", "RUNNING", "DONE", "FAILED", "DISABLED", "BATCH_RUNNING", "UNKNOWN"):
        listed = call(url, "task_list", {"status": status, "upstream_status": "", "max_shown_tasks": 10**9})
        tasks.update({task_id: task["status"] for task_id, task in listed.items()})
    return tasks


SESSION = requests.Session()


def check(key: str, response: requests.Response, *, json_body: bool) -> None:
    SENT[key] += 1
    if response.status_code >= 500:
        SERVER_ERRORS[key] += 1
    assert response.status_code < 500, f"{key}: {response.status_code} {response.text[:300]}"
    if response.request.method == "HEAD":
        return  # no body to read
    if json_body or response.status_code >= 400:
        assert response.headers.get("Content-Type", "").startswith("application/json"), (key, response.headers)
        json.loads(response.text)


# -- the properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(RPC_METHODS))
@FUZZ
@given(data=st.data())
def test_no_rpc_argument_gets_a_server_error_or_a_body_that_is_not_json(url: str, method: str,
                                                                       data: st.DataObject) -> None:
    field = data.draw(data_field(method), label="data")
    if data.draw(st.booleans(), label="by POST"):
        content_type = data.draw(content_types, label="Content-Type")
        if content_type is None:
            response = SESSION.post(f"{url}/api/{method}", data={"data": field}, timeout=10)
        else:
            body = ("data=" + quote(field, safe="", errors="surrogatepass")).encode("utf-8", "surrogatepass")
            response = SESSION.post(f"{url}/api/{method}", data=body, timeout=10,
                                    headers={"Content-Type": content_type})
    else:
        encoded = quote(field.encode("utf-8", "surrogatepass"), safe="")
        response = SESSION.get(f"{url}/api/{method}?data={encoded}", timeout=10)
    check(method, response, json_body=True)


ROUTES = ["/status", "/leader", "/replica", "/healthz", "/metrics", "/history/by_task_id/", "/history", "/history/",
          "/static/", "/static/visualiser/", "/", "/api/", "/api", "/switchover", "/nowhere"]
VERBS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]


@FUZZ
@given(route=st.sampled_from(ROUTES), tail=st.one_of(st.just(""), st.text(max_size=30), st.sampled_from(SEED_IDS)),
       verb=st.sampled_from(VERBS), query=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3))
def test_no_route_path_or_verb_gets_a_server_error(url: str, route: str, tail: str, verb: str,
                                                   query: dict[str, str]) -> None:
    if route == "/switchover" and verb == "POST" and not tail:
        return  # a real handover; the drills test it
    path = route + quote(tail.encode("utf-8", "surrogatepass"), safe="/")
    response = SESSION.request(verb, url + path, params=query, timeout=10, allow_redirects=False)
    json_body = verb != "HEAD" and route in ("/status", "/leader", "/replica", "/healthz") and not tail
    check(f"{verb} {route}", response, json_body=json_body)


@FUZZ
@given(junk=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda verb, target, header: verb + b" " + target + b" HTTP/1.1\r\n" + header + b"\r\n\r\n",
              st.sampled_from([b"GET", b"POST", b"G\x00T", b"", b"BREW"]), st.binary(max_size=60),
              st.binary(max_size=120)),
))
def test_bytes_that_are_not_http_get_a_json_400_or_nothing(url: str, junk: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    SENT["raw bytes"] += 1
    if not data:
        return  # the node closed the connection without an answer: fine for bytes that are not a request
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status >= 500:
        SERVER_ERRORS["raw bytes"] += 1
    assert status < 500, data[:300]
    if status >= 400:
        assert b"content-type: application/json" in head.lower(), head
        json.loads(body)


def test_after_the_fuzz_the_node_is_alive_has_its_tasks_and_a_restart_loads_what_it_stored(
    cluster: LocalCluster, url: str
) -> None:
    node = cluster.nodes[0]
    assert node.alive()
    assert requests.get(url + "/metrics", timeout=10).status_code == 200
    before = all_tasks(url)
    assert set(SEED_IDS) <= before.keys()
    paused = call(url, "is_paused", {})

    node.stop()
    node.start()
    cluster.wait_for_leader(timeout=30)

    assert all_tasks(url) == before
    assert call(url, "is_paused", {}) == paused
    assert requests.get(url + "/metrics", timeout=10).status_code == 200
