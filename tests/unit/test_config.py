"""How a node reads its configuration: a luigid.cfg-shaped file, then env, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "luigi-ha.cfg"
    path.write_text(text)
    return path


def test_defaults_give_a_node_on_the_embedded_sqlite_file_on_port_8082():
    config = load_config(None, environ={})
    assert config.db_url.startswith("sqlite:///")
    assert config.port == 8082
    assert config.timings.ttl == 5.0


def test_a_luigid_style_file_sets_database_scheduler_keys_and_resources(tmp_path):
    path = write(tmp_path, "[database]\nconnection = mysql://u:p@db/luigi\n\n[scheduler]\nretry-delay = 30\n"
                           "worker_disconnect_delay = 90\n\n[resources]\nspark = 4\n")
    config = load_config(path, environ={})
    assert config.db_url == "mysql://u:p@db/luigi"
    assert config.scheduler == {"retry_delay": "30", "worker_disconnect_delay": "90"}
    assert config.resources == {"spark": 4}


def test_task_history_db_connection_is_used_when_no_database_section_is_given(tmp_path):
    path = write(tmp_path, "[task_history]\ndb_connection = postgresql://h/luigi\n")
    assert load_config(path, environ={}).db_url == "postgresql://h/luigi"


def test_environment_overrides_the_file_and_flags_override_the_environment(tmp_path):
    path = write(tmp_path, "[server]\nport = 9000\nnode_id = from-file\n[database]\nconnection = sqlite:///a.db\n")
    env = {"LUIGI_HA_SERVER_PORT": "9100", "LUIGI_HA_DB_URL": "sqlite:///b.db"}
    assert load_config(path, environ=env).port == 9100
    assert load_config(path, environ=env).db_url == "sqlite:///b.db"
    flagged = load_config(path, environ=env, port=9200, node_id="from-flag")
    assert (flagged.port, flagged.node_id) == (9200, "from-flag")


def test_inconsistent_lease_timings_are_refused_with_a_reason(tmp_path):
    path = write(tmp_path, "[ha]\nlease_ttl = 5\nrenew_deadline = 6\n")
    with pytest.raises(ConfigError, match=r"\[ha\].*renew_deadline"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[server]\nport = eighty\n", "[server] port"),
        ("[resources]\nspark = many\n", "[resources] spark"),
        ("[database]\nauto_upgrade = perhaps\n", "auto_upgrade"),
        ("[logging]\nformat = xml\n", "[logging] format"),
    ],
)
def test_a_malformed_value_is_an_error_that_names_the_key(tmp_path, text, names):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert names in str(err.value)


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.cfg", environ={})


def test_the_loggable_description_never_contains_the_database_password(tmp_path):
    path = write(tmp_path, "[database]\nconnection = postgresql://luigi:hunter2@db/luigi\n")
    described = str(load_config(path, environ={}).describe())
    assert "hunter2" not in described
    assert "db/luigi" in described


def test_comments_after_values_are_not_part_of_the_value(tmp_path):
    path = write(tmp_path, "[database]\nconnection = postgresql://h/luigi   ; or mysql://...\n"
                           "[server]\nport = 9000 ; the API port\n")
    config = load_config(path, environ={})
    assert (config.db_url, config.port) == ("postgresql://h/luigi", 9000)


def test_a_standby_follows_by_default_within_five_seconds_and_both_can_be_set(tmp_path):
    config = load_config(None, environ={})
    assert config.follow is True and config.replica_max_lag == 5.0
    path = tmp_path / "c.cfg"
    path.write_text("[ha]\nfollow = false\nreplica_max_lag = 1.5\n")
    config = load_config(path, environ={})
    assert config.follow is False and config.replica_max_lag == 1.5
    assert load_config(path, environ={"LUIGI_HA_HA_FOLLOW": "yes"}).follow is True
    path.write_text("[ha]\nfollow = sometimes\n")
    with pytest.raises(ConfigError, match=r"\[ha\] follow"):
        load_config(path, environ={})
