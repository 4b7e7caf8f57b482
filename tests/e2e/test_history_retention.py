"""Task history is bounded: the leader deletes events older than ``history_retention_days``.

A real node on SQLite with the default retention (30 days): events 40 days old (written
straight into the table, as months of operation would have left them) disappear, today's stay,
and ``/history/by_task_id/<id>`` still answers.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.localcluster import LocalCluster
from scheduler.store.tables import task_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def _rpc(url: str, method: str, **args: Any) -> Any:
    body = urllib.parse.urlencode({"data": json.dumps(args)}).encode()
    with urllib.request.urlopen(f"{url}/api/{method}", data=body, timeout=10) as reply:
        return json.loads(reply.read())["response"]


def test_events_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    db = tmp_path / "luigi-ha.db"
    cluster = LocalCluster(
        tmp_path / "cluster", f"sqlite:///{db}", size=1, extra_config="[server]\nprune_interval = 0.5\n"
    )
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        leader = cluster.start()
        _rpc(leader.url, "add_task", worker="w1", task_id="Today_1", family="Today", status="PENDING")
        old = time.time() - 40 * 86400
        with engine.begin() as conn:
            conn.execute(
                sa.insert(task_events),
                [{"task_id": f"Old_{i}", "status": "DONE", "at": old + i, "epoch": 1} for i in range(1200)],
            )

        def old_rows() -> int:
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).where(task_events.c.task_id.like("Old_%"))).scalar_one()

        wait_for(lambda: old_rows() == 0, timeout=20, interval=0.1, what="the old history swept")
        history = _get(f"{leader.url}/history/by_task_id/Today_1")
        assert [event["status"] for event in history["events"]] == ["PENDING"]
    finally:
        cluster.stop()
        engine.dispose()
