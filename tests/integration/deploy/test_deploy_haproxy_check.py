"""`haproxy -c` accepts every rendered variant of haproxy.cfg.j2 without a single alert or warning,
and a TLS frontend really serves HTTPS with the configured certificate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from deploy import render_haproxy_cfg
from tests.integration.deploy.harness import HAProxy, StubNode, free_port, run, wait_for

# Test-run friendly values: no chroot/user switch, logs on stderr, no admin socket under /run.
LOCAL = {
    "stats_socket": "",
    "haproxy_chroot": "",
    "haproxy_user": "",
    "haproxy_group": "",
    "log_target": "stderr format short",
}


def _nodes(n: int) -> list[dict]:
    return [{"name": f"sched{i}", "address": f"10.0.0.{10 + i}", "port": 8082} for i in range(1, n + 1)]


def _check(haproxy_bin: str, cfg: Path) -> str:
    result = run([haproxy_bin, "-c", "-f", str(cfg)], check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"\[(ALERT|WARNING)\]", output), output
    return output


@pytest.fixture(scope="module")
def tls_pem(tmp_path_factory: pytest.TempPathFactory, openssl_bin: str) -> Path:
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    run(
        [
            openssl_bin,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ]
    )
    pem = d / "luigi-ha.pem"  # HAProxy wants certificate and key in one file
    pem.write_text(cert.read_text() + key.read_text())
    pem.chmod(0o600)
    return pem


@pytest.mark.parametrize("n_nodes", [2, 3])
def test_haproxy_accepts_the_rendered_config(haproxy_bin: str, tmp_path: Path, n_nodes: int) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(scheduler_nodes=_nodes(n_nodes), frontend_bind="10.0.0.100:8082", **LOCAL))
    assert "Configuration file is valid" in _check(haproxy_bin, cfg)


def test_haproxy_accepts_the_defaults_as_deployed(haproxy_bin: str, tmp_path: Path) -> None:
    """Untouched defaults: chroot /var/lib/haproxy, user haproxy, /dev/log (Debian's package)."""
    if not Path("/var/lib/haproxy").is_dir():
        pytest.skip("Debian's haproxy package layout (/var/lib/haproxy) is not present")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg())
    _check(haproxy_bin, cfg)


def test_haproxy_accepts_the_alternative_knobs(haproxy_bin: str, tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_haproxy_cfg(
            scheduler_nodes=_nodes(2),
            frontend_bind="127.0.0.1:18082",
            client_keepalive=True,
            on_marked_down="shutdown-sessions",
            check_method="HEAD",
            balance="roundrobin",
            metrics_uri="",
            **LOCAL,
        )
    )
    _check(haproxy_bin, cfg)


def test_haproxy_accepts_the_tls_config(haproxy_bin: str, tmp_path: Path, tls_pem: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_haproxy_cfg(scheduler_nodes=_nodes(2), frontend_bind="10.0.0.100:8082", tls_cert=str(tls_pem), **LOCAL)
    )
    _check(haproxy_bin, cfg)


def test_haproxy_check_fails_on_a_broken_config(haproxy_bin: str, tmp_path: Path) -> None:
    """The negative control: the assertion above would notice a bad keyword."""
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(scheduler_nodes=_nodes(2), timeout_server="15 parsecs", **LOCAL))
    result = run([haproxy_bin, "-c", "-f", str(cfg)], check=False)
    assert result.returncode != 0
    assert "[ALERT]" in result.stdout + result.stderr


def test_tls_frontend_serves_https(haproxy_bin: str, tmp_path: Path, tls_pem: Path) -> None:
    node = StubNode("n1", tmp_path / "unused.leader", always_leader=True).start()
    proxy = None
    try:
        port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            render_haproxy_cfg(
                scheduler_nodes=[{"name": "n1", "address": "127.0.0.1", "port": node.port}],
                frontend_bind=f"127.0.0.1:{port}",
                stats_bind=f"127.0.0.1:{free_port()}",
                tls_cert=str(tls_pem),
                **LOCAL,
            )
        )
        proxy = HAProxy(cfg).start()

        def served() -> bool:
            try:
                r = requests.get(f"https://127.0.0.1:{port}/api/x", verify=str(tls_pem), timeout=1)
                return r.status_code == 200 and r.json()["node"] == "n1"
            except requests.RequestException:
                return False

        wait_for(served, 10, 0.05, "HTTPS answer through HAProxy")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/api/x", timeout=1)  # plain HTTP is not spoken
    finally:
        if proxy is not None:
            proxy.stop()
        node.stop()
