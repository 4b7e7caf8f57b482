"""Worker settings, the ``[pipeline:NAME]`` lookup of ``luigi-ha run --pipeline`` and its run date."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest

from scheduler.cli import build_parser
from scheduler.config import ConfigError
from worker.commands import build_task_argv
from worker.config import load_pipeline, load_worker_settings, run_date

CONFIG = """
[database]
connection = postgresql://luigi:secret@db/luigi

[luigi-ha-worker]
scheduler_url = http://sched1:8082, http://sched2:8082
module = daily_pipeline
workers = 4
rpc_budget = 300
rpc_backoff_max = 5

[luigi-ha-worker:heavy]
module = heavy_pipeline other_pipeline
workers = 1

[pipeline:daily]
module = daily_pipeline
task = DailyAggregations

[pipeline:weekly]
module = weekly_pipeline
task = WeeklyReport
date_offset_days = 7
date_param = week_start
params = --region "eu west" --full
workers = 8

[pipeline:nodate]
module = m
task = Snapshot
date_param =
"""


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "luigi-ha.cfg"
    path.write_text(CONFIG)
    return str(path)


def run_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_the_pipeline_section_names_module_and_task_with_documented_defaults(cfg):
    p = load_pipeline(cfg, "daily")
    assert (p.module, p.task) == ("daily_pipeline", "DailyAggregations")
    assert p.date_offset_days == 1 and p.date_param == "date" and p.params == [] and p.workers is None


def test_the_pipeline_section_may_set_offset_parameter_name_extra_params_and_workers(cfg):
    p = load_pipeline(cfg, "weekly")
    assert p.date_offset_days == 7 and p.date_param == "week_start"
    assert p.params == ["--region", "eu west", "--full"] and p.workers == 8


def test_an_unknown_pipeline_is_a_config_error_listing_the_known_ones(cfg):
    with pytest.raises(ConfigError, match=r"no \[pipeline:hourly\].*daily, nodate, weekly"):
        load_pipeline(cfg, "hourly")


def test_a_pipeline_without_a_task_is_a_config_error(tmp_path):
    path = tmp_path / "c.cfg"
    path.write_text("[pipeline:x]\nmodule = m\n")
    with pytest.raises(ConfigError, match=r"\[pipeline:x\] needs 'task'"):
        load_pipeline(str(path), "x")


def test_pipeline_needs_a_config_file():
    with pytest.raises(ConfigError, match="--config"):
        load_pipeline(None, "daily")


def test_the_run_date_is_today_in_utc_minus_the_offset_default_yesterday():
    assert run_date(today=dt.date(2026, 3, 1)) == dt.date(2026, 2, 28)
    assert run_date(0, today=dt.date(2026, 3, 1)) == dt.date(2026, 3, 1)
    assert run_date(7, today=dt.date(2026, 1, 3)) == dt.date(2025, 12, 27)
    assert run_date() == dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def test_run_pipeline_builds_the_luigi_command_line_with_the_default_date(cfg):
    argv, modules, workers = build_task_argv(run_args("--config", cfg, "--pipeline", "daily"),
                                             today=dt.date(2026, 11, 24))
    assert argv == ["DailyAggregations", "--date", "2026-11-23"]
    assert modules == ["daily_pipeline"] and workers is None


def test_run_pipeline_with_an_explicit_date_and_a_custom_date_parameter(cfg):
    argv, modules, workers = build_task_argv(run_args("--config", cfg, "--pipeline", "weekly", "--date", "2026-01-05"))
    assert argv == ["WeeklyReport", "--region", "eu west", "--full", "--week-start", "2026-01-05"]
    assert modules == ["weekly_pipeline"] and workers == 8


def test_run_pipeline_without_a_date_parameter_passes_no_date(cfg):
    argv, _, _ = build_task_argv(run_args("--config", cfg, "--pipeline", "nodate"))
    assert argv == ["Snapshot"]


def test_a_bad_date_is_a_config_error(cfg):
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        build_task_argv(run_args("--config", cfg, "--pipeline", "daily", "--date", "23/11/2026"))


def test_a_task_name_and_a_pipeline_together_are_refused(cfg):
    with pytest.raises(ConfigError, match="either"):
        build_task_argv(run_args("--config", cfg, "--pipeline", "daily", "Other"))


def test_direct_run_passes_the_task_and_its_params_and_takes_our_flags_from_anywhere():
    args = run_args("--scheduler-url", "http://a:1", "--module", "m", "Task", "--n", "3", "--workers", "4",
                    "--scheduler-url", "http://b:2", "--flag", "--offset", "-2")
    argv, modules, workers = build_task_argv(args)
    assert argv == ["Task", "--n", "3", "--flag", "--offset", "-2"]
    assert args.workers == 4 and args.scheduler_url == ["http://a:1", "http://b:2"] and args.module == ["m"]
    assert modules == [] and workers is None


def test_direct_run_with_date_passes_it_as_the_tasks_date():
    argv, _, _ = build_task_argv(run_args("--module", "m", "Task", "--date", "2026-11-23"))
    assert argv == ["Task", "--date", "2026-11-23"]


def test_direct_run_without_a_task_is_a_config_error():
    with pytest.raises(ConfigError, match="name the task"):
        build_task_argv(run_args("--module", "m"))


def test_worker_settings_come_from_the_file(cfg):
    s = load_worker_settings(cfg)
    assert s.scheduler_urls == ["http://sched1:8082", "http://sched2:8082"]
    assert s.modules == ["daily_pipeline"] and s.workers == 4
    assert s.policy.budget == 300 and s.policy.backoff_max == 5 and s.policy.read_timeout == 10


def test_an_instance_section_overrides_the_common_one(cfg):
    s = load_worker_settings(cfg, instance="heavy")
    assert s.modules == ["heavy_pipeline", "other_pipeline"] and s.workers == 1
    assert s.scheduler_urls == ["http://sched1:8082", "http://sched2:8082"]


def test_flags_override_the_file(cfg):
    s = load_worker_settings(cfg, scheduler_urls=["http://vip:8082"], modules=["x"], workers=2, rpc_budget=30)
    assert s.scheduler_urls == ["http://vip:8082"] and s.modules == ["x"] and s.workers == 2
    assert s.policy.budget == 30


def test_defaults_without_a_file():
    s = load_worker_settings(None)
    assert s.scheduler_urls == [] and s.workers == 1 and s.policy.budget == 120 and s.log_format == "json"


@pytest.mark.parametrize(("line", "match"), [
    ("workers = many", "workers: expected a int"),
    ("rpc_budget = -5", "rpc_budget: must be at least 0"),
    ("log_format = xml", "log_format"),
])
def test_bad_values_are_config_errors_naming_the_key(tmp_path, line, match):
    path = tmp_path / "c.cfg"
    path.write_text(f"[luigi-ha-worker]\n{line}\n")
    with pytest.raises(ConfigError, match=match):
        load_worker_settings(str(path))


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_worker_settings(str(tmp_path / "nope.cfg"))
