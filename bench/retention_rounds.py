"""Commit rounds with and without the history retention sweep running beside them.

Fills ``lh_task_events`` with ``--old`` events older than the retention, then commits
``--rounds`` rounds like a busy leader's (20 task rows and 40 events each, Store.apply) twice:
once alone, once while a thread deletes the expired events in the node's batches
(scheduler/store/retention.py, 500 rows, 10 ms apart). Prints each phase's median and p99.
The bench has no lease, so the fence is a no-op in both phases.

    .venv/bin/python bench/retention_rounds.py [--url sqlite:///...] [--old 200000] [--rounds 400]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from bench.store_load import task_row  # noqa: E402
from lease import create_engine  # noqa: E402
from scheduler.core import Changes  # noqa: E402
from scheduler.node import HISTORY_BATCH, HISTORY_PAUSE  # noqa: E402
from scheduler.store import Store  # noqa: E402
from scheduler.store.retention import delete_expired_events  # noqa: E402
from scheduler.store.tables import task_events  # noqa: E402


def _round(store: Store, k: int) -> float:
    rows = [task_row(k * 20 + i) for i in range(20)]
    now = time.time()
    events = [
        {"task_id": r["id"], "status": s, "at": now, "worker": "w", "host": "h"}
        for r in rows
        for s in ("RUNNING", "DONE")
    ]
    t0 = time.perf_counter()
    store.apply(Changes(tasks={r["id"]: r for r in rows}, events=events), epoch=1)
    return time.perf_counter() - t0


def _summary(samples: list[float]) -> str:
    s = sorted(samples)
    return f"median {statistics.median(s) * 1000:.2f} ms, p99 {s[int(len(s) * 0.99)] * 1000:.2f} ms (n={len(s)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--old", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--batch", type=int, default=HISTORY_BATCH)
    parser.add_argument("--pause", type=float, default=HISTORY_PAUSE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(args.url or f"sqlite:///{tmp}/bench.db")
        store = Store(engine)
        store.upgrade()
        old = time.time() - 40 * 86400
        with engine.begin() as conn:
            for start in range(0, args.old, 10_000):
                conn.execute(
                    sa.insert(task_events),
                    [
                        {"task_id": f"Old_{i}", "status": "DONE", "at": old + i * 1e-3, "epoch": 1}
                        for i in range(start, min(args.old, start + 10_000))
                    ],
                )
        cutoff = time.time() - 30 * 86400
        alone = [_round(store, k) for k in range(args.rounds)]

        stop = threading.Event()
        deleted = [0]

        def sweep() -> None:
            while not stop.is_set():
                n = delete_expired_events(engine, cutoff, lambda conn: None, args.batch)
                deleted[0] += n
                if n < args.batch:
                    return
                time.sleep(args.pause)

        sweeper = threading.Thread(target=sweep)
        sweeper.start()
        beside = [_round(store, args.rounds + k) for k in range(args.rounds)]
        swept_during = deleted[0]
        stop.set()
        sweeper.join()
        print(
            f"database: {engine.dialect.name}, {args.old:,} expired, batches of {args.batch}, {args.pause} s apart"
        )
        print(f"rounds alone:           {_summary(alone)}")
        print(f"rounds beside the sweep: {_summary(beside)} ({swept_during:,} events deleted meanwhile)")
        engine.dispose()


if __name__ == "__main__":
    main()
