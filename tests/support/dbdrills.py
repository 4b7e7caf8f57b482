"""Database failovers on a Patroni cluster, measured by a client that writes through the scheduler.

Shared by the tests (which assert on the figures) and ``bench/db_failover_patroni.py`` (which
repeats them and reports percentiles), so both fail the database the same way:

* ``kill-postgres``: SIGKILL of the primary's postmaster; its Patroni sees PostgreSQL gone and,
  with ``primary_start_timeout 0``, hands the leader key over at once, if it judges a standby fit
  to take over (on a loaded machine its REST API may not answer in time): else it restarts
  PostgreSQL in place, as Patroni does by default. Either way the scheduler must carry on;
  ``DbFailover.new_primary`` says which happened;
* ``kill-patroni-and-postgres``: SIGKILL of the primary's Patroni, then of its postmaster (a lost
  host): nobody releases the leader key, the standby takes it when it expires (Patroni's ttl);
* ``switchover``: ``patronictl switchover --force``, the planned handover of a maintenance window.

The figure is the client's: the longest time between two consecutive acknowledged writes
around the failure, i.e. from the last write the old primary accepted to the first the new one
did. For the kills it is also given from the SIGKILL itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.support.acks import AckingWriter
from tests.support.patroni import PatroniCluster, PatroniMember

FAILURES = ("kill-postgres", "kill-patroni-and-postgres", "switchover")


@dataclass
class DbFailover:
    how: str
    old_primary: str
    new_primary: str
    #: Longest gap between consecutive acknowledged writes from just before the failure until
    #: writes flowed again: the time no write was accepted.
    no_write_s: float
    #: For a kill: from the SIGKILL to the first acknowledged write after that gap.
    since_kill_s: float | None
    #: The database's own part: from the failure until Patroni's new primary accepted writes.
    promotion_s: float


def fail_primary(cluster: PatroniCluster, how: str) -> tuple[float, PatroniMember]:
    """Fail the current primary as ``how`` says; return (monotonic time of the failure, old primary)."""
    primary = cluster.wait_primary()
    if how == "kill-postgres":
        primary.postmaster_pid()
        at = time.monotonic()
        primary.kill_postgres()
    elif how == "kill-patroni-and-postgres":
        primary.postmaster_pid()
        at = time.monotonic()
        primary.kill_patroni()
        primary.kill_postgres()
    elif how == "switchover":
        at = time.monotonic()
        candidate = next(m for m in cluster.members if m is not primary)
        cluster.patronictl("switchover", cluster.scope, "--leader", primary.name, "--candidate", candidate.name,
                           "--force")
    else:
        raise ValueError(f"unknown database failure {how!r}; one of {', '.join(FAILURES)}")
    return at, primary


def drill(cluster: PatroniCluster, writer: AckingWriter, how: str, timeout: float = 120.0,
          rejoin: bool = True) -> DbFailover:
    """One database failover under ``writer``'s stream; the old primary rejoins as a standby after."""
    failed_at, old = fail_primary(cluster, how)
    new = cluster.wait_primary(timeout=timeout, not_=None if how == "kill-postgres" else old)
    promoted_at = time.monotonic()
    deadline = promoted_at + timeout
    # Writes count as flowing again at the first acknowledgement sent after the new primary
    # accepted writes, and then some more: the gap must be closed on both sides.
    while writer.first_ack_after(promoted_at + 0.5) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{how}: no write was acknowledged within {timeout}s of the new primary")
        time.sleep(0.05)
    flowing = writer.first_ack_after(promoted_at + 0.5)
    assert flowing is not None
    window = [a.at for a in writer.acks if failed_at - 1.0 <= a.at <= flowing]
    gap, gap_end = 0.0, None
    for before, after in zip(window, window[1:], strict=False):
        if after - before > gap:
            gap, gap_end = after - before, after
    since_kill = None
    if how != "switchover":
        first = gap_end if gap_end is not None and gap_end > failed_at else writer.first_ack_after(failed_at)
        since_kill = (first - failed_at) if first is not None else None
    result = DbFailover(how=how, old_primary=old.name, new_primary=new.name, no_write_s=gap,
                        since_kill_s=since_kill, promotion_s=promoted_at - failed_at)
    if rejoin:
        cluster.rejoin(old, timeout=timeout)  # also waits for the sync standby when nothing moved
    return result
