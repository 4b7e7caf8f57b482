"""The schema exists only through the packaged migrations, the same on every database."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scheduler.store import Store, current_revision, head_revision, metadata, upgrade
from scheduler.store.codec import dumps
from scheduler.store.migrate import VERSION_TABLE
from tests.integration.store.helpers import changes, task_row
from tests.support.together import errors_of_calls_started_together

TABLES = {"lh_tasks", "lh_workers", "lh_meta", "lh_task_events", "lh_leases", "lh_audit", "lh_feed", "lh_tombstones"}


def test_a_fresh_database_has_no_revision_and_is_not_current(engine: sa.Engine) -> None:
    assert current_revision(engine) is None
    assert Store(engine).is_current() is False


def test_upgrade_creates_every_table_from_empty(engine: sa.Engine) -> None:
    assert sa.inspect(engine).get_table_names() == []
    upgrade(engine)
    assert set(sa.inspect(engine).get_table_names()) == TABLES | {VERSION_TABLE}
    assert current_revision(engine) == head_revision()
    assert Store(engine).is_current() is True


def test_upgrade_twice_is_a_no_op(engine: sa.Engine) -> None:
    store = Store(engine)
    store.upgrade()
    store.apply(changes(tasks={"A": task_row("A")}), epoch=1)
    store.upgrade()
    assert current_revision(engine) == head_revision()
    assert [t["id"] for t in store.load_all().tasks] == ["A"]


def test_a_database_of_the_first_revision_upgrades_in_place_and_gets_the_fence_function(engine: sa.Engine) -> None:
    upgrade(engine, "0001")
    store = Store(engine)
    with engine.begin() as conn:  # a row as a node of that revision wrote it
        conn.execute(
            sa.table(
                "lh_tasks", *(sa.column(c) for c in ("task_id", "status", "family", "updated", "epoch", "data"))
            ).insert(),
            {
                "task_id": "A",
                "status": "PENDING",
                "family": "A",
                "updated": 1.0,
                "epoch": 1,
                "data": dumps(task_row("A")),
            },
        )
    assert store.is_current() is False
    store.upgrade()
    assert current_revision(engine) == head_revision()
    assert [t["id"] for t in store.load_all().tasks] == ["A"]
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT count(*) FROM pg_proc WHERE proname = 'lh_fence'").scalar()
        assert found == 1


def test_nodes_starting_together_all_upgrade_cleanly(db_url: str, engine: sa.Engine) -> None:
    """Four nodes start at the same instant on an empty database: one migrates, the others wait
    for its commit and find nothing to do (a lock released before the commit let a second node
    try to create the tables again on MariaDB)."""
    from lease import create_engine

    others = [create_engine(db_url) for _ in range(3)]
    errors = errors_of_calls_started_together(upgrade, [engine, *others])
    for other in others:
        other.dispose()
    assert errors == []
    assert current_revision(engine) == head_revision()


def test_migrations_build_exactly_the_declared_tables(engine: sa.Engine) -> None:
    """If tables.py or lease/schema.py change, this fails until a new migration is written."""
    upgrade(engine)
    with engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [d for d in compare_metadata(mc, metadata) if not _is_version_table(d)]
    assert diff == []


def _is_version_table(diff: object) -> bool:
    return isinstance(diff, tuple) and getattr(diff[1], "name", None) == VERSION_TABLE


def test_ids_are_exact_case_and_trailing_space_sensitive(store: Store) -> None:
    """MySQL's default collations would merge these keys; Luigi task ids are exact strings."""
    ids = ["Task(a=1)", "task(a=1)", "Task(a=1) ", "Tâsk(a=1)", "Tásk(a=1)"]
    store.apply(changes(tasks={i: task_row(i) for i in ids}), epoch=1)
    assert sorted(t["id"] for t in store.load_all().tasks) == sorted(ids)


def test_a_512_character_id_of_4_byte_characters_fits(store: Store) -> None:
    long_id = "🦆" * 512
    store.apply(changes(tasks={long_id: task_row(long_id)}, workers={long_id: {"id": long_id}}), epoch=1)
    snap = store.load_all()
    assert [t["id"] for t in snap.tasks] == [long_id]
    assert [w["id"] for w in snap.workers] == [long_id]
