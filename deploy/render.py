"""Render the deployment templates (haproxy/*.j2, systemd/*.j2) exactly as Ansible would.

The ``.j2`` files are the single source of truth: Ansible's ``template:`` module renders them on
real hosts and the tests render them here. So this module must not add anything Ansible lacks:

* the Jinja2 settings of Ansible's template module: ``trim_blocks=True``, ``lstrip_blocks=False``,
  no autoescaping, ``\\n`` newlines, the template's trailing newline kept;
* no custom filters, tests, globals or extensions: only what plain Jinja2 ships;
* :class:`jinja2.StrictUndefined`, like Ansible: a variable used without ``| default(...)``
  raises instead of silently rendering as an empty string (``default()`` works with it).

Every variable has its default inside the template, so ``render_template(path)`` with no
variables renders the documented defaults.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

#: The repository root: template paths are relative to it ("haproxy/haproxy.cfg.j2").
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Every template this project ships, relative to the repository root.
HAPROXY_CFG = "haproxy/haproxy.cfg.j2"
HAPROXY_DB_CFG = "haproxy/haproxy-db.cfg.j2"
KEEPALIVED_CONF = "haproxy/keepalived.conf.j2"
CHECK_HAPROXY = "haproxy/check_haproxy.sh.j2"
SYSTEMD_DIR = "systemd"
UNIT_TEMPLATES = (
    "luigi-ha-scheduler.service",
    "luigi-ha-worker@.service",
    "luigi-ha-run@.service",
    "luigi-ha-run@.timer",
    "haproxy.service.d/luigi-ha.conf",
    "keepalived.service.d/luigi-ha.conf",
)


@lru_cache(maxsize=4)
def environment(root: str | os.PathLike[str] = REPO_ROOT) -> jinja2.Environment:
    """The Jinja2 environment Ansible's template module would use, loading from ``root``."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        trim_blocks=True,
        lstrip_blocks=False,
        keep_trailing_newline=True,
        newline_sequence="\n",
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )


def _template_name(relative_path: str) -> str:
    path = Path(relative_path)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"template path must be relative to the repository root: {relative_path!r}")
    if path.suffix != ".j2":
        raise ValueError(f"template path must end in .j2: {relative_path!r}")
    return path.as_posix()


def render_template(relative_path: str, /, **variables: Any) -> str:
    """Render ``relative_path`` (e.g. ``"haproxy/haproxy.cfg.j2"``) with ``variables``."""
    return environment().get_template(_template_name(relative_path)).render(**variables)


def render_haproxy_cfg(**variables: Any) -> str:
    """haproxy.cfg for the scheduler nodes (see the variable list at the top of the template)."""
    return render_template(HAPROXY_CFG, **variables)


def render_haproxy_db_cfg(**variables: Any) -> str:
    """The database listener (Patroni's ``GET /primary`` or a MariaDB primary), a second haproxy file."""
    return render_template(HAPROXY_DB_CFG, **variables)


def render_keepalived_conf(**variables: Any) -> str:
    """keepalived.conf carrying the VIP between the HAProxy hosts."""
    return render_template(KEEPALIVED_CONF, **variables)


def render_check_haproxy(**variables: Any) -> str:
    """The vrrp_script keepalived runs to decide whether the local HAProxy is alive."""
    return render_template(CHECK_HAPROXY, **variables)


def unit_template(name: str) -> str:
    """The template path for a unit name; instance names map to their template.

    ``luigi-ha-run@daily.timer`` -> ``systemd/luigi-ha-run@.timer.j2``.
    """
    if name.endswith(".j2"):
        name = name[: -len(".j2")]
    base = name
    if "@" in name and "/" not in name:
        prefix, _, rest = name.partition("@")
        suffix = rest[rest.rfind(".") :] if "." in rest else ""
        base = f"{prefix}@{suffix}"
    if base not in UNIT_TEMPLATES:
        raise ValueError(f"no unit template for {name!r}; known: {', '.join(UNIT_TEMPLATES)}")
    return f"{SYSTEMD_DIR}/{base}.j2"


def render_unit(name: str, /, **variables: Any) -> str:
    """Render a systemd unit or drop-in by name, e.g. ``render_unit("luigi-ha-scheduler.service")``."""
    return render_template(unit_template(name), **variables)


def write_rendered(
    dest_dir: str | os.PathLike[str],
    relative_path: str,
    /,
    *,
    dest_name: str | None = None,
    mode: int | None = None,
    **variables: Any,
) -> Path:
    """Render ``relative_path`` into ``dest_dir`` and return the written file's path.

    The file is named ``dest_name`` (which may contain sub-directories, e.g.
    ``haproxy.service.d/luigi-ha.conf``) or, by default, the template's path below its top
    directory without ``.j2`` (``systemd/luigi-ha-run@.timer.j2`` -> ``luigi-ha-run@.timer``).
    """
    template = _template_name(relative_path)
    if dest_name is None:
        dest_name = Path(*Path(template).parts[1:]).as_posix()[: -len(".j2")]
    dest = Path(dest_dir) / dest_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(render_template(template, **variables), encoding="utf-8")
    if mode is not None:
        dest.chmod(mode)
    return dest


def write_units(
    dest_dir: str | os.PathLike[str],
    names: Iterable[str],
    variables: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Render several units (instance names allowed) into ``dest_dir``; returns their paths."""
    return [write_rendered(dest_dir, unit_template(name), dest_name=name, **dict(variables or {})) for name in names]
