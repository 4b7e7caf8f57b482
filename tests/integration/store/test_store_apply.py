"""apply() persists a batch exactly, all or nothing; load_all() gives it back exactly."""

from __future__ import annotations

import json
import math

import msgspec
import pytest
import sqlalchemy as sa

from scheduler.core import Scheduler
from scheduler.core.entities import Task
from scheduler.store import Store, StoreError
from scheduler.store.tables import task_events, tasks, workers
from tests.integration.store.helpers import changes, event, task_row


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in rows}


def test_an_empty_store_loads_empty(store: Store) -> None:
    snap = store.load_all()
    assert (snap.tasks, snap.workers, snap.meta) == ([], [], {})
    assert store.counts() == {}
    assert store.max_epoch() == 0


def test_tasks_workers_and_meta_round_trip_exactly(store: Store) -> None:
    deps = [f"UpstreamTask(date=2024-01-{i % 28 + 1:02d}, shard={i})_{i:010x}" for i in range(2000)]
    big = task_row(
        "Big(x=1)",
        deps=deps,  # > 64 KB of JSON: TEXT would truncate or refuse it on MySQL
        params={"x": "1", "note": "naïve café ☃ 🦆 日本語", "quote": 'it\'s "quoted"\\'},
        resources={"cpu": 1.5, "big": 10**15},
        priority=-3,
        failures=[],
        tracking_url=None,
        runnable=True,
    )
    batcher = {"id": "Worker(host=a, pid=1)", "batchers": {"Fam": {"max_batch_size": math.inf}}, "n": -math.inf}
    meta = {"batchers": {"F": {"x": math.inf}}, "version": 3, "nothing": None, "text": "ü"}
    store.apply(
        changes(
            tasks={"Big(x=1)": big, "Small": task_row("Small", "DONE", updated=1.0)},
            workers={batcher["id"]: batcher},
            meta=meta,
        ),
        epoch=7,
    )
    assert len(json.dumps(big)) > 65536

    snap = store.load_all()
    assert by_id(snap.tasks) == {"Big(x=1)": big, "Small": task_row("Small", "DONE", updated=1.0)}
    assert snap.workers == [batcher]
    assert snap.meta == meta
    assert snap.workers[0]["batchers"]["Fam"]["max_batch_size"] == math.inf


def test_a_changed_row_replaces_the_stored_one(store: Store) -> None:
    store.apply(changes(tasks={"A": task_row("A", extra="old")}, meta={"k": 1}), epoch=1)
    store.apply(changes(tasks={"A": task_row("A", "RUNNING", worker_running="w")}, meta={"k": 2}), epoch=2)
    snap = store.load_all()
    assert snap.tasks == [task_row("A", "RUNNING", worker_running="w")]  # "extra" is gone: whole-row writes
    assert snap.meta == {"k": 2}


def test_none_deletes_tasks_and_workers(store: Store) -> None:
    ids = [f"T{i}" for i in range(1200)]  # more than one DELETE chunk
    store.apply(changes(tasks={i: task_row(i) for i in ids}, workers={"w1": {"id": "w1"}, "w2": {"id": "w2"}}), epoch=1)
    store.apply(changes(tasks={i: None for i in ids[:1100]} | {"never-stored": None}, workers={"w1": None}), epoch=2)
    snap = store.load_all()
    assert sorted(t["id"] for t in snap.tasks) == sorted(ids[1100:])
    assert snap.workers == [{"id": "w2"}]


def test_every_written_row_is_stamped_with_its_epoch(store: Store) -> None:
    store.apply(changes(tasks={"A": task_row("A"), "B": task_row("B")}, workers={"w": {"id": "w"}}), epoch=3)
    store.apply(changes(tasks={"B": task_row("B", "DONE")}, events=[event("B", "DONE", 5.0)]), epoch=4)
    with store.engine.connect() as conn:
        assert dict(conn.execute(sa.select(tasks.c.task_id, tasks.c.epoch)).all()) == {"A": 3, "B": 4}
        assert conn.execute(sa.select(workers.c.epoch)).scalar_one() == 3
        assert conn.execute(sa.select(task_events.c.epoch)).scalar_one() == 4
        assert dict(conn.execute(sa.select(tasks.c.task_id, tasks.c.status)).all()) == {"A": "PENDING", "B": "DONE"}
    assert store.max_epoch() == 4
    assert store.counts() == {"PENDING": 1, "DONE": 1}


