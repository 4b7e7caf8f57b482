"""PostgreSQL: the lease fence as a stored function, ``lh_fence(lease_name, lease_holder, lease_epoch)``.

Every commit of the leader starts with the fence. Sent as an anonymous ``DO`` block, the server
compiles it on every commit (about 0.07 ms of server CPU per commit on the 2-CPU VM, a fifth of
what a small commit costs it); a function is compiled once per session. Same lock, same checks,
same error as the block (lease/fence.py). Other databases fence with a locking SELECT and need
nothing here.

The body comes from :func:`lease.fence.postgres_fence_function` rather than being written out:
``CREATE OR REPLACE`` makes re-running it harmless, and a later change of the body belongs in a
new migration that replaces the function again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from lease.fence import postgres_fence_function

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(postgres_fence_function("lh_leases", "lh_fence"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS lh_fence(text, text, bigint)")
