"""Offline stand-ins for the HA loop's surroundings: a clock, a lease, a store and a writer.

No database and no sleeping: the fake lease keeps its row in memory and reads the fake clock, and
the node's ``pause`` between turns advances that clock instead of waiting (as Patroni's tests
drive ``ha.py`` against a mocked DCS).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from scheduler.core import Scheduler
from scheduler.metrics import NodeMetrics
from scheduler.node import Node


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Record:
    holder: str | None
    epoch: int
    remaining: float
    expires_at: float
    db_now: float


class FakeLease:
    """One lease row shared by every holder, on the fake clock; ttl 3 s, renew deadline 2 s."""

    def __init__(self, clock: FakeClock, holder: str = "n1:1:aaaa", ttl: float = 3.0, deadline: float = 2.0) -> None:
        self.clock = clock
        self.me = holder
        self.ttl, self.deadline = ttl, deadline
        self.row_holder: str | None = None
        self.row_epoch = 0
        self.row_expires = 0.0
        self.valid_from: float | None = None
        self.renew_fails = False
        self.unreachable = False
        self.releases = 0

    # what the node calls
    def try_acquire(self) -> int | None:
        if self.unreachable:
            raise ConnectionError("database unreachable")
        if self.row_holder is not None and self.row_expires > self.clock():
            return None
        self.row_holder, self.row_epoch = self.me, self.row_epoch + 1
        self.row_expires = self.clock() + self.ttl
        self.valid_from = self.clock()
        return self.row_epoch

    def renew(self) -> bool:
        if self.renew_fails or not self.is_held():
            return False
        self.row_expires = self.clock() + self.ttl
        self.valid_from = self.clock()
        return True

    def release(self) -> None:
        self.releases += 1
        if self.row_holder == self.me:
            self.row_holder, self.row_expires = None, self.clock()
        self.valid_from = None

    def read(self) -> Record:
        if self.unreachable:
            raise ConnectionError("database unreachable")
        now = self.clock()
        return Record(self.row_holder, self.row_epoch, self.row_expires - now, self.row_expires, now)

    def is_held(self) -> bool:
        return self.valid_from is not None and self.clock() < self.valid_from + self.deadline

    def deadline_remaining(self) -> float:
        return 0.0 if self.valid_from is None else max(0.0, self.valid_from + self.deadline - self.clock())

    # what the test does
    def held_by(self, holder: str, for_seconds: float) -> None:
        self.row_holder, self.row_epoch = holder, self.row_epoch + 1
        self.row_expires = self.clock() + for_seconds


class FakeStore:
    def __init__(self) -> None:
        self.load_fails = False
        self.loads = 0

    def load_all(self, decode_task: Any = None) -> Any:
        self.loads += 1
        if self.load_fails:
            raise ConnectionError("load failed")
        return Scheduler().export()


class FakeWriter:
    def __init__(self) -> None:
        self.batches: list[Any] = []
        self.fail_with: BaseException | None = None
        self.closed = False

    async def apply(self, changes: Any, epoch: int) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(changes)

    def close(self) -> None:
        self.closed = True


class Harness:
    """A node on the fakes whose loop turns only when the test says so."""

    def __init__(self, *, node_id: str = "n1") -> None:
        self.clock = FakeClock()
        self.lease = FakeLease(self.clock, holder=f"{node_id}:1:aaaa")
        self.store = FakeStore()
        self.writers: list[FakeWriter] = []
        self.metrics = NodeMetrics()
        self.turns = 0
        self._turn = asyncio.Event()
        self._go = asyncio.Event()
        self.node = Node(
            node_id=node_id,
            store=self.store,
            lease=self.lease,  # type: ignore[arg-type]
            core_factory=lambda: Scheduler(metrics=self.metrics),
            metrics=self.metrics,
            renew_interval=0.5,
            clock=self.clock,
            pause=self._pause,
            writer_factory=self._writer,
        )
        self.task: asyncio.Task[None] | None = None

    def _writer(self, store: Any, lease: Any) -> FakeWriter:
        self.writers.append(FakeWriter())
        return self.writers[-1]

    async def _pause(self, seconds: float, stopping: asyncio.Event) -> None:
        self.clock.now += seconds
        self.turns += 1
        self._turn.set()
        await self._go.wait()
        self._go.clear()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.node.run())

    async def turn(self, n: int = 1) -> None:
        """Let the loop run ``n`` more turns (each ends in a pause that advances the clock)."""
        for _ in range(n):
            if self.task is not None and self.task.done():
                return
            self._turn.clear()
            self._go.set()
            waiter = asyncio.ensure_future(self._turn.wait())
            await asyncio.wait({waiter, self.task}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def first_turn(self) -> None:
        self.start()
        waiter = asyncio.ensure_future(self._turn.wait())
        await asyncio.wait({waiter, self.task}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def stop(self) -> None:
        self.node.stop()
        self._go.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
