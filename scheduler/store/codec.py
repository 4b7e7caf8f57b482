"""Row <-> JSON text. Decoding is most of a takeover's time, so ``loads_rows`` is tuned.

Standard library only, on purpose: the text written and the values read back must not depend on
what else happens to be installed. (orjson would decode about twice as fast, but it refuses
``Infinity`` and, in the versions we tried, silently turns integers beyond 64 bits into floats.)
``Infinity``/``NaN`` are allowed because Luigi sends ``max_batch_size: Infinity``.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False, allow_nan=True).encode
loads = json.loads


DECODE_CHUNK = 2000  # rows per json.loads call (each call holds the GIL for its whole run)


def loads_rows(texts: Sequence[str]) -> list[Any]:
    """Decode many stored rows at once, as ``[json.loads(t) for t in texts]`` would.

    Raises ``ValueError`` quoting the first damaged row.

    Decoding them as one JSON array is about 20% faster: one call instead of 100,000, and the
    decoder's key memo is shared, so the 30-odd keys of every task row are allocated once rather
    than once per row (which also saves memory in the snapshot).
    """
    if not texts:
        return []
    rows: list[Any] | None = []
    # Chunks, not one giant array: a single json.loads call holds the GIL until it returns, and
    # the node must keep renewing its lease (on another thread) while a large state loads.
    for start in range(0, len(texts), DECODE_CHUNK):
        chunk = texts[start : start + DECODE_CHUNK]
        try:
            decoded = json.loads("[" + ",".join(chunk) + "]")
        except ValueError:
            rows = None
            break
        rows.extend(decoded)
    if rows is None or len(rows) != len(texts):  # a damaged row: find it and say which
        for text in texts:
            try:
                json.loads(text)
            except ValueError as exc:
                raise ValueError(f"stored row is not valid JSON ({exc}): {text[:120]!r}") from exc
        raise ValueError("stored rows do not decode to one value each")
    return rows


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off a big state while it is fetched and decoded.

    100,000 decoded task rows are about 500,000 tracked lists and dicts. With the collector on,
    allocating them triggers generation-2 passes over everything allocated so far, again and
    again; and merely re-enabling it afterwards makes the next allocations scan them all as
    young objects, then again as middle-aged ones. Nothing here creates reference cycles, so we
    pause the collector and, on the way out, move what was allocated straight into the oldest
    generation (``gc.freeze()`` + ``gc.unfreeze()``: no scan), where the next full collection
    will see it once. That is about 40% off ``load_all`` and spares the caller's restore
    another ~0.5 s per 100,000 tasks. If the process uses ``gc.freeze()`` for its own purposes,
    the promotion is skipped rather than unfreezing its objects.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()
