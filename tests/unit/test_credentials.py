"""How luigi-ha's clients find a node's credentials, and that no URL they print carries a password."""

from __future__ import annotations

import netrc
import stat

import pytest

from scheduler.credentials import CredentialsError, redact, resolve, split, write_netrc


def test_credentials_in_a_url_are_taken_out_percent_decoded() -> None:
    assert split("https://ops:p%40ss%3Aw@vip.example:8443/x") == ("https://vip.example:8443/x", ("ops", "p@ss:w"))
    assert split("http://[::1]:8082") == ("http://[::1]:8082", None)
    assert split("http://u:pw@[::1]:8082") == ("http://[::1]:8082", ("u", "pw"))


def test_a_redacted_url_keeps_the_user_and_hides_the_password() -> None:
    assert redact("http://ops:hunter2@vip:8082") == "http://ops:***@vip:8082"
    assert redact("http://vip:8082") == "http://vip:8082"


def test_the_url_wins_then_the_flags_then_the_environment(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    env = {"LUIGI_HA_USER": "env-user", "LUIGI_HA_PASSWORD": "from-env"}
    assert resolve(["http://u:p@a:1", "http://a:2"], environ=env) == (["http://a:1", "http://a:2"], ("u", "p"))
    assert resolve(["http://a:1"], user="flag-user", password_file=str(secret), environ=env)[1] == (
        "flag-user", "from-file")
    assert resolve(["http://a:1"], user="flag-user", environ=env)[1] == ("flag-user", "from-env")
    assert resolve(["http://a:1"], environ=env)[1] == ("env-user", "from-env")
    assert resolve(["http://a:1"], environ={"LUIGI_HA_USER": "e", "LUIGI_HA_PASSWORD_FILE": str(secret)})[1] == (
        "e", "from-file")
    assert resolve(["http://a:1"], environ={}) == (["http://a:1"], None)  # requests then reads ~/.netrc


def test_unusable_credentials_are_refused_without_echoing_them(tmp_path) -> None:
    with pytest.raises(CredentialsError, match="without a password"):
        resolve(["http://a:1"], user="u", environ={})
    with pytest.raises(CredentialsError, match="different credentials") as caught:
        resolve(["http://u:pw-A1@a:1", "http://u:pw-B2@b:1"], environ={})
    assert "pw-A1" not in str(caught.value) and "pw-B2" not in str(caught.value)


def test_a_netrc_for_child_processes_is_private_and_names_each_host(tmp_path) -> None:
    path = write_netrc(tmp_path / "netrc", ["http://vip:8082", "http://sched1:8082/", "http://vip:9"], ("ops", "pw"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    parsed = netrc.netrc(str(path))
    assert parsed.authenticators("vip") == ("ops", "", "pw")
    assert parsed.authenticators("sched1") == ("ops", "", "pw")
