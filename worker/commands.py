"""``luigi-ha worker`` and ``luigi-ha run``: flags and config turned into a worker run.

``luigi-ha worker --scheduler-url URL [--scheduler-url URL2 ...] [--module M ...] [--workers N]
[--config FILE] [--instance NAME]``
    A long-lived Luigi assistant: runs any runnable task the scheduler hands out, forever, until
    SIGTERM (which drains: no new task is taken, the running ones finish and are reported).

``luigi-ha run --scheduler-url URL ... --module M Task [--param value ...] [--workers N]``
``luigi-ha run --config FILE --pipeline NAME [--date YYYY-MM-DD]``
    The one-shot trigger a systemd timer calls. Exit 0 only when the pipeline succeeded.
    With ``--pipeline`` the module and task come from ``[pipeline:NAME]`` in the config file and
    the task gets ``--date`` = today (UTC) minus ``date_offset_days`` (default 1: yesterday)
    unless ``--date`` is given. Our own options may also follow the task name.

See :mod:`worker.config` for the config file's sections.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from scheduler.config import ConfigError
from scheduler.credentials import Auth, CredentialsError, resolve
from worker.config import WorkerSettings, load_pipeline, load_worker_settings, run_date
from worker.runtime import EXIT_CONFIG, run_assistant, run_pipeline, setup_logging


def _settings(args: argparse.Namespace, instance: str | None = None) -> WorkerSettings:
    settings = load_worker_settings(
        args.config, instance=instance, scheduler_urls=args.scheduler_url, modules=args.module,
        workers=args.workers, rpc_budget=args.rpc_budget,
    )
    if not settings.scheduler_urls:
        from dataclasses import replace

        settings = replace(settings, scheduler_urls=["http://localhost:8082"])
    return settings


def _credentials(args: argparse.Namespace, urls: list[str]) -> tuple[list[str], Auth | None]:
    """The scheduler URLs without credentials, and the credentials (URL, flags, environment)."""
    try:
        return resolve(urls, user=getattr(args, "user", None), password_file=getattr(args, "password_file", None))
    except CredentialsError as exc:
        raise ConfigError(str(exc)) from None


def worker_command(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args, instance=args.instance)
        if settings.workers < 1:
            raise ConfigError("an assistant worker needs --workers 1 or more")
        urls, auth = _credentials(args, settings.scheduler_urls)
    except ConfigError as exc:
        print(f"luigi-ha worker: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.log_format, settings.config_path, instance=args.instance)
    return run_assistant(urls, settings.modules, settings.workers, settings.policy, auth=auth)


def _own_options_after_task(task_args: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our flags may also follow the task name (``run --module m Task --n 3 --workers 4``)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--scheduler-url", action="append", default=None)
    p.add_argument("--module", action="append", default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--date", default=None)
    p.add_argument("--rpc-budget", type=float, default=None)
    return p.parse_known_args(list(task_args))


def build_task_argv(args: argparse.Namespace, today: dt.date | None = None) -> tuple[list[str], list[str], int | None]:
    """(Luigi task command line, modules to import, workers override) for ``luigi-ha run``."""
    late, rest = _own_options_after_task(args.task_args or [])
    for name in ("scheduler_url", "module"):
        if getattr(late, name):
            setattr(args, name, (getattr(args, name) or []) + getattr(late, name))
    for name in ("workers", "date", "rpc_budget"):
        if getattr(late, name) is not None:
            setattr(args, name, getattr(late, name))
    if args.date is not None:
        try:
            dt.date.fromisoformat(args.date)
        except ValueError:
            raise ConfigError(f"--date: expected YYYY-MM-DD, got {args.date!r}") from None
    if args.pipeline:
        if args.task:
            raise ConfigError("give either --pipeline NAME or a task name, not both")
        pipeline = load_pipeline(args.config, args.pipeline)
        argv = [pipeline.task, *pipeline.params, *rest]
        if pipeline.date_param:
            date = args.date or run_date(pipeline.date_offset_days, today).isoformat()
            argv += [f"--{pipeline.date_param.replace('_', '-')}", date]
        return argv, [pipeline.module], pipeline.workers
    if not args.task:
        raise ConfigError("name the task to run (luigi-ha run --module M Task ...) "
                          "or use --config FILE --pipeline NAME")
    argv = [args.task, *rest]
    if args.date is not None:
        argv += ["--date", args.date]
    return argv, [], None


def run_command(args: argparse.Namespace) -> int:
    try:
        task_argv, pipeline_modules, pipeline_workers = build_task_argv(args)
        settings = _settings(args)
        urls, auth = _credentials(args, settings.scheduler_urls)
    except ConfigError as exc:
        print(f"luigi-ha run: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    workers = args.workers if args.workers is not None else (
        pipeline_workers if pipeline_workers is not None else settings.workers)
    modules = [*pipeline_modules, *(m for m in settings.modules if m not in pipeline_modules)]
    setup_logging(settings.log_level, settings.log_format, settings.config_path, pipeline=args.pipeline)
    return run_pipeline(urls, modules, task_argv, workers, settings.policy,
                        idle_grace=settings.run_idle_grace, auth=auth)
