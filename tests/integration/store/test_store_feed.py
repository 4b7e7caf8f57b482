"""The committed-row feed: every fenced round stamps its rows, a standby reads what it missed.

Each test runs on SQLite, PostgreSQL (the one-script writer) and MariaDB (the portable writer),
through the same writer and lease the leader uses.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lease import FencedOut, LeaderLease, LeaseTimings
from scheduler.store import Store
from scheduler.store import feed as feed_module
from scheduler.store.tables import FENCE_FUNCTION, feed, leases, tombstones
from scheduler.store.writer import BatchWriter, open_writer
from tests.integration.store.helpers import changes, event, task_row

TIMINGS = LeaseTimings(ttl=30, renew_interval=5, renew_deadline=20)


@pytest.fixture
def lease(store: Store) -> LeaderLease:
    lease = LeaderLease(store.engine, "scheduler", "node-a:1:x", TIMINGS, table=leases, fence_function=FENCE_FUNCTION)
    assert lease.try_acquire() == 1
    return lease


@pytest.fixture
def writer(store: Store, lease: LeaderLease) -> Iterator[BatchWriter]:
    w = open_writer(store, lease)
    yield w
    w.close()


def commit(writer: BatchWriter, batch: object, epoch: int = 1) -> None:
    asyncio.run(writer.apply(batch, epoch))  # type: ignore[arg-type]


def ids(rows: list) -> list[str]:
    return sorted(row["id"] for row in rows)


def test_each_round_takes_the_next_sequence_and_a_reader_gets_only_what_came_after(
    store: Store, writer: BatchWriter
) -> None:
    assert store.feed_seq() == 0
    commit(writer, changes(tasks={"A": task_row("A"), "B": task_row("B")}, workers={"w1": {"id": "w1"}}))
    assert store.feed_seq() == 1
    commit(writer, changes(tasks={"B": task_row("B", "DONE")}, meta={"paused": True}))
    commit(writer, changes(events=[event("B", "DONE", 3.0)]))  # events alone are a round too
    assert store.feed_seq() == 3
    commit(writer, changes())  # nothing to write: no round at all
    assert store.feed_seq() == 3

    everything = store.feed_after(0)
    assert (everything.seq, everything.reload) == (3, False)
    assert ids(everything.batch.tasks) == ["A", "B"]
    assert ids(everything.batch.workers) == ["w1"]
    after_first = store.feed_after(1)
    assert after_first.batch.tasks == [task_row("B", "DONE")]
    assert (after_first.batch.workers, after_first.batch.meta) == ([], {"paused": True})
    assert store.feed_after(3).batch.empty


def test_deletions_leave_tombstones_and_a_row_created_again_outlives_its_tombstone(
    store: Store, writer: BatchWriter
) -> None:
    commit(writer, changes(tasks={"A": task_row("A"), "B": task_row("B")}, workers={"w1": {"id": "w1"}}))
    commit(writer, changes(tasks={"A": None}, workers={"w1": None}))
    gone = store.feed_after(1).batch
    assert (gone.task_deletes, gone.worker_deletes, gone.tasks, gone.workers) == (["A"], ["w1"], [], [])
    commit(writer, changes(tasks={"A": task_row("A", "DONE")}, workers={"w1": {"id": "w1"}}))
    back = store.feed_after(1).batch
    assert (back.task_deletes, back.worker_deletes) == ([], [])
    assert (back.tasks, ids(back.workers)) == ([task_row("A", "DONE")], ["w1"])


def test_a_deposed_leaders_round_takes_no_sequence_and_leaves_nothing(store: Store, writer: BatchWriter) -> None:
    commit(writer, changes(tasks={"A": task_row("A")}))
    with store.engine.begin() as conn:  # another node takes the lease over
        conn.execute(sa.update(leases).where(leases.c.name == "scheduler").values(holder="node-b:2:y", epoch=2))
    with pytest.raises(FencedOut):
        commit(writer, changes(tasks={"A": None, "B": task_row("B")}))
    assert store.feed_seq() == 1
    assert store.feed_after(0).batch.tasks == [task_row("A")]
    assert store.feed_after(1).batch.empty


def test_load_all_says_which_sequence_its_state_is_at(store: Store, writer: BatchWriter) -> None:
    commit(writer, changes(tasks={"A": task_row("A")}))
    commit(writer, changes(tasks={"B": task_row("B")}))
    snapshot = store.load_all()
    assert snapshot.seq == 2
    assert len(snapshot.tasks) == 2


def test_old_tombstones_are_pruned_and_a_reader_from_before_them_must_reload(
    store: Store, writer: BatchWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(writer, changes(tasks={"A": task_row("A"), "B": task_row("B")}))
    commit(writer, changes(tasks={"A": None}))
    with store.engine.begin() as conn:  # the tombstone is older than the retention
        conn.execute(sa.update(tombstones).values(at=time.time() - feed_module.TOMBSTONE_RETENTION - 60))
    monkeypatch.setattr(feed_module, "PRUNE_EVERY", 1)  # the next round prunes
    commit(writer, changes(tasks={"B": task_row("B", "DONE")}))
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tombstones)).scalar() == 0
        assert conn.execute(sa.select(feed.c.pruned_seq)).scalar() == 2
    assert store.feed_after(1).reload is True
    assert store.feed_after(2).reload is False
    assert store.feed_after(2).batch.tasks == [task_row("B", "DONE")]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_on_postgres_a_listener_is_woken_by_the_commit(store: Store, writer: BatchWriter) -> None:
    import psycopg2

    from lease.engine import driver_connect_kwargs

    listener = psycopg2.connect(**driver_connect_kwargs(store.engine))
    try:
        listener.autocommit = True
        listener.cursor().execute(f"LISTEN {feed_module.NOTIFY_CHANNEL}")
        commit(writer, changes(tasks={"A": task_row("A")}))
        commit(writer, changes(tasks={"B": task_row("B")}))
        deadline = time.monotonic() + 5
        while len(listener.notifies) < 2 and time.monotonic() < deadline:
            listener.poll()
            time.sleep(0.01)
        assert [n.payload for n in listener.notifies] == ["1", "2"]
        assert {n.channel for n in listener.notifies} == {feed_module.NOTIFY_CHANNEL}
    finally:
        listener.close()


@pytest.mark.parametrize("db_url", ["postgres", "mariadb"], indirect=True)
def test_two_transactions_stamping_rows_commit_in_the_order_of_their_sequences(store: Store) -> None:
    """No fence here: even two writers at once cannot commit sequence 2 before sequence 1 is
    visible, because the counter row's lock is held to the commit."""
    first_took = threading.Event()
    release_first = threading.Event()

    def slow_round() -> None:
        with store.engine.begin() as conn:
            seq = feed_module.next_seq(conn)
            first_took.set()
            release_first.wait(5)
            assert seq == 1

    slow = threading.Thread(target=slow_round)
    slow.start()
    assert first_took.wait(5)
    started = time.monotonic()
    done = threading.Thread(target=lambda: store.apply(changes(tasks={"B": task_row("B")}), epoch=1))
    done.start()
    done.join(0.5)
    assert done.is_alive(), "the second round must wait for the first's counter lock"
    release_first.set()
    slow.join(5)
    done.join(5)
    assert time.monotonic() - started >= 0.5
    assert store.feed_seq() == 2
    assert store.feed_after(1).batch.tasks == [task_row("B")]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_on_postgres_the_portable_path_notifies_too(store: Store) -> None:
    import psycopg2

    from lease.engine import driver_connect_kwargs

    listener = psycopg2.connect(**driver_connect_kwargs(store.engine))
    try:
        listener.autocommit = True
        listener.cursor().execute(f"LISTEN {feed_module.NOTIFY_CHANNEL}")
        store.apply(changes(tasks={"A": task_row("A")}), epoch=1)
        deadline = time.monotonic() + 5
        while not listener.notifies and time.monotonic() < deadline:
            listener.poll()
            time.sleep(0.01)
        assert [n.payload for n in listener.notifies] == ["1"]
    finally:
        listener.close()
