"""Scheduler settings: luigid's ``[scheduler]`` and ``[resources]`` configuration as one value.

Two ways in, one type out:

* ``SchedulerSettings.resolve(**overrides)`` is what ``Scheduler(**kwargs)`` uses.  Anything not
  given explicitly is read from luigi's own configuration (``luigi.configuration.get_config()``),
  exactly as luigid would, and falls back to luigi's documented defaults.  This keeps the core a
  drop-in for ``luigi.scheduler.Scheduler`` in luigi's own tests and tools.
* ``SchedulerSettings.from_mapping(values, resources)`` parses the string values of an INI
  section (the server's own configuration file) with luigi's types, and names the offending key
  when a value cannot be parsed.  Missing keys take luigi's documented defaults, *not* luigi's
  configuration, so the server's file is the single source of truth for the server.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
METRICS_COLLECTORS = frozenset({"default", "none", "datadog", "prometheus", "custom"})


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"cannot interpret {value!r} as a boolean")


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"cannot interpret {value!r} as an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"cannot interpret {value!r} as an integer")


def _parse_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"cannot interpret {value!r} as a number")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        result = float(value.strip())
    else:
        raise ValueError(f"cannot interpret {value!r} as a number")
    if math.isnan(result):
        raise ValueError("NaN is not a usable setting")
    return result


def _parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _parse_optional_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    return _parse_str(value)


def _parse_collector(value: object) -> str:
    text = _parse_str(value).strip().lower()
    if text not in METRICS_COLLECTORS:
        raise ValueError(f"must be one of {sorted(METRICS_COLLECTORS)}, got {value!r}")
    return text


# name -> (parser, luigi's documented default)
_FIELDS: dict[str, tuple[Callable[[object], Any], Any]] = {
    "retry_delay": (_parse_float, 900.0),
    "remove_delay": (_parse_float, 600.0),
    "worker_disconnect_delay": (_parse_float, 60.0),
    "state_path": (_parse_str, "/var/lib/luigi-server/state.pickle"),
    "batch_emails": (_parse_bool, False),
    "disable_window": (_parse_int, 3600),
    "retry_count": (_parse_int, 999999999),
    "disable_hard_timeout": (_parse_int, 999999999),
    "disable_persist": (_parse_int, 86400),
    "max_shown_tasks": (_parse_int, 100000),
    "max_graph_nodes": (_parse_int, 100000),
    "record_task_history": (_parse_bool, False),
    "prune_on_get_work": (_parse_bool, False),
    "pause_enabled": (_parse_bool, True),
    "send_messages": (_parse_bool, True),
    "metrics_collector": (_parse_collector, "default"),
    "metrics_custom_import": (_parse_optional_str, None),
    "stable_done_cooldown_secs": (_parse_int, 10),
}


def _normalise_key(key: str) -> str:
    return key.strip().replace("-", "_")


def _parse_resources(values: Mapping[str, object]) -> dict[str, int]:
    capacities: dict[str, int] = {}
    for name, raw in values.items():
        try:
            amount = _parse_int(raw)
        except ValueError as exc:
            raise ValueError(f"[resources] {name!r}: {exc}") from None
        if amount < 0:
            raise ValueError(f"[resources] {name!r}: capacity must be >= 0, got {amount}")
        capacities[str(name)] = amount
    return capacities


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    """Every luigid ``[scheduler]`` setting plus the resource capacities.

    ``state_path``, ``record_task_history`` and ``metrics_collector`` are accepted for
    compatibility; the core itself never writes files or history tables (the server does).
    """

    retry_delay: float = 900.0
    remove_delay: float = 600.0
    worker_disconnect_delay: float = 60.0
    state_path: str = "/var/lib/luigi-server/state.pickle"
    batch_emails: bool = False
    disable_window: int = 3600
    retry_count: int = 999999999
    disable_hard_timeout: int = 999999999
    disable_persist: int = 86400
    max_shown_tasks: int = 100000
    max_graph_nodes: int = 100000
    record_task_history: bool = False
    prune_on_get_work: bool = False
    pause_enabled: bool = True
    send_messages: bool = True
    metrics_collector: str = "default"
    metrics_custom_import: str | None = None
    stable_done_cooldown_secs: int = 10
    resources: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The setting names (underscore spelling), ``resources`` excluded."""
        return frozenset(_FIELDS)

    @classmethod
    def resolve(cls, **overrides: Any) -> SchedulerSettings:
        """Build settings the way luigid does: explicit values, then luigi's config, then defaults.

        Explicit values may be typed (``retry_delay=5``) or strings (``"5"``); both spellings
        ``a_b``/``a-b`` are accepted.  ``resources`` (a name -> capacity mapping) replaces the
        ``[resources]`` section when given.  Unknown names raise ``TypeError`` like an unknown
        keyword argument would.
        """
        given: dict[str, object] = {}
        resources: Mapping[str, object] | None = None
        for key, value in overrides.items():
            name = _normalise_key(key)
            if name == "resources":
                resources = value if value is not None else None
                continue
            if name not in _FIELDS:
                raise TypeError(f"unknown scheduler setting {key!r}")
            given[name] = value

        config = _luigi_config()
        values: dict[str, Any] = {}
        for name, (parser, default) in _FIELDS.items():
            if name in given:
                raw, source = given[name], name
            else:
                raw = _config_value(config, "scheduler", name)
                source = f"[scheduler] {name}"
                if raw is None:
                    values[name] = default
                    continue
            try:
                values[name] = parser(raw)
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
        if resources is None:
            resources = _config_resources(config)
        elif not isinstance(resources, Mapping):
            raise ValueError(f"resources must be a mapping, got {resources!r}")
        return cls(resources=_parse_resources(resources), **values)

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, object],
        resources: Mapping[str, object] | None = None,
        *,
        strict: bool = False,
    ) -> SchedulerSettings:
        """Parse an INI-style ``[scheduler]`` section (string values) into settings.

        Raises ``ValueError`` naming the key whose value cannot be parsed.  Keys the core does
        not know are ignored unless ``strict`` is true, because the server's own section may
        carry keys of its own.  Missing keys take luigi's documented defaults.
        """
        parsed: dict[str, Any] = {}
        for key, raw in values.items():
            name = _normalise_key(key)
            if name not in _FIELDS:
                if strict:
                    raise ValueError(f"unknown scheduler setting {key!r}")
                continue
            parser, _default = _FIELDS[name]
            try:
                parsed[name] = parser(raw)
            except ValueError as exc:
                raise ValueError(f"[scheduler] {key}: {exc}") from None
        return cls(resources=_parse_resources(resources or {}), **parsed)

    def retry_policy_defaults(self) -> tuple[int, int, int]:
        """(retry_count, disable_hard_timeout, disable_window) used when a task sends none."""
        return (self.retry_count, self.disable_hard_timeout, self.disable_window)


def _luigi_config() -> Any:
    # Imported lazily: luigi's configuration module reads files on first use, and the core
    # must stay importable (and cheap to import) without touching the disk.
    from luigi import configuration

    return configuration.get_config()


def _config_value(config: Any, section: str, name: str) -> object | None:
    """One option from luigi's parser, trying ``a_b`` and then ``a-b`` like luigi does."""
    for option in (name, name.replace("_", "-")):
        try:
            if config.has_option(section, option):
                return config.get(section, option)
        except Exception:  # a missing section or an interpolation problem means "not set"
            return None
    return None


def _config_resources(config: Any) -> Mapping[str, object]:
    try:
        return dict(config.getintdict("resources"))
    except ValueError as exc:
        raise ValueError(f"[resources]: {exc}") from None
    except Exception:
        return {}
