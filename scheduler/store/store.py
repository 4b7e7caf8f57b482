"""Durable task state: load everything at takeover, persist each group-commit batch, fenced.

The core keeps the whole scheduling state in memory; the store's job is to make every change
the node acknowledges durable, and to give a new leader the full state back. Two operations
matter and both are tuned:

* :meth:`Store.apply` runs for every batch of RPCs, so it is a fixed handful of round trips:
  the fence, one multi-row upsert per table, one ``DELETE ... IN`` per chunk of removed ids,
  one multi-row insert of events, the commit.
* :meth:`Store.load_all` runs at takeover while clients wait, so it fetches only the JSON
  column and hands the task rows over as text, which the core decodes straight into its
  task objects.

Everything else (events, counts, max_epoch) is for the UI and for operators.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from lease import redact_url
from scheduler.core.persistence import gc_paused
from scheduler.core.validation import id_problem
from scheduler.store import feed, migrate
from scheduler.store.codec import dumps, loads, loads_rows
from scheduler.store.errors import StoreError, describe
from scheduler.store.tables import (
    FAMILY_LENGTH,
    HOST_LENGTH,
    MAX_ID_LENGTH,
    MAX_META_KEY_LENGTH,
    STATUS_LENGTH,
    audit_log,
    meta,
    task_events,
    tasks,
    tombstones,
    workers,
)

T = TypeVar("T")

if TYPE_CHECKING:
    from scheduler.core import Snapshot

#: Ids per ``DELETE ... WHERE id IN (...)``: far below every backend's bind-parameter limit.
DELETE_CHUNK = 500


class ChangesLike(Protocol):
    """What :meth:`Store.apply` reads from ``scheduler.core.Changes`` (any object with these works)."""

    tasks: Mapping[str, dict | None]
    workers: Mapping[str, dict | None]
    meta: Mapping[str, object]
    events: list[dict]


Fence = Callable[[sa.Connection], None]


def _checked(value: object, what: str, limit: int = MAX_ID_LENGTH) -> str:
    problem = id_problem(value, limit)
    if problem is not None:
        raise StoreError(f"cannot store {what}: {problem}")
    return value  # type: ignore[return-value]  # id_problem proved it is a str


def _status(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > STATUS_LENGTH:
        raise StoreError(f"cannot store {what}: bad status {value!r}")
    return value


def _informational(value: object, limit: int) -> str | None:
    """A client-supplied name for a column that is only there for SQL users (family, worker, host).

    ``data`` keeps the exact value; the column gets a copy that every backend accepts: cut to the
    column's width, without NULs, with unencodable characters replaced. Failing the batch instead
    would make one odd ``add_task`` depose every leader it is retried against.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "")[:limit]


