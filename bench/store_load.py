"""Time the store's two hot operations: ``load_all`` (a takeover) and ``apply`` (every group commit).

    python bench/store_load.py postgres --tasks 100000          # throwaway PostgreSQL server
    python bench/store_load.py postgres --durable --tasks 10000  # ... with fsync and synchronous_commit on
    python bench/store_load.py mariadb|sqlite --tasks 10000      # throwaway MariaDB / SQLite file
    python bench/store_load.py postgresql://u:p@host/scratch     # an existing, EMPTY scratch database

It fills the database with N realistic task rows (shaped like ``scheduler.core``'s, with a few
deps each) plus workers, then prints: the fill rate, ``load_all`` as a node calls it (best of --repeat), and apply
latency for a batch of 1 changed task + 1 event and for 1,000 changed tasks, with and without the
lease's fence check. Throwaway servers come from tests/support/dbservers.py; by default they run
with fsync off, like the test suite, so commit latency there is a lower bound (see --durable).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from lease import check_fence, create_engine  # noqa: E402
from scheduler.core import Changes, Scheduler  # noqa: E402
from scheduler.store import Store  # noqa: E402
from scheduler.store.tables import leases  # noqa: E402

FILL_BATCH = 1000


def task_row(i: int, *, deps: int = 3, status: str = "PENDING", now: float = 1_700_000_000.0) -> dict[str, Any]:
    """One task row as the core writes it (same keys as ``scheduler.core.entities.TASK_ROW_KEYS``)."""
    date = f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}"
    return {
        "id": f"TransformUserEvents_{date}_shard{i}_{i:010x}",
        "status": status,
        "family": "TransformUserEvents",
        "module": "examples.daily",
        "updated": now + i,
        "time": now + i,
        "seq": i,
        "deps": [f"ExtractUserEvents_{date}_shard{i}_{(i * 7 + d):010x}" for d in range(deps)],
        "params": {"date": date, "shard": str(i), "source": "s3://bucket/events"},
        "param_visibilities": {"date": "public", "shard": "public", "source": "public"},
        "priority": i % 5,
        "resources": {"db": 1},
        "resources_running": None,
        "stakeholders": [f"Worker(salt=123, workers=4, host=worker{i % 8}, username=etl, pid={1000 + i % 8})"],
        "workers": [f"Worker(salt=123, workers=4, host=worker{i % 8}, username=etl, pid={1000 + i % 8})"],
        "worker_running": None,
        "time_running": None,
        "retry": None,
        "remove": None,
        "expl": None,
        "tracking_url": None,
        "status_message": None,
        "progress_percentage": None,
        "accepts_messages": False,
        "retry_policy": {"retry_count": 999999999, "disable_hard_timeout": 999999999, "disable_window": 3600},
        "failures": [],
        "first_failure_time": None,
        "scheduler_disable_time": None,
        "runnable": True,
        "batchable": False,
        "batch_id": None,
        "scheduler_message_responses": {},
    }


def fill(store: Store, n: int, *, epoch: int = 1, deps: int = 3) -> float:
    """Write ``n`` task rows (ids ``task_row(i)['id']``) in batches; returns the seconds it took."""
    started = time.perf_counter()
    for start in range(0, n, FILL_BATCH):
        rows = [task_row(i, deps=deps) for i in range(start, min(n, start + FILL_BATCH))]
        store.apply(Changes(tasks={r["id"]: r for r in rows}), epoch=epoch)
    workers = {f"w{i}": {"id": f"w{i}", "started": 1.0, "info": {"host": f"worker{i}"}} for i in range(8)}
    store.apply(Changes(workers=workers, meta={"paused": False}), epoch=epoch)
    return time.perf_counter() - started


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _ms(samples: list[float]) -> str:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return f"median {statistics.median(s) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms (n={len(s)})"


def run(url: str, n: int, repeat: int, deps: int) -> None:
    engine = create_engine(url)
    store = Store(engine)
    store.upgrade()
    if store.counts():
        raise SystemExit(f"{store!r} already holds tasks: point the benchmark at an empty scratch database")
    print(f"database: {engine.url.render_as_string(hide_password=True)} ({engine.dialect.name})")

    seconds = fill(store, n, deps=deps)
    print(f"fill {n} tasks: {seconds:.2f} s ({n / seconds:,.0f} rows/s, batches of {FILL_BATCH})")

    # As a node takes over: every row decoded straight into the core's task objects.
    load = partial(store.load_all, decode_task=Scheduler().task_decoder())
    loads = _timed(load, repeat)
    snap = load()
    assert len(snap.tasks) == n, (len(snap.tasks), n)
    print(f"load_all {n} tasks: best {min(loads):.3f} s, median {statistics.median(loads):.3f} s")

    with engine.begin() as conn:
        conn.execute(sa.insert(leases).values(name="bench", holder="me", epoch=1, expires_at=1e12))
    fence = partial(check_fence, table=leases, lease_name="bench", holder="me", epoch=1)
    one = task_row(0, deps=deps, status="RUNNING")
    ev = {"task_id": one["id"], "status": "RUNNING", "at": 1.0, "worker": "w0", "host": "worker0"}
    thousand = {r["id"]: r for r in (task_row(i, deps=deps, status="DONE") for i in range(min(n, 1000)))}
    for label, f in (("no fence", None), ("lease fence", fence)):

        def apply_one(f: Callable | None = f) -> None:
            store.apply(Changes(tasks={one["id"]: one}, events=[ev]), epoch=1, fence=f)

        _timed(apply_one, 50)  # warm-up: pool, statement cache, WAL file growth
        small = _timed(apply_one, 300)
        big = _timed(lambda f=f: store.apply(Changes(tasks=thousand), epoch=1, fence=f), 10)
        print(f"apply 1 task + 1 event ({label}): {_ms(small)}")
        print(f"apply {len(thousand)} tasks ({label}): {_ms(big)}")
    engine.dispose()


@contextmanager
def _throwaway(kind: str, durable: bool) -> Iterator[str]:
    from tests.support.dbservers import MariaDBServer, PostgresServer

    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            yield f"sqlite:///{d}/bench.db"
        return
    server = PostgresServer(durable=durable) if kind == "postgres" else MariaDBServer()
    server.start()
    try:
        yield server.create_database("bench")
    finally:
        server.destroy()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="database URL of an empty scratch database, or sqlite|postgres|mariadb")
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--deps", type=int, default=3, help="deps per task (row size)")
    p.add_argument("--repeat", type=int, default=3, help="load_all runs (best is reported)")
    p.add_argument("--durable", action="store_true", help="throwaway PostgreSQL with fsync on")
    args = p.parse_args(argv)
    if args.target in ("sqlite", "postgres", "mariadb"):
        with _throwaway(args.target, args.durable) as url:
            run(url, args.tasks, args.repeat, args.deps)
    else:
        run(args.target, args.tasks, args.repeat, args.deps)


if __name__ == "__main__":
    main()
