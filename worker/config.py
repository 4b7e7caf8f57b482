"""Settings of ``luigi-ha worker`` and ``luigi-ha run``: flags over an INI file over defaults.

The file is the same ``luigi-ha.cfg`` the scheduler reads (``--config FILE``); the worker side
uses these sections and ignores the rest::

    [luigi-ha-worker]
    scheduler_url = http://sched1:8082 http://sched2:8082   ; or the VIP; several = client-side failover
    module = daily_pipeline                  ; pipeline modules to import (space/comma separated)
    workers = 4                              ; parallel task processes per worker
    rpc_budget = 120                         ; s: an RPC is retried this long before the worker gives up
    rpc_ping_budget = 5                      ; s: the keep-alive ping's budget
    rpc_connect_timeout = 3                  ; s
    rpc_timeout = 10                         ; s: read timeout of one RPC
    rpc_backoff_initial = 0.1                ; s: exponential backoff with full jitter ...
    rpc_backoff_max = 2                      ; s: ... capped here
    run_idle_grace = 30                      ; s: `run --workers 0` waits this long for an assistant
                                             ;    to start a pending task before it gives up
    log_level = INFO
    log_format = json                        ; or console

    [luigi-ha-worker:q1]                     ; overrides for `luigi-ha worker --instance q1`
    module = heavy_pipeline

    [pipeline:daily]                         ; `luigi-ha run --pipeline daily`
    module = daily_pipeline
    task = DailyAggregations
    date_offset_days = 1                     ; run date = today (UTC) - this many days (default 1)
    date_param = date                        ; task parameter that receives it ('' = pass no date)
    params = --hours 24                      ; extra task parameters (shell-quoted)
    workers = 4                              ; overrides [luigi-ha-worker] workers for this run

The same file is also added to Luigi's own configuration, so Luigi's ``[worker]``/``[core]``
keys and the pipelines' own sections (``[daily_pipeline] data_dir = ...``) may live in it too.
Luigi's ``[core] rpc_retry_*`` keys are not used by luigi-ha's client (``rpc_*`` above are).
"""

from __future__ import annotations

import configparser
import datetime as dt
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler.config import ConfigError, read_ini
from worker.client import RetryPolicy, parse_urls

WORKER_SECTION = "luigi-ha-worker"
PIPELINE_PREFIX = "pipeline:"


@dataclass(frozen=True)
class WorkerSettings:
    scheduler_urls: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    workers: int = 1
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    run_idle_grace: float = 30.0
    log_level: str = "INFO"
    log_format: str = "json"
    config_path: str | None = None


@dataclass(frozen=True)
class Pipeline:
    name: str
    module: str
    task: str
    date_offset_days: int = 1
    date_param: str = "date"
    params: list[str] = field(default_factory=list)
    workers: int | None = None


def _section(parser: configparser.ConfigParser, name: str) -> dict[str, str]:
    if not parser.has_section(name):
        return {}
    return {k.strip().lower().replace("-", "_"): v.strip() for k, v in parser.items(name)}


def _number(where: str, key: str, value: str, kind: Callable[[str], Any] = float, minimum: float = 0) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} {key}: expected a {getattr(kind, '__name__', 'number')}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{where} {key}: must be at least {minimum}, got {value!r}")
    return number


_POLICY_KEYS = {
    "rpc_budget": "budget",
    "rpc_ping_budget": "ping_budget",
    "rpc_connect_timeout": "connect_timeout",
    "rpc_timeout": "read_timeout",
    "rpc_backoff_initial": "backoff_initial",
    "rpc_backoff_max": "backoff_max",
}


def load_worker_settings(
    config_path: str | None = None,
    *,
    instance: str | None = None,
    scheduler_urls: list[str] | None = None,
    modules: list[str] | None = None,
    workers: int | None = None,
    rpc_budget: float | None = None,
) -> WorkerSettings:
    """``[luigi-ha-worker]``, then ``[luigi-ha-worker:<instance>]``, then the flags given (not None)."""
    parser = read_ini(config_path)
    values = _section(parser, WORKER_SECTION)
    if instance:
        values.update(_section(parser, f"{WORKER_SECTION}:{instance}"))
    where = f"[{WORKER_SECTION}]"
    settings = WorkerSettings(config_path=config_path)
    policy_args: dict[str, float] = {}
    for key, attr in _POLICY_KEYS.items():
        if key in values:
            policy_args[attr] = _number(where, key, values[key])
    if rpc_budget is not None:
        policy_args["budget"] = rpc_budget
    try:
        policy = replace(settings.policy, **policy_args)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    settings = replace(
        settings,
        policy=policy,
        scheduler_urls=parse_urls(scheduler_urls) or parse_urls(values.get("scheduler_url")),
        modules=parse_urls(modules) or parse_urls(values.get("module")),
        workers=workers if workers is not None else _number(where, "workers", values.get("workers", "1"), int),
        run_idle_grace=_number(where, "run_idle_grace", values.get("run_idle_grace", "30")),
        log_level=values.get("log_level", "INFO").upper(),
        log_format=values.get("log_format", "json"),
    )
    if settings.log_format not in ("json", "console"):
        raise ConfigError(f"{where} log_format: expected json or console, got {settings.log_format!r}")
    return settings


def load_pipeline(config_path: str | None, name: str) -> Pipeline:
    """The ``[pipeline:<name>]`` section: which module and task ``luigi-ha run --pipeline`` runs."""
    if config_path is None:
        raise ConfigError(f"--pipeline {name} needs --config FILE with a [{PIPELINE_PREFIX}{name}] section")
    parser = read_ini(config_path)
    section = f"{PIPELINE_PREFIX}{name}"
    if not parser.has_section(section):
        known = sorted(s[len(PIPELINE_PREFIX):] for s in parser.sections() if s.startswith(PIPELINE_PREFIX))
        raise ConfigError(f"no [{section}] section in {config_path} (pipelines defined there: "
                          f"{', '.join(known) or 'none'})")
    values = _section(parser, section)
    where = f"[{section}]"
    for key in ("module", "task"):
        if not values.get(key):
            raise ConfigError(f"{where} needs '{key}' (e.g. module = daily_pipeline, task = DailyAggregations)")
    try:
        params = shlex.split(values.get("params", ""))
    except ValueError as exc:
        raise ConfigError(f"{where} params: {exc}") from None
    return Pipeline(
        name=name,
        module=values["module"],
        task=values["task"],
        date_offset_days=_number(where, "date_offset_days", values.get("date_offset_days", "1"), int, minimum=-365),
        date_param=values.get("date_param", "date"),
        params=params,
        workers=_number(where, "workers", values["workers"], int) if "workers" in values else None,
    )


def run_date(offset_days: int = 1, today: dt.date | None = None) -> dt.date:
    """The date a scheduled run processes: today in UTC minus ``offset_days`` (default: yesterday)."""
    if today is None:
        today = dt.datetime.now(dt.UTC).date()
    return today - dt.timedelta(days=offset_days)
