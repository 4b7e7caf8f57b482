"""TLS end to end with authentication on: the stock ``luigi`` CLI through an HTTPS HAProxy front,
credentials in its scheduler URL, a CA bundle it trusts, and a leader killed mid-run.

Real parts only: a throwaway CA made with ``openssl`` at run time, two ``luigi-ha scheduler``
processes serving HTTPS themselves (``[server] tls_cert``) with ``[auth]`` on over a throwaway
PostgreSQL, ``haproxy`` terminating TLS at the front and speaking verified TLS to the nodes, and
the leader SIGKILLed while the pipeline runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from deploy import render_haproxy_cfg
from scheduler.drill import expected_task_ids
from scheduler.localcluster import LocalCluster, free_port
from scheduler.users import add_user
from tests.e2e_ha.harness import EXAMPLES, LOCAL_HAPROXY, HAProxyProcess, probe_env, read_runs, wait_for_runs
from tests.e2e_ha.test_ha_failover import assert_exactly_once, stock_luigi_client_cfg
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TASKS = 40
WORKER_PASSWORD = "w0rker pass"  # a space: the URL must carry it percent-encoded
OPERATOR_PASSWORD = "op-Secret-77"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "node.key", "node.csr", "node.pem"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
            "-days", "2", "-subj", "/CN=luigi-ha test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@pytest.fixture
def tls_stack(pg_url: str, tmp_path: Path):
    if shutil.which("haproxy") is None or shutil.which("openssl") is None:
        pytest.skip("haproxy and openssl are needed")
    ca, cert, key = make_ca(tmp_path)
    users = tmp_path / "users"
    add_user(users, "worker", "worker", WORKER_PASSWORD, rounds=4)
    add_user(users, "ops", "operator", OPERATOR_PASSWORD, rounds=4)
    cluster = LocalCluster(tmp_path / "nodes", pg_url, size=2, lease_ttl=2.0, ca_file=str(ca), extra_config=(
        f"[auth]\nusers_file = {users}\n\n[server]\ntls_cert = {cert}\ntls_key = {key}\nprune_interval = 5\n\n"
        "[scheduler]\nretry_delay = 1\nworker_disconnect_delay = 60\n"))
    cluster.start()
    pem = tmp_path / "front.pem"
    pem.write_text(cert.read_text() + key.read_text())
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(
        scheduler_nodes=[{"name": n.node_id, "address": "127.0.0.1", "port": n.port} for n in cluster.nodes],
        frontend_bind=f"127.0.0.1:{front}", stats_bind=f"127.0.0.1:{free_port()}",
        tls_cert=str(pem), backend_ca_file=str(ca), **LOCAL_HAPROXY))
    haproxy = HAProxyProcess(cfg).start()
    vip = f"https://127.0.0.1:{front}"

    def routed() -> bool:
        try:
            return requests.get(vip + "/leader", verify=str(ca), timeout=0.5).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(routed, 30, 0.05, "the HTTPS VIP reaches a leader")
        yield cluster, vip, ca
    finally:
        haproxy.stop()
        cluster.stop()


def test_stock_luigi_over_https_with_credentials_rides_through_a_leader_kill(tls_stack, tmp_path: Path) -> None:
    cluster, vip, ca = tls_stack
    # Without credentials the VIP asks for them; the checks HAProxy makes need none.
    anonymous = requests.get(vip + "/status", verify=str(ca), timeout=5)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == 'Basic realm="luigi-ha"'

    run_id = "tls-auth-kill"
    expected = expected_task_ids(EXAMPLES, run_id, TASKS)
    env = probe_env(tmp_path, LUIGI_CONFIG_PATH=str(stock_luigi_client_cfg(tmp_path)), REQUESTS_CA_BUNDLE=str(ca))
    url = vip.replace("https://", "https://worker:w0rker%20pass@")
    proc = subprocess.Popen(
        [sys.executable, "-m", "luigi", "--module", "drill_probe", "DrillProbe", "--run-id", run_id,
         "--tasks", str(TASKS), "--seconds", "0.1", "--workers", "4", "--scheduler-url", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        wait_for_runs(tmp_path / "runs.log", TASKS // 4, proc=proc)
        old = cluster.leader()
        assert old is not None
        old.kill()
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 0, output[-5000:]
    new = cluster.wait_for_leader(timeout=10)
    assert new.node_id != old.node_id
    assert_exactly_once(tmp_path / "runs.log", expected)
    assert sum(read_runs(tmp_path / "runs.log").values()) == len(expected)
    # Stock Luigi itself echoes its scheduler URL, credentials and all, when it retries an RPC
    # ("Failed connecting to remote scheduler ..."): that is its log, not ours, and why the README
    # recommends ~/.netrc (or luigi-ha worker/run, which strip them) to keep the password out of it.

    # The operator's tools take the same path: status through the VIP with the CA bundle.
    status = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "status", "--json", "--url", vip, "--user", "ops"],
        capture_output=True, text=True, timeout=30,
        env={**env, "LUIGI_HA_PASSWORD": OPERATOR_PASSWORD, "REQUESTS_CA_BUNDLE": str(ca)},
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["node_id"] == new.node_id
    assert OPERATOR_PASSWORD not in status.stdout + status.stderr
