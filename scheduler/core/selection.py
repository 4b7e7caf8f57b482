"""Choosing what ``get_work`` hands out (protocol 3.8 steps 4-5, and batching 3.11).

luigid sorts every PENDING and RUNNING task on each call.  Here the choice reads the ready heaps:

* **Trivial worker** (not an assistant, and none of its PENDING tasks declares resources): the
  answer is the top of the worker's own ready heap.  Cost: amortised O(log n).
* **Greedy accounting** (assistants, or workers with resource-declaring tasks): the walk goes
  through ready tasks in rank order (a non-destructive heap walk) merged with the RUNNING tasks
  (sorted once and cached), applying luigid's greedy reservation, and stops at the first task the
  worker may run.  Once no live worker has a greedy slot left, tasks of other workers can no
  longer reserve anything, so a non-assistant continues on its own ready heap instead.  Ready
  tasks nobody may run (external tasks waiting for their data) sit in a heap of their own: they
  can only use up an assistant's own greedy slot, so an assistant merges in that heap until its
  slot is gone, usually after one entry, and nobody else walks it.  Cost: O((k + r) log n) where
  k is the number of ready tasks ranked above the answer that had to be skipped and r the number
  of running tasks, plus the dead entries below a skipped one, which a compaction keeps under
  sqrt(2n) amortised.  Non-ready PENDING tasks are never visited (luigid visits them only to skip
  them).
* **Batch collection** walks the family's ready heap after the chosen task and stops at
  ``max_batch_size`` members.

Ties between tasks of equal priority and creation time are broken by creation order, which
makes every answer deterministic (luigid falls back to dict/set order).
"""

from __future__ import annotations

from collections.abc import Iterator
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
        task, stale = self._walk_greedy(worker, assistant, now)
        # Lazy deletion only pops dead entries off the top. Below a live entry that keeps being
        # skipped (a task waiting for a busy resource), the entries of every task handed out
        # since pile up and each walk passes them again. Compacting once a walk meets more than
        # sqrt(2 x heap size) of them keeps a call at O(sqrt(n)), amortised, instead of growing
        # with every hand-out.
        heap = self._runnable_heap
        if stale > 64 and stale * stale > 2 * len(heap):
            heaps.compact(heap, self._is_live)
        return task

    def _walk_greedy(self, worker: Worker, assistant: bool, now: float) -> tuple[Task | None, int]:
        """The greedy choice, and how many dead entries of the runnable heap the walk passed."""
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

        heaps.clean_top(self._runnable_heap, self._is_live)
        source: Iterator[heaps.RankEntry] = heaps.iter_ordered(self._runnable_heap)
        live = self._is_live
        source_is_shared = True  # walking the runnable heap (not this worker's own)
        stale = 0
        # Tasks nobody may run take part only until this assistant's own greedy slot is used up
        # (luigid reserves for them through ``chain(task.workers, [worker_id])``, and their
        # ``workers`` is empty); for anyone else they change nothing and are never walked.
        unclaimed: Iterator[heaps.RankEntry] | None = None
        if assistant and slots.get(worker_id, 0) > 0:
            heaps.clean_top(self._unclaimed_heap, self._is_unclaimed)
            unclaimed = heaps.iter_ordered(self._unclaimed_heap)
        next_claimed = next(source, None)
        next_unclaimed = next(unclaimed, None) if unclaimed is not None else None
        narrowed = False
        last_key: Key | None = None
        while True:
            if positive <= 0 and not narrowed:
                # Nobody can reserve anything any more: only tasks this worker may run matter.
                narrowed = True
                next_unclaimed = None
                if not assistant:
                    source = _entries_after(worker.heap, last_key)
                    live = self._live_for(worker_id)
                    source_is_shared = False
                    next_claimed = next(source, None)
            if next_unclaimed is not None and (next_claimed is None or next_unclaimed < next_claimed):
                entry, next_unclaimed = next_unclaimed, next(unclaimed, None)  # type: ignore[arg-type]
                if not self._is_unclaimed(entry):
                    continue
            elif next_claimed is not None:
                entry, next_claimed = next_claimed, next(source, None)
                if not live(entry):
                    if source_is_shared:
                        stale += 1
                    continue
            else:
                return None, stale
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
                continue
            may_run = (assistant and task.runnable) or worker_id in task.workers
            if may_run and self._fits(task.resources, used):
                return task, stale
            if positive > 0:
                for candidate in chain(task.workers, (worker_id,) if assistant else ()):
                    value = slots.get(candidate, 0)
                    if value > 0:
                        slots[candidate] = value - 1
                        if value == 1:
                            positive -= 1
                        _add_to(greedy, task.resources)
                        break
            if next_unclaimed is not None and slots.get(worker_id, 0) <= 0:
                next_unclaimed = None  # the rest of the tasks nobody may run can reserve nothing

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
