"""The failover-proof scheduler client: what is retried, for how long, where to, and what fails at once.

Every test talks real HTTP to a scripted stub scheduler on a loopback port (see conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from luigi.rpc import RemoteScheduler, RPCError

from worker.client import (
    HARemoteScheduler,
    RetryPolicy,
    SchedulerRejected,
    SchedulerUnavailable,
    parse_urls,
)

FAST = RetryPolicy(budget=10.0, ping_budget=1.0, connect_timeout=0.5, read_timeout=2.0,
                   backoff_initial=0.02, backoff_max=0.1)


def ok(response: object) -> tuple[int, str]:
    return 200, json.dumps({"response": response})


def error(status: int, message: str) -> tuple[int, str]:
    return status, json.dumps({"error": message, "status": status})


def client(*urls: str, policy: RetryPolicy = FAST, retry_log: Path | None = None) -> HARemoteScheduler:
    return HARemoteScheduler(list(urls), policy, retry_log=str(retry_log) if retry_log else "")


def test_it_is_luigis_remote_scheduler_with_luigis_rpc_stubs():
    sch = client("http://127.0.0.1:1")
    assert isinstance(sch, RemoteScheduler)
    assert HARemoteScheduler.get_work is RemoteScheduler.get_work
    assert HARemoteScheduler._request is RemoteScheduler._request


def test_a_503_is_retried_with_backoff_until_the_scheduler_answers(stub_server, tmp_path):
    stub = stub_server(error(503, "this node is not the leader"), error(503, "this node is not the leader"), ok(None))
    retry_log = tmp_path / "retries.log"
    sch = client(stub.url, retry_log=retry_log)

    assert sch.add_worker("w1", [["workers", 1]]) is None

    assert stub.methods == ["add_worker"] * 3
    assert sch.retries == 2
    lines = [json.loads(line) for line in retry_log.read_text().splitlines()]
    assert [(row["method"], row["status"], row["attempt"]) for row in lines] == [("add_worker", 503, 1),
                                                                               ("add_worker", 503, 2)]
    assert "not the leader" in lines[0]["error"]


@pytest.mark.parametrize("status", [502, 504])
def test_a_proxys_502_and_504_are_retried(stub_server, status):
    stub = stub_server(error(status, "proxy says no"), ok({"rpc_messages": []}))
    assert client(stub.url).ping(worker="w1") == {"rpc_messages": []}
    assert len(stub.requests) == 2


def test_connection_refused_is_retried_until_the_scheduler_listens(stub_server, closed_port):
    sch = client(f"http://127.0.0.1:{closed_port}")
    result: dict[str, object] = {}

    def call() -> None:
        started = time.monotonic()
        result["value"] = sch.add_worker("w1", [])
        result["seconds"] = time.monotonic() - started

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.6)
    stub = stub_server(ok("up"), port=closed_port)
    caller.join(timeout=10)

    assert result["value"] == "up"
    assert result["seconds"] >= 0.5
    assert sch.retries >= 2
    assert stub.methods == ["add_worker"]


def test_a_dropped_connection_is_retried(stub_server):
    stub = stub_server(("close",), ok("second"))
    assert client(stub.url).add_worker("w1", []) == "second"
    assert len(stub.requests) == 2


def test_a_reply_slower_than_the_read_timeout_is_retried(stub_server):
    stub = stub_server(("sleep", 1.5, *ok("late")), ok("fresh"))
    policy = RetryPolicy(budget=10, connect_timeout=0.5, read_timeout=0.3, backoff_initial=0.01, backoff_max=0.05)
    started = time.monotonic()
    assert client(stub.url, policy=policy).add_worker("w1", []) == "fresh"
    assert 0.3 <= time.monotonic() - started < 1.4


def test_a_400_fails_at_once_with_the_servers_message(stub_server):
    stub = stub_server(error(400, "add_task: got an unexpected keyword argument 'bogus'"))
    sch = client(stub.url)
    started = time.monotonic()

    with pytest.raises(SchedulerRejected) as raised:
        sch.set_task_status_message(task_id="T_1", status_message="hi")

    assert time.monotonic() - started < 0.5
    assert len(stub.requests) == 1 and sch.retries == 0
    assert isinstance(raised.value, RPCError)
    assert raised.value.status == 400
    assert raised.value.server_message == "add_task: got an unexpected keyword argument 'bogus'"
    assert "HTTP 400" in str(raised.value) and "unexpected keyword argument 'bogus'" in str(raised.value)


@pytest.mark.parametrize("status", [401, 404, 409, 413, 500])
def test_other_statuses_are_not_retried_either(stub_server, status):
    stub = stub_server(error(status, f"nope {status}"), ok("never reached"))
    with pytest.raises(SchedulerRejected, match=f"nope {status}"):
        client(stub.url).add_worker("w1", [])
    assert len(stub.requests) == 1


def test_a_non_json_error_body_is_quoted_in_the_exception(stub_server):
    stub = stub_server((418, "<html>teapot</html>"))
    with pytest.raises(SchedulerRejected, match="HTTP 418: <html>teapot</html>"):
        client(stub.url).add_worker("w1", [])


def test_the_total_time_budget_bounds_the_retries(stub_server):
    stub = stub_server(error(503, "still no leader"))
    policy = RetryPolicy(budget=1.0, connect_timeout=0.5, read_timeout=1.0, backoff_initial=0.02, backoff_max=0.2)
    started = time.monotonic()

    with pytest.raises(SchedulerUnavailable) as raised:
        client(stub.url, policy=policy).add_worker("w1", [])

    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.0
    assert len(stub.requests) > 3
    assert "budget 1s" in str(raised.value) and "still no leader" in str(raised.value)
    assert isinstance(raised.value, RPCError), "luigi's worker code expects RPCError"


def test_waits_grow_exponentially_with_jitter_and_never_exceed_the_cap(stub_server):
    stub = stub_server(error(503, "x"))
    policy = RetryPolicy(budget=1.2, connect_timeout=0.5, read_timeout=1.0, backoff_initial=0.01, backoff_max=0.15)
    with pytest.raises(SchedulerUnavailable):
        client(stub.url, policy=policy).add_worker("w1", [])
    times = [t for _, _, t in stub.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) < 0.15 + 0.1
    assert len(set(round(g, 3) for g in gaps)) > len(gaps) // 2, "jittered waits should differ"
    assert len(stub.requests) > 12, "short waits: far more tries than luigi's 3"


def test_ping_has_its_own_short_budget(stub_server):
    stub = stub_server(error(503, "x"))
    policy = RetryPolicy(budget=30, ping_budget=0.4, connect_timeout=0.5, read_timeout=1.0, backoff_initial=0.02,
                         backoff_max=0.1)
    started = time.monotonic()
    with pytest.raises(SchedulerUnavailable):
        client(stub.url, policy=policy).ping(worker="w1")
    assert time.monotonic() - started < 1.5
    assert set(stub.methods) == {"ping"}


def test_several_urls_a_503_moves_to_the_next_and_the_client_stays_there(stub_server):
    standby = stub_server(error(503, "this node is not the leader"))
    leader = stub_server(ok("from the leader"))
    sch = client(standby.url, leader.url)

    assert sch.add_worker("w1", []) == "from the leader"
    assert sch.add_worker("w1", []) == "from the leader"
    assert sch.current_url == leader.url
    assert len(standby.requests) == 1, "after the move the standby is not asked again"
    assert len(leader.requests) == 2


def test_several_urls_a_refused_connection_moves_to_the_next_at_once(stub_server, closed_port):
    leader = stub_server(ok("up"))
    sch = client(f"http://127.0.0.1:{closed_port}", leader.url)
    started = time.monotonic()
    assert sch.add_worker("w1", []) == "up"
    assert time.monotonic() - started < 0.5
    assert sch.current_url == leader.url


def test_several_urls_rotation_wraps_around_while_the_leader_moves(stub_server):
    a = stub_server(ok("a1"), error(503, "a lost the lease"))
    b = stub_server(error(503, "b is standby"), ok("b leads now"))
    sch = client(a.url, b.url)
    assert sch.add_worker("w1", []) == "a1"
    assert sch.add_worker("w1", []) == "b leads now"
    assert sch.current_url == b.url


def test_get_work_keeps_luigis_null_semantics_it_asks_again(stub_server):
    work = {"n_pending_tasks": 0, "n_unique_pending": 0, "n_pending_last_scheduled": 0, "running_tasks": [],
            "task_id": None, "worker_state": "active"}
    stub = stub_server(ok(None), ok(None), ok(work))
    assert client(stub.url).get_work(worker="w1", host="h") == work
    assert stub.methods == ["get_work"] * 3


def test_get_work_null_three_times_is_luigis_rpc_error(stub_server):
    stub = stub_server(ok(None))
    with pytest.raises(RPCError, match="null response"):
        client(stub.url).get_work(worker="w1", host="h")
    assert len(stub.requests) == 3


def test_other_methods_accept_a_null_response(stub_server):
    stub = stub_server(ok(None))
    assert client(stub.url).add_task(worker="w1", task_id="T_1", status="PENDING") is None
    assert len(stub.requests) == 1


def test_the_arguments_are_luigis_full_form_encoded_call(stub_server):
    stub = stub_server(ok(None))
    client(stub.url).add_task(worker="w1", task_id="T_1", status="DONE", runnable=False)
    method, args, _ = stub.requests[0]
    assert method == "add_task"
    assert args["task_id"] == "T_1" and args["status"] == "DONE" and args["runnable"] is False
    assert "retry_policy_dict" in args and "batch_id" in args, "defaults filled on the client side"


def test_urls_come_repeated_comma_or_space_separated_without_duplicates():
    assert parse_urls(["http://a:1", "http://b:2,http://c:3", "http://a:1  http://d:4"]) == [
        "http://a:1", "http://b:2", "http://c:3", "http://d:4"]
    assert parse_urls(None) == [] and parse_urls("") == []


def test_a_policy_with_a_negative_value_is_refused():
    with pytest.raises(ValueError, match="budget"):
        RetryPolicy(budget=-1)
    with pytest.raises(ValueError):
        HARemoteScheduler([], FAST)
