"""Failures name the database and the cause, never the password, and come back quickly."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from lease import create_engine
from scheduler.store import Store, StoreError
from tests.integration.store.helpers import changes, task_row
from tests.support.dbservers import free_port


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_an_unreachable_database_raises_store_error_without_the_password(scheme: str) -> None:
    url = f"{scheme}://luigi:s3cret-Pa55@127.0.0.1:{free_port()}/state?password=also-s3cret"
    engine = create_engine(url)
    store = Store(engine)
    started = time.monotonic()
    for call in (lambda: store.apply(changes(tasks={"A": task_row("A")}), epoch=1), store.load_all, store.counts):
        with pytest.raises(StoreError) as caught:
            call()
        message = str(caught.value)
        assert "s3cret" not in message and "***" in message, message
        assert "127.0.0.1" in message and "failed on" in message
    assert store.ping() is False
    assert "s3cret" not in repr(store)
    assert time.monotonic() - started < 10
    engine.dispose()


def test_ping_answers_in_time_when_the_server_accepts_but_never_replies() -> None:
    """A hung server (SIGSTOP, a dead VM behind a live socket) must not hang the health check."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        engine = create_engine(f"postgresql://luigi@127.0.0.1:{blackhole.getsockname()[1]}/state")
        store = Store(engine, ping_timeout=0.3)
        probes_before = _probes()
        started = time.monotonic()
        assert store.ping() is False
        assert store.ping() is False  # waits on the same stuck probe instead of starting another
        assert time.monotonic() - started < 1.5
        assert _probes() <= probes_before + 1
        engine.dispose()


def _probes() -> int:
    return sum(t.name == "store-ping" for t in threading.enumerate())
