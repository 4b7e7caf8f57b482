"""LeaseTimings: defaults derived from the ttl, and the rules that keep a leader safe."""

from __future__ import annotations

import dataclasses

import pytest

from lease import LeaseTimings


def test_defaults_renew_five_times_per_ttl_and_step_down_at_sixty_percent():
    t = LeaseTimings()
    assert (t.ttl, t.renew_interval, t.renew_deadline) == (5.0, 1.0, 3.0)


@pytest.mark.parametrize(
    ("ttl", "interval", "deadline"),
    [(1.0, 0.2, 0.6), (7.0, 1.4, 4.2), (15.0, 3.0, 9.0), (30.0, 6.0, 18.0)],
)
def test_defaults_scale_with_the_ttl(ttl, interval, deadline):
    t = LeaseTimings(ttl=ttl)
    assert (t.renew_interval, t.renew_deadline) == (interval, deadline)


def test_explicit_values_are_kept():
    t = LeaseTimings(ttl=15, renew_interval=3, renew_deadline=10)  # the anchors' proposal
    assert (t.ttl, t.renew_interval, t.renew_deadline) == (15.0, 3.0, 10.0)


def test_a_given_deadline_pulls_the_default_interval_down_so_the_pair_stays_valid():
    t = LeaseTimings(ttl=5, renew_deadline=1.5)
    assert t.renew_interval == 0.5
    assert 2 * t.renew_interval <= t.renew_deadline


def test_timings_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LeaseTimings().ttl = 10  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"ttl": 0.5}, r"ttl must be at least 1s .* flaps"),
        (
            {"ttl": 5, "renew_deadline": 5},
            r"renew_deadline \(5s\) must be shorter than ttl .* before the database",
        ),
        ({"ttl": 5, "renew_deadline": 6}, r"must be shorter than ttl"),
        ({"ttl": 5, "renew_interval": 2}, r"at most half of renew_deadline .* two renew attempts"),
        ({"ttl": 5, "renew_interval": 1, "renew_deadline": 1.5}, r"two renew attempts"),
        ({"ttl": 0}, r"ttl must be a finite number of seconds > 0"),
        ({"ttl": -5}, r"ttl must be a finite number of seconds > 0"),
        ({"ttl": float("inf")}, r"finite"),
        ({"ttl": float("nan")}, r"finite"),
        ({"ttl": 5, "renew_interval": 0}, r"renew_interval must be a finite number of seconds > 0"),
        ({"ttl": 5, "renew_deadline": -1}, r"renew_deadline must be a finite number of seconds > 0"),
        ({"ttl": "5"}, r"ttl must be a number of seconds"),
        ({"ttl": True}, r"ttl must be a number of seconds"),
    ],
)
def test_inconsistent_timings_are_refused_with_the_reason(kwargs, why):
    with pytest.raises(ValueError, match=why):
        LeaseTimings(**kwargs)


def test_validate_returns_the_timings_for_chaining():
    t = LeaseTimings(ttl=10)
    assert t.validate() is t
