"""The role model: which role may follow which, and what a leader past its deadline reads as."""

from __future__ import annotations

import pytest

from scheduler.roles import ALLOWED, IllegalTransition, Role, RoleModel


def test_every_role_is_reachable_from_standby_and_stopped_is_final() -> None:
    seen, frontier = {Role.STANDBY}, [Role.STANDBY]
    while frontier:
        for nxt in ALLOWED[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(Role)
    assert ALLOWED[Role.STOPPED] == frozenset()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (Role.STANDBY, Role.LEADER),  # a node always loads before it leads
        (Role.HOLDING_OFF, Role.LOADING),  # holding off means not campaigning
        (Role.LEADER_EXPIRED, Role.LEADER),  # a term past its deadline is over
        (Role.STOPPED, Role.STANDBY),
    ],
)
def test_an_illegal_transition_raises_and_leaves_the_role_as_it_was(old: Role, new: Role) -> None:
    model = RoleModel(lambda: True, initial=old)
    with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value}"):
        model.to(new)
    assert model.recorded is old


def test_a_leader_whose_lease_deadline_passed_reads_as_expired_until_the_loop_steps_it_down() -> None:
    held = [True]
    changes: list[tuple[Role, Role]] = []
    model = RoleModel(lambda: held[0], lambda old, new: changes.append((old, new)), initial=Role.LOADING)
    model.to(Role.LEADER)
    assert model.current() is Role.LEADER and model.serves_writes
    held[0] = False
    assert model.current() is Role.LEADER_EXPIRED and not model.serves_writes
    model.to(Role.STANDBY)
    assert changes == [(Role.LOADING, Role.LEADER), (Role.LEADER, Role.STANDBY)]


def test_a_following_standby_campaigns_like_a_standby_and_serves_only_replica_reads() -> None:
    model = RoleModel(lambda: True)
    model.to(Role.FOLLOWING)
    assert model.serves_replica_reads and not model.serves_writes
    model.to(Role.LOADING)  # won the lease: no reads from the copy while it catches up
    assert not model.serves_replica_reads
    model.to(Role.LEADER)
    assert model.serves_writes and not model.serves_replica_reads


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (Role.FOLLOWING, Role.LEADER),  # even a caught-up copy reads the last commits first
        (Role.LEADER, Role.FOLLOWING),  # a leader's memory may be ahead of the database: dropped
        (Role.LOADING, Role.FOLLOWING),
        (Role.LEADER_EXPIRED, Role.FOLLOWING),
    ],
)
def test_following_is_entered_only_from_a_standby_role(old: Role, new: Role) -> None:
    model = RoleModel(lambda: True, initial=old)
    with pytest.raises(IllegalTransition):
        model.to(new)


def test_a_failed_follower_falls_back_to_plain_standby() -> None:
    model = RoleModel(lambda: True, initial=Role.FOLLOWING)
    model.to(Role.STANDBY)
    assert model.current() is Role.STANDBY and not model.serves_replica_reads
