"""Schema migrations, driven from code: no alembic.ini, no URL on a command line.

The migration scripts ship inside the package (``scheduler/store/migrations``), so an installed
wheel can upgrade its own database. Every node calls :func:`upgrade` at start-up; two nodes
starting together must not both try to create the tables, so each upgrade runs under a
database-wide lock (an advisory lock on PostgreSQL, ``GET_LOCK`` on MySQL/MariaDB; SQLite
serialises writers by itself) and reads the current revision only once it holds the lock.

To change the schema: edit ``tables.py`` (or ``lease/schema.py``), then write the next
``migrations/versions/000N_<what>.py`` by hand, with explicit ``op`` calls and
``down_revision`` set to the current head. ``test_migrations_build_exactly_the_declared_tables``
fails until the migrations and the declared tables agree again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from scheduler.store.errors import StoreError

#: Our own version table, so that a database shared with another Alembic user never mixes histories.
VERSION_TABLE = "lh_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Our PostgreSQL advisory lock key (any constant; these are the bytes of "luigiha").
_PG_LOCK_KEY = 0x6C75_6967_6968_61
_MYSQL_LOCK_NAME = "luigi_ha.migrate"


def _config() -> Config:
    cfg = Config()
    # Config values go through ConfigParser interpolation: a '%' in the path must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["version_table"] = VERSION_TABLE
    return cfg


def head_revision() -> str:
    """The newest revision this code knows (what :func:`upgrade` brings a database to)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migration scripts found"  # a broken installation, not a runtime state
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The database's revision, or None if it has never been migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


@contextmanager
def _migration_lock(conn: sa.Connection, timeout: float) -> Iterator[None]:
    """Hold a database-wide lock for the rest of ``conn``'s transaction (or until we leave)."""
    name = conn.dialect.name
    if name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        yield
    elif name in ("mysql", "mariadb"):
        got = conn.execute(
            sa.text("SELECT GET_LOCK(:n, :t)"), {"n": _MYSQL_LOCK_NAME, "t": max(1, int(timeout))}
        ).scalar()
        if got != 1:
            raise StoreError(f"upgrade: another node held the migration lock for more than {timeout:.0f}s")
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": _MYSQL_LOCK_NAME})
    else:
        yield


@contextmanager
def _migration_engine(engine: sa.Engine) -> Iterator[sa.Engine]:
    """The node's engine cuts every statement (and, on MySQL, every socket read) off after a few
    seconds, which is right for the lease but not for waiting on a peer's migration or rewriting
    a large table. On a server database, migrate over a separate one-connection engine with the
    same URL and dialect settings but no statement timeouts; SQLite has only the one file."""
    if engine.dialect.name == "sqlite":
        yield engine
        return
    from lease import create_engine

    unbounded = create_engine(engine.url, statement_timeout=0, poolclass=sa.pool.NullPool)
    try:
        yield unbounded
    finally:
        unbounded.dispose()


def upgrade(engine: sa.Engine, revision: str = "head", *, timeout: float = 300.0) -> None:
    """Bring the database to ``revision`` (default: the newest). Safe to call again and concurrently.

    ``timeout`` bounds the wait for another node's migration (and, on PostgreSQL, every statement).
    On PostgreSQL the whole upgrade is one transaction (DDL is transactional there): it lands
    completely or not at all. MySQL commits each DDL statement implicitly.
    """
    cfg = _config()
    # The lock lives on its own connection and is let go only after the migration's transaction
    # has COMMITTED: released any earlier, a second node could read the version table before the
    # first node's version row is visible and try to create the tables again (seen on MariaDB).
    with (
        _migration_engine(engine) as eng,
        eng.connect() as lock_conn,
        _migration_lock(lock_conn, timeout),
        eng.begin() as conn,  # innermost: it commits before the lock above is released
    ):
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
