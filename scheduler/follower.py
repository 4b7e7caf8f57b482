"""A standby's data side: a read-only replica core kept up to date from the store's commit feed.

The follower owns a store and a core (``scheduler.core.Scheduler``) that only it changes:

* :meth:`Follower.start` (cold start): ``Store.load_all`` into the core, and remember the
  sequence that state is at (``Snapshot.seq``, read in the same transaction).
* :meth:`Follower.catch_up`: read everything committed after the applied sequence
  (``Store.feed_after``) and apply it (``Scheduler.apply_feed``). A follower so far behind that
  tombstones it needs were pruned loads everything again. Returns the number of rows applied.
* :meth:`Follower.wait_for_commit`: block until the leader may have committed something (a
  PostgreSQL ``NOTIFY`` on :data:`scheduler.store.feed.NOTIFY_CHANNEL`) or the timeout passes
  (every other database: the caller simply polls).
* :meth:`Follower.take_over`: for a node that has just WON THE LEASE. Every write of the old
  epoch is by then committed or fenced out (the lease acquisition waits for the fenced round
  in flight, and later rounds of the old leader fail their fence), so one last ``catch_up``
  reads exactly what the core is missing. Returns the core, which is now the leader's; the
  follower must not be used after it.

Reads of the core go through the node on the event loop; ``catch_up`` does blocking I/O and
then applies in the caller's thread. A node runs ``catch_up`` (or just its ``Store.feed_after``
part, via :meth:`read` and :meth:`apply`) in a worker thread and applies on the loop, so that
the core is only ever touched by one thread.

**Lag.** :meth:`lag_seconds` is an upper bound on how stale the core is: the time since the
start of the newest feed read that was applied in full. Every commit that happened before that
read began is in the core; commits after it may not be. So an idle cluster's follower that
polls every 0.1 s reports a lag under about 0.1 s plus one read, a follower whose database is
unreachable reports a lag that grows by the second, and one that never caught up reports
``inf``. ``behind()`` is the feed's sequence gap at the last read, for a metric.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable
from typing import Any

import psycopg2

from lease.engine import driver_connect_kwargs
from scheduler.core import Scheduler, Snapshot
from scheduler.store import Store
from scheduler.store.feed import NOTIFY_CHANNEL, FeedRead


class FollowerClosed(RuntimeError):
    """The follower handed its core over (``take_over``) and cannot be used any more."""


class Follower:
    """Keeps ``core`` equal to what the store has committed, up to :meth:`lag_seconds` behind."""

    def __init__(self, store: Store, core: Scheduler, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._core: Scheduler | None = core
        self._clock = clock
        self.applied_seq = 0
        self._caught_up_at: float | None = None
        self._seen_seq = 0
        self._listener: Any = None
        self.reloads = 0

    @property
    def core(self) -> Scheduler:
        if self._core is None:
            raise FollowerClosed("the follower's core was handed over to the leader")
        return self._core

    # -- following -----------------------------------------------------------------------------

    def start(self) -> None:
        """Cold start: load the whole state and the sequence it is at."""
        began = self._clock()
        self._restore(began, self.store.load_all(decode_task=self.core.task_decoder()))

    def _restore(self, began: float, snapshot: Snapshot) -> None:
        self.core.restore(snapshot)
        self.applied_seq = self._seen_seq = snapshot.seq
        self._caught_up_at = began

    def read(self) -> tuple[float, FeedRead]:
        """The blocking half of ``catch_up``: ``(when the read began, what it found)``.

        Only I/O, no change of the core: safe in a worker thread while the loop reads the core.
        A follower too far behind (``FeedRead.reload``) loads everything here.
        """
        core = self.core
        began = self._clock()
        found = self.store.feed_after(self.applied_seq, decode_task=core.task_decoder())
        if found.reload:
            found.snapshot = self.store.load_all(decode_task=core.task_decoder())
        return began, found

    def apply(self, began: float, found: FeedRead) -> int:
        """The in-memory half of ``catch_up``; returns the rows applied (a reload counts its tasks)."""
        core = self.core
        if found.reload:
            self.reloads += 1
            if found.snapshot is None:
                raise ValueError("a FeedRead that asks for a reload needs its snapshot (Follower.read loads it)")
            self._restore(began, found.snapshot)
            return sum(core.status_counts().values())
        batch = found.batch
        if found.seq < self.applied_seq:
            raise RuntimeError(f"the commit sequence went back from {self.applied_seq} to {found.seq}")
        if not batch.empty:
            core.apply_feed(batch)
        self.applied_seq = self._seen_seq = found.seq
        self._caught_up_at = began
        return len(batch.tasks) + len(batch.task_deletes) + len(batch.workers) + len(batch.worker_deletes)

    def catch_up(self) -> int:
        """Apply everything committed after the applied sequence; returns the rows applied."""
        began, found = self.read()
        return self.apply(began, found)

    def lag_seconds(self) -> float:
        """Upper bound on the core's staleness in seconds (see the module docstring)."""
        if self._caught_up_at is None:
            return float("inf")
        return max(0.0, self._clock() - self._caught_up_at)

    def behind(self) -> int:
        """Commits the last read found that are not applied yet (0 right after ``catch_up``)."""
        return max(0, self._seen_seq - self.applied_seq)

    # -- waking --------------------------------------------------------------------------------

    def wait_for_commit(self, timeout: float) -> bool:
        """Block until a commit may have happened (True) or ``timeout`` passed (False).

        On PostgreSQL this LISTENs on a connection of its own (opened on first use, reopened
        after an error); elsewhere it only sleeps, and the caller polls with ``catch_up``.
        """
        if self.store.engine.dialect.name != "postgresql":
            time.sleep(timeout)
            return False
        if self._core is None:  # a wait still running in a worker thread after take_over
            return False
        try:
            conn = self._listening()
            if conn.notifies:
                conn.notifies.clear()
                return True
            ready, _, _ = select.select([conn], [], [], timeout)
            if ready:
                conn.poll()
                woke = bool(conn.notifies)
                conn.notifies.clear()
                return woke
            return False
        except Exception:  # noqa: BLE001 - a broken listener only costs the wake-up: poll instead
            self._close_listener()
            time.sleep(timeout)
            return False

    def _listening(self) -> Any:
        if self._listener is None or self._listener.closed:
            conn = psycopg2.connect(**driver_connect_kwargs(self.store.engine))
            conn.autocommit = True
            conn.cursor().execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._listener = conn
        return self._listener

    def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- the end -------------------------------------------------------------------------------

    def take_over(self) -> Scheduler:
        """Call only after winning the lease: read what the old epoch committed last, hand the core over."""
        self.catch_up()
        core = self.core
        self.close()
        self._core = None
        return core

    def close(self) -> None:
        """Release the LISTEN connection (the store and its engine belong to the caller)."""
        self._close_listener()
