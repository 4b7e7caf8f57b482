"""The roles a scheduler node can be in, and the only transitions between them.

Every reader of "what is this node?" (``/status``, ``/leader``, ``/healthz``, the metrics, the
HA loop itself) asks one :class:`RoleModel`, so no two of them can disagree: a node that reports
``leader`` in ``/status`` is exactly a node whose ``/leader`` answers 200.

The roles:

``holding_off``
    Not campaigning for a while: after handing over in a planned switchover (so the other node
    takes the lease first), or at start while the lease still names this node's previous
    incarnation (so a leader restarted after a crash does not race the standby for it).
``standby``
    Campaigning: tries to take the lease every poll. Holds no task state.
``following``
    Campaigning like ``standby``, and holding a read-only copy of the committed state that a
    :class:`scheduler.follower.Follower` keeps up to date from the commit feed: it answers the
    read RPCs from that copy and, on winning the lease, reads only what was committed after it
    instead of loading everything. A follower that fails (database gone) drops its copy and the
    node is a plain ``standby`` again until a new copy is loaded.
``loading``
    Won the lease (a new epoch) and is reading the state from the database; renews meanwhile,
    serves nothing yet.
``leader``
    Holds the lease within its renew deadline and serves the task API.
``leader_expired``
    Still in a term, but the renew deadline on this node's own clock has passed: it must not
    serve, and the HA loop ends the term on its next turn. Reported as soon as the deadline
    passes, even if the HA loop is stuck, because :meth:`RoleModel.current` reads the lease.
``stopped``
    The HA loop has ended (shutdown).
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class Role(enum.Enum):
    HOLDING_OFF = "holding_off"
    STANDBY = "standby"
    FOLLOWING = "following"
    LOADING = "loading"
    LEADER = "leader"
    LEADER_EXPIRED = "leader_expired"
    STOPPED = "stopped"


#: role -> roles it may become next. ``stopped`` is final.
ALLOWED: dict[Role, frozenset[Role]] = {
    # following: the hold-off ended while a follower was already caught up.
    Role.HOLDING_OFF: frozenset({Role.STANDBY, Role.FOLLOWING, Role.STOPPED}),
    Role.STANDBY: frozenset({Role.HOLDING_OFF, Role.FOLLOWING, Role.LOADING, Role.STOPPED}),
    # standby: the follower failed and dropped its copy; loading: won the lease.
    Role.FOLLOWING: frozenset({Role.STANDBY, Role.HOLDING_OFF, Role.LOADING, Role.STOPPED}),
    # A failed load or a lease lost while loading goes back to campaigning.
    Role.LOADING: frozenset({Role.LEADER, Role.STANDBY, Role.STOPPED}),
    # standby: a failed or fenced commit; holding_off: a planned switchover.
    Role.LEADER: frozenset({Role.LEADER_EXPIRED, Role.STANDBY, Role.HOLDING_OFF, Role.STOPPED}),
    Role.LEADER_EXPIRED: frozenset({Role.STANDBY, Role.STOPPED}),
    Role.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A node tried a role change the model does not allow: a bug in the HA loop, never input."""


class RoleModel:
    """The node's current role; :meth:`to` is the one way to change it.

    :param lease_held: whether the lease is still held within its renew deadline on this node's
        clock; a ``leader`` whose deadline passed reads as ``leader_expired`` at once.
    :param on_change: called with ``(old, new)`` after each transition (logs, systemd status).
    """

    def __init__(
        self,
        lease_held: Callable[[], bool],
        on_change: Callable[[Role, Role], None] = lambda old, new: None,
        initial: Role = Role.STANDBY,
    ) -> None:
        self._role = initial
        self._lease_held = lease_held
        self._on_change = on_change

    def current(self) -> Role:
        role = self._role
        if role is Role.LEADER and not self._lease_held():
            return Role.LEADER_EXPIRED
        return role

    @property
    def recorded(self) -> Role:
        """The role last set by a transition (without the deadline check of :meth:`current`)."""
        return self._role

    def to(self, new: Role) -> None:
        """Change role; :raises IllegalTransition: when ``new`` may not follow the current role."""
        old = self._role
        if new is old:
            return
        if new not in ALLOWED[old]:
            raise IllegalTransition(f"a node cannot go from {old.value} to {new.value}")
        self._role = new
        self._on_change(old, new)

    @property
    def serves_writes(self) -> bool:
        return self.current() is Role.LEADER

    @property
    def serves_replica_reads(self) -> bool:
        """Read RPCs are answered from a follower's copy only in ``following``."""
        return self.current() is Role.FOLLOWING
