"""Choosing what ``get_work`` hands out (docs/luigi-semantics.md, "get_work" and "Batching").

luigid sorts every PENDING and RUNNING task on each call.  Here the choice reads the ready heaps:

* **Trivial worker** (not an assistant, and none of its PENDING tasks declares resources): the
  answer is the top of the worker's own ready heap.  Cost: amortised O(log n).
* **Greedy accounting** (assistants, or workers with resource-declaring tasks): the walk goes
  through ready tasks in rank order merged with the RUNNING tasks (sorted once and cached),
  applying luigid's greedy reservation, and stops at the first task the worker may run.  The
  ready tasks come from several heaps merged on the fly (``_Walk``), split by what the walk can
  skip wholesale:

  - tasks some worker may run that need no resources (one heap);
  - tasks some worker may run, one heap per distinct resource need: the reserved amounts only
    grow during a walk, so once one task of a heap cannot get its resources none of the rest
    can, and the heap is dropped from the walk (a queue of loads waiting for one database
    connection costs one entry, not one per load);
  - tasks nobody may run (external tasks waiting for their data): they can only use up an
    assistant's own greedy slot, so an assistant merges that heap in until its slot is gone,
    usually after one entry, and nobody else walks it.

  Once no live worker has a greedy slot left, tasks of other workers can no longer reserve
  anything, so a non-assistant continues on its own ready heap instead.  Cost:
  O((k + r + h) log n) where k is the number of ready tasks ranked above the answer that had to
  be skipped, r the number of running tasks and h the number of resource needs, plus the dead
  entries below a skipped one, which a compaction keeps under sqrt(2n) amortised.  Non-ready
  PENDING tasks are never visited (luigid visits them only to skip them).
* **Batch collection** walks the family's ready heap after the chosen task and stops at
  ``max_batch_size`` members.

Ties between tasks of equal priority and creation time are broken by creation order, which
makes every answer deterministic (luigid falls back to dict/set order).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

from . import heaps
from .entities import Task, Worker
from .transitions import Transitions

Key = tuple[float, float, int]


class Selection(Transitions):
    def _is_trivial(self, worker: Worker) -> bool:
        return not worker.assistant and worker.n_respend == 0

    def _fits(self, needed: dict[str, float] | None, counted: dict[str, float]) -> bool:
        """True when ``needed`` fits in the capacities on top of ``counted`` (unlisted: 1)."""
        if not needed:
            return True
        capacities = self._resources
        return all(amount + counted.get(name, 0) <= capacities.get(name, 1) for name, amount in needed.items())

    def _choose_task(self, worker: Worker, assistant: bool, now: float) -> Task | None:
        if self._is_trivial(worker):
            heap = worker.heap
            heaps.clean_top(heap, self._live_for(worker.id))
            return self._tasks[heap[0][4]] if heap else None
        return self._choose_greedy(worker, assistant, now)

    def _choose_greedy(self, worker: Worker, assistant: bool, now: float) -> Task | None:
        walk = _Walk()
        task = self._walk_greedy(worker, assistant, now, walk)
        # Lazy deletion only pops dead entries off the top. Below a live entry that keeps being
        # skipped (a task waiting for a busy resource), the entries of every task handed out
        # since pile up and each walk passes them again. Compacting once a walk meets more than
        # sqrt(2 x heap size) of them keeps a call at O(sqrt(n)), amortised, instead of growing
        # with every hand-out.
        for heap, live, stale in walk.shared_heaps():
            if stale > 64 and stale * stale > 2 * len(heap):
                heaps.compact(heap, live)
        return task

    def _walk_greedy(self, worker: Worker, assistant: bool, now: float, walk: _Walk) -> Task | None:
        """luigid's selection loop over the ready heaps that can matter (module docstring)."""
        worker_id = worker.id
        tasks = self._tasks
        running = self._running_in_rank_order()
        used: dict[str, float] = {}
        for _key, task in running:
            _add_to(used, _running_resources(task))
        activity_limit = now - self.settings.worker_disconnect_delay
        slots = {
            w.id: w.greedy_slots()
            for w in self._workers.values()
            if w.last_get_work is not None and w.last_get_work > activity_limit
        }
        positive = sum(1 for value in slots.values() if value > 0)
        greedy: dict[str, float] = {}
        next_running = 0

        walk.add(self._runnable_heap, self._is_live)
        for need, heap in list(self._need_heaps.items()):
            if walk.add(heap, self._is_live, one_need=True).exhausted:
                del self._need_heaps[need]  # no ready task needs this any more
        # Tasks nobody may run take part only until this assistant's own greedy slot is used up
        # (luigid reserves for them through ``chain(task.workers, [worker_id])``, and their
        # ``workers`` is empty); for anyone else they change nothing and are never walked.
        unclaimed = None
        if assistant and slots.get(worker_id, 0) > 0:
            unclaimed = walk.add(self._unclaimed_heap, self._is_unclaimed)
        narrowed = False
        last_key: Key | None = None
        while True:
            if positive <= 0 and not narrowed:
                # Nobody can reserve anything any more: only tasks this worker may run matter.
                narrowed = True
                if unclaimed is not None:
                    walk.drop(unclaimed)
                    unclaimed = None
                if not assistant:
                    walk.drop_all()
                    walk.add(worker.heap, self._live_for(worker_id), after=last_key, shared=False)
            step = walk.next()
            if step is None:
                return None
            entry, source = step
            key: Key = entry[:3]
            while next_running < len(running) and running[next_running][0] < key:
                runner_task = running[next_running][1]
                next_running += 1
                runner = runner_task.worker_running
                if runner in slots:
                    if slots[runner] == 1:
                        positive -= 1
                    slots[runner] -= 1  # type: ignore[index]
                    _add_to(greedy, _running_resources(runner_task))
            last_key = key
            task = tasks[entry[4]]
            if not self._fits(task.resources, greedy):
                if source.one_need:
                    # The reserved amounts only grow during a walk: no later task of this need
                    # fits either, and a task that does not fit changes nothing.
                    walk.drop(source)
                continue
            may_run = (assistant and task.runnable) or worker_id in task.workers
            if may_run and self._fits(task.resources, used):
                return task
            if positive > 0:
                for candidate in chain(task.workers, (worker_id,) if assistant else ()):
                    value = slots.get(candidate, 0)
                    if value > 0:
                        slots[candidate] = value - 1
                        if value == 1:
                            positive -= 1
                        _add_to(greedy, task.resources)
                        break
            if unclaimed is not None and slots.get(worker_id, 0) <= 0:
                walk.drop(unclaimed)  # the rest of the tasks nobody may run can reserve nothing
                unclaimed = None

    def _collect_batch(
        self, worker: Worker, best: Task, trivial: bool
    ) -> tuple[list[Task], dict[str, list[Any]]] | None:
        """The batch started by ``best`` if this worker registered a batcher for its family.

        Members: later-ranked ready tasks of the same family that are batchable, have identical
        values for every non-batched parameter and identical resources, up to
        ``max_batch_size`` in all.  Like luigid, members are not checked against the worker's
        runnable list (except on the trivial path, whose candidates are the worker's own tasks)
        or against resource capacity.
        """
        names, max_size = self._batchers.get(worker.id, {}).get(best.family, (None, 1))
        if not names or not best.batchable:
            return None
        try:
            batched = {name: [best.params[name]] for name in names}
        except KeyError:
            return None
        fixed = {name: value for name, value in best.params.items() if name not in batched}
        members = [best]
        best_key = (-best.priority, best.time, best.seq)
        heap = self._family_heaps.get(best.family)
        if heap:
            heaps.clean_top(heap, self._is_live)
            for entry in heaps.iter_ordered(heap):
                if len(members) >= max_size:
                    break
                if entry[:3] <= best_key or not self._is_live(entry):
                    continue
                task = self._tasks[entry[4]]
                if trivial and worker.id not in task.workers:
                    continue
                if task.family != best.family or not task.batchable or task.resources != best.resources:
                    continue
                params = task.params
                if any(params.get(name) != value for name, value in fixed.items()):
                    continue
                for name in names:
                    batched[name].append(params.get(name))
                members.append(task)
        return members, batched


