"""Fencing: a write commits only inside a transaction that proved, under a shared lock on the
lease row, that its holder and epoch still own an unexpired lease.

"A" is the old leader, "B" the new one. A's monotonic clock is usually frozen (FakeClock) to play
a leader that was paused and does not know it: then only the database can stop its writes.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from lease_testlib import LEASE, LONG, SHORT, FakeClock, make_engine, scratch_table, wait_until, written

from lease import FencedOut, LeaseTimings, check_fence

# B's budget (renew_deadline, 3 s) must outlast the time the tests keep it waiting for A's lock.
PATIENT = LeaseTimings(ttl=5.0)


def _take_over_from(a, make_lease, engine, timings=LONG):
    """Let A's lease expire by the database's clock, then have B acquire it (epoch 2)."""
    time.sleep(a.timings.ttl + 0.15)
    b = make_lease(engine, "B", timings)
    assert b.try_acquire() == 2
    return b


def test_a_fenced_transaction_of_the_current_holder_commits(engine, make_lease):
    writes = scratch_table(engine)
    a = make_lease(engine, "A", LONG)
    assert a.try_acquire() == 1

    with engine.begin() as conn:
        a.fence(conn)
        conn.execute(sa.insert(writes).values(holder="A", epoch=a.epoch, note="ok"))

    assert written(engine, writes) == [("A", 1, "ok")]


def test_a_stale_epoch_is_fenced_out_and_its_writes_in_the_same_transaction_roll_back(engine, make_lease):
    writes = scratch_table(engine)
    a = make_lease(engine, "A", SHORT, monotonic=FakeClock())  # A was paused: it still believes
    assert a.try_acquire() == 1
    b = _take_over_from(a, make_lease, engine)
    assert a.is_held()

    with pytest.raises(FencedOut) as caught, engine.begin() as conn:
        conn.execute(sa.insert(writes).values(holder="A", epoch=1, note="written before the check"))
        a.fence(conn)
        conn.execute(sa.insert(writes).values(holder="A", epoch=1, note="never reached"))

    assert written(engine, writes) == []
    err = caught.value
    assert (err.expected_holder, err.expected_epoch, err.found_holder, err.found_epoch) == ("A", 1, "B", 2)
    assert "expected holder 'A' epoch 1" in str(err) and "found holder 'B' epoch 2" in str(err)

    with engine.begin() as conn:  # the new holder's writes go through
        b.fence(conn)
        conn.execute(sa.insert(writes).values(holder="B", epoch=2, note="new leader"))
    assert written(engine, writes) == [("B", 2, "new leader")]


def test_an_expired_lease_fences_out_its_holder_even_if_nobody_took_it(engine, make_lease):
    a = make_lease(engine, "A", SHORT, monotonic=FakeClock())
    assert a.try_acquire() == 1
    time.sleep(SHORT.ttl + 0.15)

    with (
        pytest.raises(FencedOut, match=r"found holder 'A' epoch 1, expired") as caught,
        engine.begin() as conn,
    ):
        a.fence(conn)
    assert caught.value.remaining < 0


def test_fence_refuses_without_asking_the_database_once_the_renew_deadline_passed(engine, make_lease):
    clock = FakeClock()
    a = make_lease(engine, "A", LONG, monotonic=clock)
    assert a.try_acquire() == 1
    clock.advance(LONG.deadline)

    with pytest.raises(FencedOut, match="does not hold the lease"), engine.begin() as conn:
        a.fence(conn)
    assert a.read().remaining > 20  # the database alone would still have accepted the write


def test_check_fence_names_a_missing_lease_row(engine):
    with pytest.raises(FencedOut, match="found no lease row"), engine.begin() as conn:
        check_fence(conn, "lh_leases", "no-such-lease", "A", 1)


def test_check_fence_takes_the_table_or_its_name(engine, make_lease):
    a = make_lease(engine, "A", LONG)
    assert a.try_acquire() == 1
    with engine.begin() as conn:
        check_fence(conn, "lh_leases", LEASE, "A", 1)
        check_fence(conn, a.table, LEASE, "A", 1)
        with pytest.raises(FencedOut):
            check_fence(conn, a.table, LEASE, "A", 2)  # a future epoch is as wrong as a past one


def test_a_takeover_waits_for_an_open_fenced_transaction_and_later_writes_of_the_old_holder_fail(engine, make_lease):
    """On PostgreSQL and MariaDB the fence's shared row lock blocks the takeover's UPDATE; on SQLite
    the fenced transaction's BEGIN IMMEDIATE write lock blocks the takeover's BEGIN IMMEDIATE."""
    writes = scratch_table(engine)
    a = make_lease(engine, "A", SHORT, monotonic=FakeClock())
    assert a.try_acquire() == 1

    in_flight = engine.connect()
    txn = in_flight.begin()
    a.fence(in_flight)
    in_flight.execute(sa.insert(writes).values(holder="A", epoch=1, note="in flight"))
    time.sleep(SHORT.ttl + 0.15)  # A's lease has expired by the database's clock

    b = make_lease(engine, "B", PATIENT)
    outcome: dict[str, float | int | None] = {}

    def take_over() -> None:
        outcome["epoch"] = b.try_acquire()
        outcome["done"] = time.monotonic()

    thief = threading.Thread(target=take_over)
    started = time.monotonic()
    thief.start()
    time.sleep(0.7)
    assert thief.is_alive(), f"the takeover did not wait for the fenced transaction: {outcome}"

    committed = time.monotonic()
    txn.commit()
    in_flight.close()
    thief.join(timeout=10)

    assert outcome["epoch"] == 2
    assert outcome["done"] - started >= 0.65
    assert outcome["done"] - committed < 0.5, "the takeover should proceed right after the commit"
    assert written(engine, writes) == [("A", 1, "in flight")]  # committed before epoch 2 existed

    with pytest.raises(FencedOut, match="found holder 'B' epoch 2"), engine.begin() as conn:
        a.fence(conn)
        conn.execute(sa.insert(writes).values(holder="A", epoch=1, note="too late"))
    assert written(engine, writes) == [("A", 1, "in flight")]


def test_a_fence_check_waits_for_an_uncommitted_takeover_and_then_fails(server_engine, make_lease):
    """The other order: the takeover's UPDATE holds the row; the old holder's fence check waits
    for it and then sees the new epoch (PostgreSQL re-reads the updated row, InnoDB's locking read
    reads the latest committed version)."""
    engine = server_engine
    writes = scratch_table(engine)
    a = make_lease(engine, "A", SHORT, monotonic=FakeClock())
    assert a.try_acquire() == 1
    time.sleep(SHORT.ttl + 0.15)

    leases = a.table
    takeover = engine.connect()
    txn = takeover.begin()  # a takeover caught between its UPDATE and its COMMIT
    moved = takeover.execute(
        sa.update(leases).where(leases.c.name == LEASE, leases.c.epoch == 1).values(holder="B", epoch=2)
    )
    assert moved.rowcount == 1

    outcome: dict[str, object] = {}

    def old_leader_writes() -> None:
        try:
            with engine.begin() as conn:
                a.fence(conn)
                conn.execute(sa.insert(writes).values(holder="A", epoch=1, note="racing"))
            outcome["result"] = "committed"
        except FencedOut as exc:
            outcome["result"] = exc
        outcome["done"] = time.monotonic()

    writer = threading.Thread(target=old_leader_writes)
    writer.start()
    time.sleep(0.5)
    assert writer.is_alive(), f"the fence check did not wait for the takeover: {outcome}"
    committed = time.monotonic()
    txn.commit()
    takeover.close()
    writer.join(timeout=10)

    assert isinstance(outcome["result"], FencedOut), outcome
    assert outcome["result"].found_epoch == 2
    assert outcome["done"] - committed < 0.5
    assert written(engine, writes) == []


def test_a_frozen_ex_leader_in_an_open_fenced_transaction_cannot_block_a_takeover_for_long(server_url, make_lease):
    """The server disconnects a session idle in a transaction (PostgreSQL
    idle_in_transaction_session_timeout, MariaDB idle_transaction_timeout), which releases the
    share lock a frozen leader would otherwise hold forever. Its transaction never commits."""
    frozen_engine = make_engine(server_url, statement_timeout=1.0)  # idle-in-transaction limit: 2 s
    engine = make_engine(server_url)
    try:
        writes = scratch_table(engine)
        a = make_lease(frozen_engine, "A", SHORT, monotonic=FakeClock())
        assert a.try_acquire() == 1
        frozen = frozen_engine.connect()
        txn = frozen.begin()
        a.fence(frozen)
        frozen.execute(sa.insert(writes).values(holder="A", epoch=1, note="frozen"))
        opened = time.monotonic()
        # ... and A never says another word.

        time.sleep(SHORT.ttl + 0.15)
        b = make_lease(engine, "B", PATIENT)
        assert b.try_acquire() == 2
        waited = time.monotonic() - opened
        # The lease expired after 1 s, but B had to wait for the server to cut A off at 2 s.
        assert 1.8 <= waited < 2.9, f"takeover after {waited:.2f}s"

        with pytest.raises(sa.exc.DBAPIError):
            txn.commit()  # the server already ended A's session: nothing of A's commits
        frozen.close()
        assert wait_until(lambda: written(engine, writes) == [], timeout=1)
    finally:
        frozen_engine.dispose()
        engine.dispose()
