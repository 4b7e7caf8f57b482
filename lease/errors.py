"""Exceptions raised by the lease package.

Why a small hierarchy: callers (the scheduler node, the task store) must tell "we are no longer
the leader, stop writing" (:class:`FencedOut`) apart from "the database did not answer in time"
(:class:`LeaseUnavailable`). Both mean "do not acknowledge anything", but only the first one is
certain; the second one may clear up on the next attempt.
"""

from __future__ import annotations


class LeaseError(Exception):
    """Base class for every error raised by :mod:`lease`."""


class FencedOut(LeaseError):
    """A fenced write was refused: the caller is not (or no longer) the lease holder.

    Raised by :func:`lease.check_fence` inside the caller's transaction, before it writes. The
    transaction must be rolled back (leaving the ``with engine.begin()`` block by this exception
    does exactly that), so nothing written under a stale epoch can ever commit.

    The attributes name what was expected and what the lease row actually said, so the log line
    explains the step-down without a second query.
    """

    def __init__(
        self,
        lease_name: str,
        *,
        expected_holder: str,
        expected_epoch: int | None,
        found_holder: str | None = None,
        found_epoch: int | None = None,
        remaining: float | None = None,
        reason: str | None = None,
    ) -> None:
        self.lease_name = lease_name
        self.expected_holder = expected_holder
        self.expected_epoch = expected_epoch
        self.found_holder = found_holder
        self.found_epoch = found_epoch
        self.remaining = remaining
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        expected = f"expected holder {self.expected_holder!r} epoch {self.expected_epoch}"
        if self.reason is not None:
            return f"fenced out of lease {self.lease_name!r}: {self.reason} ({expected})"
        if self.found_epoch is None:
            found = "found no lease row"
        else:
            found = f"found holder {self.found_holder!r} epoch {self.found_epoch}"
            if self.remaining is not None:
                if self.remaining > 0:
                    found += f", expiring in {self.remaining:.3f}s"
                else:
                    found += f", expired {-self.remaining:.3f}s ago"
        return f"fenced out of lease {self.lease_name!r}: {expected}, {found}"


class LeaseUnavailable(LeaseError):
    """The lease row could not be read or written within the time budget (database down or slow).

    The original database exception is chained as ``__cause__``.
    """
