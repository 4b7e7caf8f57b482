"""Status names and other wire-level constants shared by the core's modules.

The strings are the ones luigi 3.8.1 puts on the wire, so they are spelled out here rather than
imported from ``luigi.task_status``: the core must not depend on luigi's internals at run time
beyond its configuration reader.
"""

from __future__ import annotations

PENDING = "PENDING"
RUNNING = "RUNNING"
BATCH_RUNNING = "BATCH_RUNNING"
DONE = "DONE"
FAILED = "FAILED"
DISABLED = "DISABLED"
UNKNOWN = "UNKNOWN"
SUSPENDED = "SUSPENDED"

#: Every status a task can be stored with.
TASK_STATUSES: frozenset[str] = frozenset({PENDING, RUNNING, BATCH_RUNNING, DONE, FAILED, DISABLED, UNKNOWN})
#: Statuses a worker may report through ``add_task`` (SUSPENDED is legacy and read as PENDING).
REPORTABLE_STATUSES: frozenset[str] = TASK_STATUSES | {SUSPENDED}

UPSTREAM_RUNNING = "UPSTREAM_RUNNING"
UPSTREAM_MISSING_INPUT = "UPSTREAM_MISSING_INPUT"
UPSTREAM_FAILED = "UPSTREAM_FAILED"
UPSTREAM_DISABLED = "UPSTREAM_DISABLED"

#: Least to most severe; a PENDING task shows the most severe value found among its deps.
UPSTREAM_SEVERITY: dict[str, int] = {
    "": 0,
    UPSTREAM_RUNNING: 1,
    UPSTREAM_MISSING_INPUT: 2,
    UPSTREAM_FAILED: 3,
    UPSTREAM_DISABLED: 4,
}

WORKER_STATE_ACTIVE = "active"
WORKER_STATE_DISABLED = "disabled"

#: ``param_visibilities`` values (luigi's ParameterVisibility): only PUBLIC params are shown.
VISIBILITY_PUBLIC = 0
VISIBILITY_HIDDEN = 1
