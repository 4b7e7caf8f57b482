"""Multi-host PostgreSQL URLs: every spelling libpq accepts reaches the driver as one host list,
only writable session targets are allowed, and a silent host has a bound.

Engines are lazy: nothing here opens a connection.
"""

from __future__ import annotations

import pytest

from lease import create_engine, redact_url
from lease.engine import DbTimeouts, driver_connect_kwargs, single_host_connect_kwargs
from lease.retry import Backoff

SPELLINGS = [
    "postgresql://u:pw@/luigi?host=db1:5432&host=db2:5433&target_session_attrs=read-write",
    "postgresql://u:pw@db1:5432,db2:5433/luigi?target_session_attrs=read-write",
    "host=db1,db2 port=5432,5433 dbname=luigi user=u password=pw target_session_attrs=read-write",
]


@pytest.mark.parametrize("url", SPELLINGS)
def test_every_libpq_spelling_gives_libpq_the_same_host_list(url):
    kwargs = driver_connect_kwargs(create_engine(url))
    assert (kwargs["host"], kwargs["port"]) == ("db1,db2", "5432,5433")
    assert (kwargs["dbname"], kwargs["user"], kwargs["password"]) == ("luigi", "u", "pw")
    assert kwargs["target_session_attrs"] == "read-write"


@pytest.mark.parametrize("url", SPELLINGS)
def test_a_multi_host_url_is_logged_without_its_password(url):
    shown = redact_url(url)
    assert "pw" not in shown.replace("password", "")
    assert "db1" in shown and "db2" in shown


def test_read_write_is_the_default_target_and_primary_is_kept():
    assert driver_connect_kwargs(create_engine("postgresql://u@db/x"))["target_session_attrs"] == "read-write"
    chosen = create_engine("postgresql://u@/x?host=a:1&host=b:2&target_session_attrs=primary")
    assert driver_connect_kwargs(chosen)["target_session_attrs"] == "primary"


@pytest.mark.parametrize("target", ["any", "standby", "prefer-standby", "read-only"])
def test_a_target_that_may_pick_a_replica_is_refused(target):
    with pytest.raises(ValueError, match="luigi-ha writes"):
        create_engine(f"postgresql://u@db/x?target_session_attrs={target}")


def test_a_silent_host_is_given_up_within_dead_host_seconds():
    t = DbTimeouts.from_statement_timeout(3.0)
    kwargs = driver_connect_kwargs(create_engine("postgresql://u@db/x", statement_timeout=3.0))
    assert kwargs["connect_timeout"] == t.dead_host == 3  # per host, by libpq
    assert kwargs["tcp_user_timeout"] == 3000  # unacknowledged sends
    idle_bound = kwargs["keepalives_idle"] + kwargs["keepalives_interval"] * kwargs["keepalives_count"]
    assert idle_bound <= t.dead_host  # an idle connection


def test_settings_written_in_the_url_win():
    kwargs = driver_connect_kwargs(create_engine("postgresql://u@db/x?connect_timeout=7&keepalives_idle=9"))
    assert (kwargs["connect_timeout"], kwargs["keepalives_idle"]) == ("7", "9")


def test_the_leaders_own_connection_can_be_aimed_at_the_primary_alone():
    engine = create_engine(SPELLINGS[0])
    kwargs = single_host_connect_kwargs(engine, "db2", 5433)
    assert (kwargs["host"], kwargs["port"]) == ("db2", "5433")
    assert kwargs["target_session_attrs"] == "read-write"  # still refused if it became a replica


def test_backoff_grows_to_its_cap_and_restarts_after_a_success():
    backoff = Backoff(initial=0.05, cap=0.5)
    waits = [backoff.failed() for _ in range(10)]
    assert waits[0] < 0.2 and max(waits) <= 0.5 and waits[-1] == 0.5
    backoff.succeeded()
    assert backoff.failed() < 0.2