def _upsert(dialect: sa.Dialect, table: sa.Table) -> sa.Insert:
    """INSERT that overwrites every non-key column of an existing row, in the dialect's own syntax."""
    keys = [c.name for c in table.primary_key.columns]
    others = [c.name for c in table.columns if c.name not in keys]
    if dialect.name in ("mysql", "mariadb"):
        stmt = mysql.insert(table)
        return stmt.on_duplicate_key_update({name: stmt.inserted[name] for name in others})
    if dialect.name == "postgresql":
        stmt = postgresql.insert(table)
        upsert = stmt.on_conflict_do_update(index_elements=keys, set_={n: stmt.excluded[n] for n in others})
        # SQLAlchemy 2.1 sends an ON CONFLICT executemany as one statement per row (a round trip
        # each) unless it has RETURNING; with it, rows go in multi-row VALUES pages (2-3x faster
        # for 1,000 rows). Batching is exact here: the SET clause only reads ``excluded``, and
        # the keys of one batch are distinct (they are dict keys).
        return upsert.returning(*table.primary_key.columns)
    if dialect.name == "sqlite":
        stmt = sqlite.insert(table)
        return stmt.on_conflict_do_update(index_elements=keys, set_={n: stmt.excluded[n] for n in others})
    raise StoreError(f"unsupported database {dialect.name!r}: use PostgreSQL, MySQL/MariaDB or SQLite")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Store:
    """Durable state on one SQLAlchemy engine (build it with ``lease.create_engine(url)``)."""

    def __init__(self, engine: sa.Engine, *, ping_timeout: float = 1.0, load_timeout: float = 120.0) -> None:
        """``ping_timeout`` bounds :meth:`ping`; ``load_timeout`` is the statement timeout that
        :meth:`load_all` uses instead of the engine's short one (a big state takes seconds)."""
        self.engine = engine
        self.ping_timeout = ping_timeout
        self.load_timeout = load_timeout
        dialect = engine.dialect
        self._is_pg = dialect.name == "postgresql"
        self._driver_error: type[Exception] = dialect.loaded_dbapi.Error
        # Built once: statement construction is measurable on the apply hot path.
        self._upsert_tasks = _upsert(dialect, tasks)
        self._upsert_workers = _upsert(dialect, workers)
        self._upsert_meta = _upsert(dialect, meta)
        self._insert_events = sa.insert(task_events)
        self._insert_audit = sa.insert(audit_log)
        self._upsert_tombstones = _upsert(dialect, tombstones)
        self._delete_tasks = tasks.delete().where(tasks.c.task_id.in_(sa.bindparam("ids", expanding=True)))
        self._delete_workers = workers.delete().where(workers.c.worker_id.in_(sa.bindparam("ids", expanding=True)))
        # MariaDB sessions carry the lease's short max_statement_time; lift it for these two
        # statements only (MySQL ignores the /*M! ... */ executable comment).
        longer = f"/*M!100108 SET STATEMENT max_statement_time={self.load_timeout:.0f} FOR */ "
        prefix = longer if dialect.name in ("mysql", "mariadb") else ""
        self._sql_load_tasks = f"{prefix}SELECT data FROM {tasks.name}"
        self._sql_load_workers = f"{prefix}SELECT data FROM {workers.name}"
        self._ping_lock = threading.Lock()
        self._ping_done: threading.Event | None = None
        self._ping_ok = False

    def __repr__(self) -> str:
        return f"Store({redact_url(self.engine.url)})"

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (sa.exc.SQLAlchemyError, self._driver_error) as exc:  # the driver's own: load_all's COPY
            raise StoreError(describe(operation, self.engine, exc)) from exc

    # -- schema -------------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Create or migrate the tables to the newest revision (idempotent, safe to race)."""
        with self._errors("upgrade"):
            migrate.upgrade(self.engine)

    def is_current(self) -> bool:
        """True if the database is at the revision this code expects."""
        with self._errors("is_current"):
            return migrate.current_revision(self.engine) == migrate.head_revision()

    def ping(self) -> bool:
        """Can we reach the database right now? Answers within ``ping_timeout``; never raises.

        The query runs on a daemon thread because a server that is stopped (SIGSTOP) or cut off
        by the network never answers and no driver-side timeout covers every case; at most one
        such probe is ever outstanding, later pings wait on it instead of piling up connections.
        """
        with self._ping_lock:
            done = self._ping_done
            if done is None or done.is_set():
                done = self._ping_done = threading.Event()
                threading.Thread(target=self._probe, args=(done,), name="store-ping", daemon=True).start()
        return done.wait(self.ping_timeout) and self._ping_ok

    def _probe(self, done: threading.Event) -> None:
        ok = False
        try:
            with self.engine.connect() as conn:
                ok = conn.exec_driver_sql("SELECT 1").scalar() == 1
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            ok = False
        finally:
            self._ping_ok = ok
            done.set()

    # -- reading ------------------------------------------------------------------------------

    def load_all(self, decode_task: Callable[[str | bytes], Any] = loads) -> Snapshot:
        """The whole durable state, as the core's ``Snapshot``, read in one consistent transaction.

        ``Snapshot.seq`` is the commit sequence of that state: a standby follows the feed from it.

        ``decode_task`` turns each stored task row (its JSON text) into what ``Snapshot.tasks``
        holds: the row as a dict by default; a node passes its new core's ``task_decoder()``,
        which decodes straight into task objects. On PostgreSQL each row is decoded as soon as it
        arrives, while ``COPY ... TO STDOUT`` streams the table: the server produces the next
        rows while this process decodes, and no copy of the whole result is held in memory.
        Elsewhere the rows are fetched first and decoded after the transaction ends (on SQLite
        the transaction holds the database). A damaged row is reported after the read, never
        by abandoning a COPY half-way.
        """
        from scheduler.core import Snapshot

        with gc_paused():
            with self._errors("load_all"), self.engine.connect() as conn:
                if self._is_pg:
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    if self._is_pg:
                        # The engine's statement timeout is sized for the lease, not for a big state.
                        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(self.load_timeout * 1000)}")
                    seq, _pruned = feed.current(conn)
                    worker_data = self._texts(conn, self._sql_load_workers)
                    meta_items = conn.execute(sa.select(meta.c.key, meta.c.value)).all()
                    if self._is_pg:
                        task_rows, damaged = _copy_decoded(conn, self._sql_load_tasks, decode_task)
                    else:
                        task_texts = self._texts(conn, self._sql_load_tasks)
            if not self._is_pg:
                task_rows, damaged = _decoded(task_texts, decode_task)
            try:
                if damaged is not None:
                    raise damaged
                return Snapshot(
                    tasks=task_rows,
                    workers=loads_rows(worker_data),
                    meta={key: loads(value) for key, value in meta_items},
                    seq=seq,
                )
            except ValueError as exc:
                raise StoreError(f"load_all failed on {redact_url(self.engine.url)}: {exc}") from exc

    def _texts(self, conn: sa.Connection, sql: str) -> list[str]:
        """The one text column that ``sql`` selects, as a list.

        On PostgreSQL straight from the DBAPI cursor: psycopg2 holds the whole result in client
        memory once ``execute`` returns (so this read cannot fail half-way on the network), and
        skipping SQLAlchemy's per-row ``Row`` objects saves ~40 ms per 100,000 task rows.
        """
        result = conn.exec_driver_sql(sql)
        if not self._is_pg:
            return result.scalars().all()
        rows = result.cursor.fetchall()
        result.close()
        return [text for (text,) in rows]

    def feed_seq(self) -> int:
        """The newest committed sequence of the commit feed (:mod:`scheduler.store.feed`)."""
        with self._errors("feed_seq"), self.engine.connect() as conn:
            return feed.current(conn)[0]

    def feed_after(self, seq: int, decode_task: Callable[[str | bytes], Any] = loads) -> feed.FeedRead:
        """Everything committed after sequence ``seq``, read in one consistent snapshot.

        ``decode_task`` as for :meth:`load_all`. See :class:`scheduler.store.feed.FeedRead`.
        """
        with self._errors("feed_after"), self.engine.connect() as conn:
            if self._is_pg:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return feed.read_after(conn, seq, decode_task)

    def task_events(self, task_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The task's status history, newest first (insertion order, not clock order)."""
        stmt = (
            sa.select(
                task_events.c.task_id,
                task_events.c.status,
                task_events.c.at,
                task_events.c.worker,
                task_events.c.host,
            )
            .where(task_events.c.task_id == task_id)
            .order_by(task_events.c.id.desc())
            .limit(limit)
        )
        with self._errors("task_events"), self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def audit_records(self, limit: int = 100) -> list[dict[str, Any]]:
        """The audit trail, newest first."""
        c = audit_log.c
        stmt = (sa.select(c.id, c.at, c.user, c.role, c.remote, c.action, c.arguments, c.epoch)
                .order_by(c.id.desc()).limit(limit))
        with self._errors("audit_records"), self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def counts(self) -> dict[str, int]:
        """Number of tasks per status, e.g. ``{"PENDING": 12, "DONE": 3}``."""
        stmt = sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)
        with self._errors("counts"), self.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(stmt)}

    def max_epoch(self) -> int:
        """The highest epoch stamped on any stored row (0 for an empty store), for audits."""
        parts = [sa.select(sa.func.max(t.c.epoch).label("e")) for t in (tasks, workers, meta, task_events)]
        union = sa.union_all(*parts).subquery()
        with self._errors("max_epoch"), self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(union.c.e))).scalar() or 0)

    # -- writing ------------------------------------------------------------------------------

    def apply(
        self, changes: ChangesLike, *, epoch: int, fence: Fence | None = None, prune_tombstones: bool = False
    ) -> None:
        """Persist one group-commit batch in one transaction, or raise and persist none of it.

        ``fence(conn)`` runs first, inside the transaction: the lease locks its row in share mode
        and raises if this node is no longer the leader with ``epoch``, so a deposed leader's
        write never lands (and a takeover, which needs that row exclusively, waits for us).
        Whatever ``fence`` raises propagates unchanged; database failures raise
        :class:`StoreError`. A batch with nothing in it is not written (and not fenced).

        This is the portable path, a statement per table; the node's writer
        (:mod:`scheduler.store.writer`) sends the same rows as one script on PostgreSQL.

        Right after the fence the round takes its commit sequence and stamps every row with it,
        leaving tombstones for deletions (:mod:`scheduler.store.feed`); ``prune_tombstones``
        also drops tombstones past their retention (the writer asks every ``PRUNE_EVERY`` rounds).
        """
        rows = batch_rows(changes, epoch)
        if rows.empty:
            return
        with self._errors("apply"), self.engine.begin() as conn:
            if fence is not None:
                fence(conn)
            self._stamp(conn, rows)
            if prune_tombstones:
                feed.prune(conn)
            if rows.tasks:
                conn.execute(self._upsert_tasks, rows.tasks)
            for ids in _chunks(rows.task_deletes, DELETE_CHUNK):
                conn.execute(self._delete_tasks, {"ids": ids})
            if rows.workers:
                conn.execute(self._upsert_workers, rows.workers)
            for ids in _chunks(rows.worker_deletes, DELETE_CHUNK):
                conn.execute(self._delete_workers, {"ids": ids})
            if rows.meta:
                conn.execute(self._upsert_meta, rows.meta)
            if rows.events:
                conn.execute(self._insert_events, rows.events)
            if rows.audit:
                conn.execute(self._insert_audit, rows.audit)

    def _stamp(self, conn: sa.Connection, rows: BatchRows) -> None:
        """The feed's part of a round: its sequence on every row, a tombstone per deletion."""
        seq = feed.next_seq(conn)
        if self._is_pg:  # delivered at commit, as from the writer's script
            conn.execute(feed.pg_notify_statement(), {"seq": str(seq)})
        for row in rows.tasks:
            row["commit_seq"] = seq
        for row in rows.workers:
            row["commit_seq"] = seq
        for row in rows.meta:
            row["commit_seq"] = seq
        if rows.task_deletes or rows.worker_deletes:
            now = time.time()
            gone = feed.tombstone_rows(feed.TASK, rows.task_deletes, seq, now)
            gone += feed.tombstone_rows(feed.WORKER, rows.worker_deletes, seq, now)
            conn.execute(self._upsert_tombstones, gone)


