"""The leader's batch writer (scheduler.store.writer), under a real lease on each real database.

PostgreSQL gets the one-round-trip script writer; the others the portable statement writer.
Both must keep the same contract: a batch lands whole or not at all, and only while the lease
row still names this holder and epoch.
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
from scheduler.store.tables import FENCE_FUNCTION, leases
from scheduler.store.writer import BatchWriter, PostgresScriptWriter, StatementWriter, open_writer
from tests.integration.store.helpers import changes, event, task_row

TIMINGS = LeaseTimings(ttl=30, renew_interval=5, renew_deadline=20)


@pytest.fixture
def lease(store: Store) -> LeaderLease:
    """The lease as the scheduler builds it (on PostgreSQL it fences with migration 0002's function)."""
    lease = LeaderLease(store.engine, "scheduler", "node-a:1:x", TIMINGS, table=leases, fence_function=FENCE_FUNCTION)
    assert lease.try_acquire() == 1
    return lease


@pytest.fixture
def writer(store: Store, lease: LeaderLease) -> Iterator[BatchWriter]:
    w = open_writer(store, lease)
    yield w
    w.close()


def commit(writer: BatchWriter, batch: object, epoch: int) -> None:
    """One batch through the writer, as the leader's event loop awaits it."""
    asyncio.run(writer.apply(batch, epoch))  # type: ignore[arg-type]


def take_over(store: Store, holder: str = "node-b:2:y") -> None:
    """What another node's acquire does to the lease row: a new holder and epoch."""
    with store.engine.begin() as conn:
        conn.execute(sa.update(leases).where(leases.c.name == "scheduler").values(holder=holder, epoch=2))


def test_postgres_gets_the_script_writer_fenced_by_the_stored_function_and_the_others_the_portable_one(
    store: Store, lease: LeaderLease, writer: BatchWriter
) -> None:
    if store.engine.dialect.name == "postgresql":
        assert type(writer) is PostgresScriptWriter
        assert lease.fence_statement() == "SELECT \"lh_fence\"('scheduler', 'node-a:1:x', 1)"
    else:
        assert type(writer) is StatementWriter


def test_a_batch_lands_whole_with_its_epoch(store: Store, writer: BatchWriter) -> None:
    commit(writer,
        changes(
            tasks={"A": task_row("A", "RUNNING"), "B(x='it''s')": task_row("B(x='it''s')")},
            workers={"w1": {"id": "w1"}},
            meta={"paused": True},
            events=[event("A", "RUNNING", 5.0)],
        ),
        1,
    )
    commit(writer, changes(tasks={"A": task_row("A", "DONE"), "B(x='it''s')": None}, workers={"w1": None}), 1)
    snap = store.load_all()
    assert snap.tasks == [task_row("A", "DONE")]
    assert (snap.workers, snap.meta) == ([], {"paused": True})
    assert [e["status"] for e in store.task_events("A")] == ["RUNNING"]
    assert store.max_epoch() == 1


def test_a_deposed_leaders_batch_is_refused_and_nothing_of_it_lands(store: Store, writer: BatchWriter) -> None:
    commit(writer, changes(tasks={"A": task_row("A")}), 1)
    take_over(store)
    with pytest.raises(FencedOut) as refused:
        commit(writer, changes(tasks={"A": None, "B": task_row("B")}, events=[event("B", "PENDING", 1.0)]), 1)
    assert (refused.value.found_holder, refused.value.found_epoch) == ("node-b:2:y", 2)
    assert store.load_all().tasks == [task_row("A")]
    assert store.task_events("B") == []


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_without_the_stored_function_the_anonymous_block_fences_the_same_way(store: Store) -> None:
    """A lease built without ``fence_function`` (any lease table, no migration needed)."""
    lease = LeaderLease(store.engine, "scheduler", "node-a:1:x", TIMINGS, table=leases)
    assert lease.try_acquire() == 1
    assert lease.fence_statement().startswith("DO ")
    writer = open_writer(store, lease)
    try:
        commit(writer, changes(tasks={"A": task_row("A")}), 1)
        take_over(store)
        with pytest.raises(FencedOut) as refused:
            commit(writer, changes(tasks={"B": task_row("B")}), 1)
    finally:
        writer.close()
    assert (refused.value.found_holder, refused.value.found_epoch) == ("node-b:2:y", 2)
    assert store.load_all().tasks == [task_row("A")]


def test_a_failed_batch_leaves_nothing_and_the_writer_goes_on(store: Store, writer: BatchWriter) -> None:
    commit(writer, changes(tasks={"A": task_row("A")}), 1)
    with pytest.raises(Exception, match="cannot store"):  # a status longer than the column
        commit(writer, changes(tasks={"B": task_row("B")}, events=[event("B", "X" * 40, 1.0)]), 1)
    commit(writer, changes(tasks={"C": task_row("C")}), 1)
    assert sorted(t["id"] for t in store.load_all().tasks) == ["A", "C"]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_database_error_inside_the_script_rolls_it_all_back(store: Store, writer: BatchWriter) -> None:
    with store.engine.begin() as conn:  # make the events insert fail on the server, after the task upsert
        conn.exec_driver_sql("ALTER TABLE lh_task_events ADD CONSTRAINT no_b CHECK (task_id <> 'B')")
    with pytest.raises(Exception, match="no_b"):
        commit(writer, changes(tasks={"B": task_row("B")}, events=[event("B", "PENDING", 1.0)]), 1)
    commit(writer, changes(tasks={"C": task_row("C")}), 1)  # the aborted transaction was rolled back
    assert [t["id"] for t in store.load_all().tasks] == ["C"]


@pytest.mark.parametrize("db_url", ["postgres", "mariadb"], indirect=True)
def test_a_batch_waits_for_a_takeover_in_progress_and_is_then_refused(store: Store, writer: BatchWriter) -> None:
    """The fence's share lock waits for the takeover's exclusive one, then re-reads the new epoch."""
    outcome: list[BaseException | None] = []
    with store.engine.connect() as takeover:
        with takeover.begin():
            takeover.execute(sa.update(leases).where(leases.c.name == "scheduler").values(holder="b", epoch=2))

            def write() -> None:
                try:
                    commit(writer, changes(tasks={"A": task_row("A")}), 1)
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
                    outcome.append(exc)

            thread = threading.Thread(target=write)
            thread.start()
            time.sleep(0.5)
            assert outcome == [], "the batch must wait while the takeover holds the lease row"
        thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], FencedOut)
    assert store.load_all().tasks == []


