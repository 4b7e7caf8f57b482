"""The lease protocol on every database (SQLite, real PostgreSQL, real MariaDB).

Acquire, renew, release and expiry, as two nodes "A" and "B" see them through the database.
Expiry is always decided by the database's clock; stepping down by the node's own monotonic clock.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from lease_testlib import LEASE, LONG, SHORT, FakeClock

from lease import LeaderLease, LeaseTimings


def test_first_acquire_wins_with_epoch_1(engine, make_lease):
    a = make_lease(engine, "A", LONG)

    assert a.try_acquire() == 1
    assert a.is_held() and a.epoch == 1

    record = a.read()
    assert (record.holder, record.epoch) == ("A", 1)
    assert LONG.ttl - 1.0 < record.remaining <= LONG.ttl  # expires_at = db now + ttl


def test_second_holder_cannot_acquire_an_unexpired_lease(engine, make_lease):
    a, b = make_lease(engine, "A", LONG), make_lease(engine, "B", LONG)
    assert a.try_acquire() == 1

    assert b.try_acquire() is None
    assert not b.is_held() and b.epoch is None
    record = b.read()
    assert (record.holder, record.epoch) == ("A", 1)  # the failed attempt changed nothing


def test_after_expiry_another_holder_acquires_with_the_next_epoch_and_the_old_one_is_deposed(engine, make_lease):
    clock = FakeClock()
    a = make_lease(engine, "A", SHORT, monotonic=clock)  # A's clock is frozen: a paused VM sees no time pass
    b = make_lease(engine, "B", LONG)
    assert a.try_acquire() == 1
    assert b.try_acquire() is None

    time.sleep(SHORT.ttl + 0.15)  # A stopped renewing (paused, partitioned): its row expires

    assert b.try_acquire() == 2
    assert a.is_held()  # A's own clock says all is well ...
    assert a.renew() is False  # ... but the database says it was deposed
    assert not a.is_held() and a.epoch is None
    a.release()  # A's release cannot free B's lease either
    assert (b.read().holder, b.read().epoch) == ("B", 2)
    assert b.renew()


def test_renew_extends_expiry_by_ttl_on_the_database_clock_and_keeps_the_epoch(engine, make_lease):
    a = make_lease(engine, "A", LeaseTimings(ttl=2.0))
    assert a.try_acquire() == 1
    first = a.read()
    time.sleep(0.3)

    assert a.renew()

    second = a.read()
    assert second.epoch == 1
    assert second.expires_at - first.expires_at == pytest.approx(0.3, abs=0.2)
    assert second.remaining == pytest.approx(2.0, abs=0.2)


def test_renewing_keeps_the_lease_past_its_ttl(engine, make_lease):
    a, b = make_lease(engine, "A", SHORT), make_lease(engine, "B", SHORT)
    assert a.try_acquire() == 1
    end = time.monotonic() + 1.2 * SHORT.ttl
    while time.monotonic() < end:
        time.sleep(SHORT.interval)
        assert a.renew()
        assert b.try_acquire() is None

    assert a.is_held() and a.read().epoch == 1


def test_release_lets_another_holder_acquire_at_once(engine, make_lease):
    a, b = make_lease(engine, "A", LONG), make_lease(engine, "B", LONG)  # would not expire for 30 s
    assert a.try_acquire() == 1
    assert b.try_acquire() is None

    started = time.perf_counter()
    a.release()
    assert not a.is_held()
    assert b.try_acquire() == 2
    elapsed = time.perf_counter() - started

    assert elapsed < 0.5, f"release -> acquire took {elapsed:.3f}s"
    assert (b.read().holder, b.read().epoch) == ("B", 2)


def test_is_held_turns_false_at_the_renew_deadline_while_the_row_is_still_unexpired(engine, make_lease):
    clock = FakeClock()
    timings = LeaseTimings(ttl=30.0, renew_interval=2.0, renew_deadline=10.0)
    a = make_lease(engine, "A", timings, monotonic=clock)
    assert a.try_acquire() == 1

    clock.advance(9.9)
    assert a.is_held()
    assert a.deadline_remaining() == pytest.approx(0.1)
    clock.advance(0.1)  # 10 s on A's clock without a successful renew

    assert not a.is_held()
    assert a.deadline_remaining() == 0.0
    assert a.read().remaining > 25.0  # the database would still honour the lease for ~30 s
    assert a.renew() is False  # a lapsed term is never revived ...
    assert a.read().remaining > 25.0  # ... and the refused renew did not touch the row
    assert a.try_acquire() == 2  # coming back means a new term with a new fencing token


def test_the_renew_deadline_runs_from_the_start_of_the_last_successful_renew(engine, make_lease):
    clock = FakeClock()
    timings = LeaseTimings(ttl=30.0, renew_interval=2.0, renew_deadline=10.0)
    a = make_lease(engine, "A", timings, monotonic=clock)
    assert a.try_acquire() == 1

    clock.advance(6.0)
    assert a.renew()
    clock.advance(9.9)  # 15.9 s after the acquire, 9.9 s after the renew
    assert a.is_held()
    clock.advance(0.1)
    assert not a.is_held()


def test_reacquiring_our_own_row_starts_a_new_term_with_a_new_epoch(engine, make_lease):
    before_restart = make_lease(engine, "A", LONG)
    assert before_restart.try_acquire() == 1

    after_restart = make_lease(engine, "A", LONG)  # same holder id, in-memory state lost
    assert after_restart.try_acquire() == 2  # no need to wait for expiry, but a new token

    assert before_restart.renew() is False  # the old incarnation's epoch is dead
    assert after_restart.renew()


def test_concurrent_first_acquires_on_an_empty_table_grant_epoch_1_exactly_once(engine):
    for round_ in range(5):
        name = f"race-{round_}"
        leases = [LeaderLease(engine, name, f"N{i}", LONG) for i in range(4)]
        barrier = threading.Barrier(len(leases))
        results: dict[str, int | None] = {}

        def contend(lease: LeaderLease, barrier: threading.Barrier, results: dict) -> None:
            barrier.wait()
            results[lease.holder] = lease.try_acquire()

        threads = [threading.Thread(target=contend, args=(lease, barrier, results)) for lease in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)

        winners = {h: e for h, e in results.items() if e is not None}
        assert len(results) == len(leases)
        assert list(winners.values()) == [1], results
        record = leases[0].read()
        assert (record.holder, record.epoch) == (next(iter(winners)), 1)


def test_read_returns_none_for_a_lease_nobody_ever_took(engine, make_lease):
    assert make_lease(engine, "A").read() is None


def test_epochs_only_ever_grow_across_many_handovers(engine):
    names = ["A", "B", "C"]
    leases = [LeaderLease(engine, LEASE, n, LONG) for n in names]
    seen = []
    for i in range(9):
        lease = leases[i % 3]
        epoch = lease.try_acquire()
        assert epoch is not None
        seen.append(epoch)
        lease.release()
    assert seen == list(range(1, 10))


def test_a_lease_table_with_another_name_is_used_when_given(engine):
    from lease import create_schema

    table = create_schema(engine, "other_leases")
    a = LeaderLease(engine, LEASE, "A", LONG, table=table)
    assert a.try_acquire() == 1
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 1
        default = sa.table("lh_leases", sa.column("name"))
        assert conn.scalar(sa.select(sa.func.count()).select_from(default)) == 0


def test_constructor_refuses_bad_names():
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ValueError, match="lease name"):
        LeaderLease(engine, "", "A", LONG)
    with pytest.raises(ValueError, match="lease name"):
        LeaderLease(engine, "x" * 129, "A", LONG)
    with pytest.raises(ValueError, match="holder"):
        LeaderLease(engine, "s", "", LONG)
    with pytest.raises(TypeError, match="LeaseTimings"):
        LeaderLease(engine, "s", "A", 5.0)
