"""Decode Luigi's ``data=<json>`` argument so that no input, however hostile, reaches the core broken.

Two kinds of JSON decode fine and then hurt later, so they are refused here with a 400:

* nesting deeper than :data:`MAX_DEPTH`: Python's decoder itself raises ``RecursionError`` at
  about 1,000 levels, and a value a few hundred levels deep that got stored would have to be
  decoded, copied and encoded again on every takeover;
* a lone surrogate (``"\\ud800"``) in any string, key or value: it is valid JSON but not
  Unicode text, so it cannot be encoded as UTF-8, and whatever later encodes it (a database
  driver, the Prometheus exposition of a task family, a log line) fails.

Both checks cost a scan of the raw text at C speed; the walk over the decoded value only runs
when that scan says it might find something. Luigi's own requests are a few levels deep and pure
text, so they never take the walk.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deepest nesting of objects and arrays accepted in ``data``. Luigi's client sends at most four
#: levels (``add_task``: object -> params -> value); the margin is for other clients.
MAX_DEPTH = 64

# A ``\uD800``-``\uDFFF`` escape: a surrogate, paired or lone (the walk tells them apart).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class BadInput(ValueError):
    """The request's ``data`` cannot be accepted; the message names the problem."""


def decode_data(raw: str | None) -> dict[str, Any]:
    """The arguments in ``raw``; empty or missing means none (the visualiser sends ``data=``)."""
    if raw is None or raw.strip() == "":
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"'data' is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise BadInput(f"'data' is nested too deeply: the limit is {MAX_DEPTH} levels") from None
    if not isinstance(parsed, dict):
        raise BadInput(f"'data' must be a JSON object, got {type(parsed).__name__}")
    deep = raw.count("[") + raw.count("{") > MAX_DEPTH
    if deep or _SURROGATE_ESCAPE.search(raw) is not None:
        _check(parsed)
    return parsed


def _check(value: Any) -> None:
    """Walk ``value`` without recursion; raise :class:`BadInput` on too deep or unencodable text."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, str):
                _check_text(item)
            continue
        if depth > MAX_DEPTH:
            raise BadInput(f"'data' is nested too deeply: the limit is {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInput(
            f"'data' holds a string that is not valid Unicode text (a lone surrogate "
            f"{text[exc.start]!r} at position {exc.start}): {text[:80]!r}"
        ) from None
