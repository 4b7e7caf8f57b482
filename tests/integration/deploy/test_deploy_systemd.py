"""`systemd-analyze verify` accepts every rendered unit and drop-in with EMPTY stderr (systemd
exits 0 on unknown keys and bad values and only warns, see deploy-feasibility.md section 3), and
the daily timer's calendar expression elapses at 02:00 UTC."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy import render_unit, write_rendered, write_units
from deploy.render import unit_template

UNITS = [
    "luigi-ha-scheduler.service",
    "luigi-ha-worker@q1.service",
    "luigi-ha-run@daily.service",
    "luigi-ha-run@daily.timer",
]


def _real_executable() -> str:
    """ExecStart must name an executable file: the installed console script, or /bin/true."""
    return shutil.which("luigi-ha") or "/bin/true"


def _analyze_verify(systemd_analyze_bin: str, unit_dir: Path, name: str):
    """`systemd-analyze verify ./NAME` run from the unit's directory (a path with a unit suffix)."""
    return subprocess.run(
        [systemd_analyze_bin, "verify", f"./{name}"], cwd=unit_dir, capture_output=True, text=True, timeout=60
    )


def _verify(systemd_analyze_bin: str, unit_dir: Path, name: str) -> None:
    result = _analyze_verify(systemd_analyze_bin, unit_dir, name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_units_verify_cleanly(systemd_analyze_bin: str, tmp_path: Path, name: str) -> None:
    # The timer needs its service next to it; render them all.
    write_units(tmp_path, UNITS, {"luigi_ha_bin": _real_executable()})
    _verify(systemd_analyze_bin, tmp_path, name)


def test_units_verify_cleanly_with_every_knob_turned(systemd_analyze_bin: str, tmp_path: Path) -> None:
    write_units(
        tmp_path,
        UNITS,
        {
            "luigi_ha_bin": _real_executable(),
            "luigi_ha_config": "/etc/luigi-ha/prod.cfg",
            "luigi_ha_user": "svc-luigi",
            "luigi_ha_group": "svc-luigi",
            "luigi_ha_state_directory": "luigi-ha-prod",
            "scheduler_watchdog_sec": "8s",
            "scheduler_stop_timeout": "20s",
            "scheduler_environment": {"TZ": "UTC"},
            "worker_watchdog_sec": "2min",
            "worker_stop_timeout": "4h",
            "worker_environment": {"AWS_REGION": "eu-west-1"},
            "worker_environment_file": "/etc/luigi-ha/worker.env",
            "run_timeout": "20h",
            "run_extra_args": "--workers 4",
            "run_on_calendar": "Mon..Fri *-*-* 03:30:00 UTC",
            "run_randomized_delay": "5min",
            "run_accuracy": "1min",
        },
    )
    for name in UNITS:
        _verify(systemd_analyze_bin, tmp_path, name)


@pytest.mark.parametrize("service", ["haproxy.service", "keepalived.service"])
def test_dropins_verify_cleanly(systemd_analyze_bin: str, tmp_path: Path, service: str) -> None:
    """The drop-ins on top of Debian's own units (verify reads NAME.d/ next to the unit file)."""
    shipped = [Path("/lib/systemd/system") / s for s in ("haproxy.service", "keepalived.service")]
    missing = [str(p) for p in shipped if not p.exists()]
    if missing:
        pytest.skip(f"Debian's unit files are not installed: {', '.join(missing)} (packages haproxy, keepalived)")
    for p in shipped:
        shutil.copy(p, tmp_path / p.name)
    dropin = f"{service}.d/luigi-ha.conf"
    write_rendered(tmp_path, unit_template(dropin), dest_name=dropin)
    _verify(systemd_analyze_bin, tmp_path, service)
    # ... and the drop-in really is read (a bad key in it must be reported).
    (tmp_path / dropin).write_text((tmp_path / dropin).read_text() + "NotAKey=1\n")
    result = _analyze_verify(systemd_analyze_bin, tmp_path, service)
    assert "NotAKey" in result.stderr


def test_verify_reports_a_typo_on_stderr(systemd_analyze_bin: str, tmp_path: Path) -> None:
    """Negative control for the empty-stderr assertion: rc stays 0, the warning is on stderr."""
    unit = tmp_path / "luigi-ha-scheduler.service"
    unit.write_text(
        render_unit("luigi-ha-scheduler.service", luigi_ha_bin=_real_executable()).replace(
            "Type=notify", "Type=notifyy"
        )
    )
    result = _analyze_verify(systemd_analyze_bin, tmp_path, unit.name)
    assert result.returncode == 0
    assert "notifyy" in result.stderr


def test_daily_timer_elapses_at_two_utc(systemd_analyze_bin: str) -> None:
    timer = render_unit("luigi-ha-run@.timer")
    on_calendar = re.search(r"^OnCalendar=(.+)$", timer, re.M).group(1)
    assert on_calendar == "*-*-* 02:00:00 UTC"
    result = subprocess.run(
        [systemd_analyze_bin, "calendar", "--iterations=2", on_calendar],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    elapses = re.findall(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) UTC", result.stdout)
    assert len(elapses) == 2, result.stdout
    assert all(t == "02:00:00" for _, t in elapses), result.stdout
    print(f"\n[systemd calendar] {on_calendar!r}: next elapses {elapses}")


@pytest.mark.parametrize("name", ["luigi-ha-scheduler.service", "luigi-ha-worker@q1.service",
                                  "luigi-ha-run@daily.service"])
def test_units_expose_at_most_2_0_to_systemd_analyze_security(systemd_analyze_bin: str, tmp_path: Path,
                                                                name: str) -> None:
    write_units(tmp_path, UNITS, {"luigi_ha_bin": _real_executable()})
    result = subprocess.run([systemd_analyze_bin, "security", "--offline=yes", f"./{name}"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout
