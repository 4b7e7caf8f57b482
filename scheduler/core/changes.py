"""What changed since the last commit (``Changes``), and a full copy of the state (``Snapshot``).

The core never writes anything itself.  It records *which* tasks, workers and global values
changed (cheap: a set insert per mutation) and builds their rows only when the node asks for
them with ``take_changes()``, once per group commit.  That keeps the RPC hot paths free of
serialisation work and makes a batch of requests that touch the same task write it once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: Upper bound on buffered history events when nobody drains them (e.g. the core used
#: in-process by luigi's own tests); a node drains them on every commit, far below this.
MAX_BUFFERED_EVENTS = 1_000_000


@dataclass
class Changes:
    """Everything that changed since the previous ``take_changes()``.

    * ``tasks``: task id -> full current row, or ``None`` when the task was deleted.
    * ``workers``: worker id -> full current row, or ``None`` when the worker was pruned.
    * ``meta``: global values that changed (``paused``, ``resources``).
    * ``events``: task history, one dict per status change or hand-out, oldest first, with keys
      ``task_id``, ``status``, ``at``, ``worker``, ``host``.
    * ``audit``: audit records the node adds to the batch (the core never does), so an admin
      action and its record commit together.
    """

    tasks: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    workers: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.tasks or self.workers or self.meta or self.events or self.audit)


@dataclass
class Snapshot:
    """The complete persisted state: every task row, every worker row, and the global values.

    A task row is a dict (what ``export()`` gives), or a ``Task`` that the restoring scheduler's
    ``task_decoder()`` has just decoded from the stored text (what the store gives a node:
    decoding each row into its task as it arrives from the database is faster than building
    dicts first). ``restore`` rebuilds the first kind and adopts the second as it is.
    """

    tasks: list[Any] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)
    #: The store's commit sequence this state is at (``Store.load_all`` sets it; 0: unknown). A
    #: standby that restored it follows the feed from there (``scheduler.follower``).
    seq: int = 0


class ChangeLog:
    """Dirty-id sets plus the event buffer; rows are built later by the scheduler."""

    __slots__ = ("tasks", "workers", "meta", "events")

    def __init__(self) -> None:
        self.tasks: set[str] = set()
        self.workers: set[str] = set()
        self.meta: set[str] = set()
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_BUFFERED_EVENTS)

    def event(self, task_id: str, status: str, at: float, worker: str | None, host: str | None) -> None:
        self.events.append({"task_id": task_id, "status": status, "at": at, "worker": worker, "host": host})

    def __bool__(self) -> bool:
        """True while anything is recorded that ``take_changes()`` has not handed out yet."""
        return bool(self.tasks or self.workers or self.meta or self.events)

    def clear(self) -> None:
        self.tasks = set()
        self.workers = set()
        self.meta = set()
        self.events = deque(maxlen=MAX_BUFFERED_EVENTS)