def test_events_come_back_newest_first(store: Store) -> None:
    # Insertion order decides, not the clock: "at" goes backwards here on purpose.
    store.apply(
        changes(events=[event("A", "PENDING", 30.0, worker=None, host=None), event("A", "RUNNING", 20.0)]), epoch=1
    )
    store.apply(changes(events=[event("B", "PENDING", 1.0), event("A", "FAILED", 10.0, host="ü-host")]), epoch=1)
    assert store.task_events("A") == [
        event("A", "FAILED", 10.0, host="ü-host"),
        event("A", "RUNNING", 20.0),
        event("A", "PENDING", 30.0, worker=None, host=None),
    ]
    assert [e["status"] for e in store.task_events("A", limit=2)] == ["FAILED", "RUNNING"]
    assert store.task_events("nope") == []


def test_a_fence_that_raises_leaves_nothing_of_the_batch(store: Store) -> None:
    store.apply(changes(tasks={"A": task_row("A")}, meta={"k": "before"}), epoch=1)
    seen: list[bool] = []

    class Deposed(Exception):
        pass

    def fence(conn: sa.Connection) -> None:
        seen.append(conn.in_transaction())
        raise Deposed("a newer leader holds the lease")

    batch = changes(
        tasks={"A": None, "B": task_row("B")},
        workers={"w": {"id": "w"}},
        meta={"k": "after"},
        events=[event("B", "PENDING", 1.0)],
    )
    with pytest.raises(Deposed):  # the lease's own exception reaches the node unchanged
        store.apply(batch, epoch=2, fence=fence)
    assert seen == [True]
    snap = store.load_all()
    assert (snap.tasks, snap.workers, snap.meta) == ([task_row("A")], [], {"k": "before"})
    assert store.task_events("B") == []
    assert store.max_epoch() == 1


def test_the_fence_runs_first_in_the_batch_transaction(store: Store) -> None:
    """Whatever the fence does in its connection commits or rolls back with the batch."""

    def fence(conn: sa.Connection) -> None:
        assert conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar() == 0  # nothing written yet
        conn.execute(sa.insert(workers).values(worker_id="written-by-fence", epoch=9, data='{"id":"x"}'))

    store.apply(changes(tasks={"A": task_row("A")}), epoch=9, fence=fence)
    assert store.load_all().workers == [{"id": "x"}]


def test_a_database_error_mid_batch_rolls_back_all_of_it(store: Store) -> None:
    store.apply(changes(tasks={"A": task_row("A")}), epoch=1)
    bad_event = event("B", "PENDING", None)  # type: ignore[arg-type] - NOT NULL violation, after the upserts
    with pytest.raises(StoreError, match="apply failed"):
        store.apply(changes(tasks={"A": None, "B": task_row("B")}, events=[bad_event]), epoch=2)
    assert store.load_all().tasks == [task_row("A")]
    assert store.max_epoch() == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"tasks": {"x" * 513: task_row("x" * 513)}},
        {"tasks": {"nul\x00id": task_row("nul\x00id")}},
        {"tasks": {"\ud800": task_row("\ud800")}},
        {"workers": {"w" * 513: {"id": "w" * 513}}},
        {"meta": {"k" * 65: 1}},
        {"tasks": {"A": task_row("A", "NOT_A_REAL_STATUS")}},
    ],
    ids=["long-task-id", "nul", "surrogate", "long-worker-id", "long-meta-key", "long-status"],
)
def test_unstorable_ids_fail_the_same_way_on_every_database(store: Store, bad: dict) -> None:
    with pytest.raises(StoreError, match="cannot store"):
        store.apply(changes(events=[event("A", "PENDING", 1.0)], **bad), epoch=1)
    assert store.task_events("A") == []


