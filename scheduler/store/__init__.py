"""Durable scheduler state on PostgreSQL, MySQL/MariaDB or SQLite.

``Store(engine)`` loads the full state at takeover (:meth:`Store.load_all`) and persists each
group-commit batch in one fenced transaction (:meth:`Store.apply`). The schema lives in
:mod:`scheduler.store.tables` and is created and evolved only by the packaged Alembic migrations
(:func:`upgrade`).
"""

from scheduler.core.validation import id_problem
from scheduler.store.errors import StoreError
from scheduler.store.migrate import current_revision, head_revision, upgrade
from scheduler.store.store import Store
from scheduler.store.tables import MAX_ID_LENGTH, metadata

__all__ = [
    "MAX_ID_LENGTH",
    "Store",
    "StoreError",
    "current_revision",
    "head_revision",
    "id_problem",
    "metadata",
    "upgrade",
]
