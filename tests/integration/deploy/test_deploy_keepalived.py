"""keepalived.conf.j2 and check_haproxy.sh.j2 with the real keepalived, HAProxy and network namespaces.

* ``keepalived -t`` accepts the rendered config (inside a namespace: it needs the interface);
* the rendered check script reports a live / dead HAProxy correctly;
* full stack in namespaces (Topology B): two balancers (HAProxy + keepalived, unicast VRRP) in
  front of two stub scheduler nodes, a client polling the VIP from a third namespace. Measured and
  printed: initial election, VIP move after SIGTERM of the master's keepalived, no preemption
  when the higher-priority balancer comes back (nopreempt), VIP move after HAProxy dies on the
  master (track script), and the client-visible outage for each.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import render_check_haproxy, render_haproxy_cfg, render_keepalived_conf
from tests.integration.deploy.harness import (
    HERE,
    HAProxy,
    Keepalived,
    NetLab,
    StubNode,
    free_port,
    netns_unavailable_reason,
    run,
    stop_process,
    wait_for,
)

VIP = "10.200.0.100"
SCHED_PORT = 18101
FRONTEND_PORT = 18082
GRACEFUL_BOUND = 3.0  # keepalived SIGTERM -> VIP on the peer (measured ~0.6 s)
TRACK_BOUND = 8.0  # HAProxy dead -> VIP on the peer (measured ~2.3 s: 2 failed probes, then FAULT)
_ns_seq = itertools.count()


@pytest.fixture
def netns_ok() -> None:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)


def _write_check_script(path: Path, **variables) -> Path:
    path.write_text(render_check_haproxy(**variables))
    path.chmod(0o755)
    return path


def _keepalived_test(keepalived_bin: str, conf: Path) -> subprocess.CompletedProcess:
    """``ip netns exec <ns> keepalived -t -f conf`` in a fresh namespace that has an eth0."""
    ns = f"lhkat{os.getpid()}x{next(_ns_seq)}"
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "peer0", "netns", ns])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "addr", "add", "10.200.0.1/24", "dev", "eth0"])
        return run(["ip", "netns", "exec", ns, keepalived_bin, "-t", "-f", str(conf)], check=False)
    finally:
        run(["ip", "netns", "del", ns], check=False)


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param({"priority": 150, "peers": ["10.200.0.2"], "unicast_src_ip": "10.200.0.1"}, id="unicast-lb1"),
        pytest.param({"priority": 100, "peers": ["10.200.0.2"], "auth_pass": "longer-than-8"}, id="auth"),
        pytest.param({"nopreempt": False, "preempt_delay": 30}, id="multicast-preempt-delay"),
    ],
)
def test_keepalived_config_test_passes(netns_ok, keepalived_bin: str, tmp_path: Path, variables) -> None:
    script = _write_check_script(tmp_path / "check_haproxy.sh")
    conf = tmp_path / "keepalived.conf"
    # script_user root: the test cannot create the keepalived_script user the Ansible role creates.
    conf.write_text(
        render_keepalived_conf(
            vip="10.200.0.100",
            interface="eth0",
            check_script_path=str(script),
            keepalived_script_user="root",
            **variables,
        )
    )
    result = _keepalived_test(keepalived_bin, conf)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.strip() == "", output


def test_keepalived_config_test_catches_a_missing_script_user(netns_ok, keepalived_bin: str, tmp_path: Path) -> None:
    """The trap the template documents: a missing script user silently drops the HAProxy check."""
    script = _write_check_script(tmp_path / "check_haproxy.sh")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        render_keepalived_conf(
            interface="eth0", check_script_path=str(script), keepalived_script_user="luigi-ha-no-such-user"
        )
    )
    result = _keepalived_test(keepalived_bin, conf)
    assert result.returncode != 0
    assert "removing" in result.stdout + result.stderr


def test_check_script_follows_a_real_haproxy(haproxy_bin: str, tmp_path: Path) -> None:
    stats_bind = f"127.0.0.1:{free_port()}"
    script = _write_check_script(tmp_path / "check_haproxy.sh", stats_bind=stats_bind)
    assert run(["bash", "-n", str(script)], check=False).returncode == 0
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_haproxy_cfg(
            scheduler_nodes=[{"name": "n1", "address": "127.0.0.1", "port": free_port()}],
            frontend_bind=f"127.0.0.1:{free_port()}",
            stats_bind=stats_bind,
            stats_socket="",
            haproxy_chroot="",
            haproxy_user="",
            haproxy_group="",
            log_target="stderr format short",
        )
    )

    def check() -> int:
        return run([str(script)], check=False, timeout=10).returncode

    assert check() == 1  # nothing listens yet
    proxy = HAProxy(cfg).start()
    try:
        wait_for(lambda: check() == 0, 10, 0.05, "check script to see HAProxy")
    finally:
        proxy.stop()
    assert check() == 1


def _wait_for_check_script(netns: str, script: Path) -> None:
    def passes() -> bool:
        return run(["ip", "netns", "exec", netns, str(script)], check=False).returncode == 0

    wait_for(passes, 10, 0.05, f"the check script in {netns} to pass")


class _Client:
    """vip_client.py in the client namespace; parses its lines."""

    def __init__(self, netns: str, url: str):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, str(HERE / "vip_client.py"), url],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, float, str, str]] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                sent, done, status, node = line.split()
                self.lines.append((float(sent), float(done), status, node))

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()

    def served_since(self, t: float) -> bool:
        return any(s >= t and st == "200" for s, _, st, _ in list(self.lines))

    def outage(self, t0: float, t1: float) -> tuple[float, int]:
        """Longest gap between successful answers around [t0, t1], and the failed request count."""
        window = [x for x in list(self.lines) if t0 - 1 <= x[0] <= t1]
        ok = [done for _, done, st, _ in window if st == "200"]
        gaps = [b - a for a, b in zip(ok, ok[1:], strict=False)]
        return (max(gaps) if gaps else float("inf")), sum(1 for x in window if x[2] != "200")

    def stop(self) -> None:
        stop_process(self.proc)
        self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def vip_stack(netns_ok, haproxy_bin: str, keepalived_bin: str, tmp_path: Path) -> Iterator[dict]:
    lab = NetLab()
    started: list = []
    try:
        lab.create_lan()
        lab.add_host("lb1", 1, nonlocal_bind=True)
        lab.add_host("lb2", 2, nonlocal_bind=True)
        lab.add_host("cli", 50)
        # The scheduler nodes live on the balancer hosts (two VMs, everything on each); n1 leads.
        leader_flag = tmp_path / "n1.leader"
        leader_flag.touch()
        for name, host in (("n1", "lb1"), ("n2", "lb2")):
            node = StubNode(
                name, tmp_path / f"{name}.leader", host=f"{lab.subnet}.{host[-1]}", port=SCHED_PORT, netns=lab.ns(host)
            )
            started.append(node.start())
        nodes = [{"name": f"n{i}", "address": f"{lab.subnet}.{i}", "port": SCHED_PORT} for i in (1, 2)]
        proxies, keepaliveds = {}, {}
        for i, host in ((1, "lb1"), (2, "lb2")):
            d = tmp_path / host
            d.mkdir()
            cfg = d / "haproxy.cfg"
            cfg.write_text(
                render_haproxy_cfg(
                    scheduler_nodes=nodes,
                    frontend_bind=f"{VIP}:{FRONTEND_PORT}",
                    stats_socket="",
                    haproxy_chroot="",
                    haproxy_user="",
                    haproxy_group="",
                    log_target="stderr format short",
                )
            )
            proxies[host] = HAProxy(cfg, netns=lab.ns(host))
            started.append(proxies[host].start())
            script = _write_check_script(d / "check_haproxy.sh")
            conf = d / "keepalived.conf"
            peer = f"{lab.subnet}.{3 - i}"
            conf.write_text(
                render_keepalived_conf(
                    vip=VIP,
                    vip_prefix=24,
                    interface="eth0",
                    virtual_router_id=51,
                    priority=150 if i == 1 else 100,
                    peers=[peer],
                    unicast_src_ip=f"{lab.subnet}.{i}",
                    auth_pass="luigiha",
                    check_script_path=str(script),
                    keepalived_script_user="root",
                )
            )
            keepaliveds[host] = Keepalived(conf, lab.ns(host), d, f"keepalived-{host}")
            # Start keepalived only once HAProxy answers: a balancer whose check still fails enters
            # FAULT first, the other wins the election, and nopreempt keeps it there.
            _wait_for_check_script(lab.ns(host), script)
        yield {
            "lab": lab,
            "proxies": proxies,
            "keepaliveds": keepaliveds,
            "started": started,
            "url": f"http://{VIP}:{FRONTEND_PORT}/api/x",
        }
    finally:
        for proc in reversed(started):
            proc.stop()
        lab.destroy()


def test_vip_moves_between_balancers(vip_stack) -> None:
    lab: NetLab = vip_stack["lab"]
    kas: dict[str, Keepalived] = vip_stack["keepaliveds"]
    proxies: dict[str, HAProxy] = vip_stack["proxies"]
    started: list = vip_stack["started"]
    figures: dict[str, str] = {}

    def vip_on(host: str) -> bool:
        return lab.has_address(host, VIP)

    def only_on(host: str) -> bool:
        other = "lb2" if host == "lb1" else "lb1"
        return vip_on(host) and not vip_on(other)

    # 1. Both start as BACKUP; the higher priority (lb1) wins the first election.
    t0 = time.monotonic()
    started.append(kas["lb1"].start())
    started.append(kas["lb2"].start())
    wait_for(lambda: only_on("lb1"), 15, 0.02, "VIP on lb1")
    elected = time.monotonic() - t0
    figures["initial election"] = f"{elected:.2f}s"
    client = _Client(lab.ns("cli"), vip_stack["url"])
    started.append(client)
    wait_for(lambda: client.served_since(time.monotonic() - 0.1), 10, 0.02, "client served through the VIP")
    time.sleep(0.5)

    # 2. Graceful: SIGTERM to the master's keepalived (PID from its pid file). It sends a
    #    priority-0 advert, so the peer takes over at once.
    t0 = time.monotonic()
    pid = kas["lb1"].pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: vip_on("lb2"), GRACEFUL_BOUND + 5, 0.005, "VIP on lb2 after SIGTERM")
    moved = time.monotonic() - t0
    wait_for(lambda: not vip_on("lb1"), 5, 0.005, "VIP gone from lb1")
    released = time.monotonic() - t0
    kas["lb1"].stop()  # reap it
    wait_for(lambda: client.served_since(t0 + moved), 10, 0.01, "client served after the move")
    time.sleep(0.5)
    gap, failed = client.outage(t0, time.monotonic())
    figures["keepalived SIGTERM -> VIP on peer"] = (
        f"{moved:.2f}s, gone from lb1 after {released:.2f}s (client: longest gap {gap:.2f}s, {failed} failed)"
    )
    assert moved < GRACEFUL_BOUND

    # 3. lb1 comes back with the higher priority: nopreempt keeps the VIP where it is
    #    (no second flip). Wait longer than the master-down timer (3 x advert + skew ~ 3.5 s).
    t0 = time.monotonic()
    kas["lb1"].start()
    time.sleep(4.5)
    assert only_on("lb2"), "lb1 preempted the VIP back despite nopreempt"
    gap, failed = client.outage(t0, time.monotonic())
    figures["lb1 back (nopreempt)"] = f"VIP stayed on lb2 (client: {failed} failed)"
    assert failed == 0

    # 4. HAProxy dies on the master (lb2): the track script fails twice -> FAULT -> VIP to lb1.
    t0 = time.monotonic()
    proxies["lb2"].stop(signal.SIGKILL)
    wait_for(lambda: only_on("lb1"), TRACK_BOUND + 5, 0.01, "VIP on lb1 after HAProxy died on lb2")
    moved = time.monotonic() - t0
    wait_for(lambda: client.served_since(t0 + moved), 10, 0.01, "client served after the move")
    time.sleep(0.3)
    gap, failed = client.outage(t0, time.monotonic())
    figures["HAProxy SIGKILL on master -> VIP on peer"] = (
        f"{moved:.2f}s (client: longest gap {gap:.2f}s, {failed} failed)"
    )
    assert moved < TRACK_BOUND

    print("\n[keepalived VIP] " + "; ".join(f"{k}: {v}" for k, v in figures.items()))
