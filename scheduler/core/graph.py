"""Read-only graph computations: upstream status and dependency graph walks.

Upstream status follows docs/luigi-semantics.md, "Upstream status".

These serve the visualiser, so they are computed on demand; they never change state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .constants import (
    BATCH_RUNNING,
    DISABLED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    UPSTREAM_DISABLED,
    UPSTREAM_FAILED,
    UPSTREAM_MISSING_INPUT,
    UPSTREAM_RUNNING,
    UPSTREAM_SEVERITY,
)
from .entities import Task
from .serialize import placeholder_node, task_json

_STATUS_TO_UPSTREAM = {
    FAILED: UPSTREAM_FAILED,
    RUNNING: UPSTREAM_RUNNING,
    BATCH_RUNNING: UPSTREAM_RUNNING,
    PENDING: UPSTREAM_MISSING_INPUT,
    DISABLED: UPSTREAM_DISABLED,
}


def _most_severe(values: Iterable[str]) -> str:
    worst = ""
    for value in values:
        if UPSTREAM_SEVERITY[value] > UPSTREAM_SEVERITY[worst]:
            worst = value
    return worst


def upstream_status(tasks: Mapping[str, Task], task_id: str, memo: dict[str, str]) -> str:
    """What blocks a task, as the visualiser's upstream filter sees it.

    A DONE or unknown dep contributes nothing; a PENDING dep with deps of its own passes on the
    most severe value of its deps; any other dep maps its own status (FAILED -> UPSTREAM_FAILED,
    ...).  ``memo`` may be shared across calls in one request.  Iterative post-order walk, so
    deep chains are fine; a node met again while still being computed (a cycle) counts as "".
    """
    if task_id in memo:
        return memo[task_id]
    stack: list[tuple[str, bool]] = [(task_id, False)]
    while stack:
        current, expanded = stack.pop()
        task = tasks.get(current)
        if task is None or task.status == DONE:
            continue
        if expanded:
            memo[current] = _most_severe(memo.get(dep, "") for dep in task.deps)
            continue
        if current in memo:
            continue
        if task.status == PENDING and task.deps:
            memo[current] = ""  # provisional until its deps are known
            stack.append((current, True))
            stack.extend((dep, False) for dep in task.deps if dep not in memo)
        else:
            memo[current] = _STATUS_TO_UPSTREAM.get(task.status, "")
    return memo.get(task_id, "")


def walk(
    tasks: Mapping[str, Task],
    root_id: str,
    neighbours: Callable[[Task], Iterable[str]],
    *,
    include_done: bool,
    max_nodes: int,
    send_messages: bool,
    seen: set[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Breadth-first graph from ``root_id`` along ``neighbours`` (deps or dependents).

    Nodes are TaskJSON with ``deps`` (the neighbours listed); only the root keeps
    ``display_name``.  With ``include_done`` false, DONE neighbours are neither listed nor
    visited.  The walk stops once ``max_nodes`` nodes have been emitted.  ``seen`` may be shared
    between walks (the ``graph`` RPC) so each task is emitted once.
    """
    if seen is None:
        seen = set()
    elif root_id in seen:
        return {}
    seen.add(root_id)
    nodes: dict[str, dict[str, Any]] = {}
    queue = deque([root_id])
    while queue:
        current = queue.popleft()
        task = tasks.get(current)
        if task is None or not task.family:
            node = placeholder_node(current)
        else:
            listed = list(neighbours(task))
            if not include_done:
                listed = [dep for dep in listed if not _is_done(tasks, dep)]
            node = task_json(task, send_messages=send_messages, deps=listed)
            for dep in sorted(listed):
                if dep not in seen:
                    seen.add(dep)
                    queue.append(dep)
        if current != root_id:
            del node["display_name"]
        nodes[current] = node
        if len(nodes) >= max_nodes:
            break
    return nodes


def _is_done(tasks: Mapping[str, Task], task_id: str) -> bool:
    task = tasks.get(task_id)
    return task is not None and task.status == DONE
