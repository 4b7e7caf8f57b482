"""The one exception the store raises for database trouble.

The node treats any failed write as "memory may now be ahead of the database": it steps down and
drops its state. So callers need one type to catch and a message an operator can act on, and
that message goes to logs, so it names the database without its password.
"""

from __future__ import annotations

import sqlalchemy as sa

from lease import redact_url


class StoreError(RuntimeError):
    """A store operation failed; the original SQLAlchemy/DBAPI error is the ``__cause__``."""


def describe(operation: str, engine: sa.Engine, exc: BaseException) -> str:
    """``'apply failed on postgresql://u:***@h/db: OperationalError: <first line>'``.

    Only the driver's first line: SQLAlchemy's full text appends the SQL and its parameters
    (whole task rows), which belong in the chained exception, not in a one-line log message.
    """
    orig = getattr(exc, "orig", None) or exc
    first_line = (str(orig).strip().splitlines() or [""])[0]
    return f"{operation} failed on {redact_url(engine.url)}: {type(orig).__name__}: {first_line}"
