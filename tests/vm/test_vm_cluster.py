"""The real deployment, end to end, on VM-like hosts: ansible/site.yml applied over ssh to
systemd-nspawn containers (real systemd as PID 1) in network namespaces joined by a bridge.

Two scheduler hosts (each with HAProxy + keepalived) and one worker host, a throwaway PostgreSQL
in a fourth namespace, the controller in a fifth. The tests below run in order against ONE
deployment (module-scoped), like an operator's acceptance run:

1. the first apply succeeds (its time and changed count are recorded);
2. every service is active; /leader answers 200 on exactly one node; the VIP answers reads and
   writes; the daily timer is listed with its next run at 02:00 UTC;
3. the daily run, started through systemd (`systemctl start luigi-ha-run@daily.service`), and the
   Persistent=true catch-up after a missed run both complete the example pipeline via the VIP;
4. `systemctl kill -s KILL` of the leader's scheduler: systemd restarts it while the other node
   leads; the time until the VIP accepts writes again is measured;
5. a second apply changes nothing (changed=0).

Timings and counts go to <workdir>/report.json and are printed (run with -s to see them), e.g.
    sudo .venv/bin/python -m pytest -s tests/vm
Needs root, systemd-nspawn + debootstrap (apt-get install -y systemd-container debootstrap), the
PostgreSQL server binaries and access to the Debian mirror (first rootfs build) and PyPI (the
controller's ansible venv, the dependency wheelhouse). Set LUIGI_HA_SKIP_VM=1 to skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.vm.lab import REPO, Lab, ansible_bin, build_rootfs, parse_recap, run, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

MACHINES = {"sched1": 11, "sched2": 12, "worker1": 21}
SCHEDULERS = ("sched1", "sched2")
WHEEL_CACHE = Path(os.environ.get("LUIGI_HA_WHEEL_CACHE", "/var/cache/luigi-ha/wheelhouse"))
REPORT: dict = {}

# Lease timings for the lab: a crash takeover in about lease_ttl (5 s). RestartSec (8 s) is longer
# than the lease on purpose: a restarted node reclaims a lease still recorded as its own at once
# (lease holder == its node id), so with RestartSec < lease_ttl the killed leader would simply
# lead again; here the standby takes over first and the restarted node rejoins as the standby.
GROUP_VARS = {
    "luigi_ha_scheduler_lease_ttl": 5,
    "luigi_ha_scheduler_renew_interval": 1,
    "luigi_ha_scheduler_renew_deadline": 3,
    "luigi_ha_scheduler_watchdog_sec": "4s",
    "luigi_ha_scheduler_restart_sec": 8,
    # stable_done_cooldown_secs 0: the catch-up run below starts seconds after the first run, and
    # Luigi's scheduler ignores a re-added PENDING for a task DONE less than this long ago (default
    # 10 s); a real catch-up comes hours later.
    "luigi_ha_scheduler_settings": {"retry_delay": 5, "worker_disconnect_delay": 60, "stable_done_cooldown_secs": 0},
    "luigi_ha_worker_processes": 4,
    "luigi_ha_lb_manage_sysctl": False,
}


def _skip_reason() -> str | None:
    if os.environ.get("LUIGI_HA_SKIP_VM"):
        return "LUIGI_HA_SKIP_VM is set"
    if os.geteuid() != 0:
        return "needs root (network namespaces, systemd-nspawn, debootstrap)"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                          ("ssh", "openssh-client"), ("curl", "curl"), ("ip", "iproute2")):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (Debian package {package})"
    if not Path("/sys/fs/cgroup/systemd").is_dir():
        return ("no name=systemd cgroup v1 hierarchy at /sys/fs/cgroup/systemd: the lab gives each nspawn its "
                "own subtree there (deploy-feasibility.md section 5); fall back to the netns+sshd tier")
    return None


def _source_copy(workdir: Path, name: str = "src") -> Path:
    """What the wheel is built from, copied: an in-tree build would leave build/ in the checkout."""
    src = workdir / name
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / file, src / file)
    for package in ("scheduler", "lease", "worker"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def _wheels(workdir: Path) -> tuple[Path, Path]:
    """The luigi-ha wheel built now (`pip wheel --no-deps`) and a cached wheelhouse of its dependencies."""
    dist = workdir / "dist"
    src = _source_copy(workdir)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], timeout=300)
    (wheel,) = dist.glob("luigi_ha-*.whl")
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    house = WHEEL_CACHE / key
    if not (house / ".complete").exists():
        tmp = WHEEL_CACHE / f".{key}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(tmp), str(src)], timeout=900)
        for own in tmp.glob("luigi_ha-*.whl"):
            own.unlink()
        (tmp / ".complete").touch()
        shutil.rmtree(house, ignore_errors=True)
        tmp.rename(house)
    return wheel, house


def _inventory(lab: Lab, wheel: Path, wheelhouse: Path) -> Path:
    inv = lab.workdir / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    lines = ["[luigi_ha_schedulers]"]
    for name in SCHEDULERS:
        priority = 150 if name == "sched1" else 100
        lines.append(f"{name} ansible_host={lab.hosts[name].address} luigi_ha_lb_priority={priority}")
    lines += ["", "[luigi_ha_lb:children]", "luigi_ha_schedulers", "", "[luigi_ha_workers]",
              f"worker1 ansible_host={lab.hosts['worker1'].address}", "",
              "[luigi_ha:children]", "luigi_ha_schedulers", "luigi_ha_lb", "luigi_ha_workers", ""]
    (inv / "hosts.ini").write_text("\n".join(lines))
    group_vars = {
        **GROUP_VARS,
        "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_private_key_file": str(lab.key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "luigi_ha_vip": lab.vip,
        "luigi_ha_db_host": lab.db_address,
        "luigi_ha_db_password": lab.db_password,
        "luigi_ha_wheel": str(wheel),
        "luigi_ha_wheelhouse": str(wheelhouse),
    }
    (inv / "group_vars" / "luigi_ha.yml").write_text(json.dumps(group_vars, indent=2))
    return inv / "hosts.ini"


def _playbook(lab: Lab, bindir: Path, inventory: Path, playbook: str = "site.yml",
              extra: Sequence[str] = ()) -> tuple[float, dict, str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.workdir / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(lab.workdir / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
    }
    started = time.monotonic()
    result = lab.in_ctl([str(bindir / "ansible-playbook"), "-i", str(inventory), *extra, playbook], check=False,
                        timeout=900, cwd=REPO / "ansible", env=env)
    elapsed = time.monotonic() - started
    log = lab.workdir / f"ansible-{playbook}-{int(started)}.log"
    log.write_text(result.stdout + result.stderr)
    recap = parse_recap(result.stdout)
    assert result.returncode == 0 and recap, f"ansible-playbook failed (log {log}):\n{result.stdout[-6000:]}"
    for host, counts in recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, (host, counts)
    return elapsed, recap, result.stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("vm")
    os.chmod(workdir, 0o755)
    try:
        rootfs, build_seconds = build_rootfs()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not build the test rootfs (scripts/build-test-rootfs.sh): {exc.stderr[-500:]}")
    REPORT["rootfs"] = str(rootfs)
    REPORT["rootfs_build_seconds_this_run"] = round(build_seconds, 1) if build_seconds else None
    info = rootfs.parent / "build-info"
    if info.exists():
        REPORT["rootfs_first_build"] = dict(line.split("=", 1) for line in info.read_text().split())
    try:
        bindir = ansible_bin()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not install ansible (ansible/install-controller.sh): {exc.stderr[-500:]}")
    started = time.monotonic()
    wheel, wheelhouse = _wheels(workdir)
    REPORT["wheels_seconds"] = round(time.monotonic() - started, 1)

    the_lab = Lab(workdir=workdir, rootfs=rootfs)
    try:
        started = time.monotonic()
        the_lab.build_network(MACHINES)
        for name in SCHEDULERS:
            # HAProxy binds the VIP on the BACKUP balancer too; /proc/sys is read-only in nspawn.
            the_lab.set_sysctl(name, "net.ipv4.ip_nonlocal_bind", "1")
        the_lab.start_database()
        the_lab.make_key()
        for name in MACHINES:
            the_lab.boot(name)
        for name in MACHINES:
            the_lab.wait_ssh(name)
        REPORT["lab_up_seconds"] = round(time.monotonic() - started, 1)
        the_lab.bindir = bindir
        the_lab.inventory = _inventory(the_lab, wheel, wheelhouse)
        yield the_lab
    finally:
        the_lab.close()
        REPORT["workdir"] = str(workdir)
        (workdir / "report.json").write_text(json.dumps(REPORT, indent=2))
        print("\nVM test report:\n" + json.dumps(REPORT, indent=2))
        target = os.environ.get("LUIGI_HA_VM_REPORT")
        if target:
            Path(target).write_text(json.dumps(REPORT, indent=2))


def _leaders(lab: Lab) -> list[str]:
    return [name for name in SCHEDULERS if lab.http(lab.url(name, "/leader"), timeout=2)[0] == 200]


def _service_state(lab: Lab, host: str, unit: str, *props: str) -> dict[str, str]:
    out = lab.ssh(host, f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_first_apply(lab: Lab) -> None:
    elapsed, recap, _ = _playbook(lab, lab.bindir, lab.inventory)
    REPORT["apply_1_seconds"] = round(elapsed, 1)
    REPORT["apply_1_changed"] = {h: c["changed"] for h, c in recap.items()}
    assert set(recap) == set(MACHINES)
    assert all(c["changed"] > 0 for c in recap.values())


def test_services_active(lab: Lab) -> None:
    for name in SCHEDULERS:
        out = lab.ssh(name, "systemctl is-active luigi-ha-scheduler.service haproxy.service keepalived.service",
                      check=False).stdout.split()
        assert out == ["active"] * 3, (name, out)
        assert lab.ssh(name, "systemctl is-enabled luigi-ha-scheduler.service").stdout.strip() == "enabled"
    out = lab.ssh("worker1", "systemctl is-active luigi-ha-worker@main.service luigi-ha-run@daily.timer",
                  check=False).stdout.split()
    assert out == ["active", "active"], out
    # Every host is a clean boot: nothing failed anywhere.
    for name in MACHINES:
        failed = lab.ssh(name, "systemctl list-units --failed --no-legend --plain").stdout.strip()
        assert failed == "", (name, failed)


def test_exactly_one_leader(lab: Lab) -> None:
    wait_for(lambda: len(_leaders(lab)) == 1, 30, 0.2, "exactly one leader")
    leaders = _leaders(lab)
    assert len(leaders) == 1, leaders
    REPORT["leader_after_deploy"] = leaders[0]
    # The CLI the unit and plays use agrees, on every node.
    for name in SCHEDULERS:
        rc = lab.ssh(name, f"/opt/luigi-ha/venv/bin/luigi-ha is-leader --url {lab.url(name)}", check=False).returncode
        assert (rc == 0) == (name == leaders[0]), (name, rc)


def test_vip_answers_reads_and_writes(lab: Lab) -> None:
    status, body = lab.http(lab.url("vip", "/status"))
    assert status == 200, (status, body)
    assert json.loads(body)["role"] == "leader"
    status, answer = lab.rpc("vip", "add_task", {"task_id": "VMSmoke_1", "status": "DONE", "runnable": False,
                                                  "worker": "vm-smoke", "family": "VMSmoke", "params": {}})
    assert status == 200, (status, answer)
    # Committed to PostgreSQL before it was answered.
    assert lab.db is not None
    assert lab.db.query("luigi_ha", "SELECT task_id FROM lh_tasks WHERE task_id = 'VMSmoke_1'") == [("VMSmoke_1",)]
    # keepalived holds the VIP on exactly one balancer.
    holders = [n for n in SCHEDULERS if lab.vip in lab.ssh(n, "ip -4 -o addr show dev eth0").stdout]
    assert len(holders) == 1, holders
    REPORT["vip_holder"] = holders[0]


def test_timer_next_run_at_0200_utc(lab: Lab) -> None:
    listed = lab.ssh("worker1", "systemctl list-timers --all --no-pager luigi-ha-run@daily.timer").stdout
    assert "luigi-ha-run@daily.timer" in listed and "luigi-ha-run@daily.service" in listed, listed
    props = _service_state(lab, "worker1", "luigi-ha-run@daily.timer", "NextElapseUSecRealtime", "TimersCalendar")
    REPORT["timer_next_elapse"] = props["NextElapseUSecRealtime"]
    assert re.search(r" 02:00:00 UTC$", props["NextElapseUSecRealtime"]), props


def _run_daily(lab: Lab) -> dict[str, str]:
    props = _service_state(lab, "worker1", "luigi-ha-run@daily.service", "Result", "ExecMainStatus",
                           "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic", "ActiveState")
    return props


def _journal(lab: Lab, unit: str, host: str = "worker1", lines: int = 40) -> str:
    return lab.ssh(host, f"journalctl -u {unit} --no-pager -n {lines} -o cat", check=False).stdout[-6000:]


def _aggregations(lab: Lab) -> list[str]:
    out = lab.ssh("worker1", "ls /var/lib/luigi-ha/daily-data/*/daily_aggregations.json 2>/dev/null || true").stdout
    return out.split()


def test_daily_run_started_through_systemd(lab: Lab) -> None:
    started = time.monotonic()
    # Type=oneshot: `systemctl start` returns when the run has finished.
    result = lab.ssh("worker1", "systemctl start luigi-ha-run@daily.service", check=False, timeout=600)
    REPORT["daily_run_seconds"] = round(time.monotonic() - started, 1)
    props = _run_daily(lab)
    journal = _journal(lab, "luigi-ha-run@daily.service")
    assert result.returncode == 0 and props["Result"] == "success" and props["ExecMainStatus"] == "0", (
        props, result.stderr, journal)
    outputs = _aggregations(lab)
    assert len(outputs) == 1, outputs
    REPORT["daily_output"] = outputs[0]
    # The scheduler (through the VIP) saw the whole pipeline done.
    status, answer = lab.rpc("vip", "task_list",
                             {"status": "DONE", "upstream_status": "", "search": "DailyAggregations"})
    assert status == 200 and answer and answer["response"], (status, answer)


def test_persistent_catch_up_after_a_missed_run(lab: Lab) -> None:
    before = _run_daily(lab)
    # Remove the outputs so the catch-up run has real work to do, then pretend the last run was
    # two days ago (the 02:00 run yesterday was missed) and restart the timer.
    lab.ssh("worker1", "rm -rf /var/lib/luigi-ha/daily-data/*/")
    lab.ssh("worker1", "touch -d '2 days ago' /var/lib/systemd/timers/stamp-luigi-ha-run@daily.timer && "
                       "systemctl restart luigi-ha-run@daily.timer")

    def finished_again() -> bool:
        now = _run_daily(lab)
        return (now["ExecMainStartTimestampMonotonic"] != before["ExecMainStartTimestampMonotonic"]
                and now["ActiveState"] in ("inactive", "failed"))

    REPORT["catch_up_seconds"] = round(wait_for(finished_again, 300, 1.0, "the catch-up run"), 1)
    after = _run_daily(lab)
    assert after["Result"] == "success", (after, _journal(lab, "luigi-ha-run@daily.service"))
    assert len(_aggregations(lab)) == 1


def test_kill_leader_systemd_restarts_it_while_the_other_node_leads(lab: Lab) -> None:
    (leader,) = _leaders(lab)
    other = next(n for n in SCHEDULERS if n != leader)
    before = _service_state(lab, leader, "luigi-ha-scheduler.service", "MainPID", "NRestarts")

    out, stop = lab.workdir / "probe.jsonl", lab.workdir / "probe.stop"
    probe = subprocess.Popen(
        ["ip", "netns", "exec", lab.ctl, sys.executable, str(Path(__file__).with_name("write_probe.py")),
         "--url", lab.url("vip"), "--out", str(out), "--stop", str(stop), "--duration", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def samples() -> list[dict]:
            return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

        wait_for(lambda: sum(s["ok"] for s in samples()) >= 5, 30, 0.1, "probe writes through the VIP")
        t_kill = time.monotonic()
        lab.ssh(leader, "systemctl kill -s KILL luigi-ha-scheduler.service")
        t_killed = time.monotonic()

        def recovered() -> bool:
            after = [s for s in samples() if s["sent"] > t_killed]
            failed = [s for s in after if not s["ok"]]
            return bool(failed) and any(s["ok"] and s["sent"] > failed[0]["sent"] for s in after)

        wait_for(recovered, 60, 0.1, "writes through the VIP after the kill")
        after = [s for s in samples() if s["sent"] > t_kill]
        first_fail = next(s for s in after if not s["ok"])
        first_ok = next(s for s in after if s["ok"] and s["sent"] > first_fail["sent"])
        last_ok_before = max((s for s in samples() if s["ok"] and s["t"] <= first_fail["sent"]), key=lambda s: s["t"])
        REPORT["kill_to_vip_writes_seconds"] = round(first_ok["t"] - t_kill, 2)
        REPORT["write_gap_seconds"] = round(first_ok["t"] - last_ok_before["t"], 2)
        REPORT["ssh_kill_roundtrip_seconds"] = round(t_killed - t_kill, 3)
    finally:
        stop.touch()
        try:
            probe.wait(10)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.wait()

    # The other node took over; systemd restarted the killed one (new PID, NRestarts+1), which
    # rejoined as the standby.
    assert _leaders(lab) == [other]
    REPORT["leader_after_kill"] = other

    def restarted() -> bool:
        now = _service_state(lab, leader, "luigi-ha-scheduler.service", "MainPID", "NRestarts", "ActiveState")
        return (now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])
                and int(now["NRestarts"]) == int(before["NRestarts"]) + 1)

    REPORT["systemd_restart_seen_after_seconds"] = round(wait_for(restarted, 60, 0.5, "systemd restart"), 1)
    wait_for(lambda: lab.http(lab.url(leader, "/healthz"))[0] == 200, 60, 0.5, "restarted node healthy")
    assert _leaders(lab) == [other]
    status, body = lab.http(lab.url(leader, "/status"))
    # Restarted while the lease still named it, it holds off before campaigning; either way not leader.
    assert json.loads(body)["role"] in ("standby", "following", "holding_off"), body
    bad = [s for s in json.loads("[" + ",".join(out.read_text().splitlines()) + "]") if s["ok"] is False]
    REPORT["probe_failed_writes"] = len(bad)
    REPORT["probe_failed_statuses"] = sorted({s["status"] for s in bad})


def _marked_wheel(workdir: Path, marker: str) -> Path:
    """A rebuilt wheel with the SAME version and one changed file (what a hotfix build looks like)."""
    src = _source_copy(workdir, "src-upgrade")
    with open(src / "scheduler" / "__init__.py", "a", encoding="utf-8") as fh:
        fh.write(f"\nUPGRADE_MARKER = {marker!r}\n")
    dist = workdir / "dist-upgrade"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], timeout=300)
    (wheel,) = dist.glob("luigi_ha-*.whl")
    return wheel


def _probe(lab: Lab, name: str) -> tuple[subprocess.Popen, Path, Path]:
    out, stop = lab.workdir / f"{name}.jsonl", lab.workdir / f"{name}.stop"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ctl, sys.executable, str(Path(__file__).with_name("write_probe.py")),
         "--url", lab.url("vip"), "--out", str(out), "--stop", str(stop), "--duration", "600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc, out, stop


def _stop_probe(proc: subprocess.Popen, stop: Path) -> None:
    stop.touch()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_rolling_upgrade_standby_first_then_switchover(lab: Lab) -> None:
    """upgrade.yml with a rebuilt wheel: every node ends up on it, the leadership moves by one
    switchover (not a crash), and writes through the VIP keep working during the whole upgrade
    (apart from the switchover's sub-second 503 window)."""
    marker = f"vm-{int(time.time())}"
    wheel = _marked_wheel(lab.workdir, marker)
    (old_leader,) = _leaders(lab)
    epoch_before = json.loads(lab.http(lab.url(old_leader, "/status"))[1])["epoch"]
    proc, out, stop = _probe(lab, "upgrade-probe")
    try:
        wait_for(lambda: out.exists() and out.read_text().count('"ok": true') >= 3, 30, 0.1, "probe writes")
        elapsed, recap, output = _playbook(lab, lab.bindir, lab.inventory, "upgrade.yml",
                                           extra=["-e", f"luigi_ha_wheel={wheel}"])
    finally:
        _stop_probe(proc, stop)
    REPORT["upgrade_seconds"] = round(elapsed, 1)
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    REPORT["upgrade_probe_writes"] = len(samples)
    REPORT["upgrade_probe_failed_writes"] = sum(not s["ok"] for s in samples)
    REPORT["upgrade_probe_failed_statuses"] = sorted({s["status"] for s in samples if not s["ok"]})
    # Standby first, then the switchover, then the old leader: in the play's own order.
    order = [line for line in output.splitlines() if line.startswith("PLAY [")]
    assert [o.split("[", 1)[1].split("]")[0] for o in order] == [
        "Find the leader and the standby nodes", "Upgrade the standby nodes first",
        "Switch over, then upgrade the old leader", "Upgrade the workers, one host at a time"], order
    for name in MACHINES:
        installed = lab.ssh(name, "grep -h UPGRADE_MARKER /opt/luigi-ha/venv/lib/python3*/site-packages/scheduler/"
                                  "__init__.py", check=False).stdout
        assert marker in installed, (name, installed)
    # The running processes are the new code: they were restarted after the reinstall.
    for name in SCHEDULERS:
        started = _service_state(lab, name, "luigi-ha-scheduler.service", "ActiveEnterTimestampMonotonic")
        assert int(started["ActiveEnterTimestampMonotonic"]) > 0
    (new_leader,) = _leaders(lab)
    assert new_leader != old_leader
    epoch_after = json.loads(lab.http(lab.url(new_leader, "/status"))[1])["epoch"]
    REPORT["upgrade_epochs"] = [epoch_before, epoch_after]
    REPORT["leader_after_upgrade"] = new_leader
    # Planned handover only: one switchover (+1 epoch); no crash takeover on the way.
    assert epoch_after == epoch_before + 1, (epoch_before, epoch_after)
    # The only client-visible effect is the switchover itself: a few hundred milliseconds of 503
    # while the new leader is not yet UP in HAProxy (Luigi's client retries those). Bound it.
    ok_times = [s["t"] for s in samples if s["ok"]]
    longest_gap = max(b - a for a, b in zip(ok_times, ok_times[1:], strict=False))
    REPORT["upgrade_longest_write_gap_seconds"] = round(longest_gap, 2)
    assert longest_gap < 2.0, [s for s in samples if not s["ok"]][:20]
    assert {s["status"] for s in samples if not s["ok"]} <= {503}
    # From now on the inventory names the upgraded wheel (the next apply must change nothing).
    group_vars = lab.inventory.parent / "group_vars" / "luigi_ha.yml"
    data = json.loads(group_vars.read_text())
    data["luigi_ha_wheel"] = str(wheel)
    group_vars.write_text(json.dumps(data, indent=2))


def test_second_apply_changes_nothing(lab: Lab) -> None:
    elapsed, recap, output = _playbook(lab, lab.bindir, lab.inventory)
    REPORT["apply_2_seconds"] = round(elapsed, 1)
    REPORT["apply_2_changed"] = {h: c["changed"] for h, c in recap.items()}
    assert all(c["changed"] == 0 for c in recap.values()), (recap, _changed_tasks(output))


def _changed_tasks(output: str) -> list[str]:
    """'TASK name: host' for every task an ansible-playbook run reported as changed."""
    found, task = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.rfind("]")]
        elif line.startswith("changed: ["):
            found.append(f"{task}: {line[10:line.index(']')]}")
    return found