def test_past_the_renew_deadline_nothing_is_sent(store: Store, lease: LeaderLease, writer: BatchWriter) -> None:
    lease.release()
    with pytest.raises(FencedOut, match="does not hold the lease"):
        commit(writer, changes(tasks={"A": task_row("A")}), 1)
    assert store.load_all().tasks == []


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_commit_cancelled_mid_flight_is_abandoned_and_a_deposed_leaders_orphan_never_lands(
    store: Store, writer: BatchWriter
) -> None:
    """A leader that steps down cancels the commit in flight: the writer must not hang on it, must
    drop that connection (its outcome is unknown) and start afresh; and the script the server
    already received stays fenced: after the takeover it can only fail."""

    async def scenario() -> None:
        with store.engine.connect() as takeover, takeover.begin():
            takeover.execute(sa.update(leases).where(leases.c.name == "scheduler").values(holder="b", epoch=2))
            in_flight = asyncio.ensure_future(writer.apply(changes(tasks={"A": task_row("A")}), 1))
            await asyncio.sleep(0.3)
            assert not in_flight.done(), "the fence must wait for the takeover's row lock"
            in_flight.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(in_flight, 2)
        with pytest.raises(FencedOut):  # a new connection, refused by the new epoch
            await asyncio.wait_for(writer.apply(changes(tasks={"B": task_row("B")}), 1), 5)

    asyncio.run(scenario())
    assert store.load_all().tasks == []
