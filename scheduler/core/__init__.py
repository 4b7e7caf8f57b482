"""The scheduling core: a pure, in-memory state machine with luigid 3.8.1's semantics.

No I/O, no threads, no clock of its own.  The node feeds it requests one at a time, persists
what ``take_changes()`` reports, and rebuilds it with ``restore()`` after a takeover.
"""

from .changes import Changes, Snapshot
from .errors import InvalidArgument
from .replica import FeedBatch
from .scheduler import RPC_METHODS, Scheduler
from .settings import SchedulerSettings

__all__ = ["Changes", "FeedBatch", "InvalidArgument", "RPC_METHODS", "Scheduler", "SchedulerSettings", "Snapshot"]
