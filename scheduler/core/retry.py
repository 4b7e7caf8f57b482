"""Retry policy and the "excessive failures" rule that turns FAILED into DISABLED.

A task's policy is the scheduler's defaults overridden by the non-null entries a worker sends in
``retry_policy_dict`` (``Task.retry_count`` etc.).  Failures are a time-ordered tuple
from which entries older than the sliding ``disable_window`` are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

POLICY_KEYS = ("retry_count", "disable_hard_timeout", "disable_window")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failing task is disabled by the scheduler.

    * ``retry_count`` failures within the last ``disable_window`` seconds, or
    * any failure ``disable_hard_timeout`` seconds or more after the first recorded failure.
    """

    retry_count: float
    disable_hard_timeout: float
    disable_window: float

    def to_dict(self) -> dict[str, float]:
        return {
            "retry_count": self.retry_count,
            "disable_hard_timeout": self.disable_hard_timeout,
            "disable_window": self.disable_window,
        }


@lru_cache(maxsize=1024)
def make_policy(retry_count: float, disable_hard_timeout: float, disable_window: float) -> RetryPolicy:
    """Interned constructor: nearly every task shares one of a handful of policies."""
    return RetryPolicy(retry_count, disable_hard_timeout, disable_window)


def merge_policy(defaults: RetryPolicy, overrides: Mapping[str, object] | None) -> RetryPolicy:
    """The defaults with every non-null, finite override applied.

    A non-finite override (``float('inf')``) means "never" and is treated like null, i.e. the
    (already practically infinite) default; this keeps rows JSON-safe for every database.
    """
    if not overrides:
        return defaults
    values = [defaults.retry_count, defaults.disable_hard_timeout, defaults.disable_window]
    for index, key in enumerate(POLICY_KEYS):
        value = overrides.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            values[index] = value
    return make_policy(*values)


def policy_from_row(row: Mapping[str, Any] | None, defaults: RetryPolicy) -> RetryPolicy:
    if not row:
        return defaults
    try:
        key = (row["retry_count"], row["disable_hard_timeout"], row["disable_window"])
    except KeyError:
        return merge_policy(defaults, row)
    policy = _ROW_POLICIES.get(key)
    if policy is None:
        if len(_ROW_POLICIES) > 4096:
            _ROW_POLICIES.clear()
        policy = _ROW_POLICIES[key] = make_policy(*key)
    return policy


# Restore decodes one policy per row; almost all rows share a handful of policies.
_ROW_POLICIES: dict[tuple[Any, Any, Any], RetryPolicy] = {}


def recent_failures(failures: tuple[float, ...], policy: RetryPolicy, now: float) -> tuple[float, ...]:
    """The failures still inside the sliding ``disable_window`` (older ones are forgotten).

    Failures are kept as an immutable, time-ordered tuple: they change rarely, and an empty
    tuple costs nothing per task (no container to allocate or for the garbage collector to scan).
    """
    oldest_kept = now - policy.disable_window
    start = 0
    while start < len(failures) and failures[start] < oldest_kept:
        start += 1
    return failures[start:] if start else failures


def has_excessive_failures(
    recent: tuple[float, ...], first_failure_time: float | None, policy: RetryPolicy, now: float
) -> bool:
    """luigid's disable rule, evaluated right after a failure has been recorded."""
    if first_failure_time is not None and now >= first_failure_time + policy.disable_hard_timeout:
        return True
    return len(recent) >= policy.retry_count
