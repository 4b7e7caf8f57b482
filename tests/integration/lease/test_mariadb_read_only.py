"""A MariaDB server with read_only = ON is "not the primary": no connection to it is ever used.

PyMySQL takes one host, so a node reaches a MariaDB primary through one address (an HAProxy, a
moved service address) that can lead it to a replica, and ``read_only`` does not stop a user with
SUPER (root here). The engine asks the server itself on every new connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pymysql
import pytest
import sqlalchemy as sa

from lease.engine import create_engine
from lease.primary import tracker_of
from lease.retry import is_transient

pytestmark = pytest.mark.mariadb


@pytest.fixture
def read_only(mariadb_server) -> Iterator[Callable[[bool], None]]:
    admin = pymysql.connect(host="127.0.0.1", port=mariadb_server.port, user="root", autocommit=True)

    def set_read_only(on: bool) -> None:
        with admin.cursor() as cur:
            cur.execute(f"SET GLOBAL read_only = {'ON' if on else 'OFF'}")

    yield set_read_only
    set_read_only(False)
    admin.close()


def test_a_read_only_server_is_refused_as_not_the_primary_and_used_once_writable(mariadb_url, read_only):
    engine = create_engine(mariadb_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (n INT)"))
        engine.dispose()
        read_only(True)
        # root could write here despite read_only: it must not get a connection at all.
        with pytest.raises(sa.exc.OperationalError) as caught, engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO probe VALUES (1)"))
        assert "read_only = ON: not the primary" in str(caught.value)
        assert is_transient(caught.value)  # the caller's retry keeps looking for a primary
        tracker = tracker_of(engine)
        assert not tracker.connected_now and "read_only" in (tracker.last_error or "")

        read_only(False)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO probe VALUES (2)"))
        assert tracker.connected_now and tracker.current is not None and tracker.current.primary
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT n FROM probe")).scalars().all() == [2]
    finally:
        engine.dispose()
