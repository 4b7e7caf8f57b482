"""luigid's failure e-mails, sent by the leader through Luigi's own notification code.

A real node process (SQLite) and a real SMTP server (aiosmtpd on loopback). The settings are
luigid's own sections in the node's config file: ``[email]``, ``[smtp]``, ``[batch_email]``
and ``[scheduler] batch_emails``.
"""

from __future__ import annotations

import email
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from scheduler.localcluster import LocalCluster, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

RECEIVER = "ops@example.com"
OWNER = "owner@example.com"


class Inbox:
    """Every message the SMTP server accepted: (recipients, text)."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content)
        parts = [str(message["Subject"])]
        for part in message.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_payload(decode=True).decode("utf-8", "replace"))
        self.messages.append((list(envelope.rcpt_tos), "\n".join(parts)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def _config(smtp_port: int, *, batch: bool) -> str:
    return (
        "[server]\nprune_interval = 0.5\n\n"
        f"[scheduler]\nretry_count = 1\nbatch_emails = {str(batch).lower()}\n\n"
        f"[email]\nreceiver = {RECEIVER}\nforce_send = true\nsender = luigi@example.com\n\n"
        f"[smtp]\nhost = 127.0.0.1\nport = {smtp_port}\nno_tls = true\ntimeout = 2\n\n"
        "[batch_email]\nemail_interval = 0\n"
    )


def _rpc(url: str, method: str, **args: Any) -> Any:
    body = urllib.parse.urlencode({"data": json.dumps(args)}).encode()
    with urllib.request.urlopen(f"{url}/api/{method}", data=body, timeout=10) as reply:
        assert reply.status == 200
        return json.loads(reply.read())["response"]


@pytest.fixture
def node_with(tmp_path: Path) -> Iterator[Any]:
    clusters: list[LocalCluster] = []

    def start(config: str) -> str:
        cluster = LocalCluster(tmp_path / "cluster", f"sqlite:///{tmp_path}/luigi-ha.db", size=1, extra_config=config)
        clusters.append(cluster)
        return cluster.start().url

    yield start
    for cluster in clusters:
        cluster.stop()


def _fail_task(url: str, task_id: str = "Load_2026_11_23") -> None:
    _rpc(url, "add_task", worker="w1", task_id=task_id, family="Load", params={"date": "2026-11-23"}, status="PENDING")
    _rpc(
        url,
        "add_task",
        worker="w1",
        task_id=task_id,
        family="Load",
        status="FAILED",
        expl='"disk full"',
        owners=[OWNER],
        runnable=False,
    )


def test_a_disabled_task_is_emailed_to_the_receiver(smtp: tuple[int, Inbox], node_with: Any) -> None:
    port, inbox = smtp
    url = node_with(_config(port, batch=False))
    _fail_task(url)
    assert _rpc(url, "task_list", status="DISABLED", upstream_status="")  # retry_count = 1 disabled it
    wait_for(lambda: inbox.messages, timeout=15, interval=0.05, what="the DISABLED e-mail")
    time.sleep(1.0)  # nothing else follows
    assert len(inbox.messages) == 1
    recipients, text = inbox.messages[0]
    assert recipients == [RECEIVER]
    assert "DISABLED Load_2026_11_23 due to excessive failures" in text


def test_batch_emails_arrive_after_prune_grouped(smtp: tuple[int, Inbox], node_with: Any) -> None:
    port, inbox = smtp
    url = node_with(_config(port, batch=True))
    _fail_task(url)
    _rpc(
        url,
        "announce_scheduling_failure",
        worker="w1",
        task_name="Extract(date=2026-11-23)",
        family="Extract",
        params={"date": "2026-11-23"},
        expl="complete() raised",
        owners=[OWNER],
    )
    wait_for(
        lambda: {RECEIVER, OWNER} <= {r for rs, _ in inbox.messages for r in rs},
        timeout=15,
        interval=0.05,
        what="the batch e-mails of the next prune",
    )
    for _recipients, text in inbox.messages:
        assert "Load(date=2026-11-23) (1 failure, 1 disable)" in text  # grouped per task
        assert "disk full" in text  # the failure's explanation
        assert "Extract(date=2026-11-23) (1 scheduling failure)" in text and "complete() raised" in text


def test_an_smtp_server_down_costs_no_rpc_an_error(node_with: Any) -> None:
    url = node_with(_config(free_port(), batch=False))  # nobody listens there
    started = time.monotonic()
    _fail_task(url)
    _fail_task(url, "Load_2026_11_24")
    assert time.monotonic() - started < 2.0  # the RPCs did not wait for SMTP
    assert len(_rpc(url, "task_list", status="DISABLED", upstream_status="")) == 2
    assert _rpc(url, "ping", worker="w1") == {"rpc_messages": []}  # and the node still serves


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10) as reply:
        assert reply.status == 200


def test_a_pending_batch_is_sent_on_switchover_and_lost_with_a_crashed_leader(
    smtp: tuple[int, Inbox], tmp_path: Path
) -> None:
    port, inbox = smtp
    config = _config(port, batch=True).replace("email_interval = 0", "email_interval = 60")  # no prune sends
    cluster = LocalCluster(
        tmp_path / "cluster", f"sqlite:///{tmp_path}/luigi-ha.db", size=2, lease_ttl=1.0, extra_config=config
    )
    try:
        first = cluster.start()
        _fail_task(first.url, "Load_graceful")
        _post(f"{first.url}/switchover")  # a graceful step-down sends the batch before handing over
        wait_for(lambda: inbox.messages, timeout=15, interval=0.05, what="the batch sent at switchover")
        assert any("(1 failure, 1 disable)" in text for _, text in inbox.messages)
        second = cluster.wait_for_leader(timeout=15, exclude=first)
        sent = len(inbox.messages)

        _fail_task(second.url, "Load_crashed")
        second.kill()  # SIGKILL: its unsent batch dies with it
        third = cluster.wait_for_leader(timeout=15, exclude=second)
        _post(f"{third.url}/switchover")  # the new leader's batch is empty: nothing to send
        time.sleep(1.5)
        assert len(inbox.messages) == sent
    finally:
        cluster.stop()
