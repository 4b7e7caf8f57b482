"""An outbox for the e-mails luigid would send, so the (I/O-free) core never sends anything.

luigid e-mails immediately when it disables a task for excessive failures (unless
``batch_emails`` is set), and with ``batch_emails`` it queues failures, disables and scheduling
failures for a periodic digest.  The core records the same facts here; the server may drain them
with ``Scheduler.take_notifications()`` and deliver them however it likes.  Building an entry
never fails: luigid's TypeError on a FAILED report with ``expl`` null (quirk 11) cannot happen.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

MAX_NOTIFICATIONS = 10_000


class Outbox:
    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=MAX_NOTIFICATIONS)

    def add(self, kind: str, **fields: Any) -> None:
        self._items.append({"kind": kind, **fields})

    def drain(self) -> list[dict[str, Any]]:
        items = list(self._items)
        self._items.clear()
        return items


def decode_expl(expl: Any) -> Any:
    """Workers send ``expl`` as JSON text; show the decoded value when it decodes."""
    if not isinstance(expl, str):
        return expl
    try:
        return json.loads(expl)
    except ValueError:
        return expl
