"""With ``[auth] users_file`` set, a node answers only users it knows, each within their role.

A real node process with a users file of three users (one per role), Luigi's own ``luigi`` CLI
with ``user:password@`` in ``--scheduler-url``, and requests shaped like a browser's.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.localcluster import LocalCluster
from scheduler.users import add_user

pytestmark = pytest.mark.e2e

PASSWORDS = {"viewer": "v-secret-1", "worker": "w-secret-2", "operator": "o-secret-3"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir: Path = tmp_path_factory.mktemp("auth")
    users = workdir / "users"
    for role, password in PASSWORDS.items():
        add_user(users, f"{role}-user", role, password, rounds=4)
    cluster = LocalCluster(workdir / "c", f"sqlite:///{workdir / 'state.db'}", size=2, lease_ttl=3,
                           extra_config=f"[auth]\nusers_file = {users}\n\n[scheduler]\nretry_delay = 1\n")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def url(cluster: LocalCluster) -> str:
    """The leader's URL (a switchover test moves the lease)."""
    return cluster.wait_for_leader(timeout=30).url


def as_(role: str) -> tuple[str, str]:
    return (f"{role}-user", PASSWORDS[role])


def rpc(url: str, method: str, args: dict | None = None, *, role: str | None = None,
        **kwargs: object) -> requests.Response:
    return requests.post(f"{url}/api/{method}", data={"data": json.dumps(args or {})},
                         auth=as_(role) if role else None, timeout=10, **kwargs)


@pytest.mark.parametrize("path", ["/status", "/metrics", "/api/task_list", "/", "/static/visualiser/index.html",
                                  "/history/by_task_id/x"])
def test_every_route_but_the_health_checks_asks_for_basic_credentials(url: str, path: str) -> None:
    r = requests.get(url + path, timeout=10, allow_redirects=False)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="luigi-ha"'
    assert "authentication required" in r.json()["error"]


def test_the_health_checks_stay_open_and_status_says_authentication_is_on(url: str) -> None:
    assert requests.get(url + "/leader", timeout=10).status_code == 200
    assert requests.get(url + "/healthz", timeout=10).status_code == 200
    assert requests.get(url + "/status", auth=as_("viewer"), timeout=10).json()["authentication"] == "on"


