"""Settings: luigid's [scheduler]/[resources] configuration, resolved exactly as luigid does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from luigi.configuration import LuigiConfigParser

from scheduler.core import Scheduler, SchedulerSettings


@pytest.fixture
def luigi_config(tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """Install a luigi config file for the test, and put luigi's configuration back after."""
    saved_paths = list(LuigiConfigParser._config_paths)
    saved_instance = LuigiConfigParser._instance

    def install(text: str) -> None:
        path = tmp_path / "luigi.cfg"
        path.write_text(text)
        LuigiConfigParser._instance = None
        LuigiConfigParser.add_config_path(str(path))

    yield install
    LuigiConfigParser._config_paths[:] = saved_paths
    LuigiConfigParser._instance = saved_instance


def test_defaults_are_luigis_documented_defaults() -> None:
    settings = SchedulerSettings()
    assert settings.retry_delay == 900.0
    assert settings.remove_delay == 600.0
    assert settings.worker_disconnect_delay == 60.0
    assert settings.disable_window == 3600
    assert settings.retry_count == 999999999
    assert settings.disable_hard_timeout == 999999999
    assert settings.disable_persist == 86400
    assert settings.max_shown_tasks == 100000
    assert settings.max_graph_nodes == 100000
    assert settings.prune_on_get_work is False
    assert settings.pause_enabled is True
    assert settings.send_messages is True
    assert settings.stable_done_cooldown_secs == 10
    assert settings.record_task_history is False
    assert settings.batch_emails is False
    assert dict(settings.resources) == {}


def test_unset_settings_are_read_from_the_luigi_config_file(luigi_config: Callable[[str], None]) -> None:
    luigi_config("[scheduler]\nretry_delay = 12.5\nremove-delay = 7\npause_enabled = false\n[resources]\ndb = 3\n")
    settings = SchedulerSettings.resolve()
    assert settings.retry_delay == 12.5
    assert settings.remove_delay == 7.0  # the dashed spelling works too
    assert settings.pause_enabled is False
    assert dict(settings.resources) == {"db": 3}
    assert settings.worker_disconnect_delay == 60.0  # not in the file: luigi's default


def test_explicit_settings_win_over_the_luigi_config_file(luigi_config: Callable[[str], None]) -> None:
    luigi_config("[scheduler]\nretry_delay = 12.5\n[resources]\ndb = 3\n")
    settings = SchedulerSettings.resolve(retry_delay=1, resources={"cpu": 4})
    assert settings.retry_delay == 1.0
    assert dict(settings.resources) == {"cpu": 4}


def test_scheduler_constructor_resolves_settings_from_keywords_and_config(
    luigi_config: Callable[[str], None],
) -> None:
    luigi_config("[scheduler]\ndisable_persist = 5\n")
    scheduler = Scheduler(retry_count=2, state_path="/ignored")
    assert scheduler.settings.retry_count == 2
    assert scheduler.settings.disable_persist == 5
    assert scheduler.settings.state_path == "/ignored"


def test_a_bad_value_in_the_luigi_config_names_its_key(luigi_config: Callable[[str], None]) -> None:
    luigi_config("[scheduler]\nretry_count = many\n")
    with pytest.raises(ValueError, match="retry_count"):
        SchedulerSettings.resolve()


def test_unknown_keyword_setting_is_rejected() -> None:
    with pytest.raises(TypeError, match="no_such_setting"):
        Scheduler(no_such_setting=1)


def test_from_mapping_parses_ini_strings_with_luigis_types() -> None:
    settings = SchedulerSettings.from_mapping(
        {
            "retry_delay": "30",
            "disable-window": "60",
            "send_messages": "False",
            "metrics_collector": "prometheus",
            "metrics_custom_import": "",
            "stable_done_cooldown_secs": "0",
        },
        resources={"db": "2"},
    )
    assert settings.retry_delay == 30.0 and isinstance(settings.retry_delay, float)
    assert settings.disable_window == 60 and isinstance(settings.disable_window, int)
    assert settings.send_messages is False
    assert settings.metrics_collector == "prometheus"
    assert settings.metrics_custom_import is None
    assert settings.stable_done_cooldown_secs == 0
    assert dict(settings.resources) == {"db": 2}


def test_from_mapping_uses_documented_defaults_for_missing_keys() -> None:
    assert SchedulerSettings.from_mapping({}) == SchedulerSettings()


@pytest.mark.parametrize(
    ("values", "bad_key"),
    [
        ({"retry_delay": "soon"}, "retry_delay"),
        ({"retry_count": "1.5"}, "retry_count"),
        ({"pause_enabled": "maybe"}, "pause_enabled"),
        ({"metrics_collector": "statsd"}, "metrics_collector"),
    ],
)
def test_from_mapping_names_the_key_it_cannot_parse(values: dict[str, str], bad_key: str) -> None:
    with pytest.raises(ValueError, match=bad_key):
        SchedulerSettings.from_mapping(values)


def test_from_mapping_rejects_a_non_integer_resource_capacity() -> None:
    with pytest.raises(ValueError, match="db"):
        SchedulerSettings.from_mapping({}, resources={"db": "lots"})


def test_from_mapping_ignores_unknown_keys_unless_strict() -> None:
    assert SchedulerSettings.from_mapping({"database_url": "sqlite://"}) == SchedulerSettings()
    with pytest.raises(ValueError, match="database_url"):
        SchedulerSettings.from_mapping({"database_url": "sqlite://"}, strict=True)


def test_a_ready_settings_object_can_be_passed_to_the_scheduler() -> None:
    settings = SchedulerSettings(retry_delay=3.0)
    assert Scheduler(settings=settings).settings is settings
