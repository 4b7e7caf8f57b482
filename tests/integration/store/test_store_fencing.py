"""apply() under the real lease fence: a deposed leader's batch never lands."""

from __future__ import annotations

import threading
import time
from functools import partial

import pytest
import sqlalchemy as sa

from lease import FencedOut, check_fence
from scheduler.store import Store
from scheduler.store.tables import leases
from tests.integration.store.helpers import changes, event, task_row

FAR_FUTURE = 1e12  # expires_at, seconds since the Unix epoch


def grant(store: Store, holder: str, epoch: int) -> None:
    """What a takeover does to the lease row (an UPDATE needing the row exclusively)."""
    with store.engine.begin() as conn:
        updated = conn.execute(
            sa.update(leases).where(leases.c.name == "scheduler").values(holder=holder, epoch=epoch)
        ).rowcount
        if not updated:
            conn.execute(sa.insert(leases).values(name="scheduler", holder=holder, epoch=epoch, expires_at=FAR_FUTURE))


def fence_for(holder: str, epoch: int) -> partial:
    return partial(check_fence, table=leases, lease_name="scheduler", holder=holder, epoch=epoch)


def test_the_lease_fence_admits_the_holder_and_refuses_a_deposed_leader(store: Store) -> None:
    grant(store, "node-a", 1)
    store.apply(changes(tasks={"A": task_row("A")}), epoch=1, fence=fence_for("node-a", 1))

    grant(store, "node-b", 2)  # node-b took over
    with pytest.raises(FencedOut):
        store.apply(
            changes(tasks={"A": None, "B": task_row("B")}, events=[event("B", "PENDING", 1.0)]),
            epoch=1,
            fence=fence_for("node-a", 1),
        )
    assert store.load_all().tasks == [task_row("A")]
    assert store.task_events("B") == []
    store.apply(changes(tasks={"B": task_row("B")}), epoch=2, fence=fence_for("node-b", 2))
    assert store.max_epoch() == 2


@pytest.mark.parametrize("db_url", ["postgres", "mariadb"], indirect=True)
def test_a_takeover_waits_for_the_in_flight_fenced_batch(store: Store) -> None:
    """The fence's share lock is held across the batch's writes until its commit."""
    grant(store, "node-a", 1)
    fenced = threading.Event()

    def slow_fence(conn: sa.Connection) -> None:
        check_fence(conn, leases, "scheduler", "node-a", 1)
        fenced.set()
        time.sleep(0.5)  # the writes and commit follow; the takeover must wait for them

    writer = threading.Thread(
        target=store.apply, args=(changes(tasks={"A": task_row("A")}),), kwargs={"epoch": 1, "fence": slow_fence}
    )
    writer.start()
    assert fenced.wait(10)
    started = time.monotonic()
    grant(store, "node-b", 2)
    waited = time.monotonic() - started
    writer.join(10)
    assert waited > 0.3, f"the takeover did not wait for the fenced batch ({waited:.3f}s)"
    assert store.load_all().tasks == [task_row("A")]
