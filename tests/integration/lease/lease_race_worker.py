"""One contender in the multi-process lease race (run as a script by test_lease_processes.py).

usage: python lease_race_worker.py URL HOLDER OUT_FILE DURATION SEED

Loops for DURATION seconds: acquires when free, renews every renew_interval while holding, and,
at random moments while holding, either hands the lease over (release), keeps it, or stalls
longer than the ttl (a GC pause / SIGSTOP stand-in) and then tries a "zombie" write with its stale
epoch that only the database can refuse. Whenever it believes it holds the lease it appends a
JSON line {"kind": "belief", "epoch", "holder", "t"} to OUT_FILE, where t is a database-clock
instant read between two is_held() checks that both said yes, and it makes one fenced write
(holder, epoch, database time) to lh_race_writes. Lines are flushed at once: a SIGKILL loses none.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import time

import sqlalchemy as sa

from lease import FencedOut, LeaderLease, LeaseTimings, check_fence, create_engine
from lease.clock import db_now

LEASE = "race"
TIMINGS = LeaseTimings(ttl=1.0)  # renew every 0.2 s, step down after 0.6 s


def writes_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "lh_race_writes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("db_time", sa.Double(asdecimal=False), nullable=False),
        sa.Column("zombie", sa.Boolean, nullable=False, default=False),
    )


def main(url: str, holder: str, out_path: str, duration: float, seed: int) -> None:
    rnd = random.Random(seed)
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    engine = create_engine(url)
    writes = writes_table(sa.MetaData())
    lease = LeaderLease(engine, LEASE, holder, TIMINGS)
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - line-buffered for the whole run

    def emit(**record: object) -> None:
        out.write(json.dumps({"holder": holder, **record}) + "\n")

    emit(kind="start")
    end = time.monotonic() + duration
    next_try = next_renew = hold_until = 0.0
    while not stopping and time.monotonic() < end:
        now = time.monotonic()
        if lease.is_held():
            if now >= hold_until:
                choice = rnd.random()
                if choice < 0.5:
                    emit(kind="release", epoch=lease.epoch)
                    lease.release()
                    next_try = now + 2 * TIMINGS.interval  # let somebody else have it
                elif choice < 0.65:
                    stale = lease.epoch
                    emit(kind="stall", epoch=stale)
                    time.sleep(TIMINGS.ttl + 0.3)
                    try:
                        with engine.begin() as conn:
                            check_fence(conn, lease.table, LEASE, holder, stale)
                            conn.execute(
                                sa.insert(writes).values(holder=holder, epoch=stale, db_time=db_now(), zombie=True)
                            )
                        emit(kind="zombie", epoch=stale, outcome="committed")
                    except FencedOut:
                        emit(kind="zombie", epoch=stale, outcome="fenced")
                    emit(kind="renew_after_stall", epoch=stale, ok=lease.renew())
                else:
                    hold_until = now + rnd.uniform(0.2, 0.6)
            elif now >= next_renew:
                lease.renew()
                next_renew = now + TIMINGS.interval
        elif now >= next_try:
            epoch = lease.try_acquire()
            next_try = now + TIMINGS.interval * rnd.uniform(0.5, 1.5)
            if epoch is not None:
                emit(kind="acquired", epoch=epoch)
                hold_until = now + rnd.uniform(0.2, 0.6)
                next_renew = now + TIMINGS.interval

        if lease.is_held():
            epoch = lease.epoch
            with engine.connect() as conn:
                t = conn.scalar(sa.select(db_now()))
            if lease.is_held() and lease.epoch == epoch:
                emit(kind="belief", epoch=epoch, t=t)
            try:
                with engine.begin() as conn:
                    lease.fence(conn)
                    conn.execute(sa.insert(writes).values(holder=holder, epoch=epoch, db_time=db_now()))
            except FencedOut:
                emit(kind="fenced", epoch=epoch)
        time.sleep(0.02)

    lease.release()
    emit(kind="exit")
    out.close()
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
