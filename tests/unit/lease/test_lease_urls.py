"""Database URLs: which schemes are accepted, how they are rewritten, and how they are logged.

Engines are lazy: creating one for a server URL opens no connection, so no database is needed.
"""

from __future__ import annotations

import pytest

from lease import create_engine, redact_url
from lease.engine import DbTimeouts, normalize_url


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:p@db/x", "postgresql+psycopg2"),
        ("postgres://u:p@db/x", "postgresql+psycopg2"),
        ("postgresql+psycopg2://u:p@db/x", "postgresql+psycopg2"),
        ("mysql://u:p@db/x", "mysql+pymysql"),
        ("mysql+pymysql://u:p@db/x", "mysql+pymysql"),
        ("mariadb://u:p@db/x", "mariadb+pymysql"),
        ("mariadb+pymysql://u:p@db/x", "mariadb+pymysql"),
        ("sqlite:///var/lib/luigi-ha/state.db", "sqlite"),
    ],
)
def test_accepted_schemes_map_to_the_installed_drivers(given, driver):
    assert normalize_url(given).drivername == driver
    engine = create_engine(given)
    try:
        assert engine.url.drivername == driver
        assert engine.url.password == normalize_url(given).password
    finally:
        engine.dispose()


@pytest.mark.parametrize("given", ["oracle://u:p@db/x", "mysql+mysqldb://u:p@db/x", "postgresql+asyncpg://db/x"])
def test_other_schemes_are_refused_naming_the_accepted_ones(given):
    with pytest.raises(ValueError, match=r"unsupported database URL scheme .* accepted: postgresql://"):
        create_engine(given)


def test_a_url_that_cannot_be_parsed_is_refused_without_echoing_its_password():
    with pytest.raises(ValueError) as caught:
        normalize_url("not a url at all://u:hunter2@x")
    assert "hunter2" not in str(caught.value)


def test_pool_size_is_passed_to_the_pool():
    engine = create_engine("postgresql://u@db/x", pool_size=7)
    assert engine.pool.size() == 7


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://luigi:hunter2@db:5432/luigi_ha", "postgresql://luigi:***@db:5432/luigi_ha"),
        ("mysql://root:s3cr%40t@10.0.0.1/x", "mysql://root:***@10.0.0.1/x"),
        ("postgresql://luigi@db/x", "postgresql://luigi@db/x"),
        ("sqlite:///tmp/state.db", "sqlite:///tmp/state.db"),
        (
            "postgresql://db/x?password=hunter2&sslmode=require",
            "postgresql://db/x?password=***&sslmode=require",
        ),
    ],
)
def test_redact_url_hides_passwords(url, shown):
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url) and "s3cr" not in redact_url(url)


def test_redact_url_hides_the_password_of_an_unparseable_url_too():
    assert "hunter2" not in redact_url("weird scheme://user:hunter2@host/x")


def test_timeouts_derive_from_the_statement_timeout():
    t = DbTimeouts.from_statement_timeout(3.0)
    assert (t.statement, t.connect, t.idle_in_transaction, t.lock_wait) == (3.0, 3.0, 6.0, 3)
    assert t.client_read > t.statement  # the server reports its own timeout first
    short = DbTimeouts.from_statement_timeout(0.3)
    assert (short.connect, short.idle_in_transaction, short.lock_wait) == (2.0, 1.0, 1)
    off = DbTimeouts.from_statement_timeout(0)
    assert (off.statement, off.idle_in_transaction, off.client_read) == (0.0, 0.0, None)
    with pytest.raises(ValueError, match="finite"):
        DbTimeouts.from_statement_timeout(float("inf"))