@dataclass
class BatchRows:
    """One batch's changes as checked table rows (dicts keyed by column name), ready to write."""

    tasks: list[dict[str, Any]]
    task_deletes: list[str]
    workers: list[dict[str, Any]]
    worker_deletes: list[str]
    meta: list[dict[str, Any]]
    events: list[dict[str, Any]]
    audit: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.tasks or self.task_deletes or self.workers or self.worker_deletes or self.meta or self.events
                    or self.audit)


def batch_rows(changes: ChangesLike, epoch: int) -> BatchRows:
    """Check and convert a batch; raises :class:`StoreError` naming a value no database could take."""
    task_rows, task_deletes = _task_params(changes.tasks, epoch)
    worker_rows, worker_deletes = _worker_params(changes.workers, epoch)
    meta_rows = [
        {"key": _checked(k, "meta key", MAX_META_KEY_LENGTH), "value": dumps(v), "epoch": epoch}
        for k, v in changes.meta.items()
    ]
    events = _event_params(changes.events, epoch)
    audit = [{**record, "epoch": epoch} for record in getattr(changes, "audit", ())]
    return BatchRows(task_rows, task_deletes, worker_rows, worker_deletes, meta_rows, events, audit)


def _task_params(changed: Mapping[str, dict | None], epoch: int) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    deletes: list[str] = []
    for task_id, row in changed.items():
        _checked(task_id, "task id")
        if row is None:
            deletes.append(task_id)
            continue
        rows.append(
            {
                "task_id": task_id,
                "status": _status(row["status"], f"task {task_id!r}"),
                "family": _informational(row["family"] or "", FAMILY_LENGTH),
                "updated": row["updated"] or 0.0,
                "epoch": epoch,
                "data": dumps(row),
            }
        )
    return rows, deletes


