"""The committed-row feed: every fenced commit round stamps its rows with a commit sequence.

A standby follows the leader by reading what was committed after the last sequence it applied
(:meth:`Store.feed_after`), instead of reloading everything. Each commit round, inside its
fenced transaction:

1. increments the one counter row (``UPDATE lh_feed SET commit_seq = commit_seq + 1``);
2. writes every task, worker and meta row with that sequence in ``commit_seq``;
3. writes a tombstone (``lh_tombstones``: kind, id, sequence, time) for each deleted task or
   worker;
4. on PostgreSQL, ``pg_notify('lh_feed', <sequence>)``, delivered to listeners at commit.

Why a counter row and not a database sequence: a sequence hands out numbers when asked, not in
commit order, so a reader could see sequence 12 committed while 11 is still to come, then skip
11 forever. The counter row's lock is held to the commit, so two transactions that both stamp
rows commit in the order of their numbers. Under the lease's fence there is only ever one such
transaction at a time anyway (one leader, one round at a time; a takeover waits for the old
leader's round in flight). A deposed leader's round is fenced out before it increments and
commits nothing; a round that fails later rolls its increment back. So a reader that has seen
everything up to ``S`` and reads ``commit_seq > S`` in one snapshot sees exactly the rounds it
missed, newest row version of each.

Tombstones older than :data:`TOMBSTONE_RETENTION` seconds are pruned, by a commit round now and
then (every :data:`PRUNE_EVERY` rounds), which raises ``lh_feed.pruned_seq`` to the newest pruned
tombstone's sequence. A reader whose sequence is below it may have missed a deletion and must
load everything again (:attr:`FeedRead.reload`).

Interface (stable; :mod:`scheduler.follower` and the node use it):

* ``Store.feed_seq() -> int``: the newest committed sequence.
* ``Store.feed_after(seq, decode_task) -> FeedRead``: everything committed after ``seq``.
* ``Store.load_all()`` sets ``Snapshot.seq``: the sequence the loaded state is at.
* :data:`NOTIFY_CHANNEL`: the PostgreSQL channel a follower may ``LISTEN`` on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scheduler.core import FeedBatch, Snapshot
from scheduler.store.codec import loads, loads_rows
from scheduler.store.tables import feed, meta, tasks, tombstones, workers

#: PostgreSQL ``LISTEN`` channel; the payload is the committed sequence.
NOTIFY_CHANNEL = "lh_feed"
#: Seconds a tombstone is kept: a standby behind by more reloads everything.
TOMBSTONE_RETENTION = 3600.0
#: A commit round prunes old tombstones once in this many rounds (the query is cheap, not free).
PRUNE_EVERY = 500
#: Tombstone kinds.
TASK = "task"
WORKER = "worker"

#: PostgreSQL, in the writer's one-script round: the transaction-local setting that carries the
#: round's sequence to every row of the script without a round trip back to the client.
PG_SEQ_SETTING = "lh.commit_seq"
PG_NEXT_SEQ = (
    f"WITH f AS (UPDATE {feed.name} SET commit_seq = commit_seq + 1 WHERE id = 1 RETURNING commit_seq) "
    f"SELECT set_config('{PG_SEQ_SETTING}', commit_seq::text, true) FROM f"
)
#: The round's sequence as a value in a PostgreSQL statement of that script.
PG_SEQ_VALUE = f"current_setting('{PG_SEQ_SETTING}')::bigint"
PG_NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', current_setting('{PG_SEQ_SETTING}'))"

_increment = sa.update(feed).where(feed.c.id == 1).values(commit_seq=feed.c.commit_seq + 1)
_current = sa.select(feed.c.commit_seq, feed.c.pruned_seq).where(feed.c.id == 1)
#: Prune: raise pruned_seq to the newest tombstone older than the cutoff, delete up to it.
PRUNE_RAISE_SQL = (
    f"UPDATE {feed.name} SET pruned_seq = COALESCE("
    f"(SELECT MAX(commit_seq) FROM {tombstones.name} WHERE at < {{cutoff}}), pruned_seq) WHERE id = 1"
)
PRUNE_DELETE_SQL = (
    f"DELETE FROM {tombstones.name} WHERE commit_seq <= (SELECT pruned_seq FROM {feed.name} WHERE id = 1)"
)
_prune_raise = sa.text(PRUNE_RAISE_SQL.format(cutoff=":cutoff"))
_prune_delete = sa.text(PRUNE_DELETE_SQL)


def next_seq(conn: sa.Connection) -> int:
    """Take the next commit sequence in ``conn``'s transaction (the portable path, after the fence)."""
    conn.execute(_increment)
    return int(conn.execute(_current).one()[0])


