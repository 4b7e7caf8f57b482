"""One scheduler node: its role (standby or leader), the committer, and group commit.

The node is where the three pure-ish parts meet: the lease (who may write), the core (what the
state is) and the store (where it is durable). It owns these rules:

* **Only the leader has state.** A standby holds no task state at all. On winning the lease it
  loads the whole state from the database, gives every known worker a fresh
  ``worker_disconnect_delay`` grace period, and only then serves.
* **Group commit, nothing acknowledged before it is durable.** An RPC runs on the core at once
  (the core is in-memory and the event loop runs one RPC at a time, as luigid's tornado thread
  does), then waits for the commit round that persists what it changed or saw. One committer
  writes rounds back to back, each in ONE fenced transaction: everything the core changed while
  the previous round was committing goes into the next one, so the rounds grow with the load
  and no RPC waits for more than the round in flight plus its own.
* **When in doubt, step down.** A failed commit, a fenced-out write, a failed renewal or a renew
  deadline that passed: the node stops answering the task API at once, drops its in-memory state
  (memory may be ahead of the database) and becomes a standby again; clients retry elsewhere.

The HA loop follows the shape of Patroni's ``run_cycle``: each turn reads the lease, decides, acts
and logs one decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from lease import FencedOut, LeaderLease
from lease.primary import HostTracker, tracker_of
from lease.retry import Backoff
from scheduler.metrics import NodeMetrics
from scheduler.sdnotify import notify
from scheduler.store.writer import BatchWriter, open_writer

STANDBY_POLL = 0.2  # seconds between takeover attempts: a released lease is taken in well under 1 s
SWITCHOVER_HOLD_OFF = 3.0  # after a planned switchover, let the other node take the lease first
STARTUP_MARGIN = 1.0  # a (re)starting node lets running standbys have a held lease first


def node_of(holder: str) -> str:
    """The node id inside a lease holder id ``<node>:<pid>:<random>``."""
    parts = holder.rsplit(":", 2)
    return parts[0] if len(parts) == 3 else holder


class Role(enum.Enum):
    STANDBY = "standby"
    LEADER = "leader"
    STOPPED = "stopped"


class NotLeader(Exception):
    """This node does not hold the write role; the HTTP layer answers 503 naming the leader."""

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class RequestFailed(Exception):
    """An RPC raised inside the core for a reason other than bad input (answered as 500 JSON)."""


@dataclass
class _Term:
    """One leadership term: the state, its writer and the commit rounds that live as long as it.

    ``next_round`` holds the RPCs waiting for the round that will take the core's current
    changes; ``this_round`` those waiting for the round being committed right now (None when no
    commit is in flight).
    """

    epoch: int
    core: Any
    writer: BatchWriter
    next_round: list[asyncio.Future[None]] = field(default_factory=list)
    this_round: list[asyncio.Future[None]] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    commit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Node:
    """A scheduler node. ``await node.run()`` until ``node.stop()``; ``await node.call(...)`` RPCs."""

    def __init__(
        self,
        *,
        node_id: str,
        store: Any,
        lease: LeaderLease,
        core_factory: Callable[[], Any],
        metrics: NodeMetrics,
        renew_interval: float,
        prune_interval: float = 60.0,
        public_url: str | None = None,
        log: Any = None,
    ) -> None:
        self.node_id = node_id
        self.public_url = public_url
        self._store = store
        self._lease = lease
        self._core_factory = core_factory
        self.metrics = metrics
        self._renew_interval = renew_interval
        self._prune_interval = prune_interval
        self.log = log or structlog.get_logger("luigi_ha").bind(node_id=node_id)
        self.role = Role.STANDBY
        self._term: _Term | None = None
        self._stopping = asyncio.Event()
        self._hold_off_until = 0.0
        self._last_db_ok = 0.0
        self._last_renew_ok: float | None = None
        self._leader_record: Any = None
        self._ready_sent = False
        self.takeover_load_seconds: float | None = None
        # Computed at scrape time, so a stalled renew loop shows up in the metric.
        self.metrics.since_renew.set_function(self._seconds_since_renew)
        # Where the node writes (host, primary, reconnects, last commit) and how long a standby
        # waits between attempts while the database cannot be reached.
        engine = getattr(store, "engine", None)
        self._database: HostTracker | None = tracker_of(engine) if engine is not None else None
        if self._database is not None:
            self.metrics.database.watch(self._database, lambda: self.role is Role.LEADER)
        self._db_backoff = Backoff()
        self._db_wait = STANDBY_POLL

    # -- public surface used by the HTTP layer ----------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True only while we lead AND our own monotonic renew deadline has not passed.

        Checked on every request, so a leader whose renewals stall stops serving at its deadline
        even if the HA loop itself is stuck.
        """
        return self.role is Role.LEADER and self._term is not None and self._lease.is_held()

    @property
    def db_reachable(self) -> bool:
        return time.monotonic() - self._last_db_ok < max(3 * self._renew_interval, 2.0)

    def leader_hint(self) -> str | None:
        """The node id of the current lease holder (holder ids are ``node:pid:random``)."""
        record = self._leader_record
        if record is None or record.holder is None or record.remaining <= 0:
            return None
        return node_of(record.holder)

    def _seconds_since_renew(self) -> float:
        if self._last_renew_ok is None or not self.is_leader:
            return 0.0
        return time.monotonic() - self._last_renew_ok

    def status_counts(self) -> dict[str, int] | None:
        term = self._term
        return term.core.status_counts() if term is not None and self.is_leader else None

    def status(self) -> dict[str, Any]:
        record = self._leader_record
        return {
            "node_id": self.node_id,
            "url": self.public_url,
            "role": Role.LEADER.value if self.is_leader else self.role.value,
            "epoch": self._term.epoch if self._term is not None else None,
            "lease": None
            if record is None
            else {
                "holder": record.holder,
                "holder_node": node_of(record.holder) if record.holder else None,
                "epoch": record.epoch,
                "expires_in": round(record.remaining, 3),
                "expires_at": record.expires_at,
            },
            "database_reachable": self.db_reachable,
            "database": self._database.describe() if self._database is not None else None,
            "seconds_since_renew": round(self._seconds_since_renew(), 3) if self.is_leader else None,
            "takeover_load_seconds": self.takeover_load_seconds,
            "tasks": self.status_counts(),
        }

    async def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        """Run one RPC on the core; return once everything it changed or saw is committed.

        :raises NotLeader: not the leader, or leadership was lost before the commit (the RPC
            may or may not have been persisted: every RPC is safe to repeat on the next leader).
        :raises ValueError: bad arguments (the core changed nothing).
        :raises RequestFailed: the core raised for another reason.
        """
        term = self._term
        if term is None or not self.is_leader:
            raise NotLeader("this node is not the leader", self.leader_hint())
        try:
            result = getattr(term.core, method)(**kwargs)
        except ValueError:  # InvalidArgument is a ValueError: bad input, nothing changed
            raise
        except Exception as exc:
            self.log.exception("rpc_raised", method=method)
            failure = RequestFailed(f"{method} failed: {type(exc).__name__}: {exc}")
            await self._durable(term)
            raise failure from exc
        await self._durable(term)
        return result

    async def _durable(self, term: _Term) -> None:
        """Wait until the state this RPC changed or read is committed.

        Uncommitted changes (ours or anyone's, which we may have read) go into the next round;
        with none, only the round in flight can hold something we read; with neither, the state
        we saw is already durable and the answer goes out at once (a ping, most reads).
        """
        if term.core.has_changes():
            waiters = term.next_round
            term.wake.set()
        elif term.this_round is not None:
            waiters = term.this_round
        else:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(future)
        await future

    async def task_events(self, task_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """A task's durable status history, newest first (any node can read it)."""
        return await asyncio.to_thread(self._store.task_events, task_id, limit)

    async def switchover(self) -> bool:
        """Planned handover: release the lease so a standby takes over at once."""
        if not self.is_leader:
            return False
        self._hold_off_until = time.monotonic() + SWITCHOVER_HOLD_OFF
        await self._step_down("switchover", release=True)
        return True

    def stop(self) -> None:
        self._stopping.set()

    # -- the HA loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign for the lease, lead while we hold it, step down when we must."""
        self.log.info("node_starting", renew_interval=self._renew_interval)
        await self._yield_to_running_standbys()
        try:
            while not self._stopping.is_set():
                decision = await self._cycle()
                if decision:
                    self.log.info("ha_decision", decision=decision)
                if not self._ready_sent:
                    self._ready_sent = notify("READY=1", f"STATUS={self.role.value}")
                self._watchdog()
                interval = self._until_next_renew() if self.role is Role.LEADER else self._db_wait
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=interval)
        finally:
            if self.role is Role.LEADER:
                await self._step_down("shutdown", release=True)
            self.role = Role.STOPPED
            notify("STOPPING=1")

    async def _yield_to_running_standbys(self) -> None:
        """A leader restarted after a crash does not race the standbys for its old lease.

        Without this, a leader restarted by systemd right after a crash would compete with the
        standby at the moment its dead incarnation's lease expires, and win about half the time:
        leadership would go back to the node that just crashed. When the lease still names this
        node, we wait until it expires plus a margin in which the standbys (who poll every
        ``STANDBY_POLL``) take it first. A single node simply takes it back after the margin.
        """
        await self._refresh_leader_record()
        record = self._leader_record
        if record is not None and record.holder is not None and node_of(record.holder) == self.node_id:
            wait = max(0.0, record.remaining) + STARTUP_MARGIN
            self._hold_off_until = time.monotonic() + wait
            self.log.info("yielding_to_standbys", holder=record.holder, seconds=round(wait, 3))

    async def _cycle(self) -> str | None:
        if self.role is Role.LEADER:
            return await self._renew()
        if time.monotonic() < self._hold_off_until:
            return None
        try:
            epoch = await asyncio.to_thread(self._lease.try_acquire)
            self._last_db_ok = time.monotonic()
        except Exception as exc:  # the database is unreachable: stay standby, keep trying
            self.log.warning("lease_acquire_failed", error=str(exc))
            self._database_failed()
            return None
        if epoch is None:
            if await self._refresh_leader_record():
                self._database_ok()
            else:  # no primary reachable (try_acquire swallows that): look again after a backoff
                self._database_failed()
            return None
        self._database_ok()
        return await self._take_over(epoch)

    def _until_next_renew(self) -> float:
        """``renew_interval``, or sooner when the term has less than two intervals left.

        A term is valid from the *start* of the attempt that won it, so an acquire that the
        database answered late (a commit released only when a synchronous standby came back)
        starts a term that is nearly over; renewing at the usual interval would let it lapse.
        """
        return min(self._renew_interval, max(0.02, self._lease.deadline_remaining() / 2))

    def _database_failed(self) -> None:
        self._db_wait = self._db_backoff.failed()

    def _database_ok(self) -> None:
        self._db_backoff.succeeded()
        self._db_wait = STANDBY_POLL

    async def _refresh_leader_record(self) -> bool:
        try:
            self._leader_record = await asyncio.to_thread(self._lease.read)
            self._last_db_ok = time.monotonic()
            return True
        except Exception as exc:
            self.log.warning("lease_read_failed", error=str(exc))
            return False

    async def _renew(self) -> str | None:
        started = time.monotonic()
        try:
            ok = await asyncio.to_thread(self._lease.renew)
        except Exception as exc:
            ok = False
            self.log.warning("lease_renew_failed", error=str(exc))
        self.metrics.renew_seconds.observe(time.monotonic() - started)
        if ok:
            self._last_db_ok = self._last_renew_ok = time.monotonic()
            await self._refresh_leader_record()
            if self._lease.is_held():
                return None
        if not self._lease.is_held():
            await self._step_down("renew_deadline_passed")
            return "stepped down: could not renew the lease before the renew deadline"
        if not ok:
            return None  # a failed renewal with deadline left: try again next cycle
        return None

    async def _take_over(self, epoch: int) -> str:
        started = time.monotonic()
        loading = asyncio.ensure_future(asyncio.to_thread(self._load_core))
        # Keep renewing while a large state loads: a load longer than the renew deadline would
        # otherwise lose the lease every time and no node would ever finish taking over.
        while not loading.done():
            done, _ = await asyncio.wait({loading}, timeout=self._renew_interval)
            if not done:
                await self._renew_during_load()
        try:
            core = loading.result()
        except Exception as exc:
            self.log.error("takeover_load_failed", epoch=epoch, error=str(exc))
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._lease.release)
            return f"lease won at epoch {epoch} but loading the state failed; released it"
        self.takeover_load_seconds = round(time.monotonic() - started, 4)
        if not self._lease.is_held():
            return f"lease won at epoch {epoch} but lost it while loading the state"
        self._last_db_ok = self._last_renew_ok = time.monotonic()
        term = _Term(epoch=epoch, core=core, writer=open_writer(self._store, self._lease))
        self._term = term
        self.role = Role.LEADER
        term.tasks.append(asyncio.create_task(self._committer(term), name=f"committer-{epoch}"))
        term.tasks.append(asyncio.create_task(self._pruner(term), name=f"pruner-{epoch}"))
        self.metrics.is_leader.set(1)
        self.metrics.lease_epoch.set(epoch)
        self.metrics.takeovers.inc()
        self.metrics.load_seconds.set(self.takeover_load_seconds)
        await self._refresh_leader_record()
        notify(f"STATUS=leader (epoch {epoch})")
        counts = core.status_counts()
        self.log.info("became_leader", epoch=epoch, load_seconds=self.takeover_load_seconds, tasks=sum(counts.values()))
        return f"took over as leader at epoch {epoch} with {sum(counts.values())} tasks"

    def _load_core(self) -> Any:
        """Read the whole state and build a core from it (runs in a worker thread)."""
        core = self._core_factory()
        core.restore(self._store.load_all(decode_task=core.task_decoder()))
        core.grant_grace()
        return core

    async def _renew_during_load(self) -> None:
        try:
            if await asyncio.to_thread(self._lease.renew):
                self._last_db_ok = self._last_renew_ok = time.monotonic()
        except Exception as exc:
            self.log.warning("lease_renew_failed", error=str(exc), during="takeover_load")

    async def _step_down(self, reason: str, *, release: bool = False) -> None:
        term = self._term
        if term is None:
            return
        self._term = None
        self.role = Role.STANDBY
        if release:
            # Graceful: let an in-flight commit finish and answer its clients before handing over.
            async with term.commit_lock:
                pass
        self.metrics.is_leader.set(0)
        self.metrics.lease_epoch.set(0)
        self.metrics.stepdowns.labels(reason=reason).inc()
        current = asyncio.current_task()
        cancelled = [task for task in term.tasks if task is not current]
        for task in cancelled:
            task.cancel()
        self._fail_waiters(term, reason)
        # A commit cut short drops its own connection as it unwinds; then the writer is closed.
        await asyncio.gather(*cancelled, return_exceptions=True)
        term.writer.close()
        if release:
            try:
                await asyncio.to_thread(self._lease.release)
            except Exception as exc:
                self.log.warning("lease_release_failed", error=str(exc))
        notify(f"STATUS=standby ({reason})")
        self.log.warning("stepped_down", reason=reason, epoch=term.epoch)

    @staticmethod
    def _fail_waiters(term: _Term, reason: str) -> None:
        for waiters in (term.this_round or [], term.next_round):
            _fail(waiters, f"leadership lost ({reason}); retry")
        term.next_round = []

    def _watchdog(self) -> None:
        """Feed systemd's watchdog only while we are healthy: a leader that cannot renew is not."""
        if self.role is not Role.LEADER or self._lease.is_held():
            notify("WATCHDOG=1")

    # -- the committer ----------------------------------------------------------------------

    async def _pruner(self, term: _Term) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            try:
                term.core.prune()
            except Exception:
                self.log.exception("prune_raised")
            if term.core.has_changes():
                term.wake.set()

    async def _committer(self, term: _Term) -> None:
        """Commit rounds back to back while anything waits; step down when a commit fails.

        Each round is one durable commit of everything the core changed while the previous one
        was committing, so the rounds grow with the load and a lone client never waits for
        company. (Holding a round back for the clients just answered saved commits but no
        time once the commit ran on the event loop, so there is no such wait.)
        """
        while self._term is term:
            await term.wake.wait()
            term.wake.clear()
            if not term.next_round and not term.core.has_changes():
                continue
            async with term.commit_lock:
                failure = await self._commit_round(term)
            if failure is not None:
                await self._step_down(failure)
                return

    async def _commit_round(self, term: _Term) -> str | None:
        """Persist (fenced) what the core changed and answer the round; a step-down reason if not.

        The answers go out first. The round's log lines and metrics are scheduled behind the
        clients' handlers, so they run while the next round is already in the database's hands
        instead of delaying every reply of this one (about 0.1 ms a round on a busy loop).
        """
        changes = term.core.take_changes()
        waiters, term.next_round = term.next_round, []
        term.this_round = waiters
        elapsed: float | None = None
        try:
            if not changes.empty:
                if not self._lease.is_held():
                    _fail(waiters, "not committed: renew deadline passed before commit; retry")
                    return "renew_deadline_passed"
                started = time.monotonic()
                try:
                    await term.writer.apply(changes, term.epoch)
                except FencedOut as exc:
                    _fail(waiters, "not committed: fenced out by a newer leader; retry")
                    self.log.error("write_fenced_out", epoch=term.epoch, error=str(exc))
                    return "fenced_out"
                except asyncio.CancelledError:
                    # Stepped down mid-commit: the outcome is unknown to us, so the clients retry.
                    _fail(waiters, "leadership lost during commit; retry")
                    raise
                except Exception as exc:
                    _fail(waiters, "not committed: commit failed; retry")
                    self.log.error("commit_failed", epoch=term.epoch, error=str(exc))
                    return "commit_failed"
                elapsed = time.monotonic() - started
        finally:
            term.this_round = None
        for future in waiters:
            if not future.done():
                future.set_result(None)
        asyncio.get_running_loop().call_soon(self._account_round, len(waiters), elapsed, changes.events)
        return None

    def _account_round(self, answered: int, elapsed: float | None, events: list[dict[str, Any]]) -> None:
        """Metrics and log lines of one committed round (``elapsed`` None: nothing to write)."""
        self.metrics.commit_batch.observe(answered)
        if elapsed is not None:
            self.metrics.commit_seconds.observe(elapsed)
        for event in events:
            self.log.info(
                "task_status", task_id=event.get("task_id"), status=event.get("status"), worker=event.get("worker")
            )


def _fail(waiters: list[asyncio.Future[None]], why: str) -> None:
    for future in waiters:
        if not future.done():
            future.set_exception(NotLeader(why))
