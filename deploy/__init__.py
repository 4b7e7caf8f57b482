"""Deployment helpers: render the HAProxy, keepalived and systemd templates like Ansible does."""

from deploy.render import (
    CHECK_HAPROXY,
    HAPROXY_CFG,
    HAPROXY_DB_CFG,
    KEEPALIVED_CONF,
    REPO_ROOT,
    UNIT_TEMPLATES,
    environment,
    render_check_haproxy,
    render_haproxy_cfg,
    render_haproxy_db_cfg,
    render_keepalived_conf,
    render_template,
    render_unit,
    unit_template,
    write_rendered,
    write_units,
)

__all__ = [
    "CHECK_HAPROXY",
    "HAPROXY_CFG",
    "HAPROXY_DB_CFG",
    "KEEPALIVED_CONF",
    "REPO_ROOT",
    "UNIT_TEMPLATES",
    "environment",
    "render_check_haproxy",
    "render_haproxy_cfg",
    "render_haproxy_db_cfg",
    "render_keepalived_conf",
    "render_template",
    "render_unit",
    "unit_template",
    "write_rendered",
    "write_units",
]