def test_a_wrong_password_is_a_401_counted_and_logged_with_the_address_never_the_password(
    cluster: LocalCluster, url: str
) -> None:
    node = next(n for n in cluster.nodes if n.url == url)
    r = requests.get(url + "/status", auth=("operator-user", "guess-Xy7"), timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="luigi-ha"'
    assert requests.get(url + "/status", auth=("nobody", "guess-Zq8"), timeout=10).status_code == 401
    metrics = requests.get(url + "/metrics", auth=as_("viewer"), timeout=10).text
    assert 'luigi_ha_auth_failures_total{reason="wrong"}' in metrics
    log = node.log_path.read_text()
    failures = [json.loads(line) for line in log.splitlines() if '"login_failed"' in line]
    assert {f["user"] for f in failures} >= {"operator-user", "nobody"}
    assert all(f["remote"] == "127.0.0.1" for f in failures)
    assert "guess-Xy7" not in log and "guess-Zq8" not in log
    for password in PASSWORDS.values():
        assert password not in log


def test_a_viewer_reads_but_cannot_write_and_the_403_names_the_role_needed(url: str) -> None:
    assert rpc(url, "task_list", {"status": "PENDING", "upstream_status": ""}, role="viewer").status_code == 200
    r = rpc(url, "add_task", {"task_id": "V_1", "worker": "w"}, role="viewer")
    assert r.status_code == 403
    assert r.json()["required_role"] == "worker" and "worker" in r.json()["error"]


def test_a_worker_schedules_tasks_but_admin_rpcs_and_switchover_need_an_operator(url: str) -> None:
    assert rpc(url, "add_task", {"task_id": "W_1", "worker": "w"}, role="worker").status_code == 200
    for method in ("mark_as_done", "forgive_failures", "pause"):
        r = rpc(url, method, {"task_id": "W_1"} if method != "pause" else {}, role="worker")
        assert r.status_code == 403 and r.json()["required_role"] == "operator", method
    r = requests.post(url + "/switchover", auth=as_("worker"), timeout=10)
    assert r.status_code == 403 and r.json()["required_role"] == "operator"


def test_an_operator_may_do_everything(url: str) -> None:
    assert rpc(url, "pause", role="operator").status_code == 200
    assert rpc(url, "is_paused", role="viewer").json()["response"] == {"paused": True}
    assert rpc(url, "unpause", role="operator").status_code == 200


def test_no_state_change_from_another_sites_page(url: str) -> None:
    # GET, the way an <img> or link would fire it: refused; the visualiser's own same-origin GET works.
    r = requests.get(url + "/api/pause", params={"data": "{}"}, auth=as_("operator"), timeout=10)
    assert r.status_code == 405 and "POST" in r.json()["error"]
    r = requests.get(url + "/api/pause", params={"data": "{}"}, auth=as_("operator"), timeout=10,
                     headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200
    assert rpc(url, "unpause", role="operator", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert rpc(url, "unpause", role="operator", headers={"Origin": "https://evil.example"}).status_code == 403
    host = url.removeprefix("http://")
    assert rpc(url, "unpause", role="operator", headers={"Origin": f"http://{host}"}).status_code == 200
    # Reads stay possible by GET for the visualiser.
    assert requests.get(url + "/api/is_paused", auth=as_("viewer"), timeout=10).status_code == 200


def test_unmodified_luigi_runs_a_pipeline_with_credentials_in_the_scheduler_url(url: str, luigi_runner) -> None:
    host = url.removeprefix("http://")
    ok = luigi_runner(f"http://worker-user:{PASSWORDS['worker']}@{host}").run(
        "Top", "--width", "2", "--fan", "2", "--workers", "2")
    assert ok.returncode == 0, ok.output
    assert len(ok.runs) == 7
    assert PASSWORDS["worker"] not in ok.output



# -- luigi-ha's own clients --------------------------------------------------------------------


def luigi_ha(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def with_user(url: str, role: str) -> str:
    return url.replace("http://", f"http://{role}-user:{PASSWORDS[role]}@")


def test_status_takes_credentials_from_the_url_the_environment_or_netrc_and_never_prints_them(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    urls = cluster.urls
    by_url = luigi_ha("status", "--json", *[a for u in urls for a in ("--url", with_user(u, "viewer"))])
    assert by_url.returncode == 0, by_url.stderr
    assert sorted(row["role"] for row in json.loads(by_url.stdout)) in (["leader", "standby"], ["following", "leader"])
    assert PASSWORDS["viewer"] not in by_url.stdout + by_url.stderr

    by_env = luigi_ha("status", "--url", urls[0], env={"LUIGI_HA_USER": "viewer-user",
                                                        "LUIGI_HA_PASSWORD": PASSWORDS["viewer"]})
    assert by_env.returncode == 0 and "role=" in by_env.stdout

    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login viewer-user password {PASSWORDS['viewer']}\n")
    netrc.chmod(0o600)
    assert luigi_ha("status", "--url", urls[0], env={"NETRC": str(netrc)}).returncode == 0

    wrong = luigi_ha("status", "--url", urls[0].replace("http://", "http://viewer-user:nope-9@"))
    assert wrong.returncode != 0 and "authentication required" in wrong.stdout
    assert "nope-9" not in wrong.stdout + wrong.stderr


def test_switchover_needs_an_operator_and_takes_a_password_file(cluster: LocalCluster, tmp_path: Path) -> None:
    secret = tmp_path / "operator.pw"
    secret.write_text(PASSWORDS["operator"] + "\n")
    urls = [a for u in cluster.urls for a in ("--url", u)]
    refused = luigi_ha("switchover", *urls, env={"LUIGI_HA_USER": "worker-user",
                                                 "LUIGI_HA_PASSWORD": PASSWORDS["worker"]})
    assert refused.returncode != 0 and "needs the role operator" in refused.stderr

    before = cluster.wait_for_leader().node_id
    done = luigi_ha("switchover", *urls, "--user", "operator-user", "--password-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["released_by"] == before
    assert PASSWORDS["operator"] not in done.stdout + done.stderr


def test_luigi_ha_run_schedules_a_pipeline_with_credentials_from_flags(url: str, luigi_runner, tmp_path: Path) -> None:
    secret = tmp_path / "worker.pw"
    secret.write_text(PASSWORDS["worker"])
    runner = luigi_runner(url)
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "run", "--scheduler-url", url, "--user", "worker-user",
         "--password-file", str(secret), "--module", "pipelines", "--workers", "1", "Leaf", "--n", "7771"],
        capture_output=True, text=True, timeout=120, env=runner.env(),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert [family for family, *_ in runner.read_runs()] == ["Leaf"]
    assert PASSWORDS["worker"] not in result.stdout + result.stderr


# -- the audit trail ---------------------------------------------------------------------------


def test_admin_actions_and_switchovers_are_in_the_audit_trail_for_operators_only(cluster: LocalCluster) -> None:
    url = cluster.wait_for_leader().url
    assert rpc(url, "add_task", {"task_id": "A_1", "worker": "w"}, role="worker").status_code == 200
    assert rpc(url, "mark_as_done", {"task_id": "A_1"}, role="operator").status_code == 200
    assert rpc(url, "task_list", {"status": "DONE", "upstream_status": ""}, role="viewer").status_code == 200

    assert requests.get(url + "/audit", auth=as_("viewer"), timeout=10).status_code == 403
    standby = next(n.url for n in cluster.nodes if n.url != url)
    records = requests.get(standby + "/audit", auth=as_("operator"), timeout=10).json()["records"]

    newest = records[0]
    assert newest["action"] == "mark_as_done" and newest["arguments"] == {"task_id": "A_1"}
    assert (newest["user"], newest["role"], newest["remote"]) == ("operator-user", "operator", "127.0.0.1")
    assert newest["epoch"] >= 1 and abs(newest["at"] - time.time()) < 60
    actions = [r["action"] for r in records]
    assert "switchover" in actions and "pause" in actions and "unpause" in actions
    assert "add_task" not in actions and "task_list" not in actions, "only admin actions are recorded"


@pytest.mark.postgres
def test_the_audit_record_commits_with_the_change_on_postgresql_also_without_auth(pg_url, make_cluster) -> None:
    url = make_cluster(pg_url).nodes[0].url
    assert rpc(url, "add_task", {"task_id": "P_1", "worker": "w", "status": "FAILED"}).status_code == 200
    assert rpc(url, "forgive_failures", {"task_id": "P_1"}).status_code == 200
    records = requests.get(url + "/audit", timeout=10).json()["records"]
    assert [(r["action"], r["user"], r["arguments"]) for r in records] == [
        ("forgive_failures", None, {"task_id": "P_1"})]


def test_a_drill_runs_with_credentials_and_keeps_them_off_every_command_line(cluster: LocalCluster,
                                                                            tmp_path: Path) -> None:
    urls = [with_user(u, "operator") for u in cluster.urls]
    result = luigi_ha("drill", "--url", urls[0], "--url", urls[1], "--action", "switchover", "--tasks", "10",
                      "--workers", "2", "--task-seconds", "0.05", "--json", "--workdir", str(tmp_path), "--keep",
                      timeout=180)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["pipeline_completed"] and report["tasks_lost"] == 0 and report["tasks_run_twice"] == 0
    seen = result.stdout + result.stderr + "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    assert PASSWORDS["operator"] not in seen


@settings(max_examples=40, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=60).map(str.strip),
    st.binary(max_size=40).filter(lambda b: b":" not in b).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    st.sampled_from(["Basic", "Basic ", "Basic ====", "Bearer x", "basic Og==", "Basic " + "A" * 8000]),
))
def test_no_authorization_header_gets_a_server_error_or_a_body_that_is_not_json(url: str, header: str) -> None:
    r = requests.get(url + "/api/task_list", headers={"Authorization": header}, timeout=10)
    assert r.status_code in (400, 401), r.text
    assert r.headers["Content-Type"].startswith("application/json")
    json.loads(r.text)


def test_each_role_reaches_exactly_the_rpcs_the_table_gives_it(url: str) -> None:
    from scheduler.auth import ROLE_FOR_ACCESS, RPC_ACCESS, has_role
    from scheduler.core import RPC_METHODS
    from scheduler.users import User

    for role in ("viewer", "worker"):
        for method in sorted(RPC_METHODS):
            needed = ROLE_FOR_ACCESS[RPC_ACCESS[method]]
            r = rpc(url, method, {}, role=role)
            if has_role(User("", role, b""), needed):
                assert r.status_code not in (401, 403), (role, method, r.text)
            else:
                assert r.status_code == 403 and r.json()["required_role"] == needed, (role, method, r.text)
