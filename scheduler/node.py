"""One scheduler node: the HA loop that decides its role, and the RPC entry point.

The node is where the three pure-ish parts meet: the lease (who may write), the core (what the
state is) and the store (where it is durable). It owns these rules:

* **Only the leader writes.** A plain standby holds no task state. A *following* standby (role
  ``following``, when ``follow`` is on) keeps a read-only copy of the committed state with a
  :class:`scheduler.follower.Follower`: the feed is read in a worker thread and applied on the
  event loop, woken by each commit (PostgreSQL ``NOTIFY``) or every ``follow_poll`` seconds; it
  answers the read RPCs of :data:`scheduler.reads.REPLICA_READS` from that copy and never
  writes. A follower that fails drops its copy; the node is a plain standby until it has a new
  one. On winning the lease a following node reads only what was committed after its copy
  (``Follower.take_over``), a plain standby loads the whole state (role ``loading`` either way);
  then every known worker gets a fresh ``worker_disconnect_delay`` grace period, and only then
  the node serves.
* **Nothing acknowledged before it is durable**: each RPC waits for the commit round of its
  leadership term (:mod:`scheduler.term`) that persists what it changed or saw.
* **When in doubt, step down.** A failed commit, a fenced-out write, a failed renewal or a renew
  deadline that passed: the term ends, its in-memory state is dropped (memory may be ahead of the
  database) and the node becomes a standby again; clients retry elsewhere.

The HA loop follows the shape of Patroni's ``run_cycle``: each turn reads the lease, decides, acts
and logs one decision. A term is an async context (:class:`scheduler.term.LeaderTerm`) entered on
winning and loading, left on stepping down, so its tasks and waiters can never outlive it. The
role is kept by one :class:`scheduler.roles.RoleModel`, which every reader asks. Time comes from
an injected clock, and the wait between turns from an injected ``pause``, so the loop's
decisions are tested offline on a fake lease (tests/unit/node/).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from lease import LeaderLease
from lease.primary import HostTracker, tracker_of
from lease.retry import Backoff
from scheduler.core.errors import InvalidArgument
from scheduler.follower import Follower
from scheduler.metrics import NodeMetrics
from scheduler.reads import REPLICA_READS
from scheduler.roles import Role, RoleModel
from scheduler.sdnotify import notify
from scheduler.store.retention import delete_expired_events
from scheduler.store.writer import open_writer
from scheduler.term import LeaderTerm, NotLeader

__all__ = ["Node", "NotLeader", "RequestFailed", "Role", "node_of"]

STANDBY_POLL = 0.2  # seconds between takeover attempts: a released lease is taken in well under 1 s
SWITCHOVER_HOLD_OFF = 3.0  # after a planned switchover, let the other node take the lease first
STARTUP_MARGIN = 1.0  # a (re)starting node lets running standbys have a held lease first
HISTORY_BATCH = 500  # events per retention delete: a few ms of locks on any backend
HISTORY_PAUSE = 0.01  # seconds between retention deletes, so commit rounds get the database between them
FOLLOW_POLL = 0.5  # seconds a follower waits for a commit notice before it reads the feed anyway
REPLICA_MAX_LAG = 5.0  # seconds: a follower further behind is not a replica to read from (/replica)

# The term ends with these reasons by this node's own choice: it hands the lease back at once.
_RELEASING = frozenset({"switchover", "shutdown"})

_Term = LeaderTerm  # the name the group-commit tests use


def node_of(holder: str) -> str:
    """The node id inside a lease holder id ``<node>:<pid>:<random>``."""
    parts = holder.rsplit(":", 2)
    return parts[0] if len(parts) == 3 else holder


class RequestFailed(Exception):
    """An RPC raised inside the core for a reason other than bad input (answered as 500 JSON)."""


async def _pause(seconds: float, stopping: asyncio.Event) -> None:
    """Wait between two turns of the HA loop; return early when the node is stopping."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


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
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float, asyncio.Event], Awaitable[None]] = _pause,
        writer_factory: Callable[[Any, Any], Any] = open_writer,
        mailer_factory: Callable[[], Any] | None = None,
        history_retention: float = 0.0,
        follow: bool = False,
        follow_poll: float = FOLLOW_POLL,
        replica_max_lag: float = REPLICA_MAX_LAG,
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
        self._clock = clock
        self._pause = pause
        self._writer_factory = writer_factory
        self._mailer_factory = mailer_factory
        self._history_retention = history_retention
        self.roles = RoleModel(lease.is_held, self._role_changed)
        self._term: LeaderTerm | None = None
        self._stopping = asyncio.Event()
        self._hold_off_until = 0.0
        self._last_db_ok = float("-inf")
        self._last_renew_ok: float | None = None
        self._leader_record: Any = None
        self._ready_sent = False
        self.takeover_load_seconds: float | None = None
        self.takeover_kind: str | None = None  # "follower" (catch-up only) or "cold" (full load)
        self._follow = follow
        self._follow_poll = follow_poll
        self.replica_max_lag = replica_max_lag
        self._follower: Follower | None = None  # set only while its copy is caught up and usable
        self._following: asyncio.Task[None] | None = None
        self._follow_backoff = Backoff()
        # Read at scrape time from the role model, so the metrics can never disagree with /leader.
        self.metrics.since_renew.set_function(self._seconds_since_renew)
        self.metrics.is_leader.set_function(lambda: 1.0 if self.is_leader else 0.0)
        self.metrics.lease_epoch.set_function(self._leading_epoch)
        self.metrics.watch_role(lambda: self.roles.current().value)
        self.metrics.standby_lag.set_function(self._standby_lag)
        # Where the node writes (host, primary, reconnects, last commit) and how long a standby
        # waits between attempts while the database cannot be reached.
        engine = getattr(store, "engine", None)
        self._database: HostTracker | None = tracker_of(engine) if engine is not None else None
        if self._database is not None:
            self.metrics.database.watch(self._database, lambda: self.is_leader)
        self._db_backoff = Backoff()
        self._db_wait = STANDBY_POLL

    # -- public surface used by the HTTP layer ----------------------------------------------

    @property
    def role(self) -> Role:
        return self.roles.current()

    @property
    def is_leader(self) -> bool:
        """True only while we lead AND our own monotonic renew deadline has not passed.

        Checked on every request, so a leader whose renewals stall stops serving at its deadline
        even if the HA loop itself is stuck (the role model reads the lease).
        """
        term = self._term
        return term is not None and term.open and self.roles.serves_writes

    @property
    def db_reachable(self) -> bool:
        return self._clock() - self._last_db_ok < max(3 * self._renew_interval, 2.0)

    def leader_hint(self) -> str | None:
        """The node id of the current lease holder (holder ids are ``node:pid:random``)."""
        record = self._leader_record
        if record is None or record.holder is None or record.remaining <= 0:
            return None
        return node_of(record.holder)

    def _seconds_since_renew(self) -> float:
        if self._last_renew_ok is None or not self.is_leader:
            return 0.0
        return self._clock() - self._last_renew_ok

    def _leading_epoch(self) -> float:
        term = self._term
        return float(term.epoch) if term is not None and self.is_leader else 0.0

    def status_counts(self) -> dict[str, int] | None:
        term = self._term
        return term.core.status_counts() if term is not None and self.is_leader else None

    def status(self) -> dict[str, Any]:
        record = self._leader_record
        term = self._term
        leading = self.is_leader
        return {
            "node_id": self.node_id,
            "url": self.public_url,
            "role": self.roles.current().value,
            "epoch": term.epoch if term is not None else None,
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
            "seconds_since_renew": round(self._seconds_since_renew(), 3) if leading else None,
            "takeover_load_seconds": self.takeover_load_seconds,
            "takeover_kind": self.takeover_kind,
            "tasks": self.status_counts(),
            "replica": self.replica_status(),
        }

    def _standby_lag(self) -> float:
        """The follower's lag for the metric: +Inf on a standby without a copy, NaN on others."""
        follower = self._follower
        if follower is not None:
            return follower.lag_seconds()
        return float("inf") if self.roles.current() in (Role.STANDBY, Role.HOLDING_OFF) else float("nan")

    def replica_lag(self) -> float | None:
        """Seconds the read copy may be behind the committed state; None: no copy to read."""
        follower = self._follower
        if follower is None or not self.roles.serves_replica_reads:
            return None
        return follower.lag_seconds()

    def replica_ready(self) -> bool:
        """A read copy caught up within ``replica_max_lag`` (what ``/replica`` answers 200 to)."""
        lag = self.replica_lag()
        return lag is not None and lag <= self.replica_max_lag

    def replica_status(self) -> dict[str, Any] | None:
        if not self._follow:
            return None
        follower = self._follower
        lag = self.replica_lag()
        return {
            "following": lag is not None,
            "lag_seconds": None if lag is None or lag == float("inf") else round(lag, 3),
            "max_lag_seconds": self.replica_max_lag,
            "ready": self.replica_ready(),
            "applied_seq": follower.applied_seq if follower is not None else None,
            "behind": follower.behind() if follower is not None else None,
        }

    async def call(self, method: str, kwargs: dict[str, Any], audit: dict[str, Any] | None = None) -> Any:
        """Run one RPC on the core; return once everything it changed or saw is committed.

        ``audit``, when given, is committed in the same fenced round as what the call changed.

        :raises NotLeader: not the leader, or leadership was lost before the commit (the RPC
            may or may not have been persisted: every RPC is safe to repeat on the next leader).
        :raises InvalidArgument: bad arguments (the core validates before it changes anything).
        :raises RequestFailed: the core raised for another reason; raised only once whatever the
            RPC may have changed before it raised is durable (or the term has ended).
        """
        term = self._term
        if term is None or not self.is_leader:
            return self._replica_read(method, kwargs)
        try:
            result = getattr(term.core, method)(**kwargs)
            if audit is not None:
                term.audit.append(audit)
        except InvalidArgument:
            raise
        except Exception as exc:
            self.log.exception("rpc_raised", method=method)
            failure = RequestFailed(f"{method} failed: {type(exc).__name__}: {exc}")
            await term.durable()
            raise failure from exc
        await term.durable()
        return result

    def _replica_read(self, method: str, kwargs: dict[str, Any]) -> Any:
        """A read RPC answered from the follower's copy; anything else is the leader's (503).

        So is a read while the copy is further behind than ``replica_max_lag``: a standby never
        answers with data older than its bound.

        A listing is built here in one go (not piece by piece between requests): the follower
        applies the feed on this loop, and a copy must not change under a half-built listing.
        """
        follower = self._follower
        if follower is None or method not in REPLICA_READS or not self.roles.serves_replica_reads:
            raise NotLeader("this node is not the leader", self.leader_hint())
        if not self.replica_ready():  # its database is slow or gone: no answer older than the bound
            raise NotLeader(
                f"this standby's read copy is more than {self.replica_max_lag:g} s behind; ask the leader",
                self.leader_hint(),
            )
        result = getattr(follower.core, method)(**kwargs)
        return list(result) if method == "task_list_chunks" else result

    async def audit_records(self, limit: int = 100) -> list[dict[str, Any]]:
        """The durable audit trail, newest first (any node can read it)."""
        return await asyncio.to_thread(self._store.audit_records, limit)

    async def task_events(self, task_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """A task's durable status history, newest first (any node can read it)."""
        return await asyncio.to_thread(self._store.task_events, task_id, limit)

    async def switchover(self, audit: dict[str, Any] | None = None) -> bool:
        """Planned handover: release the lease so a standby takes over at once.

        ``audit`` is committed first, fenced like any write, while this node still leads.
        """
        if not self.is_leader:
            return False
        term = self._term
        if audit is not None and term is not None:
            term.audit.append(audit)
            await term.durable()
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
                term = await self._campaign()
                if term is None:
                    break
                async with term:  # leaving the term's context is the step-down
                    reason = "shutdown"  # also when cancelled while leading: hand the lease back
                    try:
                        reason = await self._lead(term)
                    finally:
                        await self._step_down(reason, release=reason in _RELEASING, term=term)
        finally:
            self.roles.to(Role.STOPPED)
            notify("STOPPING=1")

    async def _turn_done(self, decision: str | None, interval: float) -> None:
        if decision:
            self.log.info("ha_decision", decision=decision)
        if not self._ready_sent:
            self._ready_sent = notify("READY=1", f"STATUS={self.roles.current().value}")
        self._watchdog()
        await self._pause(interval, self._stopping)

    async def _campaign(self) -> LeaderTerm | None:
        """Standby (or holding off) turns until a term is won and loaded; None once stopping."""
        try:
            while not self._stopping.is_set():
                if self._follow and self._following is None:  # (again after a failed takeover)
                    self._following = asyncio.get_running_loop().create_task(self._follow_loop(), name="follower")
                decision, term = await self.standby_cycle()
                if term is not None:
                    return term
                await self._turn_done(decision, self._db_wait)
            return None
        finally:
            follower = await self._stop_following()
            if follower is not None:  # stopping, or a takeover that did not use it
                follower.close()

    async def _follow_loop(self) -> None:
        """Keep a read copy while campaigning: load it, then follow the feed; on failure start over."""
        while not self._stopping.is_set():
            follower = Follower(self._store, self._new_replica_core(), clock=self._clock)
            try:
                await asyncio.to_thread(follower.start)
                self._follower = follower
                self._follow_backoff.succeeded()
                self._follower_ready()
                self.log.info("following", applied_seq=follower.applied_seq)
                while not self._stopping.is_set():
                    began, found = await asyncio.to_thread(follower.read)
                    follower.apply(began, found)  # on the loop: the only thread touching the copy
                    self._follower_ready()
                    await asyncio.to_thread(follower.wait_for_commit, self._follow_poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: drop the copy, retry after a backoff
                self.log.warning("follower_failed", error=str(exc))
                self._drop_follower(follower)
                await self._pause(self._follow_backoff.failed(), self._stopping)

    def _new_replica_core(self) -> Any:
        core = self._core_factory()
        core.replica = True
        return core

    def _follower_ready(self) -> None:
        if self.roles.recorded is Role.STANDBY:
            self.roles.to(Role.FOLLOWING)

    def _drop_follower(self, follower: Follower) -> None:
        if self._follower is follower:
            self._follower = None
            if self.roles.recorded is Role.FOLLOWING:
                self.roles.to(Role.STANDBY)
        with contextlib.suppress(Exception):
            follower.close()

    async def _stop_following(self) -> Follower | None:
        """End the follow loop; return its follower when it held a caught-up copy (else None).

        The loop is cancelled at an ``await``, so the copy is never half-applied; a feed read or
        a wait still running in its worker thread finishes there and is discarded.
        """
        task, self._following = self._following, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        follower, self._follower = self._follower, None
        return follower

    async def _lead(self, term: LeaderTerm) -> str:
        """Leader turns until the term must end; returns why."""
        self._became_leader(term)
        await self._refresh_leader_record()  # so /status names this node as the holder at once
        while True:
            await self._turn_done(None, self._until_next_renew())
            if term.ended.is_set():
                return term.end_reason or "term_ended"
            if self._stopping.is_set():
                return "shutdown"
            decision = await self.leader_cycle(term)
            if decision is not None:
                self.log.info("ha_decision", decision=decision)
                return "renew_deadline_passed"

    async def _yield_to_running_standbys(self) -> None:
        """A leader restarted after a crash does not race the standbys for its old lease.

        Without this, a leader restarted by systemd right after a crash would compete with the
        standby at the moment its dead incarnation's lease expires, and win about half the time:
        leadership would go back to the node that just crashed. When the lease still names this
        node, we hold off until it expires plus a margin in which the standbys (who poll every
        ``STANDBY_POLL``) take it first. A single node simply takes it back after the margin.
        """
        await self._refresh_leader_record()
        record = self._leader_record
        if record is not None and record.holder is not None and node_of(record.holder) == self.node_id:
            wait = max(0.0, record.remaining) + STARTUP_MARGIN
            self._hold_off(wait)
            self.log.info("yielding_to_standbys", holder=record.holder, seconds=round(wait, 3))

    def _hold_off(self, seconds: float) -> None:
        self._hold_off_until = self._clock() + seconds
        self.roles.to(Role.HOLDING_OFF)

    async def standby_cycle(self) -> tuple[str | None, LeaderTerm | None]:
        """One standby turn: (the decision to log, a loaded term when the lease was won)."""
        if self.roles.recorded is Role.HOLDING_OFF:
            if self._clock() < self._hold_off_until:
                return None, None
            self.roles.to(Role.FOLLOWING if self._follower is not None else Role.STANDBY)
        try:
            epoch = await asyncio.to_thread(self._lease.try_acquire)
            self._last_db_ok = self._clock()
        except Exception as exc:  # the database is unreachable: stay standby, keep trying
            self.log.warning("lease_acquire_failed", error=str(exc))
            self._database_failed()
            return None, None
        if epoch is None:
            if await self._refresh_leader_record():
                self._database_ok()
            else:  # no primary reachable (try_acquire swallows that): look again after a backoff
                self._database_failed()
            return None, None
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
            self._last_db_ok = self._clock()
            return True
        except Exception as exc:
            self.log.warning("lease_read_failed", error=str(exc))
            return False

    async def leader_cycle(self, term: LeaderTerm) -> str | None:
        """One leader turn: renew; a decision (the term must end) once the deadline has passed."""
        started = self._clock()
        try:
            ok = await asyncio.to_thread(self._lease.renew)
        except Exception as exc:
            ok = False
            self.log.warning("lease_renew_failed", error=str(exc))
        self.metrics.renew_seconds.observe(self._clock() - started)
        if term.ended.is_set():
            # A failed commit ended the term while the renewal was in the database (both see the
            # same dead server): the node already stepped down, and _lead returns the term's reason.
            return None
        if ok:
            self._last_db_ok = self._last_renew_ok = self._clock()
            await self._refresh_leader_record()
        if self._lease.is_held():
            return None  # renewed, or a failed renewal with deadline left: try again next turn
        self.roles.to(Role.LEADER_EXPIRED)
        return "stepped down: could not renew the lease before the renew deadline"

    async def _take_over(self, epoch: int) -> tuple[str, LeaderTerm | None]:
        self.roles.to(Role.LOADING)  # from here no read is served from the follower's copy
        started = self._clock()
        follower = await self._stop_following()
        kind = "cold" if follower is None else "follower"
        load = self._load_core if follower is None else (lambda: self._catch_up_core(follower))
        loading = asyncio.ensure_future(asyncio.to_thread(load))
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
            self.roles.to(Role.STANDBY)
            return f"lease won at epoch {epoch} but loading the state failed; released it", None
        self.takeover_load_seconds = round(self._clock() - started, 4)
        self.takeover_kind = kind
        if not self._lease.is_held():
            self.roles.to(Role.STANDBY)
            return f"lease won at epoch {epoch} but lost it while loading the state", None
        self._last_db_ok = self._last_renew_ok = self._clock()
        term = LeaderTerm(
            epoch=epoch,
            core=core,
            writer=self._writer_factory(self._store, self._lease),
            lease=self._lease,
            metrics=self.metrics,
            log=self.log,
            clock=self._clock,
            prune_interval=self._prune_interval,
            on_end=self._term_ended,
            mailer=self._mailer_factory() if self._mailer_factory is not None else None,
            background=(self._history_sweeper,) if self._history_retention > 0 else (),
        )
        return f"took over as leader at epoch {epoch}", term

    def _became_leader(self, term: LeaderTerm) -> None:
        """Called inside the term's context: from here on the node serves."""
        self._term = term
        self.roles.to(Role.LEADER)
        self.metrics.takeovers.inc()
        if self.takeover_load_seconds is not None:
            self.metrics.load_seconds.set(self.takeover_load_seconds)
        notify(f"STATUS=leader (epoch {term.epoch})")
        counts = term.core.status_counts()
        tasks = sum(counts.values())
        self.log.info("became_leader", epoch=term.epoch, load_seconds=self.takeover_load_seconds, tasks=tasks,
                      loaded=self.takeover_kind)
        self.log.info("ha_decision", decision=f"took over as leader at epoch {term.epoch} with {tasks} tasks")

    def _load_core(self) -> Any:
        """Read the whole state and build a core from it (runs in a worker thread)."""
        core = self._core_factory()
        core.restore(self._store.load_all(decode_task=core.task_decoder()))
        core.grant_grace()
        return core

    @staticmethod
    def _catch_up_core(follower: Follower) -> Any:
        """The follower's copy plus what the old epoch committed after it (runs in a worker thread).

        Nothing else touches the copy now: the follow loop has ended and reads stopped with the
        role ``loading``.
        """
        core = follower.take_over()
        core.replica = False
        core.grant_grace()
        return core

    async def _renew_during_load(self) -> None:
        try:
            if await asyncio.to_thread(self._lease.renew):
                self._last_db_ok = self._last_renew_ok = self._clock()
        except Exception as exc:
            self.log.warning("lease_renew_failed", error=str(exc), during="takeover_load")

    async def _step_down(self, reason: str, *, release: bool = False, term: LeaderTerm | None = None) -> None:
        """End the current term (or ``term``): stop serving, close it, hand back the lease if asked.

        Safe to call more than once and from anywhere (the HA loop, a switchover, a test): the
        first call closes the term, the others wait for that.
        """
        term = term or self._term
        if term is None:
            return
        first = not term.closed
        term.end(reason)  # -> _term_ended: the node stops serving at once
        # Graceful: let an in-flight commit finish and answer its clients before handing over.
        await term.close(reason, graceful=release)
        if not first:
            return
        if release:
            try:
                await asyncio.to_thread(self._lease.release)
            except Exception as exc:
                self.log.warning("lease_release_failed", error=str(exc))
        notify(f"STATUS={self.roles.current().value} ({term.end_reason})")
        self.log.warning("stepped_down", reason=term.end_reason, epoch=term.epoch)

    async def _history_sweeper(self) -> None:
        """Delete task history older than the retention, one small fenced batch at a time.

        Runs beside the committer on a connection of the pool, every prune interval, for as long
        as the term lasts; between batches it yields, so a commit round never queues behind more
        than one small batch.
        """
        while True:
            cutoff = time.time() - self._history_retention
            deleted = 0
            try:
                while True:
                    n = await asyncio.to_thread(
                        delete_expired_events, self._store.engine, cutoff, self._lease.fence, HISTORY_BATCH
                    )
                    deleted += n
                    if n < HISTORY_BATCH:
                        break
                    await asyncio.sleep(HISTORY_PAUSE)
            except Exception as exc:  # a fenced-out or failing delete: the lease loop decides
                self.log.warning("history_sweep_failed", error=str(exc))
            if deleted:
                self.log.info("history_swept", deleted=deleted, before=cutoff)
            await asyncio.sleep(self._prune_interval)

    def _term_ended(self, term: LeaderTerm, reason: str) -> None:
        """The moment a term ends (called once by the term, synchronously): stop serving."""
        if self._term is not term:
            return
        self._term = None
        if reason == "switchover":
            self._hold_off_until = self._clock() + SWITCHOVER_HOLD_OFF
            self.roles.to(Role.HOLDING_OFF)
        else:
            self.roles.to(Role.STANDBY)
        self.metrics.stepdowns.labels(reason=reason).inc()

    def _role_changed(self, old: Role, new: Role) -> None:
        self.log.info("role_changed", old=old.value, new=new.value)

    def _watchdog(self) -> None:
        """Feed systemd's watchdog only while we are healthy: a leader that cannot renew is not."""
        if self.roles.recorded is not Role.LEADER or self._lease.is_held():
            notify("WATCHDOG=1")
