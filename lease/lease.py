"""A leader lease kept in one database row, with an epoch that fences every write of its holder.

The lease knows nothing of tasks: it is a named row (``lh_leases``, :mod:`lease.schema`) that
one holder at a time may own until ``expires_at``, by the database's clock (:mod:`lease.clock`).

The statements (``now`` is :func:`lease.clock.db_now`, evaluated by the database at execution;
``:ttl`` is this node's ttl). Each runs in one short transaction, and each decision is a single
conditional UPDATE whose affected-row count decides it, so it is atomic on every database:

acquire (:meth:`LeaderLease.try_acquire`)::

    SELECT epoch FROM lh_leases WHERE name = :name                       -- seen epoch e
    UPDATE lh_leases
       SET holder = :me, epoch = e + 1,
           acquired_at = now, renewed_at = now, expires_at = now + :ttl
     WHERE name = :name AND epoch = e
       AND (holder IS NULL OR expires_at <= now OR holder = :me)

    The ``epoch = e`` compare-and-set makes every epoch value granted at most once: of two racing
    challengers that both saw ``e``, the second UPDATE (re-evaluated against the row the first
    one committed) matches nothing. Renew and release do not change the epoch, and the freshness
    conditions are re-checked by the UPDATE itself, so a stale SELECT can only cause a miss,
    never a wrong grant. If the row is missing it is first inserted *free* (holder NULL, epoch 0,
    expires_at 0) in its own transaction; a unique-key violation there just means another node
    inserted it first, and the CAS above decides who gets it.

    Epoch rule: **every successful acquire increments the epoch**, including re-acquiring a row
    that still names this holder (a restarted process reusing its holder id). A new term always
    gets a new fencing token, so writes still in flight from an earlier term are fenced out. Use
    :meth:`LeaderLease.renew` to extend the current term.

renew (:meth:`LeaderLease.renew`)::

    UPDATE lh_leases SET expires_at = now + :ttl, renewed_at = now
     WHERE name = :name AND holder = :me AND epoch = :epoch AND expires_at > now

    Zero rows means deposed (someone else acquired, or the lease expired): the term is over.

release (:meth:`LeaderLease.release`)::

    UPDATE lh_leases SET holder = NULL, expires_at = now
     WHERE name = :name AND holder = :me AND epoch = :epoch

    A standby's next acquire succeeds at once (graceful switchover well under a second).

None of the SET clauses reads a column, so MySQL's left-to-right SET evaluation cannot matter.
Like a takeover, renew and release must wait for the row's exclusive lock, i.e. for this node's
own in-flight fenced transactions (:mod:`lease.fence`).

On PostgreSQL each lease transaction first runs ``SELECT set_config('statement_timeout', ms,
true), set_config('lock_timeout', ms, true)`` with ``ms`` = the time left in the current budget
(never more than the engine's own statement timeout),
so no lease statement can outlive the renew deadline (kubernetes#44887) and a takeover blocked by
the leader's share lock gives up instead of queueing (ha-anchors lesson 7). MySQL/MariaDB and
SQLite rely on the session timeouts set by :func:`lease.create_engine`.

Time on the node: the node never compares wall clocks. It records its *monotonic* time at the
start of every acquire/renew attempt; when an attempt succeeds, the term is valid until that
start + ``renew_deadline``. Because the attempt started before the database evaluated ``now``,
and ``renew_deadline < ttl``, the node always stops (:meth:`LeaderLease.is_held` turns False)
before the row can expire in the database, whatever the latency of the statement. Once
``is_held()`` has turned False the term is over: :meth:`LeaderLease.renew` refuses to revive it,
the node must acquire again (and gets a new epoch).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa

from lease.clock import db_now
from lease.engine import timeouts_of
from lease.errors import FencedOut, LeaseUnavailable
from lease.fence import check_fence, fenced_out_from, postgres_fence_call, postgres_fence_statement
from lease.primary import guarded_transaction
from lease.retry import is_transient, run_with_deadline
from lease.schema import DEFAULT_TABLE_NAME, HOLDER_LENGTH, NAME_LENGTH, define_lease_table
from lease.timings import LeaseTimings

__all__ = ["LeaderLease", "LeaseRecord", "make_holder_id"]

log = logging.getLogger(__name__)

_MIN_STATEMENT_MS = 50
# How long after the deadline the client cancels a PostgreSQL lease transaction itself: the
# server's own timeout (set to the deadline) fires first whenever it applies.
_GUARD_MARGIN = 0.25

_R = TypeVar("_R")  # what the body run by ``LeaderLease._in_txn`` returns


def make_holder_id(node: str | None = None) -> str:
    """A holder id unique to this process incarnation: ``<node>:<pid>:<random>``.

    Unique per incarnation because a restarted process must not be mistaken for its previous
    self (each acquire bumps the epoch anyway, so even a reused id is safe, only flappier).
    """
    node = node or socket.gethostname()
    return f"{node}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:HOLDER_LENGTH]


@dataclass(frozen=True)
class LeaseRecord:
    """What the lease row says, read by any node (leader or not), e.g. for ``/status``.

    ``expires_at`` and ``db_now`` are database-clock epoch seconds from the same statement;
    ``remaining = expires_at - db_now`` is negative once expired.
    """

    name: str
    holder: str | None
    epoch: int
    expires_at: float
    db_now: float
    remaining: float
    acquired_at: float | None = None
    renewed_at: float | None = None

    @property
    def is_free(self) -> bool:
        """True when nobody holds the lease: released, or expired by the database's clock."""
        return self.holder is None or self.remaining <= 0


