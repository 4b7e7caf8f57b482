"""The durable schema: every table luigi-ha keeps, on one ``metadata``.

The store is not a relational model of Luigi: each task and worker is one row whose ``data``
column holds the whole in-memory row as JSON, so the core can change its row shape without a
migration. The few other columns exist for the database's sake only: a primary key to upsert
on, ``status``/``family``/``updated`` so an operator can query the table with SQL, and
``epoch``, the fencing token of the write that last changed the row, so an audit can prove that
no write from an older epoch landed after a newer one.

Portability notes (PostgreSQL, MySQL/MariaDB, SQLite):

* Ids are up to 512 characters: ``VARCHAR(512)``, or on MySQL/MariaDB ``VARBINARY(2048)`` (see
  below; 2,048 bytes = 512 four-byte characters). That key is inside InnoDB's 3,072-byte limit
  for the DYNAMIC row format (the default since MySQL 5.7.9 and MariaDB 10.2.2; the old COMPACT
  format's 767-byte limit would not fit, so those are unsupported). ``(task_id, id)`` on the
  events table is 2,056 bytes, also inside the limit. No hash column is needed.
* Ids are exact strings, but MySQL/MariaDB compare text through a collation: the default
  ``*_ci`` ones fold case (``Foo(a=1)`` = ``foo(a=1)``) and even ``utf8mb4_bin`` ignores
  trailing spaces (PAD SPACE), so two distinct ids would share one primary key and one task
  would silently overwrite the other. The NO PAD binary collations differ between MySQL and
  MariaDB, so id columns there are ``VARBINARY`` holding the UTF-8 bytes (:class:`Utf8Bytes`),
  which compare exactly everywhere. The rest of each table is utf8mb4.
* Timestamps are DOUBLE: a plain ``Float`` is single precision on MySQL, which rounds a Unix
  time to about two minutes.
* ``data`` is LONGTEXT on MySQL because TEXT stops at 64 KB and a task with many deps exceeds it.
* The events id is INTEGER on SQLite, where only ``INTEGER PRIMARY KEY`` autoincrements.

The committed-row feed (a standby follows the leader through it; :mod:`scheduler.store.feed`):
``commit_seq`` on tasks, workers and meta is the commit sequence of the round that last wrote the row,
taken from the one row of ``lh_feed`` that every fenced round increments; deleted or pruned
tasks and workers leave a row in ``lh_tombstones`` with the sequence of the round that deleted
them. ``lh_feed.pruned_seq``: every tombstone up to that sequence is gone.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from lease.schema import define_lease_table
from scheduler.core.validation import MAX_ID_LENGTH  # the protocol's limit sizes the key columns

#: Longest ``lh_meta`` key.
MAX_META_KEY_LENGTH = 64
#: Widths of the informational columns; longer values are cut there (``data`` keeps them whole).
FAMILY_LENGTH = 255
HOST_LENGTH = 255
#: Longest status name (Luigi's longest is BATCH_RUNNING, 13).
STATUS_LENGTH = 16
AUDIT_TEXT_LENGTH = 128


class Utf8Bytes(sa.TypeDecorator[str]):
    """A ``str`` stored as its UTF-8 bytes, so that MySQL compares it byte for byte."""

    impl = mysql.VARBINARY
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> bytes | None:
        return None if value is None else value.encode("utf-8")

    def process_result_value(self, value: bytes | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else bytes(value).decode("utf-8")


def id_type(length: int) -> sa.types.TypeEngine[str]:
    """``VARCHAR(length)``; on MySQL/MariaDB ``VARBINARY`` of up to 4 bytes per character."""
    return sa.String(length).with_variant(Utf8Bytes(4 * length), "mysql", "mariadb")


_MYSQL_TABLE = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

#: Unbounded JSON text: TEXT everywhere, LONGTEXT on MySQL/MariaDB (TEXT is 64 KB there).
JsonText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
#: Autoincrement ids: BIGINT, but INTEGER on SQLite so that it aliases the rowid.
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

tasks = sa.Table(
    "lh_tasks",
    metadata,
    sa.Column("task_id", id_type(MAX_ID_LENGTH), primary_key=True),
    sa.Column("status", sa.String(STATUS_LENGTH), nullable=False),
    sa.Column("family", sa.String(FAMILY_LENGTH), nullable=False),
    sa.Column("updated", sa.Double(), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("data", JsonText, nullable=False),
    sa.Column("commit_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Index("ix_lh_tasks_status", "status"),
    sa.Index("ix_lh_tasks_seq", "commit_seq"),
    **_MYSQL_TABLE,
)

workers = sa.Table(
    "lh_workers",
    metadata,
    sa.Column("worker_id", id_type(MAX_ID_LENGTH), primary_key=True),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("data", JsonText, nullable=False),
    sa.Column("commit_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Index("ix_lh_workers_seq", "commit_seq"),
    **_MYSQL_TABLE,
)

meta = sa.Table(
    "lh_meta",
    metadata,
    sa.Column("key", id_type(MAX_META_KEY_LENGTH), primary_key=True),
    sa.Column("value", JsonText, nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("commit_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    **_MYSQL_TABLE,
)

#: The commit-sequence counter: one row (``id`` 1), incremented by every fenced commit round.
feed = sa.Table(
    "lh_feed",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("commit_seq", sa.BigInteger(), nullable=False),
    sa.Column("pruned_seq", sa.BigInteger(), nullable=False),
    **_MYSQL_TABLE,
)

#: Longest tombstone kind ("task", "worker").
TOMBSTONE_KIND_LENGTH = 8

#: One row per deleted task or worker: the sequence and time of the round that deleted it.
tombstones = sa.Table(
    "lh_tombstones",
    metadata,
    sa.Column("kind", sa.String(TOMBSTONE_KIND_LENGTH), primary_key=True),
    sa.Column("item_id", id_type(MAX_ID_LENGTH), primary_key=True),
    sa.Column("commit_seq", sa.BigInteger(), nullable=False),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Index("ix_lh_tombstones_seq", "commit_seq"),
    sa.Index("ix_lh_tombstones_at", "at"),
    **_MYSQL_TABLE,
)

task_events = sa.Table(
    "lh_task_events",
    metadata,
    sa.Column("id", EventId, primary_key=True, autoincrement=True),
    sa.Column("task_id", id_type(MAX_ID_LENGTH), nullable=False),
    sa.Column("status", sa.String(STATUS_LENGTH), nullable=False),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Column("worker", sa.String(MAX_ID_LENGTH), nullable=True),
    sa.Column("host", sa.String(HOST_LENGTH), nullable=True),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    # (task_id, id) serves "this task's history, newest first" straight from the index.
    sa.Index("ix_lh_task_events_task_id", "task_id", "id"),
    # (at) lets the retention sweep take the oldest events first (migration 0003).
    sa.Index("ix_lh_task_events_at", "at"),
    **_MYSQL_TABLE,
)

#: Who changed the scheduler by hand: every admin RPC and switchover (scheduler/audit.py), written
#: in the same fenced transaction as the change it records.
audit_log = sa.Table(
    "lh_audit",
    metadata,
    sa.Column("id", EventId, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Column("user", sa.String(AUDIT_TEXT_LENGTH), nullable=True),
    sa.Column("role", sa.String(STATUS_LENGTH), nullable=True),
    sa.Column("remote", sa.String(HOST_LENGTH), nullable=True),
    sa.Column("action", sa.String(AUDIT_TEXT_LENGTH), nullable=False),
    sa.Column("arguments", JsonText, nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    **_MYSQL_TABLE,
)

#: The leader lease lives in the same database and is created by the same migrations.
leases = define_lease_table(metadata)
#: On PostgreSQL, the lease's fence as a stored function (migration 0002) for the leader's writer.
FENCE_FUNCTION = "lh_fence"
