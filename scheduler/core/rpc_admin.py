"""Visualiser and administration RPCs: listings, graphs, manual status changes, pause, resources.

Listings prune first, as luigid does (``task_list`` only when it does not answer early), so what
the page shows reflects dead workers and expired retries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from . import graph
from . import validation as check
from .constants import DISABLED, DONE, FAILED, PENDING, RUNNING, WORKER_STATE_ACTIVE, WORKER_STATE_DISABLED
from .entities import Task, Worker
from .rpc_reporting import ReportingRPCs
from .serialize import dumps_json, task_json

#: Tasks serialised per piece of ``task_list_chunks``: 1-2 ms of work each on a busy 2-CPU VM.
LISTING_CHUNK = 50


class _ListQuery(NamedTuple):
    status: str
    upstream_status: str
    limit: bool
    search: bool
    terms: list[str]
    cap: int


class AdminRPCs(ReportingRPCs):
    def _json(self, task: Task, deps: Iterable[str] | None = None) -> dict[str, Any]:
        return task_json(task, send_messages=self.settings.send_messages, deps=deps)

    def prune(self) -> None:
        """Run one prune cycle now (luigid runs one every 60 s and inside listings)."""
        self._prune(self._now())

    # ------------------------------------------------------------------ listings
    def task_list(
        self,
        status: Any = "",
        upstream_status: Any = "",
        limit: Any = True,
        search: Any = None,
        max_shown_tasks: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Tasks with a status (all when empty), optionally filtered; ``{"num_tasks": n}`` if too many.

        The early "too many" answer is O(1) from the status index and skips the prune, as in
        luigid.  ``max_shown_tasks`` 0 or null means the configured cap.
        """
        query = self._task_list_query(status, upstream_status, limit, search, max_shown_tasks)
        early = self._task_list_early(query)
        if early is not None:
            return early
        self._prune(self._now())
        memo: dict[str, str] = {}
        keeps = self._task_list_keeps
        result = {task.id: self._json(task) for task in self._task_list_source(query) if keeps(task, query, memo)}
        if query.limit and len(result) > query.cap:
            return {"num_tasks": len(result)}
        return result

    def task_list_chunks(
        self,
        status: Any = "",
        upstream_status: Any = "",
        limit: Any = True,
        search: Any = None,
        max_shown_tasks: Any = None,
        chunk: int = LISTING_CHUNK,
        **kwargs: Any,
    ) -> Iterator[str]:
        """``task_list``'s answer as JSON text, in pieces of at most ``chunk`` tasks of work each.

        The arguments are checked and the prune runs now; the listing itself happens as the
        caller pulls pieces, so a caller on an event loop can serve other requests between
        them (``"".join(pieces)`` is the JSON of ``task_list``'s answer; an empty piece only
        marks a pause). Tasks are chosen when the first piece is pulled; a task changed by a
        request served in between is shown as it is when its piece is built.
        """
        query = self._task_list_query(status, upstream_status, limit, search, max_shown_tasks)
        early = self._task_list_early(query)
        if early is not None:
            return iter([dumps_json(early)])
        self._prune(self._now())
        return self._task_list_pieces(query, max(1, chunk))

    def _task_list_pieces(self, query: _ListQuery, chunk: int) -> Iterator[str]:
        tasks = list(self._task_list_source(query))
        keeps = self._task_list_keeps
        memo: dict[str, str] = {}
        kept: list[Task] = []
        if query.terms or query.upstream_status:
            for start in range(0, len(tasks), chunk * 4):
                kept.extend(task for task in tasks[start : start + chunk * 4] if keeps(task, query, memo))
                yield ""
        else:
            kept = tasks
        if query.limit and len(kept) > query.cap:
            yield dumps_json({"num_tasks": len(kept)})
            return
        yield "{"
        separator = ""
        to_json = self._json
        for start in range(0, len(kept), chunk):
            text = dumps_json({task.id: to_json(task) for task in kept[start : start + chunk]})
            if len(text) > 2:
                yield separator + text[1:-1]
                separator = ","
        yield "}"

    def _task_list_query(
        self, status: Any, upstream_status: Any, limit: Any, search: Any, max_shown_tasks: Any
    ) -> _ListQuery:
        m = "task_list"
        status = "" if status is None else check.text(m, "status", status)
        upstream_status = "" if upstream_status is None else check.text(m, "upstream_status", upstream_status)
        limit = check.flag(m, "limit", limit, default=True)
        search = check.optional_text(m, "search", search)
        if max_shown_tasks is not None and (isinstance(max_shown_tasks, bool) or not isinstance(max_shown_tasks, int)):
            raise check.fail(m, "max_shown_tasks", "an integer or null", max_shown_tasks)
        cap = max_shown_tasks or self.settings.max_shown_tasks
        terms = [term.casefold() for term in search.split()] if search else []
        return _ListQuery(status, upstream_status, limit, bool(search), terms, cap)

    def _task_list_early(self, query: _ListQuery) -> dict[str, Any] | None:
        if not query.search:
            count = len(self._by_status.get(query.status, ())) if query.status else len(self._tasks)
            if query.limit and count > query.cap:
                return {"num_tasks": -1 if query.upstream_status else count}
        return None

    def _task_list_source(self, query: _ListQuery) -> Iterable[Task]:
        return self._by_status.get(query.status, {}).values() if query.status else self._tasks.values()

    def _task_list_keeps(self, task: Task, query: _ListQuery, memo: dict[str, str]) -> bool:
        if query.terms:
            name = task.display_name.casefold()
            if not all(term in name for term in query.terms):
                return False
        return (
            task.status != PENDING
            or not query.upstream_status
            or query.upstream_status == graph.upstream_status(self._tasks, task.id, memo)
        )

    def task_search(self, task_str: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
        """Tasks whose id contains ``task_str`` (case-sensitive), grouped by status."""
        task_str = check.text("task_search", "task_str", task_str)
        self._prune(self._now())
        result: dict[str, dict[str, Any]] = {}
        for task in self._tasks.values():
            if task_str in task.id:
                result.setdefault(task.status, {})[task.id] = self._json(task)
        return result

    def worker_list(self, include_running: Any = True, **kwargs: Any) -> list[dict[str, Any]]:
        """Workers, newest first, with their info and (optionally) what they run and wait for."""
        include_running = check.flag("worker_list", "include_running", include_running, default=True)
        self._prune(self._now())
        entries = []
        for worker in self._workers.values():
            entry: dict[str, Any] = {
                "name": worker.id,
                "last_active": worker.last_active,
                "started": worker.started,
                "state": WORKER_STATE_DISABLED if worker.disabled else WORKER_STATE_ACTIVE,
                "first_task_display_name": self._first_task_display_name(worker),
                "num_unread_rpc_messages": len(worker.rpc_messages),
            }
            for key, value in worker.info.items():
                entry.setdefault(key, value)
            if include_running:
                self._add_running_summary(entry, worker)
            entries.append(entry)
        entries.sort(key=lambda entry: entry["started"], reverse=True)
        return entries

    def _first_task_display_name(self, worker: Worker) -> Any:
        first = worker.info.get("first_task", "")
        task = self._tasks.get(first) if isinstance(first, str) else None
        return task.display_name if task is not None else first

    def _add_running_summary(self, entry: dict[str, Any], worker: Worker) -> None:
        tasks = self._tasks
        running = {task_id: self._json(tasks[task_id]) for task_id in self._run_by.get(worker.id, ())}
        pending = uniques = 0
        for task_id in worker.tasks:
            task = tasks[task_id]
            if task.status == PENDING:
                pending += 1
                uniques += len(task.workers) == 1
        entry["num_running"] = len(running)
        entry["num_pending"] = pending
        entry["num_uniques"] = uniques
        entry["running"] = running

    def resource_list(self) -> list[dict[str, Any]]:
        """One entry per configured resource: capacity, amount held, and the RUNNING consumers."""
        self._prune(self._now())
        running_tasks = list(self._by_status[RUNNING].values())
        used: dict[str, float] = {}
        consumers: dict[str, dict[str, Any]] = {}
        for task in running_tasks:
            holding = task.resources_running if task.resources_running is not None else task.resources
            for name, amount in (holding or {}).items():
                used[name] = used.get(name, 0) + amount
            for name in task.resources:
                consumers.setdefault(name, {})[task.id] = self._json(task)
        return [
            {
                "name": name,
                "num_total": total,
                "num_used": used.get(name, 0),
                "num_consumer": len(consumers.get(name, {})),
                "running": consumers.get(name, {}),
            }
            for name, total in self._resources.items()
        ]

    # ------------------------------------------------------------------ graphs
    def graph(self, **kwargs: Any) -> dict[str, Any]:
        self._prune(self._now())
        seen: set[str] = set()
        nodes: dict[str, Any] = {}
        for task_id in list(self._tasks):
            nodes.update(self._walk(task_id, self._deps_of, include_done=True, seen=seen))
        return nodes

    def dep_graph(self, task_id: Any, include_done: Any = True, **kwargs: Any) -> dict[str, Any]:
        task_id = check.text("dep_graph", "task_id", task_id)
        include_done = check.flag("dep_graph", "include_done", include_done, default=True)
        self._prune(self._now())
        if task_id not in self._tasks:
            return {}
        return self._walk(task_id, self._deps_of, include_done=include_done)

    def inverse_dep_graph(self, task_id: Any, include_done: Any = True, **kwargs: Any) -> dict[str, Any]:
        task_id = check.text("inverse_dep_graph", "task_id", task_id)
        include_done = check.flag("inverse_dep_graph", "include_done", include_done, default=True)
        self._prune(self._now())
        if task_id not in self._tasks:
            return {}
        return self._walk(task_id, self._dependents_of, include_done=include_done)

    def _deps_of(self, task: Task) -> Iterable[str]:
        return task.deps

    def _dependents_of(self, task: Task) -> Iterable[str]:
        return sorted(self._rdeps.get(task.id, ()))

    def _walk(self, root: str, neighbours: Any, *, include_done: bool, seen: set[str] | None = None) -> dict[str, Any]:
        return graph.walk(
            self._tasks,
            root,
            neighbours,
            include_done=include_done,
            max_nodes=self.settings.max_graph_nodes,
            send_messages=self.settings.send_messages,
            seen=seen,
        )

    def fetch_error(self, task_id: Any, **kwargs: Any) -> dict[str, Any]:
        task_id = check.text("fetch_error", "task_id", task_id)
        task = self._tasks.get(task_id)
        if task is None:
            return {"taskId": task_id, "error": ""}
        return {
            "taskId": task_id,
            "error": task.expl,
            "displayName": task.display_name,
            "taskParams": dict(task.params),
            "taskModule": task.module,
            "taskFamily": task.family,
        }

    # ------------------------------------------------------------------ manual status changes
    def forgive_failures(self, task_id: Any = None) -> dict[str, Any]:
        """FAILED -> PENDING now, keeping the failure history (no retry delay)."""
        return self._manual_status("forgive_failures", task_id, PENDING, (FAILED,))

    def mark_as_done(self, task_id: Any = None) -> dict[str, Any]:
        """RUNNING, FAILED or DISABLED -> DONE (which also ends a disable)."""
        return self._manual_status("mark_as_done", task_id, DONE, (RUNNING, FAILED, DISABLED))

    def _manual_status(self, method: str, task_id: Any, status: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if task_id is not None:
            task_id = check.text(method, "task_id", task_id)
        task = self._tasks.get(task_id) if task_id is not None else None
        if task is None:
            return {"task_id": task_id, "status": None}
        if task.status in allowed:
            self._set_status(task, status, self._now())
        return {"task_id": task_id, "status": task.status}

    def re_enable_task(self, task_id: Any) -> dict[str, Any]:
        """End a scheduler disable early: the task becomes FAILED (PENDING after retry_delay)."""
        task_id = check.text("re_enable_task", "task_id", task_id)
        task = self._tasks.get(task_id)
        if task is None or task.status != DISABLED or task.scheduler_disable_time is None:
            return {}
        self._re_enable(task, self._now())
        return self._json(task, deps=task.deps)

    # ------------------------------------------------------------------ workers, pause, resources
    def disable_worker(self, worker: Any) -> None:
        """Stop giving work to a worker: it leaves every runnable list but stays a stakeholder."""
        worker_id = check.worker_id("disable_worker", worker)
        record = self._get_worker(worker_id, self._now())
        for task_id in list(record.tasks):
            self._remove_runnable_worker(self._tasks[task_id], worker_id)
        if not record.disabled:
            record.disabled = True
            self._changes.workers.add(worker_id)

    def has_task_history(self) -> bool:
        return self.settings.record_task_history

    def is_pause_enabled(self) -> dict[str, bool]:
        return {"enabled": self.settings.pause_enabled}

    def is_paused(self) -> dict[str, bool]:
        return {"paused": self._paused}

    def pause(self) -> None:
        self._set_paused(True)

    def unpause(self) -> None:
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        if self.settings.pause_enabled and self._paused != paused:
            self._paused = paused
            self._changes.meta.add("paused")

    def update_resource(self, resource: Any, amount: Any) -> bool:
        """Set one capacity; False (no change) unless ``amount`` is an integer >= 0, like luigid."""
        resource = check.text("update_resource", "resource", resource)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            return False
        if self._resources.get(resource) != amount:
            self._resources[resource] = amount
            self._changes.meta.add("resources")
        return True

    def update_resources(self, **resources: Any) -> None:
        """Merge capacities.  Deviation: values must be numbers >= 0 (luigid stores anything,
        and a bad value would later break every ``get_work``)."""
        for name, amount in resources.items():
            if not check.is_finite_number(amount) or amount < 0:
                raise check.fail("update_resources", name, "a number >= 0", amount)
        changed = {name: amount for name, amount in resources.items() if self._resources.get(name) != amount}
        if changed:
            self._resources.update(changed)
            self._changes.meta.add("resources")
