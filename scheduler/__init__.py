"""luigi-ha's scheduler node.

``scheduler.Scheduler`` is the pure scheduling core with Luigi's semantics and RPC signatures, so
it can be driven in-process exactly like ``luigi.scheduler.Scheduler`` (Luigi's own ``Worker``
included); the rest of the package makes it durable and highly available.
"""

from scheduler.core import Scheduler

__all__ = ["Scheduler"]
