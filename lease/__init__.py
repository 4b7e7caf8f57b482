"""A reusable database leader lease with fencing. It knows nothing of tasks.

Typical use by a node::

    engine = create_engine("postgresql://db/luigi_ha")
    lease = LeaderLease(engine, "scheduler", make_holder_id(), LeaseTimings(ttl=5))
    if lease.try_acquire() is not None:          # new epoch = fencing token
        ...                                      # every renew_interval: lease.renew()
        with engine.begin() as conn:             # every state write:
            lease.fence(conn)                    #   raises FencedOut unless still leader
            conn.execute(...)
    lease.release()                              # graceful switchover

See the module docstrings of :mod:`lease.lease` (acquire/renew/release SQL),
:mod:`lease.fence` (why fenced writes are safe), :mod:`lease.clock` (the database clock) and
:mod:`lease.engine` (per-dialect connection settings).
"""

from lease.engine import create_engine, redact_url
from lease.errors import FencedOut, LeaseError, LeaseUnavailable
from lease.fence import check_fence
from lease.lease import LeaderLease, LeaseRecord, make_holder_id
from lease.schema import create_schema, define_lease_table
from lease.timings import LeaseTimings

__all__ = [
    "FencedOut",
    "LeaderLease",
    "LeaseError",
    "LeaseRecord",
    "LeaseTimings",
    "LeaseUnavailable",
    "check_fence",
    "create_engine",
    "create_schema",
    "define_lease_table",
    "make_holder_id",
    "redact_url",
]
