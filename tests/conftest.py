"""Session-wide fixtures: throwaway database servers shared by every test that needs one.

Each server starts once per test session (about a second each) and every test gets its own
fresh database on it, so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.localcluster import LocalCluster  # noqa: E402
from tests.support.dbservers import MariaDBServer, PostgresServer, mariadb_available, postgres_bindir  # noqa: E402

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    server = PostgresServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    if not mariadb_available():
        pytest.skip("MariaDB server binaries are not installed")
    server = MariaDBServer()
    server.start()
    yield server
    server.destroy()


def _db_name() -> str:
    return f"t{os.getpid()}_{next(_counter)}"


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres_server.create_database(_db_name())


@pytest.fixture
def mariadb_url(mariadb_server: MariaDBServer) -> str:
    """A fresh, empty MariaDB database for one test."""
    return mariadb_server.create_database(_db_name())


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test against every supported database: SQLite, real PostgreSQL, real MariaDB."""
    return request.getfixturevalue(f"{request.param}_url" if request.param != "postgres" else "pg_url")


SCHEDULER_TEST_CONFIG = """
[scheduler]
retry_delay = 1
remove_delay = 600
worker_disconnect_delay = 60

[server]
prune_interval = 1

[resources]
db = 1
"""


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Start a LocalCluster of real scheduler processes; always stopped at teardown."""
    made: list[LocalCluster] = []

    def factory(db_url: str, size: int = 1, lease_ttl: float = 3.0, extra: str = SCHEDULER_TEST_CONFIG,
                name: str = "cluster") -> LocalCluster:
        cluster = LocalCluster(tmp_path / name, db_url, size=size, lease_ttl=lease_ttl, extra_config=extra)
        made.append(cluster)
        cluster.start()
        return cluster

    yield factory
    for cluster in made:
        cluster.stop()