def _worker_params(changed: Mapping[str, dict | None], epoch: int) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    deletes: list[str] = []
    for worker_id, row in changed.items():
        _checked(worker_id, "worker id")
        if row is None:
            deletes.append(worker_id)
        else:
            rows.append({"worker_id": worker_id, "epoch": epoch, "data": dumps(row)})
    return rows, deletes


def _event_params(events: Iterable[dict], epoch: int) -> list[dict]:
    rows = []
    for event in events:
        task_id = _checked(event["task_id"], "event task id")
        rows.append(
            {
                "task_id": task_id,
                "status": _status(event["status"], f"event of {task_id!r}"),
                "at": event["at"],
                "worker": _informational(event.get("worker"), MAX_ID_LENGTH),
                "host": _informational(event.get("host"), HOST_LENGTH),
                "epoch": epoch,
            }
        )
    return rows


# -- reading rows into objects --------------------------------------------------------------------

#: The escapes of COPY's text format, as PostgreSQL writes them (backslash and control characters).
_COPY_ESCAPES = {b"\\": b"\\", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_COPY_ESCAPE = re.compile(rb"\\(.)", re.S)


def _copy_unescaped(line: bytes) -> bytes:
    """The value of a one-column row of ``COPY ... TO STDOUT`` (text format), newline kept."""
    return _COPY_ESCAPE.sub(lambda m: _COPY_ESCAPES.get(m[1], m[1]), line)


def _copy_decoded(conn: sa.Connection, query: str, decode: Callable[[bytes], T]) -> tuple[list[T], ValueError | None]:
    """The one column ``query`` selects, each value decoded by ``decode``, read with COPY.

    Runs in the connection's current transaction. PostgreSQL sends COPY data one row per
    message and libpq hands each over as it arrives, so rows are decoded while the server is
    still producing the next ones. Returns the decoded values and the first damaged row's
    error (the rest of the rows are still read, so the connection is never left mid-COPY).
    """
    values: list[T] = []
    damaged: list[ValueError] = []
    append = values.append

    class _Sink:
        @staticmethod
        def write(line: bytes) -> None:
            text = _copy_unescaped(line) if b"\\" in line else line
            try:
                append(decode(text))
            except ValueError as exc:
                damaged.append(_damaged(text, exc))

    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY ({query}) TO STDOUT", _Sink())
    finally:
        cursor.close()
    return values, (damaged[0] if damaged else None)


def _decoded(texts: Iterable[str], decode: Callable[[str], T]) -> tuple[list[T], ValueError | None]:
    """``[decode(t) for t in texts]``, and the first damaged row's error instead of raising it."""
    values: list[T] = []
    append = values.append
    for text in texts:
        try:
            append(decode(text))
        except ValueError as exc:
            return values, _damaged(text, exc)
    return values, None


def _damaged(text: str | bytes, exc: ValueError) -> ValueError:
    """The error for a stored row that cannot be decoded, quoting the row's start."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return ValueError(f"a stored task row cannot be read ({exc}): {text.rstrip()[:120]!r}")
