"""Fixtures for the scheduling-core specification tests.

Settings come from ``SchedulerSettings`` (luigi's documented defaults) so no luigi configuration
file on the machine can change a test's outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from core_harness import FakeClock, Harness

from scheduler.core import Scheduler, SchedulerSettings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(clock: FakeClock) -> Callable[..., Harness]:
    """``make(**settings)`` -> a Harness on a fresh scheduler with those settings."""

    def factory(metrics: Any = None, **settings: Any) -> Harness:
        return Harness(Scheduler(clock=clock, metrics=metrics, settings=SchedulerSettings(**settings)), clock)

    return factory


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    """A scheduler with luigi's default settings."""
    return make()
