"""Fixtures for the store's tests: a migrated Store on each real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lease import create_engine
from scheduler.store import Store


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> Store:
    """A Store on a freshly migrated database (SQLite, PostgreSQL and MariaDB in turn)."""
    s = Store(engine)
    s.upgrade()
    return s
