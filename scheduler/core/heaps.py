"""Heaps with lazy deletion, and an in-order walk that does not pop.

Why heaps: ``get_work`` needs "the best ready task" (and sometimes the next few) without sorting
every pending task on each call, which is what makes luigid O(pending) per request.  Tasks enter
the ready heaps when they become ready or their rank changes; stale entries are not searched for
and removed, they are recognised and skipped when they surface (lazy deletion), and the heap is
rebuilt from its live entries when garbage outnumbers them, which keeps every operation
amortised O(log n).

Rank entries are ``(-priority, time, seq, token, task_id)``: ascending order is the scheduling
order (highest priority, then the task seen first; ``seq`` makes keys unique).  An entry is live
only while its ``token`` matches the task's, so bumping the token invalidates every old entry at
once.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

RankEntry = tuple[float, float, int, int, str]
TimeEntry = tuple[float, int, str]


def rank_entry(priority: float, time: float, seq: int, token: int, task_id: str) -> RankEntry:
    return (-priority, time, seq, token, task_id)


def need_key(resources: dict[str, float]) -> tuple[tuple[str, float], ...]:
    """One key for equal resource needs, whatever their order (tasks that need the same get one heap)."""
    return tuple(sorted(resources.items()))


def clean_top(heap: list[Any], is_live: Callable[[Any], bool]) -> None:
    """Pop dead entries off the top so that ``heap[0]``, if any, is live.  Amortised O(log n)."""
    while heap and not is_live(heap[0]):
        heapq.heappop(heap)


def push(heap: list[Any], entry: Any, live_bound: int, is_live: Callable[[Any], bool]) -> None:
    """Push, compacting first when the heap holds far more entries than can be live.

    ``live_bound`` is an upper bound on the number of live entries; compaction costs O(n) and
    happens only after ~``live_bound`` dead pushes, so it is amortised O(1) per push.
    """
    if len(heap) > 2 * live_bound + 64:
        compact(heap, is_live)
    heapq.heappush(heap, entry)


def compact(heap: list[Any], is_live: Callable[[Any], bool]) -> None:
    """Rebuild ``heap`` in place from its live entries, dropping duplicates of one task."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for entry in heap:
        ident = (entry[-1], entry[-2])
        if ident in seen or not is_live(entry):
            continue
        seen.add(ident)
        kept.append(entry)
    heapq.heapify(kept)
    heap[:] = kept


def iter_ordered(heap: list[Any]) -> Iterator[Any]:
    """Yield the heap's entries in ascending order without modifying it.

    It walks the implicit binary tree with a small frontier heap: each yielded entry costs
    O(log k) for the k entries visited so far, so looking at the first few entries of a huge heap
    is cheap.  The heap must not be mutated while the iterator is in use.
    """
    size = len(heap)
    if not size:
        return
    frontier: list[tuple[Any, int]] = [(heap[0], 0)]
    while frontier:
        entry, index = heapq.heappop(frontier)
        yield entry
        child = 2 * index + 1
        if child < size:
            heapq.heappush(frontier, (heap[child], child))
            if child + 1 < size:
                heapq.heappush(frontier, (heap[child + 1], child + 1))


class TimerHeap:
    """Deadlines per task (retry, removal, disable expiry) so a prune only touches due tasks.

    Entries are ``(due, seq, task_id)``; the owner re-validates each popped entry against the
    task's current fields, so superseded deadlines simply fall out.
    """

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[TimeEntry] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due: float, seq: int, task_id: str) -> None:
        heapq.heappush(self._heap, (due, seq, task_id))

    def pop_due(self, is_due: Callable[[float], bool]) -> list[TimeEntry]:
        """Remove and return every entry whose deadline satisfies ``is_due`` (checked in order)."""
        due: list[TimeEntry] = []
        heap = self._heap
        while heap and is_due(heap[0][0]):
            due.append(heapq.heappop(heap))
        return due

    def rebuild(self, entries: list[TimeEntry]) -> None:
        heapq.heapify(entries)
        self._heap = entries

    def clear(self) -> None:
        self._heap = []
