"""Rendering of the deployment templates: defaults, variables, and Ansible compatibility."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import jinja2
import jinja2.meta
import jinja2.sandbox
import pytest

from deploy import (
    CHECK_HAPROXY,
    HAPROXY_CFG,
    KEEPALIVED_CONF,
    REPO_ROOT,
    UNIT_TEMPLATES,
    render_check_haproxy,
    render_haproxy_cfg,
    render_keepalived_conf,
    render_template,
    render_unit,
    unit_template,
    write_rendered,
    write_units,
)

ALL_TEMPLATES = [HAPROXY_CFG, KEEPALIVED_CONF, CHECK_HAPROXY, *(f"systemd/{u}.j2" for u in UNIT_TEMPLATES)]


def _section(cfg: str, header: str) -> list[str]:
    """The lines of one haproxy.cfg section (``frontend stats``), comments dropped."""
    lines, inside = [], False
    for line in cfg.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            inside = line.strip() == header
            continue
        if inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


def _directives(cfg: str) -> list[str]:
    return [line.strip() for line in cfg.splitlines() if line.strip() and not line.strip().startswith("#")]


def _unit_values(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{re.escape(key)}=(.*)$", unit, re.M)


# --- every template ----------------------------------------------------------------------------


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_every_template_renders_with_defaults_only(template: str) -> None:
    """StrictUndefined, like Ansible: a variable without `| default(...)` would raise here."""
    out = render_template(template)
    assert out.endswith("\n") and not out.endswith("\n\n\n")
    assert "{{" not in out and "{%" not in out


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_every_variable_is_documented_in_the_template_header(template: str) -> None:
    source = (REPO_ROOT / template).read_text()
    env = jinja2.Environment()
    variables = jinja2.meta.find_undeclared_variables(env.parse(source)) - {"ansible_managed"}
    assert variables, template
    header = source[: source.find("#}") if source.startswith("{#") else source.find("\n{%")]
    undocumented = sorted(v for v in variables if v not in header)
    assert undocumented == [], f"{template}: variables missing from the header comment: {undocumented}"


@pytest.mark.parametrize("template", ALL_TEMPLATES)
@pytest.mark.parametrize(
    "env_class", [jinja2.Environment, jinja2.sandbox.ImmutableSandboxedEnvironment], ids=["plain", "sandboxed"]
)
def test_plain_jinja2_renders_the_same(template: str, env_class: type[jinja2.Environment]) -> None:
    """No Python-side helpers: a vanilla Environment with Ansible's settings gives identical output,
    also sandboxed (newer Ansible renders templates in an immutable sandbox)."""
    env = env_class(loader=jinja2.FileSystemLoader(str(REPO_ROOT)), trim_blocks=True, keep_trailing_newline=True)
    variables = {"scheduler_environment": {"A": "1"}, "worker_environment": {"B": "2"}, "stats_bind": "[::1]:9"}
    assert env.get_template(template).render(**variables) == render_template(template, **variables)


def test_ansible_managed_header_is_used_when_given() -> None:
    assert render_haproxy_cfg(ansible_managed="Ansible managed").splitlines()[0] == "# Ansible managed"


def test_template_paths_are_checked() -> None:
    for bad in ("/etc/passwd.j2", "../x.j2", "haproxy/haproxy.cfg"):
        with pytest.raises(ValueError):
            render_template(bad)
    with pytest.raises(jinja2.TemplateNotFound):
        render_template("haproxy/nope.j2")


# --- haproxy.cfg -------------------------------------------------------------------------------


def test_haproxy_defaults() -> None:
    cfg = render_haproxy_cfg()
    d = _directives(cfg)
    backend = _section(cfg, "backend luigi_ha_schedulers")
    assert "balance first" in backend
    assert "option httpchk" in backend
    assert "http-check send meth GET uri /leader" in backend
    assert "http-check expect status 200" in backend
    assert "default-server check inter 500ms fastinter 250ms downinter 250ms fall 2 rise 1" in backend
    assert [line for line in backend if line.startswith("server ")] == [
        "server sched1 10.0.0.11:8082",
        "server sched2 10.0.0.12:8082",
    ]
    # Retries: only what was certainly not applied.
    assert "retry-on conn-failure 503" in d
    assert not any("empty-response" in line or "response-timeout" in line for line in d if line.startswith("retry-on"))
    assert "option redispatch 1" in d and "retries 3" in d
    assert "option http-buffer-request" in d and "option httpclose" in d
    assert "timeout connect 250ms" in d and "timeout server 15s" in d and "timeout check 1s" in d
    assert _section(cfg, "frontend luigi_ha")[0] == "bind 10.0.0.100:8082"
    assert not any("ssl" in line for line in d)
    assert not any("on-marked-down" in line for line in d)
    assert "chroot /var/lib/haproxy" in d and "user haproxy" in d
    assert "stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners" in d


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_haproxy_lists_every_node_in_order(n: int) -> None:
    nodes = [{"name": f"node{i}", "address": f"192.168.1.{i}", "port": 9000 + i} for i in range(n)]
    backend = _section(render_haproxy_cfg(scheduler_nodes=nodes), "backend luigi_ha_schedulers")
    assert [line for line in backend if line.startswith("server ")] == [
        f"server node{i} 192.168.1.{i}:{9000 + i}" for i in range(n)
    ]


def test_haproxy_node_port_defaults_to_8082() -> None:
    backend = _section(
        render_haproxy_cfg(scheduler_nodes=[{"name": "a", "address": "h1"}]), "backend luigi_ha_schedulers"
    )
    assert "server a h1:8082" in backend


def test_haproxy_tls_switches_the_bind_line() -> None:
    cfg = render_haproxy_cfg(frontend_bind="10.1.2.3:443", tls_cert="/etc/haproxy/certs/luigi-ha.pem")
    frontend = _section(cfg, "frontend luigi_ha")
    assert frontend[0] == "bind 10.1.2.3:443 ssl crt /etc/haproxy/certs/luigi-ha.pem alpn http/1.1"
    assert "http-request set-header X-Forwarded-Proto https" in frontend
    assert "ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets" in _section(cfg, "global")
    # The stats listener stays plain HTTP on loopback.
    assert _section(cfg, "frontend stats")[0] == "bind 127.0.0.1:8404"


@pytest.mark.parametrize("stats_bind", [None, "127.0.0.1:9999", "[::1]:8404"])
def test_haproxy_stats_bind_only_on_loopback(stats_bind: str | None) -> None:
    kwargs = {"stats_bind": stats_bind} if stats_bind else {}
    cfg = render_haproxy_cfg(frontend_bind="10.0.0.100:8082", **kwargs)
    stats = _section(cfg, "frontend stats")
    binds = [line.split()[1] for line in stats if line.startswith("bind ")]
    assert len(binds) == 1
    host = binds[0].rsplit(":", 1)[0].strip("[]")
    assert ipaddress.ip_address(host).is_loopback
    assert "stats enable" in stats and "monitor-uri /healthz" in stats
    # The only other listener is the frontend workers use.
    all_binds = [line for line in _directives(cfg) if line.startswith("bind ")]
    assert all_binds == ["bind 10.0.0.100:8082", f"bind {binds[0]}"]


def test_haproxy_variables_reach_the_config() -> None:
    cfg = render_haproxy_cfg(
        check_inter="1s",
        check_fastinter="300ms",
        check_downinter="200ms",
        check_fall=3,
        check_rise=2,
        timeout_check="2s",
        timeout_connect="1s",
        timeout_server="30s",
        retries=2,
        retry_on="conn-failure empty-response 503",
        check_method="HEAD",
        check_uri="/leader?x=1",
        on_marked_down="shutdown-sessions",
        client_keepalive=True,
        backend_name="sched",
        stats_socket="",
        haproxy_chroot="",
        haproxy_user="",
        haproxy_group="",
        metrics_uri="",
        log_target="stderr format short",
        haproxy_maxconn=100,
    )
    d = _directives(cfg)
    assert (
        "default-server check inter 1s fastinter 300ms downinter 200ms fall 3 rise 2 on-marked-down shutdown-sessions"
    ) in d
    assert "http-check send meth HEAD uri /leader?x=1" in d
    assert {
        "timeout check 2s",
        "timeout connect 1s",
        "timeout server 30s",
        "retries 2",
        "retry-on conn-failure empty-response 503",
        "option http-server-close",
        "default_backend sched",
        "backend sched",
        "log stderr format short local0",
        "maxconn 100",
    } <= set(d)
    assert "option httpclose" not in d
    assert not any(line.startswith(("chroot", "user ", "group ", "stats socket")) for line in d)
    assert not any("prometheus-exporter" in line for line in d)


# --- keepalived --------------------------------------------------------------------------------


def test_keepalived_defaults() -> None:
    conf = render_keepalived_conf()
    d = _directives(conf)
    for expected in (
        "state BACKUP",
        "nopreempt",
        "interface eth0",
        "virtual_router_id 51",
        "priority 100",
        "advert_int 1",
        "10.0.0.100/24 dev eth0",
        "enable_script_security",
        "script_user keepalived_script",
        "vrrp_garp_master_refresh 60",
        "weight 0",
        "chk_haproxy",
        'script "/etc/keepalived/check_haproxy.sh"',
        "fall 2",
        "rise 1",
    ):
        assert expected in d, expected
    assert not any(
        line.startswith(("unicast_peer", "unicast_src_ip", "authentication", "notify", "preempt_delay")) for line in d
    )
    assert conf.count("{") == conf.count("}")


def test_keepalived_unicast_peers_and_priorities() -> None:
    lb1 = render_keepalived_conf(
        priority=150,
        peers=["10.0.0.2", "10.0.0.3"],
        unicast_src_ip="10.0.0.1",
        interface="ens3",
        vip="10.0.0.100",
        vip_prefix=22,
        virtual_router_id=42,
    )
    d = _directives(lb1)
    assert "priority 150" in d and "unicast_src_ip 10.0.0.1" in d and "virtual_router_id 42" in d
    block = lb1[lb1.index("unicast_peer {") : lb1.index("}", lb1.index("unicast_peer {"))]
    assert _directives(block)[1:] == ["10.0.0.2", "10.0.0.3"]
    assert "10.0.0.100/22 dev ens3" in d and "interface ens3" in d


def test_keepalived_auth_is_cut_to_vrrp_limit_and_preempt_delay() -> None:
    conf = render_keepalived_conf(
        auth_pass="0123456789", nopreempt=False, preempt_delay=30, notify_script="/usr/local/bin/notify.sh"
    )
    d = _directives(conf)
    assert "auth_type PASS" in d and "auth_pass 01234567" in d
    assert "nopreempt" not in d and "preempt_delay 30" in d
    assert 'notify "/usr/local/bin/notify.sh"' in d


def test_check_script_probes_the_stats_listener() -> None:
    script = render_check_haproxy(stats_bind="127.0.0.1:9404", haproxy_monitor_uri="/alive")
    assert script.startswith("#!/bin/bash\n")
    assert "/dev/tcp/127.0.0.1/9404" in script and "GET /alive HTTP/1.0" in script
    assert "/dev/tcp/127.0.0.1/8404" in render_check_haproxy()


# --- systemd -----------------------------------------------------------------------------------


def test_scheduler_unit_defaults() -> None:
    unit = render_unit("luigi-ha-scheduler.service")
    assert _unit_values(unit, "ExecStart") == [
        "/opt/luigi-ha/venv/bin/luigi-ha scheduler --config /etc/luigi-ha/luigi-ha.cfg"
    ]
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "10s",
        "Restart": "on-failure",
        "RestartSec": "1",
        "User": "luigi-ha",
        "Group": "luigi-ha",
        "StateDirectory": "luigi-ha",
        "ReadWritePaths": "/var/lib/luigi-ha",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert _unit_values(unit, key) == [value], key


def test_scheduler_unit_variables() -> None:
    unit = render_unit(
        "luigi-ha-scheduler.service",
        luigi_ha_bin="/usr/bin/luigi-ha",
        luigi_ha_config="/etc/x.cfg",
        scheduler_watchdog_sec="7s",
        luigi_ha_state_directory="lh",
        scheduler_environment={"A": "1"},
    )
    assert _unit_values(unit, "ExecStart") == ["/usr/bin/luigi-ha scheduler --config /etc/x.cfg"]
    assert _unit_values(unit, "WatchdogSec") == ["7s"]
    assert _unit_values(unit, "StateDirectory") == ["lh"]
    assert _unit_values(unit, "ReadWritePaths") == ["/var/lib/lh"]
    assert '"A=1"' in _unit_values(unit, "Environment")


def test_worker_unit() -> None:
    unit = render_unit("luigi-ha-worker@.service")
    assert _unit_values(unit, "ExecStart") == [
        "/opt/luigi-ha/venv/bin/luigi-ha worker --config /etc/luigi-ha/luigi-ha.cfg --instance %i"
    ]
    for key, value in {
        "Type": "notify",
        "Restart": "always",
        "KillSignal": "SIGTERM",
        "KillMode": "mixed",
        "TimeoutStopSec": "1h",
        "WatchdogSec": "60s",
    }.items():
        assert _unit_values(unit, key) == [value], key
    assert _unit_values(unit, "MemoryDenyWriteExecute") == ["yes"]
    jit = render_unit("luigi-ha-worker@q.service", worker_allow_jit=True)  # numba and the like
    assert _unit_values(jit, "MemoryDenyWriteExecute") == []
    assert _unit_values(unit, "ReadWritePaths") == ["/var/lib/luigi-ha"]
    assert _unit_values(render_unit("luigi-ha-worker@q.service", worker_read_write_paths=["/data", "/var/lib/x"]),
                        "ReadWritePaths") == ["/data /var/lib/x"]
    assert _unit_values(unit, "LoadCredential") == []
    with_secret = render_unit("luigi-ha-worker@q.service", scheduler_password_file="/etc/luigi-ha/worker.pw")
    assert _unit_values(with_secret, "LoadCredential") == ["scheduler-password:/etc/luigi-ha/worker.pw"]
    assert "Environment=LUIGI_HA_PASSWORD_FILE=%d/scheduler-password" in with_secret
    assert _unit_values(unit, "EnvironmentFile") == []
    assert _unit_values(
        render_unit("luigi-ha-worker@q.service", worker_environment_file="/etc/w.env"), "EnvironmentFile"
    ) == ["/etc/w.env"]


def test_run_service_and_timer() -> None:
    service = render_unit("luigi-ha-run@.service")
    assert _unit_values(service, "Type") == ["oneshot"]
    # No --date: `luigi-ha run` defaults to today in UTC, the day the timer fired.
    assert _unit_values(service, "ExecStart") == [
        "/opt/luigi-ha/venv/bin/luigi-ha run --config /etc/luigi-ha/luigi-ha.cfg --pipeline %i"
    ]
    assert _unit_values(service, "TimeoutStartSec") == ["23h"]
    assert _unit_values(render_unit("luigi-ha-run@.service", run_extra_args="--workers 2"), "ExecStart")[0].endswith(
        "--pipeline %i --workers 2"
    )
    timer = render_unit("luigi-ha-run@.timer")
    for key, value in {
        "OnCalendar": "*-*-* 02:00:00 UTC",
        "Persistent": "true",
        "RandomizedDelaySec": "0",
        "WantedBy": "timers.target",
    }.items():
        assert _unit_values(timer, key) == [value], key
    assert _unit_values(render_unit("luigi-ha-run@.timer", run_randomized_delay="15min"), "RandomizedDelaySec") == [
        "15min"
    ]


def test_dropins() -> None:
    haproxy = render_unit("haproxy.service.d/luigi-ha.conf")
    assert _unit_values(haproxy, "Restart") == ["always"] and _unit_values(haproxy, "StartLimitIntervalSec") == ["0"]
    keepalived = render_unit("keepalived.service.d/luigi-ha.conf")
    assert _unit_values(keepalived, "After") == ["haproxy.service"]
    assert _unit_values(keepalived, "Restart") == ["on-failure"]


@pytest.mark.parametrize(
    ("name", "template"),
    [
        ("luigi-ha-scheduler.service", "systemd/luigi-ha-scheduler.service.j2"),
        ("luigi-ha-worker@.service", "systemd/luigi-ha-worker@.service.j2"),
        ("luigi-ha-worker@queue-a.service", "systemd/luigi-ha-worker@.service.j2"),
        ("luigi-ha-run@daily.timer", "systemd/luigi-ha-run@.timer.j2"),
        ("luigi-ha-run@daily.service.j2", "systemd/luigi-ha-run@.service.j2"),
        ("haproxy.service.d/luigi-ha.conf", "systemd/haproxy.service.d/luigi-ha.conf.j2"),
    ],
)
def test_unit_template_names(name: str, template: str) -> None:
    assert unit_template(name) == template
    assert (REPO_ROOT / template).is_file()


def test_unknown_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="no unit template"):
        unit_template("nginx.service")


def test_write_rendered_and_write_units(tmp_path: Path) -> None:
    script = write_rendered(tmp_path, CHECK_HAPROXY, mode=0o755)
    assert script == tmp_path / "check_haproxy.sh"
    assert script.stat().st_mode & 0o777 == 0o755
    cfg = write_rendered(tmp_path / "etc", HAPROXY_CFG, dest_name="haproxy/haproxy.cfg", frontend_bind="1.2.3.4:80")
    assert cfg == tmp_path / "etc/haproxy/haproxy.cfg" and "bind 1.2.3.4:80" in cfg.read_text()
    paths = write_units(
        tmp_path / "units", ["luigi-ha-run@daily.service", "luigi-ha-run@daily.timer"], {"luigi_ha_bin": "/bin/true"}
    )
    assert [p.name for p in paths] == ["luigi-ha-run@daily.service", "luigi-ha-run@daily.timer"]
    assert "/bin/true run" in paths[0].read_text()


def test_haproxy_sends_the_visualiser_and_the_replica_reads_to_a_caught_up_standby() -> None:
    from scheduler.reads import REPLICA_READS

    cfg = render_haproxy_cfg()
    frontend = _section(cfg, "frontend luigi_ha")
    read_acl = next(line for line in frontend if line.startswith("acl luigi_ha_read path "))
    routed = {path.removeprefix("/api/") for path in read_acl.split()[3:]}
    # The node's own names of the streamed listing are not on the wire.
    assert routed == REPLICA_READS - {"task_list_chunks", "status_counts"}
    assert "acl luigi_ha_visualiser path / /static /static/ path_beg /static/" in frontend
    assert "use_backend luigi_ha_replicas if luigi_ha_visualiser || luigi_ha_read" in frontend
    assert frontend[-1] == "default_backend luigi_ha_schedulers", "everything else goes to the leader"
    replicas = _section(cfg, "backend luigi_ha_replicas")
    assert "http-check send meth GET uri /replica" in replicas
    assert [line for line in replicas if line.startswith("server ")] == [
        "server sched1 10.0.0.11:8082 check inter 500ms fastinter 250ms downinter 250ms fall 2 rise 1",
        "server sched2 10.0.0.12:8082 check inter 500ms fastinter 250ms downinter 250ms fall 2 rise 1",
        # the fallback: the leader, as the leader backend's /leader check sees it
        "server sched1_leader 10.0.0.11:8082 backup track luigi_ha_schedulers/sched1",
        "server sched2_leader 10.0.0.12:8082 backup track luigi_ha_schedulers/sched2",
    ]


def test_haproxy_replica_routing_can_be_turned_off_and_carries_tls_to_the_standbys() -> None:
    off = render_haproxy_cfg(replica_routing=False)
    assert "luigi_ha_replicas" not in off and "/replica" not in off
    tls = _section(render_haproxy_cfg(backend_ca_file="/etc/ca.pem"), "backend luigi_ha_replicas")
    assert all(line.endswith("ssl verify required ca-file /etc/ca.pem") for line in tls if line.startswith("server "))
