"""Start several calls at the same instant, as nodes booting together would."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


def errors_of_calls_started_together(
    call: Callable[[Any], None], args: Sequence[Any], timeout: float = 60.0
) -> list[BaseException]:
    """Run ``call(a)`` for every ``a`` in ``args``, each on its own thread released by one
    barrier; return what they raised (empty when every call succeeded)."""
    start = threading.Barrier(len(args))
    errors: list[BaseException] = []

    def run(arg: Any) -> None:
        try:
            start.wait(10)
            call(arg)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(arg,)) for arg in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors
