"""Which database errors are worth retrying, and a retry loop that cannot outlive a deadline.

Why bounded by a deadline rather than an attempt count: a renew that is still retrying after the
leader's renew deadline is useless (the leader has already stepped down) and, worse, a retry
loop that outlives the lease is how client-go ended up with two leaders (kubernetes#44887). So
every retry loop gets an absolute deadline on the caller's monotonic clock, and an attempt is
only started if it, plus the sleep before it, still fits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
import tenacity

__all__ = ["Backoff", "is_transient", "run_with_deadline"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# PostgreSQL SQLSTATE classes/codes that mean "try again": connection exceptions (08),
# transaction rollback (40: serialization failure, deadlock), operator intervention
# (57P01-57P03: admin shutdown, crash shutdown, cannot connect now), lock not available (55P03),
# query cancelled by statement_timeout (57014).
_PG_TRANSIENT_PREFIXES = ("08", "40", "57P0")
_PG_TRANSIENT_CODES = {"55P03", "57014", "53300"}  # 53300: too many connections

# MySQL/MariaDB error numbers that mean "try again": lock wait timeout, deadlock, query
# interrupted / max_statement_time exceeded, server gone / lost connection / can't connect,
# too many connections, server shutting down.
_MYSQL_TRANSIENT_CODES = {1205, 1213, 1317, 1969, 3024, 2002, 2003, 2006, 2013, 2055, 1040, 1053}
# MySQL access errors are OperationalErrors too, but retrying them only hides a config error.
_MYSQL_PERMANENT_CODES = {1044, 1045, 1049, 1142, 1143, 1146}


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` is a database error that may clear up on its own: worth another attempt.

    Connection refused/reset, server restarting, timeouts, deadlocks, serialization failures and
    lock waits are transient; schema errors, constraint violations and programming errors are not
    (retrying them only delays the report).
    """
    if isinstance(exc, sa.exc.TimeoutError):  # pool exhausted for pool_timeout
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    pgcode = getattr(orig, "pgcode", None)
    if pgcode:
        return pgcode.startswith(_PG_TRANSIENT_PREFIXES) or pgcode in _PG_TRANSIENT_CODES
    mysql_code = _mysql_errno(orig)
    if mysql_code is not None:
        if mysql_code in _MYSQL_PERMANENT_CODES:
            return False
        if mysql_code in _MYSQL_TRANSIENT_CODES:
            return True
    if type(orig).__module__.startswith("sqlite3"):
        # sqlite3 raises OperationalError for "no such table" too; only lock contention is transient.
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    # psycopg2 raises OperationalError without a pgcode when it cannot connect at all.
    return isinstance(exc, sa.exc.OperationalError)


def _mysql_errno(orig: BaseException | None) -> int | None:
    if orig is None or not type(orig).__module__.startswith("pymysql"):
        return None
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def run_with_deadline(
    fn: Callable[[], T],
    *,
    deadline: float,
    monotonic: Callable[[], float],
    what: str,
    max_wait: float = 0.5,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient database errors until ``deadline``.

    :param deadline: absolute time on ``monotonic``'s clock; no attempt starts after it (nor when
        the backoff sleep before it would end after it).
    :param what: short description for the log ("renew lease 'x'").
    :param max_wait: cap of the exponential backoff (seconds); jitter spreads nodes apart.
    :raises: the last exception when it is not transient or the deadline leaves no room.
    """
    # Also bound by real elapsed time, so an injected fake clock that never advances cannot make
    # the loop spin forever.
    real_budget = max(0.0, deadline - monotonic())

    def out_of_time(state: tenacity.RetryCallState) -> bool:
        upcoming = state.upcoming_sleep or 0.0
        return monotonic() + upcoming >= deadline or state.seconds_since_start + upcoming >= real_budget

    def log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info(
            "%s: attempt %d failed (%s), retrying in %.2fs",
            what,
            state.attempt_number,
            _short(exc),
            state.upcoming_sleep,
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=out_of_time,
        # 50 ms, 100 ms, 200 ms ... capped, plus up to 50 ms of jitter so nodes do not retry in step.
        wait=tenacity.wait_exponential(multiplier=0.05, max=max_wait) + tenacity.wait_random(0, 0.05),
        before_sleep=log_retry,
        reraise=True,
    )
    return retrying(fn)


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no exception"
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}"[:200]


class Backoff:
    """How long to wait before the next attempt to reach the database: exponential with jitter,
    capped, restarting from ``initial`` after a success (tenacity's wait strategies).

    Why capped low: after a failover the lease becomes free at a moment no node can see coming
    (its ttl, by the database's clock), and a node that happens to be sleeping then delays the
    takeover by up to the cap. ``cap = 0.5`` keeps the whole failover within the database's own
    promotion time + ``lease_ttl`` + 1 s while a dead database costs a few connection attempts a
    second per node, not a busy loop.
    """

    def __init__(self, initial: float = 0.05, cap: float = 0.5) -> None:
        self._wait = tenacity.wait_exponential(multiplier=initial, max=cap) + tenacity.wait_random(0, initial)
        self._cap = cap
        self.failures = 0

    def failed(self) -> float:
        """Record one more failed attempt in a row; the seconds to wait before the next one."""
        self.failures += 1
        state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = self.failures
        return min(self._cap, float(self._wait(state)))

    def succeeded(self) -> None:
        self.failures = 0