def test_odd_client_names_are_tidied_in_their_columns_but_kept_exactly_in_data(store: Store) -> None:
    """family, worker and host come from clients; they must never fail a batch (and depose the leader)."""
    rows = {"A": task_row("A", family="F" * 1000), "B": task_row("B", family="nul\x00 and lone \ud800 surrogate")}
    events = [
        event("A", "PENDING", 1.0, worker="w" * 600, host="h" * 300),
        event("B", "PENDING", 2.0, worker="w\x00", host="h\udc80ü"),
    ]
    store.apply(changes(tasks=rows, events=events), epoch=1)
    assert {t["id"]: t for t in store.load_all().tasks} == rows
    [ev] = store.task_events("A")
    assert (len(ev["worker"]), len(ev["host"])) == (512, 255)
    [ev] = store.task_events("B")
    assert (ev["worker"], ev["host"]) == ("w", "h?ü")
    with store.engine.connect() as conn:
        families = dict(conn.execute(sa.select(tasks.c.task_id, tasks.c.family)).all())
    assert families == {"A": "F" * 255, "B": "nul and lone ? surrogate"}


def test_an_empty_batch_writes_nothing_and_skips_the_fence(store: Store) -> None:
    def fence(conn: sa.Connection) -> None:
        raise AssertionError("no transaction should be opened for an empty batch")

    store.apply(changes(), epoch=5, fence=fence)
    assert store.max_epoch() == 0


def test_a_thousand_changed_tasks_in_one_batch(store: Store) -> None:
    rows = {f"T(i={i})": task_row(f"T(i={i})", deps=[f"T(i={i - 1})"]) for i in range(1000)}
    store.apply(changes(tasks=rows, events=[event(i, "PENDING", 1.0) for i in rows]), epoch=1)
    rows = {i: dict(r, status="DONE") for i, r in rows.items()}
    store.apply(changes(tasks=rows), epoch=2)
    assert by_id(store.load_all().tasks) == rows
    assert store.counts() == {"DONE": 1000}


@pytest.mark.parametrize("decode_task", [None, Scheduler().task_decoder()], ids=["rows", "tasks"])
def test_a_damaged_stored_row_fails_load_all_loudly_and_the_store_keeps_working(store: Store, decode_task) -> None:
    load = store.load_all if decode_task is None else lambda: store.load_all(decode_task=decode_task)
    store.apply(changes(tasks={"A": task_row("A"), "B": task_row("B"), "C": task_row("C")}), epoch=1)
    with store.engine.begin() as conn:
        conn.execute(sa.update(tasks).where(tasks.c.task_id == "B").values(data='{"id": "B", "stat'))
    with pytest.raises(StoreError, match="""load_all failed.*task row cannot be read.*'{"id": "B", "stat'"""):
        load()
    store.apply(changes(tasks={"B": task_row("B", "DONE")}), epoch=1)  # the connection was not left mid-read
    assert sorted(t["id"] if decode_task is None else t.id for t in load().tasks) == ["A", "B", "C"]


def test_a_read_the_database_refuses_is_a_store_error_on_every_database(store: Store) -> None:
    store.apply(changes(tasks={"A": task_row("A")}), epoch=1)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE lh_tasks RENAME COLUMN data TO data_moved")
    with pytest.raises(StoreError, match="load_all failed on .*data"):
        store.load_all(decode_task=Scheduler().task_decoder())


def test_load_all_decodes_each_task_row_with_the_callable_given(store: Store) -> None:
    """The node's path: rows become core tasks as they are read (on PostgreSQL, from a COPY stream
    whose text format escapes backslashes and control characters)."""
    rows = {
        "Plain": task_row("Plain", deps=["Up"], workers=["w1"], stakeholders=["w1"], time=1.5, seq=4),
        "Escapes": task_row(
            "Escapes",
            expl='Traceback:\n\tFile "x.py", line 1\r\n\\server\\share \b\f\v',
            params={"path": "C:\\tmp\\new", "tab": "a\tb", "quote": 'say "hi"', "nl": "line1\nline2"},
            status_message="naïve café ☃ 🦆 日本語",
        ),
        "Control": task_row("Control", params={"chars": "".join(chr(c) for c in range(32))}),
        "Odd": task_row("Odd", resources={"db": math.inf}, params={"big": 10**30}),
    }
    store.apply(changes(tasks=rows), epoch=1)
    core = Scheduler()
    loaded = {task.id: task for task in store.load_all(decode_task=core.task_decoder()).tasks}
    assert set(loaded) == set(rows)
    for task_id, row in rows.items():
        expected = Task.from_row(row, core._default_policy)
        assert msgspec.structs.asdict(loaded[task_id]) == msgspec.structs.asdict(expected), task_id