class _Source:
    """One heap being walked in rank order: its iterator, liveness test and dead entries seen."""

    __slots__ = ("dropped", "entries", "exhausted", "heap", "live", "one_need", "shared", "stale")

    def __init__(self, heap: list[heaps.RankEntry], live: Callable[[heaps.RankEntry], bool],
                 entries: Iterator[heaps.RankEntry], shared: bool, one_need: bool) -> None:
        self.heap = heap
        self.live = live
        self.entries = entries
        self.shared = shared  # one of the scheduler's heaps (not a worker's own): may be compacted
        self.one_need = one_need  # every task in it needs the same resources
        self.dropped = False
        self.exhausted = False  # it had no entry at all once its dead top was cleaned
        self.stale = 0


class _Walk:
    """Several ready heaps merged into one walk in rank order; a source can be dropped midway."""

    def __init__(self) -> None:
        self._sources: list[_Source] = []
        self._frontier: list[tuple[heaps.RankEntry, int]] = []

    def add(self, heap: list[heaps.RankEntry], live: Callable[[heaps.RankEntry], bool], *,
            after: Key | None = None, shared: bool = True, one_need: bool = False) -> _Source:
        if shared:
            heaps.clean_top(heap, live)
        source = _Source(heap, live, _entries_after(heap, after), shared, one_need)
        self._sources.append(source)
        source.exhausted = not self._advance(source, len(self._sources) - 1)
        return source

    def drop(self, source: _Source) -> None:
        source.dropped = True

    def drop_all(self) -> None:
        for source in self._sources:
            source.dropped = True

    def next(self) -> tuple[heaps.RankEntry, _Source] | None:
        """The next live entry of the sources not dropped, in rank order; None when none is left."""
        frontier = self._frontier
        while frontier:
            entry, index = heapq.heappop(frontier)
            source = self._sources[index]
            if source.dropped:
                continue
            self._advance(source, index)
            if source.live(entry):
                return entry, source
            source.stale += 1
        return None

    def shared_heaps(self) -> Iterator[tuple[list[heaps.RankEntry], Callable[[heaps.RankEntry], bool], int]]:
        for source in self._sources:
            if source.shared:
                yield source.heap, source.live, source.stale

    def _advance(self, source: _Source, index: int) -> bool:
        entry = next(source.entries, None)
        if entry is None:
            return False
        heapq.heappush(self._frontier, (entry, index))
        return True


def _entries_after(heap: list[heaps.RankEntry], after: Key | None) -> Iterator[heaps.RankEntry]:
    for entry in heaps.iter_ordered(heap):
        if after is None or entry[:3] > after:
            yield entry


def _running_resources(task: Task) -> dict[str, float]:
    resources = task.resources_running if task.resources_running is not None else task.resources
    return resources or {}


def _add_to(total: dict[str, float], resources: dict[str, float]) -> None:
    for name, amount in resources.items():
        total[name] = total.get(name, 0) + amount
