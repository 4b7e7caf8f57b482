"""A scheduler message sent before a SIGKILL failover is delivered and answered after it.

Two real nodes on one SQLite file; the worker side speaks Luigi's protocol over HTTP: its task
accepts messages, the visualiser's ``send_scheduler_message`` queues one, the leader is killed,
and the new leader hands the message to the worker's next ping and returns the task's answer.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from scheduler.localcluster import LocalCluster

pytestmark = pytest.mark.e2e


def _rpc(url: str, method: str, **args: Any) -> Any:
    body = urllib.parse.urlencode({"data": json.dumps(args)}).encode()
    with urllib.request.urlopen(f"{url}/api/{method}", data=body, timeout=10) as reply:
        return json.loads(reply.read())["response"]


def test_a_message_sent_before_a_sigkill_failover_is_answered_after_it(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", f"sqlite:///{tmp_path}/luigi-ha.db", size=2, lease_ttl=1.0)
    try:
        first = cluster.start()
        _rpc(
            first.url,
            "add_task",
            worker="w1",
            task_id="Listen_1",
            family="Listen",
            status="PENDING",
            accepts_messages=True,
        )
        assert _rpc(first.url, "get_work", worker="w1")["task_id"] == "Listen_1"
        sent = _rpc(first.url, "send_scheduler_message", worker="w1", task="Listen_1", content="scale to 3")
        message_id = sent["message_id"]

        first.kill()
        second = cluster.wait_for_leader(timeout=15, exclude=first)

        delivered = _rpc(second.url, "ping", worker="w1")["rpc_messages"]
        assert delivered == [
            {
                "name": "dispatch_scheduler_message",
                "kwargs": {"task_id": "Listen_1", "message_id": message_id, "content": "scale to 3"},
            }
        ]
        assert _rpc(second.url, "ping", worker="w1")["rpc_messages"] == []  # delivered once
        _rpc(second.url, "add_scheduler_message_response", task_id="Listen_1", message_id=message_id, response="ok")
        answer = _rpc(second.url, "get_scheduler_message_response", task_id="Listen_1", message_id=message_id)
        assert answer == {"response": "ok"}
    finally:
        cluster.stop()
