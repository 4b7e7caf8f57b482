"""Argument checks run at the start of every RPC, before any state changes.

luigid trusts its input: a string priority or a dict where a list belongs raises deep inside a
half-applied ``add_task`` (500, state partly changed, worker retries and dies).  Each RPC here
first converts its arguments with these helpers, which raise ``InvalidArgument`` naming the
method, the argument and what was expected.  They stay lenient wherever luigi's own clients
legitimately differ (ints or floats, lists or tuples, null for "not given").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import InvalidArgument
from .retry import POLICY_KEYS

#: Longest task or worker id (characters). Every database backend must be able to hold every id,
#: so the limit is part of the protocol we accept, and the store's columns are sized from it.
MAX_ID_LENGTH = 512


def id_problem(value: object, limit: int = MAX_ID_LENGTH) -> str | None:
    """Why ``value`` cannot be a task or worker id, or None if it can.

    SQLite would store anything, but PostgreSQL rejects NUL and drivers reject unencodable text;
    an id that reached the store and failed there would fail the whole group commit and depose
    the leader (then the next one, as the client retries), so ids are checked at the door.
    """
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > limit:
        return f"is {len(value)} characters long; the limit is {limit}: {value[:80]!r}..."
    if "\x00" in value:
        return f"contains a NUL character: {value[:80]!r}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"is not valid Unicode text (lone surrogate): {value[:80]!r}"
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(method: str, name: str, expected: str, value: Any) -> InvalidArgument:
    return InvalidArgument(f"{method}: {name!r} must be {expected}, got {_show(value)}")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def is_finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def text(method: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise fail(method, name, "a string", value)
    return value


def identifier(method: str, name: str, value: Any) -> str:
    """A task id: a string the store can hold as a key (see :func:`id_problem`)."""
    problem = id_problem(value)
    if problem is not None:
        raise InvalidArgument(f"{method}: '{name}' {problem}")
    return value


def worker_id(method: str, value: Any) -> str:
    """The ``worker`` argument: required even where luigid's signature defaults it to None."""
    if value is None:
        raise InvalidArgument(f"{method}: 'worker' is required")
    return identifier(method, "worker", value)


def scalar(method: str, name: str, value: Any) -> Any:
    """A JSON scalar (string, number, boolean or null): what status messages may be."""
    if value is None or isinstance(value, str | bool) or is_finite_number(value):
        return value
    raise fail(method, name, "a string, number or null", value)


def optional_text(method: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    return text(method, name, value)


def number(method: str, name: str, value: Any) -> float:
    if not is_finite_number(value):
        raise fail(method, name, "a number", value)
    return value


def flag(method: str, name: str, value: Any, default: bool = False) -> bool:
    """A boolean; null means the default and 0/1 are accepted (some clients send ints)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise fail(method, name, "a boolean", value)


def optional_flag(method: str, name: str, value: Any) -> bool | None:
    if value is None:
        return None
    return flag(method, name, value)


def id_list(method: str, name: str, value: Any) -> list[str] | None:
    """A list of ids (list, tuple or set); null means "not given"."""
    if value is None:
        return None
    if not isinstance(value, list | tuple | set | frozenset):
        raise fail(method, name, "a list of strings", value)
    for item in value:
        if not isinstance(item, str):
            raise fail(method, name, "a list of strings", value)
        problem = id_problem(item)
        if problem is not None:
            raise InvalidArgument(f"{method}: an id in '{name}' {problem}")
    return list(value)


def str_mapping(method: str, name: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise fail(method, name, "an object with string keys", value)
    return dict(value)


def amounts(method: str, name: str, value: Any) -> dict[str, float] | None:
    """A ``{resource: amount}`` map with finite numeric amounts."""
    mapping = str_mapping(method, name, value)
    if mapping is None:
        return None
    for key, amount in mapping.items():
        if not is_finite_number(amount):
            raise fail(method, f"{name}[{key!r}]", "a number", amount)
    return mapping


def retry_policy(method: str, value: Any) -> dict[str, Any] | None:
    mapping = str_mapping(method, "retry_policy_dict", value)
    if mapping is None:
        return None
    for key in POLICY_KEYS:
        entry = mapping.get(key)
        if entry is not None and not is_number(entry):
            raise fail(method, f"retry_policy_dict[{key!r}]", "a number or null", entry)
    return mapping


def batch_size(method: str, value: Any) -> float:
    """``max_batch_size``: any positive number including ``inf``; null means unlimited."""
    if value is None:
        return math.inf
    if not is_number(value):
        raise fail(method, "max_batch_size", "a number", value)
    return value


def worker_info(method: str, value: Any) -> dict[str, Any]:
    """``add_worker``'s ``info``: a list of ``[key, value]`` pairs (first call) or an object."""
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise fail(method, "info", "an object with string keys or a list of pairs", value)
        return dict(value)
    if isinstance(value, list | tuple):
        result: dict[str, Any] = {}
        for pair in value:
            if not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str):
                raise fail(method, "info", "an object or a list of [key, value] pairs", value)
            result[pair[0]] = pair[1]
        return result
    if value is None:
        return {}
    raise fail(method, "info", "an object or a list of [key, value] pairs", value)
