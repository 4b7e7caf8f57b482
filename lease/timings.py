"""Lease timings, derived from the ttl and validated at construction.

A leader must stop before the database can hand its lease to somebody else, and a single lost
renew must not cost a failover. Both are properties of the three numbers together, so they are
checked together, once, at startup (docs/ha-rules.md, "Timings checked together").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LeaseTimings"]

MIN_TTL = 1.0
DEFAULT_INTERVAL_FRACTION = 0.2  # renew 5 times per ttl
DEFAULT_DEADLINE_FRACTION = 0.6  # stop serving after 60 % of the ttl without a successful renew


@dataclass(frozen=True)
class LeaseTimings:
    """How long a lease lasts, how often it is renewed, and when an unrenewed leader stops.

    :param ttl: seconds the *database* keeps the lease after each acquire/renew (by its own clock).
    :param renew_interval: seconds between renew attempts. Default ``ttl / 5`` (1 s for the 5 s
        default ttl), rounded to the millisecond.
    :param renew_deadline: seconds, measured on the leader's monotonic clock from the *start* of
        its last successful acquire/renew, after which the leader considers the lease lost and
        stops serving. Default ``0.6 * ttl`` (3 s for 5 s), rounded to the millisecond; when only
        ``renew_deadline`` is given, ``renew_interval`` defaults to
        ``min(ttl / 5, renew_deadline / 3)`` so the pair stays valid.

    Why the defaults: ``0.6 * ttl`` leaves 40 % of the ttl between "the leader stops" and "the
    database may give the lease to a standby", which absorbs clock-rate differences between the
    leader and the database, the time the leader needs to notice and stop, and a slow last
    statement. ``ttl / 5`` lets three renew attempts start inside the deadline, so one or two lost
    renews (a database blip, a pool reconnect) do not cause a failover (Patroni #2167).

    Rules (checked by :meth:`validate`, which the constructor calls; a violation raises
    ``ValueError`` saying why):

    1. every value is a finite number > 0;
    2. ``ttl >= 1`` s: below that, network and database latency are a large part of the ttl and
       leases flap;
    3. ``renew_deadline < ttl``: the leader must stop before the database can expire the lease
       and grant it to a standby;
    4. ``2 * renew_interval <= renew_deadline``: at least two renew attempts fit inside the
       deadline, so one failed renew is not a failover.
    """

    ttl: float = 5.0
    renew_interval: float | None = None
    renew_deadline: float | None = None

    def __post_init__(self) -> None:
        ttl = _number("ttl", self.ttl)
        deadline = (
            round(ttl * DEFAULT_DEADLINE_FRACTION, 3)
            if self.renew_deadline is None
            else _number("renew_deadline", self.renew_deadline)
        )
        if self.renew_interval is not None:
            interval = _number("renew_interval", self.renew_interval)
        elif self.renew_deadline is None:
            interval = round(ttl * DEFAULT_INTERVAL_FRACTION, 3)
        else:
            interval = round(min(ttl * DEFAULT_INTERVAL_FRACTION, deadline / 3), 3)
        object.__setattr__(self, "ttl", ttl)
        object.__setattr__(self, "renew_deadline", deadline)
        object.__setattr__(self, "renew_interval", interval)
        self.validate()

    # After __post_init__ these are never None; the properties give type checkers a float.
    @property
    def interval(self) -> float:
        """``renew_interval`` as a float (always set after construction)."""
        assert self.renew_interval is not None
        return self.renew_interval

    @property
    def deadline(self) -> float:
        """``renew_deadline`` as a float (always set after construction)."""
        assert self.renew_deadline is not None
        return self.renew_deadline

    def validate(self) -> LeaseTimings:
        """Check the rules listed in the class docstring; return ``self`` or raise ``ValueError``."""
        ttl, interval, deadline = self.ttl, self.interval, self.deadline
        # The deadline before the interval: a bad deadline is reported as such, not as the bad
        # interval derived from it.
        for field, value in (("ttl", ttl), ("renew_deadline", deadline), ("renew_interval", interval)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{field} must be a finite number of seconds > 0, got {value!r}")
        if ttl < MIN_TTL:
            raise ValueError(
                f"ttl must be at least {MIN_TTL:g}s (got {ttl:g}s): with a shorter lease, network and "
                "database latency take up most of it and the lease flaps between nodes"
            )
        if deadline >= ttl:
            raise ValueError(
                f"renew_deadline ({deadline:g}s) must be shorter than ttl ({ttl:g}s), so the leader "
                "stops serving before the database can expire its lease and grant it to a standby"
            )
        if 2 * interval > deadline:
            raise ValueError(
                f"renew_interval ({interval:g}s) must be at most half of renew_deadline ({deadline:g}s), "
                "so at least two renew attempts fit before the leader must step down and a single "
                "failed renew does not cause a failover"
            )
        return self


def _number(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} must be a number of seconds, got {value!r}")
    return float(value)