def pg_notify_statement() -> sa.TextClause:
    """``pg_notify`` of the portable path (on PostgreSQL), with the sequence as ``:seq`` text."""
    return _pg_notify


_pg_notify = sa.text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', :seq)")


def tombstone_rows(kind: str, ids: list[str], seq: int | None, at: float) -> list[dict[str, Any]]:
    """Rows for ``lh_tombstones`` (``seq`` None: the PostgreSQL script supplies it)."""
    if seq is None:
        return [{"kind": kind, "item_id": item_id, "at": at} for item_id in ids]
    return [{"kind": kind, "item_id": item_id, "commit_seq": seq, "at": at} for item_id in ids]


def prune(conn: sa.Connection, now: float | None = None) -> None:
    """Drop tombstones older than the retention, in ``conn``'s transaction (the portable path)."""
    cutoff = (time.time() if now is None else now) - TOMBSTONE_RETENTION
    conn.execute(_prune_raise, {"cutoff": cutoff})
    conn.execute(_prune_delete)


@dataclass
class FeedRead:
    """What :meth:`Store.feed_after` found.

    * ``seq``: the newest committed sequence; applying ``batch`` brings a reader to it.
    * ``batch``: the rows committed after the asked-for sequence (empty when there are none).
    * ``reload``: the asked-for sequence is older than the oldest kept tombstone, so deletions
      may be missing; the reader must ``load_all`` instead (``batch`` is then empty).
    * ``snapshot``: that full load, when the reader (``scheduler.follower``) has done it.
    """

    seq: int
    batch: FeedBatch
    reload: bool = False
    snapshot: Snapshot | None = None


def current(conn: sa.Connection) -> tuple[int, int]:
    """``(commit_seq, pruned_seq)`` as ``conn``'s transaction sees them."""
    seq, pruned = conn.execute(_current).one()
    return int(seq), int(pruned)


def read_after(conn: sa.Connection, after: int, decode_task: Callable[[str | bytes], Any] = loads) -> FeedRead:
    """Everything committed after ``after``, in ``conn``'s (snapshot) transaction."""
    seq, pruned = current(conn)
    if after < pruned:
        return FeedRead(seq=seq, batch=FeedBatch(), reload=True)
    if seq <= after:
        return FeedRead(seq=seq, batch=FeedBatch())
    task_texts = conn.execute(sa.select(tasks.c.data).where(tasks.c.commit_seq > after)).scalars().all()
    worker_texts = conn.execute(sa.select(workers.c.data).where(workers.c.commit_seq > after)).scalars().all()
    meta_items = conn.execute(sa.select(meta.c.key, meta.c.value).where(meta.c.commit_seq > after)).all()
    gone = conn.execute(sa.select(tombstones.c.kind, tombstones.c.item_id).where(tombstones.c.commit_seq > after)).all()
    task_rows = [decode_task(text) for text in task_texts]
    worker_rows = loads_rows(worker_texts)
    # A row committed after its own tombstone (deleted, then created again) is alive.
    live_tasks = {_task_id(row) for row in task_rows} if gone else set()
    live_workers = {row["id"] for row in worker_rows} if gone else set()
    return FeedRead(
        seq=seq,
        batch=FeedBatch(
            tasks=task_rows,
            task_deletes=[item for kind, item in gone if kind == TASK and item not in live_tasks],
            workers=worker_rows,
            worker_deletes=[item for kind, item in gone if kind == WORKER and item not in live_workers],
            meta={key: loads(value) for key, value in meta_items},
        ),
    )


def _task_id(row: Any) -> str:
    return row["id"] if isinstance(row, dict) else row.id
