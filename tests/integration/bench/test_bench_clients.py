"""The benchmarks' simulated workers speak Luigi's protocol the same way whichever client they use.

``bench/throughput.py`` drives luigid and luigi-ha through one of three HTTP clients (libcurl,
``http.client``, ``requests``). Its figures mean something only if every client sends the same
calls and reads the same answers, so each one here registers and drains the same small graph
against a real luigi-ha node and must read the expected replies, and a refused call must raise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import CLIENTS, Procs, RpcError, make_client, start_ha_node


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("bench-clients")
    procs = Procs()
    try:
        url, _ = start_ha_node(procs, workdir, f"sqlite:///{workdir}/state.db")
        yield url
    finally:
        procs.stop_all()


@pytest.mark.parametrize("kind", sorted(CLIENTS))
def test_each_client_registers_hands_out_and_completes_a_task(node_url: str, kind: str) -> None:
    client = make_client(kind, node_url, timeout=30)
    worker = f"Worker(bench-client-{kind})"
    task_id = f"Extract_{kind}_1"
    try:
        client.rpc("add_worker", {"worker": worker, "info": [["workers", 1]]})
        # A body well over 1 KB, where libcurl would ask for "100 Continue" unless told not to.
        params = {"part": "x" * 2000}
        client.rpc("add_task", {"task_id": task_id, "status": "PENDING", "runnable": True, "worker": worker,
                                "family": "Extract", "params": params})
        reply = client.rpc("get_work", {"worker": worker, "host": "h", "assistant": False, "current_tasks": []})
        assert reply["task_id"] == task_id
        assert reply["task_params"] == params
        client.rpc("add_task", {"task_id": task_id, "status": "DONE", "worker": worker})
        listed = client.rpc("task_list", {"status": "DONE", "upstream_status": ""})
        assert listed[task_id]["status"] == "DONE"
    finally:
        client.close()


@pytest.mark.parametrize("kind", sorted(CLIENTS))
def test_each_client_raises_when_the_scheduler_refuses_a_call(node_url: str, kind: str) -> None:
    client = make_client(kind, node_url, timeout=30)
    try:
        with pytest.raises(RpcError, match="404"):
            client.rpc("no_such_method", {})
        # The connection stays usable after a refusal.
        assert client.rpc("ping", {"worker": f"Worker(bench-client-{kind})"}) == {"rpc_messages": []}
    finally:
        client.close()