@dataclass(frozen=True)
class _Term:
    """The term this node believes it holds: its epoch, and the monotonic start of the last
    successful acquire/renew attempt (the term is valid until ``valid_from + renew_deadline``)."""

    epoch: int
    valid_from: float


class LeaderLease:
    """One node's handle on a named database lease.

    Thread-safe: acquire/renew/release are serialised by an internal lock; :meth:`is_held`,
    :meth:`deadline_remaining` and :attr:`epoch` read one immutable snapshot and never block, so
    a request thread can ask "am I leader?" while the lease loop is inside a slow renew.

    :param engine: from :func:`lease.create_engine` (its per-dialect settings are assumed).
    :param name: lease name (the row's primary key), at most 128 characters.
    :param holder: this process's unique id (see :func:`make_holder_id`), at most 255 characters.
    :param timings: validated :class:`LeaseTimings`.
    :param monotonic: clock for the renew deadline; injectable for tests.
    :param table: the lease table or its name, e.g. the scheduler's migrated ``Table``.
    :param fence_function: on PostgreSQL, the name of a function that
        :func:`lease.fence.postgres_fence_function` created for ``table`` (by the schema owner's
        migration); :meth:`fence_statement` then calls it instead of an anonymous block that the
        server would compile on every write.
    """

    def __init__(
        self,
        engine: sa.Engine,
        name: str,
        holder: str,
        timings: LeaseTimings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        table: sa.Table | str = DEFAULT_TABLE_NAME,
        fence_function: str | None = None,
    ) -> None:
        if not name or len(name) > NAME_LENGTH:
            raise ValueError(f"lease name must be 1..{NAME_LENGTH} characters, got {name!r}")
        if not holder or len(holder) > HOLDER_LENGTH:
            raise ValueError(f"holder must be 1..{HOLDER_LENGTH} characters, got {holder!r}")
        if not isinstance(timings, LeaseTimings):
            raise TypeError(f"timings must be a LeaseTimings, got {type(timings).__name__}")
        self._engine = engine
        self._name = name
        self._holder = holder
        self._timings = timings
        self._monotonic = monotonic
        self._table = define_lease_table(sa.MetaData(), table) if isinstance(table, str) else table
        self._is_postgres = engine.dialect.name == "postgresql"
        configured = timeouts_of(engine)
        self._engine_statement_timeout = configured.statement if configured is not None else 0.0
        self._op_lock = threading.Lock()
        self._term: _Term | None = None
        self._last_error: BaseException | None = None
        self._fence_function = fence_function
        self._fence_statements: dict[int, str] = {}

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self._name

    @property
    def holder(self) -> str:
        """This node's holder id (not necessarily the row's current holder: see :meth:`read`)."""
        return self._holder

    @property
    def timings(self) -> LeaseTimings:
        return self._timings

    @property
    def table(self) -> sa.Table:
        return self._table

    @property
    def epoch(self) -> int | None:
        """Epoch (fencing token) of this node's current term, or None without one.

        Set by a successful acquire; cleared by release, by a renew that fails and by the start of
        a new acquire. It does not look at the deadline: use :meth:`is_held` for that.
        """
        term = self._term
        return None if term is None else term.epoch

    @property
    def last_error(self) -> BaseException | None:
        """The last database error that made an acquire/renew/release give up (for status pages)."""
        return self._last_error

    # ------------------------------------------------------------------ in-memory checks

    def is_held(self) -> bool:
        """True iff this node has a term and its renew deadline has not passed. No database access.

        The deadline runs on this node's monotonic clock from the *start* of the last successful
        acquire/renew, and is shorter than the ttl, so this turns False before the database can
        expire the row and give it to a standby.
        """
        term = self._term
        return term is not None and self._monotonic() < term.valid_from + self._timings.deadline

    def deadline_remaining(self) -> float:
        """Seconds until :meth:`is_held` turns False (0.0 if it already is)."""
        term = self._term
        if term is None:
            return 0.0
        return max(0.0, term.valid_from + self._timings.deadline - self._monotonic())

    # ------------------------------------------------------------------ database operations

    def try_acquire(self) -> int | None:
        """Try to take the lease; return the new epoch, or None if another node holds it.

        Ends any current term first (a successful acquire always starts a new term with a new
        epoch). Transient database errors are retried for at most ``renew_deadline`` in total;
        if they persist, the attempt counts as not acquired (None; see :attr:`last_error`).
        """
        with self._op_lock:
            self._term = None
            deadline = self._monotonic() + self._timings.deadline

            def attempt() -> tuple[int | None, float]:
                started = self._monotonic()
                new_epoch = self._in_txn(deadline, self._cas_acquire)
                if new_epoch is _MISSING:
                    self._insert_free_row(deadline)
                    new_epoch = self._in_txn(deadline, self._cas_acquire)
                return (None if new_epoch is _MISSING else new_epoch), started

            try:
                new_epoch, started = run_with_deadline(
                    attempt,
                    deadline=deadline,
                    monotonic=self._monotonic,
                    what=f"acquire lease {self._name!r}",
                )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._last_error = exc
                log.warning(
                    "lease %r: could not reach the database to acquire: %s",
                    self._name,
                    exc.__class__.__name__,
                )
                return None
            if new_epoch is None:
                return None
            self._term = _Term(epoch=new_epoch, valid_from=started)
            self._last_error = None
            log.info("lease %r acquired by %s with epoch %d", self._name, self._holder, new_epoch)
            return new_epoch

    def renew(self) -> bool:
        """Extend the current term by ``ttl`` (database clock). False means: stop being leader now.

        Returns False, and ends the term, when there is no term, when the renew deadline has
        already passed (a lapsed term is never revived), when the row says another holder/epoch
        or that the lease expired (deposed), or when transient database errors persisted until the
        deadline. On success the deadline restarts from the start of this renew attempt.
        Non-transient errors (e.g. a missing table) end the term and propagate.
        """
        with self._op_lock:
            term = self._term
            if term is None:
                return False
            deadline = term.valid_from + self._timings.deadline
            if self._monotonic() >= deadline:
                self._end_term(term, "renew deadline passed before the renew started")
                return False

            def attempt() -> tuple[bool, float]:
                started = self._monotonic()
                return self._in_txn(deadline, lambda conn: self._renew_row(conn, term.epoch)), started

            try:
                renewed, started = run_with_deadline(
                    attempt, deadline=deadline, monotonic=self._monotonic, what=f"renew lease {self._name!r}"
                )
            except Exception as exc:
                self._last_error = exc
                self._end_term(term, f"renew failed: {exc.__class__.__name__}")
                if not is_transient(exc):
                    raise
                return False
            if not renewed:
                self._end_term(term, "deposed: the row names another holder/epoch or has expired")
                return False
            if self._term is term:
                self._term = _Term(epoch=term.epoch, valid_from=max(term.valid_from, started))
            self._last_error = None
            return True

    def release(self) -> None:
        """Give the lease up now (graceful switchover): a standby can acquire it at once.

        The in-memory term ends *before* the database is told, so this node never believes it
        holds a lease it has released. Only a row still naming this holder and epoch is touched.
        If the database cannot be reached within ``renew_interval``, the lease simply expires by
        its ttl (logged, not raised). Call it after this node's fenced transactions have ended:
        like a takeover, the release UPDATE waits for their share locks.
        """
        with self._op_lock:
            term = self._term
            self._term = None
            if term is None:
                return
            deadline = self._monotonic() + self._timings.interval
            try:
                released = run_with_deadline(
                    lambda: self._in_txn(deadline, lambda conn: self._release_row(conn, term.epoch)),
                    deadline=deadline,
                    monotonic=self._monotonic,
                    what=f"release lease {self._name!r}",
                )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._last_error = exc
                log.warning(
                    "lease %r: release failed (%s); it will expire after its ttl",
                    self._name,
                    exc.__class__.__name__,
                )
                return
            if released:
                log.info("lease %r released by %s (epoch %d)", self._name, self._holder, term.epoch)

    def read(self) -> LeaseRecord | None:
        """What the lease row says now (None if there is no row). Any node may call this.

        :raises LeaseUnavailable: the database did not answer within ``renew_deadline``.
        """
        deadline = self._monotonic() + self._timings.deadline
        t = self._table
        stmt = sa.select(
            t.c.holder, t.c.epoch, t.c.expires_at, t.c.acquired_at, t.c.renewed_at, db_now().label("db_now")
        ).where(t.c.name == self._name)
        try:
            row = run_with_deadline(
                lambda: self._in_txn(deadline, lambda conn: conn.execute(stmt).one_or_none(), writes=False),
                deadline=deadline,
                monotonic=self._monotonic,
                what=f"read lease {self._name!r}",
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise LeaseUnavailable(f"lease {self._name!r}: database unavailable: {exc.__class__.__name__}") from exc
        if row is None:
            return None
        expires_at, now = float(row.expires_at), float(row.db_now)
        return LeaseRecord(
            name=self._name,
            holder=row.holder,
            epoch=int(row.epoch),
            expires_at=expires_at,
            db_now=now,
            remaining=expires_at - now,
            acquired_at=None if row.acquired_at is None else float(row.acquired_at),
            renewed_at=None if row.renewed_at is None else float(row.renewed_at),
        )

    def fence(self, conn: sa.Connection) -> None:
        """Fence the caller's open transaction with this node's current term (see :mod:`lease.fence`).

        Refuses at once, without a query, when :meth:`is_held` is False.

        :raises FencedOut: not held, or the row no longer names this holder and epoch unexpired.
        """
        check_fence(conn, self._table, self._name, self._holder, self._current_term().epoch)

    def fence_statement(self) -> str:
        """The fence as one SQL statement for this term (PostgreSQL only; see
        :func:`lease.fence.postgres_fence_statement`): a writer puts it first in a transaction it
        sends as one script, and passes any error to :meth:`fenced_out`.

        :raises FencedOut: at once, without a query, when :meth:`is_held` is False.
        """
        term = self._current_term()
        cached = self._fence_statements.get(term.epoch)
        if cached is None:
            if self._fence_function is not None:
                cached = postgres_fence_call(self._fence_function, self._name, self._holder, term.epoch)
            else:
                cached = postgres_fence_statement(self._table.name, self._name, self._holder, term.epoch)
            self._fence_statements = {term.epoch: cached}
        return cached

    def fenced_out(self, exc: BaseException, epoch: int) -> FencedOut | None:
        """The :class:`FencedOut` that a failed :meth:`fence_statement` of ``epoch`` raised, or None
        for any other error."""
        return fenced_out_from(exc, self._name, self._holder, epoch)

    def _current_term(self) -> _Term:
        term = self._term
        if term is None or not self.is_held():
            raise FencedOut(
                self._name,
                expected_holder=self._holder,
                expected_epoch=None if term is None else term.epoch,
                reason="this node does not hold the lease (not acquired, released, deposed, "
                "or its renew deadline passed)",
            )
        return term

    # ------------------------------------------------------------------ statements

    def _in_txn(self, deadline: float, body: Callable[[sa.Connection], _R], *, writes: bool = True) -> _R:
        """Run ``body`` in one transaction whose statements cannot outlive ``deadline``.

        On PostgreSQL the server-side timeouts do not cover COMMIT's wait for a synchronous
        standby, so the whole transaction also runs under a :class:`lease.primary.CommitGuard`
        that cancels it a little after the deadline; a cancelled transaction counts as failed
        (:class:`lease.primary.CommitNotConfirmed`, transient) even if the server committed it
        locally.
        """
        if not self._is_postgres:
            with self._engine.begin() as conn:
                return body(conn)
        budget = max(0.0, deadline - self._monotonic()) + _GUARD_MARGIN
        with guarded_transaction(self._engine, budget, f"lease {self._name!r} transaction", writes=writes) as conn:
            if self._is_postgres:
                seconds = deadline - self._monotonic()
                if self._engine_statement_timeout > 0:  # never looser than the engine's own limit
                    seconds = min(seconds, self._engine_statement_timeout)
                ms = str(max(_MIN_STATEMENT_MS, int(seconds * 1000)))
                conn.execute(
                    sa.select(
                        sa.func.set_config("statement_timeout", ms, True),
                        sa.func.set_config("lock_timeout", ms, True),
                    )
                )
            return body(conn)

    def _cas_acquire(self, conn: sa.Connection) -> int | None | _Missing:
        t = self._table
        seen = conn.execute(sa.select(t.c.epoch).where(t.c.name == self._name)).scalar_one_or_none()
        if seen is None:
            return _MISSING
        seen = int(seen)
        now = db_now()
        stmt = (
            sa.update(t)
            .where(
                t.c.name == self._name,
                t.c.epoch == seen,
                sa.or_(t.c.holder.is_(None), t.c.expires_at <= now, t.c.holder == self._holder),
            )
            .values(
                holder=self._holder,
                epoch=seen + 1,
                acquired_at=now,
                renewed_at=now,
                expires_at=now + self._ttl_param(),
            )
        )
        return seen + 1 if conn.execute(stmt).rowcount == 1 else None

    def _insert_free_row(self, deadline: float) -> None:
        t = self._table
        # A unique-key violation means another node inserted it first; the CAS decides who gets it.
        with contextlib.suppress(sa.exc.IntegrityError):
            self._in_txn(
                deadline,
                lambda conn: conn.execute(sa.insert(t).values(name=self._name, holder=None, epoch=0, expires_at=0.0)),
            )

    def _renew_row(self, conn: sa.Connection, epoch: int) -> bool:
        t = self._table
        now = db_now()
        stmt = (
            sa.update(t)
            .where(t.c.name == self._name, t.c.holder == self._holder, t.c.epoch == epoch, t.c.expires_at > now)
            .values(expires_at=now + self._ttl_param(), renewed_at=now)
        )
        return conn.execute(stmt).rowcount == 1

    def _release_row(self, conn: sa.Connection, epoch: int) -> bool:
        t = self._table
        stmt = (
            sa.update(t)
            .where(t.c.name == self._name, t.c.holder == self._holder, t.c.epoch == epoch)
            .values(holder=None, expires_at=db_now())
        )
        return conn.execute(stmt).rowcount == 1

    def _ttl_param(self) -> sa.BindParameter[float]:
        return sa.bindparam("lh_ttl", self._timings.ttl, type_=sa.Double(asdecimal=False))

    def _end_term(self, term: _Term, why: str) -> None:
        if self._term is term:
            self._term = None
        log.warning("lease %r: %s is no longer leader (epoch %d): %s", self._name, self._holder, term.epoch, why)

    def __repr__(self) -> str:
        return f"LeaderLease(name={self._name!r}, holder={self._holder!r}, epoch={self.epoch}, held={self.is_held()})"


class _Missing:
    """Marker: the lease row does not exist yet."""


_MISSING = _Missing()
