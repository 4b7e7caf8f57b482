"""The Ansible content is valid, lint-clean at the production profile, and renders the
repository's shared templates (haproxy/*.j2, systemd/*.j2) exactly as deploy/render.py does.

ansible-core and ansible-lint come from ansible/install-controller.sh (a venv, by default
/var/cache/luigi-ha/ansible-venv; LUIGI_HA_ANSIBLE_VENV moves it). When they cannot be installed
(no PyPI access) the tests skip and say so. The real apply over ssh is tests/vm.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from deploy import render_template

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_DIR = REPO / "ansible"
ROLES = ("luigi_ha", "luigi_ha_common", "luigi_ha_scheduler", "luigi_ha_lb", "luigi_ha_worker")
# Role-specific templates (the only .j2 files allowed under ansible/): everything else must be
# rendered from the shared files at the repository root.
ROLE_TEMPLATES = {"roles/luigi_ha_scheduler/templates/luigi-ha.cfg.j2", "roles/luigi_ha_worker/templates/worker.cfg.j2"}


@pytest.fixture(scope="session")
def ansible_bindir() -> Path:
    try:
        result = subprocess.run(["bash", str(ANSIBLE_DIR / "install-controller.sh")], capture_output=True, text=True,
                                timeout=600, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"ansible-core/ansible-lint could not be installed by ansible/install-controller.sh: {exc}")
    return Path(result.stdout.strip().splitlines()[-1])


def _env(bindir: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
    }


@pytest.mark.parametrize("playbook", ["site.yml", "upgrade.yml"])
def test_syntax_check(ansible_bindir: Path, tmp_path: Path, playbook: str) -> None:
    result = subprocess.run(
        [str(ansible_bindir / "ansible-playbook"), "--syntax-check", "-i", "inventory/example.ini", playbook],
        cwd=ANSIBLE_DIR, env=_env(ansible_bindir, tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"playbook: {playbook}" in result.stdout


def test_ansible_lint_offline_production_profile(ansible_bindir: Path, tmp_path: Path) -> None:
    # --offline: no Galaxy, no version check (deploy-feasibility.md section 4).
    result = subprocess.run(
        [str(ansible_bindir / "ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR, env=_env(ansible_bindir, tmp_path), capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"Passed: 0 failure\(s\), 0 warning\(s\)", output), output
    assert "'production'" in output, output


def test_only_builtin_modules_and_shared_templates() -> None:
    """Galaxy is unreachable: only ansible.builtin; and no copies of the shared templates."""
    task_files = list(ANSIBLE_DIR.glob("*.yml")) + list(ANSIBLE_DIR.glob("roles/*/tasks/*.yml")) + list(
        ANSIBLE_DIR.glob("roles/*/handlers/*.yml"))
    modules = set()
    for path in task_files:
        modules |= set(re.findall(r"^\s*-?\s*([a-z_]+\.[a-z_]+\.[a-z_]+):", path.read_text(), re.M))
    assert modules and all(m.startswith("ansible.builtin.") for m in modules), modules
    j2 = {p.relative_to(ANSIBLE_DIR).as_posix() for p in ANSIBLE_DIR.rglob("*.j2")}
    assert j2 == ROLE_TEMPLATES, j2
    shared = set()
    for path in task_files:
        shared |= set(re.findall(r"luigi_ha_repo_root \}\}/([\w./@{} -]+?\.j2|[\w./@-]+\{\{ item \}\}\.j2)",
                                 path.read_text()))
    referenced = {s for s in shared if "{{" not in s}
    for rel in referenced:
        assert (REPO / rel).is_file(), rel
    assert {"haproxy/haproxy.cfg.j2", "haproxy/keepalived.conf.j2", "haproxy/check_haproxy.sh.j2",
            "haproxy/haproxy-db.cfg.j2", "systemd/luigi-ha-scheduler.service.j2"} <= referenced, referenced


def test_roles_have_the_standard_layout() -> None:
    for role in ROLES:
        base = ANSIBLE_DIR / "roles" / role
        assert (base / "defaults" / "main.yml").is_file(), role
        assert (base / "meta" / "main.yml").is_file(), role
        if role != "luigi_ha":  # the cluster-wide defaults role has no tasks of its own
            assert (base / "tasks" / "main.yml").is_file(), role
            assert (base / "handlers" / "main.yml").is_file(), role


# The same variables, rendered by Ansible's template module and by deploy/render.py: byte-equal.
RENDER_CASES = {
    "haproxy/haproxy.cfg.j2": {
        "scheduler_nodes": [{"name": "sched1", "address": "10.9.0.11", "port": 8082},
                            {"name": "sched2", "address": "10.9.0.12", "port": 8082}],
        "frontend_bind": "10.9.0.100:8082",
        "stats_bind": "127.0.0.1:8404",
    },
    "haproxy/keepalived.conf.j2": {"vip": "10.9.0.100", "interface": "eth0", "priority": 150,
                                   "peers": ["10.9.0.12"], "unicast_src_ip": "10.9.0.11", "nopreempt": True},
    "haproxy/check_haproxy.sh.j2": {"stats_bind": "127.0.0.1:8404"},
    "haproxy/haproxy-db.cfg.j2": {
        "db_nodes": [{"name": "db1", "address": "10.9.0.31", "port": 5432, "check_port": 8008},
                     {"name": "db2", "address": "10.9.0.32", "port": 5432, "check_port": 8008}],
        "db_bind": "127.0.0.1:5433",
    },
    "systemd/haproxy.service.d/luigi-ha.conf.j2": {"haproxy_extra_configs": ["/etc/haproxy/haproxy-db.cfg"]},
    "systemd/luigi-ha-scheduler.service.j2": {"scheduler_watchdog_sec": "8s", "scheduler_environment": {"TZ": "UTC"}},
    "systemd/luigi-ha-worker@.service.j2": {"luigi_ha_config": "/etc/luigi-ha/worker.cfg",
                                            "worker_environment_file": "/etc/luigi-ha/worker.env"},
    "systemd/luigi-ha-run@.service.j2": {"luigi_ha_config": "/etc/luigi-ha/worker.cfg"},
    "systemd/luigi-ha-run@.timer.j2": {"run_on_calendar": "*-*-* 02:00:00 UTC"},
}


@pytest.mark.parametrize("template", sorted(RENDER_CASES))
def test_ansible_renders_the_shared_templates_like_deploy_render(
    ansible_bindir: Path, tmp_path: Path, template: str
) -> None:
    variables = {**RENDER_CASES[template], "ansible_managed": "Managed by the test"}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    dest = tmp_path / "rendered"
    result = subprocess.run(
        [str(ansible_bindir / "ansible"), "localhost", "-c", "local", "-i", "localhost,", "-m",
         "ansible.builtin.template", "-a", f"src={REPO / template} dest={dest}", "-e", f"@{tmp_path / 'vars.json'}",
         "-e", f"ansible_python_interpreter={ansible_bindir / 'python'}"],
        cwd=tmp_path, env=_env(ansible_bindir, tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert dest.read_text() == render_template(template, **variables)
