"""One leadership term: the state, its writer and the commit rounds that live exactly as long as it.

A term is an async context manager. Entering starts its committer and pruner; leaving is the
step-down: the tasks are stopped, every RPC still waiting for a round is told to retry
(``NotLeader``: memory may be ahead of the database) and the writer is closed. The HA loop in
:mod:`scheduler.node` decides *when* a term ends; this module only knows *how*.

**Group commit, nothing acknowledged before it is durable.** An RPC runs on the core at once
(the core is in-memory and the event loop runs one RPC at a time, as luigid's tornado thread
does), then waits for the commit round that persists what it changed or saw. One committer
writes rounds back to back, each in ONE fenced transaction: everything the core changed while
the previous round was committing goes into the next one, so the rounds grow with the load and
no RPC waits for more than the round in flight plus its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lease import FencedOut


class NotLeader(Exception):
    """This node does not hold the write role; the HTTP layer answers 503 naming the leader."""

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class LeaderTerm:
    """The state and commit rounds of one epoch.

    ``next_round`` holds the RPCs waiting for the round that will take the core's current
    changes; ``this_round`` those waiting for the round being committed right now (None when no
    commit is in flight). ``ended`` is set with ``end_reason`` when the term must end on its own
    (a failed commit); the HA loop then leaves the term's context. ``on_end`` is called once,
    synchronously, at that moment, so the node stops serving before anything else runs.
    """

    def __init__(
        self,
        *,
        epoch: int,
        core: Any,
        writer: Any,
        lease: Any = None,
        metrics: Any = None,
        log: Any = None,
        clock: Callable[[], float] | None = None,
        prune_interval: float = 60.0,
        on_end: Callable[[LeaderTerm, str], None] | None = None,
        mailer: Any = None,
        background: tuple[Callable[[], Awaitable[None]], ...] = (),
    ) -> None:
        self.epoch = epoch
        self.core = core
        self.writer = writer
        self._lease = lease
        self._metrics = metrics
        self._log = log
        self._clock = clock or time.monotonic
        self._prune_interval = prune_interval
        self._on_end = on_end
        self.mailer = mailer  # scheduler.mail.Mailer: sends what committed rounds announced
        self._background = background
        self.next_round: list[asyncio.Future[None]] = []
        self.this_round: list[asyncio.Future[None]] | None = None
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.commit_lock = asyncio.Lock()
        self.audit: list[dict[str, Any]] = []  # audit records for the next round (scheduler.audit)
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.last_commit: float | None = None
        self._closed: asyncio.Future[None] | None = None
        self.open = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> LeaderTerm:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(self.end_reason or "shutdown")

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.open = True
        self.tasks.append(loop.create_task(self.committer(), name=f"committer-{self.epoch}"))
        self.tasks.append(loop.create_task(self._pruner(), name=f"pruner-{self.epoch}"))
        for job in self._background:
            self.tasks.append(loop.create_task(job(), name=f"{job.__name__}-{self.epoch}"))

    def end(self, reason: str) -> None:
        """Ask the HA loop to end this term (first reason wins); new RPCs are refused at once."""
        first = self.end_reason is None
        if first:
            self.end_reason = reason
        self.open = False
        self.ended.set()
        if first and self._on_end is not None:
            self._on_end(self, reason)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def close(self, reason: str, *, graceful: bool = False) -> None:
        """Stop the term's tasks, fail every waiting RPC, close the writer. Idempotent.

        ``graceful`` (switchover, shutdown): an in-flight commit first finishes and answers its
        clients before the term ends.
        """
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = asyncio.get_running_loop().create_future()
        self.end(reason)
        try:
            if graceful:
                async with self.commit_lock:
                    pass
            current = asyncio.current_task()
            cancelled = [task for task in self.tasks if task is not current]
            for task in cancelled:
                task.cancel()
            for waiters in (self.this_round or [], self.next_round):
                fail(waiters, f"leadership lost ({reason}); retry")
            self.next_round = []
            # A commit cut short drops its own connection as it unwinds; then the writer is closed.
            await asyncio.gather(*cancelled, return_exceptions=True)
            self.writer.close()
            if self.mailer is not None:
                # Graceful: the pending batch is sent before handing over; after a failure it is lost.
                self.mailer.close(flush=graceful)
        finally:
            self._closed.set_result(None)

    # -- what an RPC waits for ---------------------------------------------------------------

    async def durable(self) -> None:
        """Wait until the state an RPC changed or read is committed.

        Uncommitted changes (ours or anyone's, which we may have read) go into the next round;
        with none, only the round in flight can hold something we read; with neither, the state
        we saw is already durable and the answer goes out at once (a ping, most reads).
        """
        if self.core.has_changes() or self.audit:
            waiters = self.next_round
            self.wake.set()
        elif self.this_round is not None:
            waiters = self.this_round
        else:
            self._mail(self.core.take_notifications())  # all committed: nothing is pending
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(future)
        await future

    # -- the committer -------------------------------------------------------------------------

    async def _pruner(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            try:
                self.core.prune()
            except Exception:
                if self._log is not None:
                    self._log.exception("prune_raised")
            if self.mailer is not None:
                self.mailer.tick()
            if self.core.has_changes():
                self.wake.set()

    async def committer(self) -> None:
        """Commit rounds back to back while anything waits; end the term when a commit fails.

        Each round is one durable commit of everything the core changed while the previous one
        was committing, so the rounds grow with the load and a lone client never waits for
        company.
        """
        while not self.ended.is_set():
            await self.wake.wait()
            self.wake.clear()
            if not self.next_round and not self.core.has_changes() and not self.audit:
                continue
            async with self.commit_lock:
                failure = await self._commit_round()
            if failure is not None:
                self.end(failure)
                return

    async def _commit_round(self) -> str | None:
        """Persist (fenced) what the core changed and answer the round; a step-down reason if not.

        The answers go out first. The round's log lines and metrics are scheduled behind the
        clients' handlers, so they run while the next round is already in the database's hands.
        """
        changes = self.core.take_changes()
        notes = self.core.take_notifications()
        changes.audit, self.audit = self.audit, []
        waiters, self.next_round = self.next_round, []
        self.this_round = waiters
        elapsed: float | None = None
        try:
            if not changes.empty:
                if self._lease is not None and not self._lease.is_held():
                    fail(waiters, "not committed: renew deadline passed before commit; retry")
                    return "renew_deadline_passed"
                started = self._clock()
                try:
                    await self.writer.apply(changes, self.epoch)
                except FencedOut as exc:
                    fail(waiters, "not committed: fenced out by a newer leader; retry")
                    if self._log is not None:
                        self._log.error("write_fenced_out", epoch=self.epoch, error=str(exc))
                    return "fenced_out"
                except asyncio.CancelledError:
                    # Stepped down mid-commit: the outcome is unknown to us, so the clients retry.
                    fail(waiters, "leadership lost during commit; retry")
                    raise
                except Exception as exc:
                    fail(waiters, "not committed: commit failed; retry")
                    if self._log is not None:
                        self._log.error("commit_failed", epoch=self.epoch, error=str(exc))
                    return "commit_failed"
                self.last_commit = self._clock()
                elapsed = self.last_commit - started
        finally:
            self.this_round = None
        for future in waiters:
            if not future.done():
                future.set_result(None)
        self._mail(notes)  # only what this round made durable is announced
        if self._metrics is not None:
            asyncio.get_running_loop().call_soon(self._account_round, len(waiters), elapsed, changes.events)
        return None

    def _mail(self, notes: list[dict[str, Any]]) -> None:
        if notes and self.mailer is not None:
            self.mailer.deliver(notes)

    def _account_round(self, answered: int, elapsed: float | None, events: list[dict[str, Any]]) -> None:
        """Metrics and log lines of one committed round (``elapsed`` None: nothing to write)."""
        self._metrics.commit_batch.observe(answered)
        if elapsed is not None:
            self._metrics.commit_seconds.observe(elapsed)
        if self._log is not None:
            for event in events:
                self._log.info(
                    "task_status", task_id=event.get("task_id"), status=event.get("status"), worker=event.get("worker")
                )


def fail(waiters: list[asyncio.Future[None]], why: str) -> None:
    for future in waiters:
        if not future.done():
            future.set_exception(NotLeader(why))
