"""Which role each route and RPC needs, and how the users file is written and read.

The RPC table is the one place access is decided, so it must name every RPC Luigi's protocol has
(luigi's own list and the core's): an RPC added to either and forgotten here fails this test
rather than falling silently into some role.
"""

from __future__ import annotations

import stat

import luigi.scheduler
import pytest

from scheduler.auth import RPC_ACCESS, _parse_basic, _Throttle, has_role, required_role
from scheduler.core import RPC_METHODS
from scheduler.users import User, UsersFileError, add_user, load_users


def test_every_rpc_of_luigi_and_of_the_core_is_classified_once() -> None:
    assert set(luigi.scheduler.RPC_METHODS) | set(RPC_METHODS) == set(RPC_ACCESS)
    assert set(RPC_ACCESS.values()) == {"read", "worker", "admin"}


@pytest.mark.parametrize("method", ["forgive_failures", "mark_as_done", "re_enable_task", "disable_worker",
                                    "set_worker_processes", "pause", "unpause", "send_scheduler_message", "prune",
                                    "update_resource", "update_resources"])
def test_the_admin_rpcs_need_an_operator(method: str) -> None:
    assert required_role(f"/api/{method}") == "operator"


@pytest.mark.parametrize("method", ["add_task", "add_worker", "get_work", "ping", "add_task_batcher",
                                    "set_task_status_message", "set_task_progress_percentage",
                                    "decrease_running_task_resources", "announce_scheduling_failure"])
def test_what_a_luigi_worker_sends_needs_a_worker(method: str) -> None:
    assert required_role(f"/api/{method}") == "worker"


@pytest.mark.parametrize(("path", "role"), [
    ("/leader", None), ("/replica", None), ("/healthz", None),
    ("/status", "viewer"), ("/metrics", "viewer"), ("/history/by_task_id/x", "viewer"), ("/", "viewer"),
    ("/static/visualiser/index.html", "viewer"), ("/api/task_list", "viewer"), ("/api/no_such_rpc", "viewer"),
    ("/switchover", "operator"), ("/audit", "operator"),
])
def test_routes_need_the_role_the_issue_lists(path: str, role: str | None) -> None:
    assert required_role(path) == role


def test_each_role_has_the_rights_of_the_ones_below_it() -> None:
    def user(role: str) -> User:
        return User("u", role, b"")

    assert has_role(user("operator"), "worker") and has_role(user("operator"), "viewer")
    assert has_role(user("worker"), "viewer") and not has_role(user("worker"), "operator")
    assert not has_role(user("viewer"), "worker")


def test_add_user_writes_a_bcrypt_hash_never_the_password_and_replaces_a_user(tmp_path) -> None:
    path = tmp_path / "users"
    add_user(path, "alice", "operator", "correct horse", rounds=4)
    add_user(path, "bob", "worker", "battery", rounds=4)
    add_user(path, "alice", "viewer", "staple", rounds=4)

    text = path.read_text()
    assert "correct horse" not in text and "staple" not in text and "battery" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = load_users(path)
    assert {name: u.role for name, u in users.items()} == {"alice": "viewer", "bob": "worker"}
    assert users["alice"].verify("staple") and not users["alice"].verify("correct horse")


@pytest.mark.parametrize(("name", "role"), [("a:b", "worker"), ("", "worker"), ("x y", "worker"), ("a", "root")])
def test_add_user_refuses_names_http_basic_cannot_carry_and_unknown_roles(tmp_path, name: str, role: str) -> None:
    with pytest.raises(UsersFileError):
        add_user(tmp_path / "users", name, role, "pw", rounds=4)


def test_a_malformed_users_file_names_the_line(tmp_path) -> None:
    path = tmp_path / "users"
    path.write_text("# comment\n\nalice:operator:$2b$04$abc\nbob:admin:$2b$04$abc\n")
    with pytest.raises(UsersFileError, match="line 4"):
        load_users(path)


@pytest.mark.parametrize(("header", "parsed"), [
    ("Basic dTpwOnE=", ("u", "p:q")),  # u:p:q -- a password may hold ':'
    ("basic dTo=", ("u", "")),
    ("Bearer abc", (None, "")),
    ("Basic !!!", (None, "")),
    ("Basic dXNlcg==", (None, "")),  # no ':' at all
])
def test_basic_credentials_are_parsed_as_rfc_7617_says(header: str, parsed: tuple[str | None, str]) -> None:
    assert _parse_basic(header) == parsed


def test_failed_logins_slow_their_source_more_each_time_up_to_a_cap_and_others_not_at_all() -> None:
    throttle = _Throttle()
    delays = []
    for _ in range(12):
        throttle.failed("10.0.0.9")
        delays.append(throttle.delay("10.0.0.9"))
    assert delays == sorted(delays) and 0 < delays[0] < delays[3] and delays[-1] == 2.0
    assert throttle.delay("10.0.0.10") == 0.0


def test_the_cli_adds_a_user_with_the_password_from_stdin_and_never_prints_it(tmp_path, monkeypatch, capsys) -> None:
    import io

    from scheduler.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-from-stdin\n"))
    path = tmp_path / "users"
    assert main(["auth", "add-user", "ops", "--role", "operator", "--users-file", str(path), "--password-stdin"]) == 0
    out = capsys.readouterr()
    assert "s3cret-from-stdin" not in out.out + out.err
    assert load_users(path)["ops"].verify("s3cret-from-stdin")


def test_without_auth_the_node_listens_on_loopback_unless_a_host_is_given(tmp_path) -> None:
    from scheduler.config import load_config

    assert load_config(None, environ={}).host == "127.0.0.1"
    assert load_config(None, environ={}, host="0.0.0.0").host == "0.0.0.0"
    users = tmp_path / "users"
    add_user(users, "w", "worker", "pw", rounds=4)
    cfg = tmp_path / "node.cfg"
    cfg.write_text(f"[auth]\nusers_file = {users}\n")
    on = load_config(cfg, environ={})
    assert on.host == "0.0.0.0" and on.users_file == str(users)
    assert on.describe()["authentication"] == "on"


def test_bcrypt_runs_once_for_credentials_however_many_requests_bring_them_at_once(monkeypatch) -> None:
    import asyncio
    import base64

    import bcrypt
    from aiohttp.test_utils import make_mocked_request

    from scheduler.auth import Authenticator

    checks: list[str] = []
    real = User.verify

    def counting(self: User, password: str) -> bool:
        checks.append(password)
        return real(self, password)

    monkeypatch.setattr(User, "verify", counting)
    user = User("w", "worker", bcrypt.hashpw(b"right", bcrypt.gensalt(4)))

    def request(password: str):
        token = base64.b64encode(f"w:{password}".encode()).decode()
        return make_mocked_request("POST", "/api/get_work", headers={"Authorization": f"Basic {token}"})

    async def main() -> list[User | None]:
        auth = Authenticator({"w": user})
        first = await asyncio.gather(*(auth.authenticate(request("right")) for _ in range(20)))
        again = [await auth.authenticate(request("right")) for _ in range(20)]
        wrong = [await auth.authenticate(request("wrong")) for _ in range(5)]
        return [*first, *again, *wrong]

    results = asyncio.run(main())
    assert results[:40] == [user] * 40 and results[40:] == [None] * 5
    assert checks == ["right", "wrong"], "one bcrypt per distinct credentials, wrong ones cached too"
