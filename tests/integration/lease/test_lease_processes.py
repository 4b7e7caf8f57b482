"""Three OS processes race for one lease on real PostgreSQL and MariaDB; one of them is SIGKILLed mid-way.

What must hold, read from what the processes wrote (see lease_race_worker.py):

* no epoch ever had two holders;
* the intervals (in database time) during which the processes *believed* they held the lease
  never overlap, and follow each other in epoch order; the same for their fenced writes;
* no write made with a stale epoch after a stall longer than the ttl was committed;
* after the holder is SIGKILLed, another process takes over once the ttl has run out on the
  database's clock, not before, and promptly after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa
from lease_race_worker import LEASE, TIMINGS, writes_table
from lease_testlib import make_engine, wait_until

from lease import LeaderLease

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("lease_race_worker.py")
DURATION = 4.0
KILL_AFTER = 1.5


def _intervals(samples: list[tuple[int, str, float]]) -> dict[int, tuple[set[str], float, float]]:
    by_epoch: dict[int, tuple[set[str], float, float]] = {}
    for epoch, holder, t in samples:
        holders, lo, hi = by_epoch.get(epoch, (set(), t, t))
        holders.add(holder)
        by_epoch[epoch] = (holders, min(lo, t), max(hi, t))
    return by_epoch


def _assert_one_holder_per_epoch_and_no_overlap(samples: list[tuple[int, str, float]], what: str) -> int:
    by_epoch = _intervals(samples)
    for epoch, (holders, _, _) in by_epoch.items():
        assert len(holders) == 1, f"{what}: epoch {epoch} had holders {sorted(holders)}"
    ordered = sorted(by_epoch.items())
    for (e1, (h1, _, end1)), (e2, (h2, start2, _)) in zip(ordered, ordered[1:], strict=False):
        assert end1 < start2, (
            f"{what}: epoch {e1} ({h1}) lasted until {end1:.6f}, but epoch {e2} ({h2}) "
            f"started at {start2:.6f} (database time)"
        )
    return len(by_epoch)


def test_racing_processes_never_overlap_and_a_killed_holder_is_replaced_after_its_ttl(server_url, tmp_path):
    engine = make_engine(server_url)
    writes = writes_table(sa.MetaData())
    writes.create(engine)
    observer = LeaderLease(engine, LEASE, "observer", TIMINGS)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for i in range(3):
            holder = f"w{i}"
            procs[holder] = subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    server_url,
                    holder,
                    str(tmp_path / f"{holder}.jsonl"),
                    str(DURATION),
                    str(i),
                ],
                env=env,
                cwd=REPO,
            )
        # Let the race run, then SIGKILL whoever holds the lease right now.
        time.sleep(KILL_AFTER)

        def someone_holds() -> bool:
            r = observer.read()
            return r is not None and r.holder in procs and r.remaining > 0

        assert wait_until(someone_holds, timeout=3.0), "nobody held the lease"
        victim = observer.read().holder
        procs[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert procs[victim].wait(timeout=5) == -signal.SIGKILL
        at_kill = observer.read()

        def taken_over() -> bool:
            r = observer.read()
            return r is not None and r.epoch > at_kill.epoch and r.holder not in (None, victim) and r.remaining > 0

        assert wait_until(taken_over, timeout=TIMINGS.ttl + 3.0), "no takeover after the holder was killed"
        takeover_wall = time.monotonic() - killed_at
        after = observer.read()

        for holder, proc in procs.items():
            if holder != victim:
                assert proc.wait(timeout=DURATION + 10) == 0, f"{holder} failed"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    if at_kill.holder == victim:  # (it could have released just before the signal landed)
        # Not before the database's clock said the dead holder's lease had expired, and promptly
        # after that: the survivors poll every renew_interval (0.2 s).
        assert after.acquired_at >= at_kill.expires_at
        assert after.acquired_at - at_kill.expires_at < 1.0
        assert takeover_wall < at_kill.remaining + 1.5
    print(f"\ntakeover after SIGKILL: {takeover_wall:.3f}s wall, lease had {at_kill.remaining:.3f}s left")

    records = [
        json.loads(line) for path in tmp_path.glob("w*.jsonl") for line in path.read_text().splitlines() if line.strip()
    ]
    beliefs = [(r["epoch"], r["holder"], r["t"]) for r in records if r["kind"] == "belief"]
    epochs = _assert_one_holder_per_epoch_and_no_overlap(beliefs, "believed leadership")
    assert epochs >= 3, f"too little contention to prove anything: {epochs} epochs"

    with engine.connect() as conn:
        rows = conn.execute(sa.select(writes.c.epoch, writes.c.holder, writes.c.db_time, writes.c.zombie)).all()
    assert not [r for r in rows if r.zombie], "a write with a stale epoch was committed"
    _assert_one_holder_per_epoch_and_no_overlap([(r.epoch, r.holder, float(r.db_time)) for r in rows], "fenced writes")
    zombies = [r for r in records if r["kind"] == "zombie"]
    assert all(z["outcome"] == "fenced" for z in zombies), zombies
    assert all(not r["ok"] for r in records if r["kind"] == "renew_after_stall")

    kinds = defaultdict(int)
    for r in records:
        kinds[r["kind"]] += 1
    print(f"epochs={epochs} fenced_writes={len(rows)} events={dict(kinds)}")
    engine.dispose()
