"""Node configuration: one INI file the way Luigi users write ``luigid.cfg``, then env, then flags.

A production ``luigid.cfg`` already has ``[scheduler]`` and ``[resources]`` sections and often a
``[task_history] db_connection``; luigi-ha reads the same file shape and adds three sections of
its own:

``[database]``  ``connection`` (SQLAlchemy URL: ``postgresql://``, ``mysql://``, ``sqlite:///``),
                ``auto_upgrade`` (run Alembic migrations at start).
``[server]``    ``host``, ``port``, ``node_id``, ``max_body_bytes``, ``prune_interval``,
                ``advertise_url``.
``[ha]``        ``lease_ttl``, ``renew_interval``, ``renew_deadline``, ``follow`` (a standby keeps a
                read copy and answers reads from it; default on), ``replica_max_lag``
                (seconds; a copy further behind answers ``/replica`` with 503; default 5).
``[logging]``   ``level``, ``format`` (``json`` or ``console``).
``[auth]``      ``users_file`` (written by ``luigi-ha auth add-user``): set, every route but
                ``/leader`` and ``/healthz`` needs HTTP Basic credentials (scheduler/auth.py).
                Unset, the node listens on 127.0.0.1 unless ``[server] host`` says otherwise.
``[server]``    ``tls_cert``, ``tls_key``: PEM files; set, the node serves HTTPS.

Precedence, lowest first: built-in defaults < config file < ``LUIGI_HA_<SECTION>_<KEY>``
environment variables < command-line flags. ``LUIGI_HA_DB_URL`` is accepted as a short alias of
``LUIGI_HA_DATABASE_CONNECTION`` because that is what people reach for in a container.
"""

from __future__ import annotations

import configparser
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lease import LeaseTimings, redact_url

DEFAULT_DB_URL = "sqlite:///luigi-ha.db"
DEFAULT_PORT = 8082
DEFAULT_MAX_BODY = 10 * 1024 * 1024

_LUIGI_HA_SECTIONS = ("database", "server", "ha", "logging", "auth")


class ConfigError(ValueError):
    """A configuration value is missing, malformed or inconsistent; the message says which."""


@dataclass(frozen=True)
class NodeConfig:
    """Everything one scheduler node needs to start, already parsed and validated."""

    db_url: str = DEFAULT_DB_URL
    auto_upgrade: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    node_id: str = field(default_factory=socket.gethostname)
    advertise_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    prune_interval: float = 60.0
    #: Task history (``lh_task_events``) older than this is deleted by the leader; 0 keeps it all.
    history_retention_days: float = 30.0
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    scheduler: dict[str, str] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)
    log_level: str = "INFO"
    follow: bool = True
    replica_max_lag: float = 5.0
    log_format: str = "json"
    lease_name: str = "scheduler"
    users_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: The INI file this came from: luigi's own e-mail settings ([email], [smtp], [batch_email])
    #: are read from it through luigi's configuration, as luigid reads them from luigid.cfg.
    config_path: str | None = None

    @property
    def public_url(self) -> str:
        """The URL other nodes and operators should use to reach this node."""
        if self.advertise_url:
            return self.advertise_url
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        """A loggable view of the configuration: the database password is never included."""
        return {
            "db_url": redact_url(self.db_url),
            "node_id": self.node_id,
            "listen": f"{self.host}:{self.port}",
            "lease_ttl": self.timings.ttl,
            "renew_interval": self.timings.renew_interval,
            "renew_deadline": self.timings.renew_deadline,
            "prune_interval": self.prune_interval,
            "history_retention_days": self.history_retention_days,
            "scheduler": dict(self.scheduler),
            "resources": dict(self.resources),
            "authentication": "on" if self.users_file else "off",
            "tls": bool(self.tls_cert),
        }


def read_ini(path: str | os.PathLike[str] | None) -> configparser.ConfigParser:
    """Read a luigi.cfg-style INI file (``None``: an empty one); errors name the file.

    ``; comments`` may follow a value (after whitespace), as in the README's examples; no
    ``%`` interpolation, because database passwords may contain ``%``.
    """
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            parser.read(p, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError(f"config file {p} is not valid INI: {exc}") from exc
    return parser


def _norm(key: str) -> str:
    """Luigi accepts both ``retry_delay`` and ``retry-delay``; so do we."""
    return key.strip().lower().replace("-", "_")


def _section(parser: configparser.ConfigParser, name: str) -> dict[str, str]:
    if not parser.has_section(name):
        return {}
    return {_norm(k): v for k, v in parser.items(name)}


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {s: {} for s in (*_LUIGI_HA_SECTIONS, "scheduler")}
    if "LUIGI_HA_DB_URL" in environ:
        out["database"]["connection"] = environ["LUIGI_HA_DB_URL"]
    for key, value in environ.items():
        if not key.startswith("LUIGI_HA_"):
            continue
        rest = key[len("LUIGI_HA_") :].lower()
        for section in out:
            if rest.startswith(section + "_"):
                out[section][rest[len(section) + 1 :]] = value
    return out


def _as_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}: expected true/false, got {value!r}")


def _as_number(key: str, value: str, kind: type = float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a {kind.__name__}, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return number


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    **flags: Any,
) -> NodeConfig:
    """Build a :class:`NodeConfig` from file, environment and flags (``None`` flags are ignored).

    Flags use the names ``db_url``, ``host``, ``port``, ``node_id``, ``lease_ttl``,
    ``renew_interval``, ``renew_deadline``. Raises :class:`ConfigError` naming the bad key.
    """
    environ = dict(os.environ if environ is None else environ)
    if path is None and environ.get("LUIGI_HA_CONFIG"):
        path = environ["LUIGI_HA_CONFIG"]
    parser = read_ini(path)
    sections = {name: _section(parser, name) for name in (*_LUIGI_HA_SECTIONS, "scheduler", "resources")}
    # ``[task_history] db_connection`` is where many luigid.cfg files keep their database URL.
    if "connection" not in sections["database"]:
        history = _section(parser, "task_history")
        if "db_connection" in history:
            sections["database"]["connection"] = history["db_connection"]
    for section, values in _env_overrides(environ).items():
        sections[section].update(values)

    db, server, ha, logging_, auth = (sections[s] for s in _LUIGI_HA_SECTIONS)
    flag_map = {
        "db_url": (db, "connection"),
        "host": (server, "host"),
        "port": (server, "port"),
        "node_id": (server, "node_id"),
        "lease_ttl": (ha, "lease_ttl"),
        "renew_interval": (ha, "renew_interval"),
        "renew_deadline": (ha, "renew_deadline"),
    }
    for flag, value in flags.items():
        if value is None:
            continue
        if flag not in flag_map:
            raise ConfigError(f"unknown option {flag}")
        target, key = flag_map[flag]
        target[key] = str(value)

    resources: dict[str, int] = {}
    for name, value in sections["resources"].items():
        resources[name] = _as_number(f"[resources] {name}", value, int)

    ttl = _as_number("[ha] lease_ttl", ha["lease_ttl"]) if "lease_ttl" in ha else 5.0
    renew_interval = _as_number("[ha] renew_interval", ha["renew_interval"]) if "renew_interval" in ha else None
    renew_deadline = _as_number("[ha] renew_deadline", ha["renew_deadline"]) if "renew_deadline" in ha else None
    try:
        timings = LeaseTimings(ttl=ttl, renew_interval=renew_interval, renew_deadline=renew_deadline).validate()
    except ValueError as exc:
        raise ConfigError(f"[ha] {exc}") from exc

    log_format = logging_.get("format", "json").lower()
    if log_format not in ("json", "console"):
        raise ConfigError(f"[logging] format: expected json or console, got {log_format!r}")

    kwargs: dict[str, Any] = {
        "db_url": db.get("connection", DEFAULT_DB_URL),
        "auto_upgrade": _as_bool("[database] auto_upgrade", db.get("auto_upgrade", "true")),
        # Open to the network only when authentication is on or the operator names a host.
        "host": server.get("host", "0.0.0.0" if auth.get("users_file") else "127.0.0.1"),
        "port": _as_number("[server] port", server.get("port", str(DEFAULT_PORT)), int),
        "advertise_url": server.get("advertise_url") or None,
        "max_body_bytes": _as_number(
            "[server] max_body_bytes", server.get("max_body_bytes", str(DEFAULT_MAX_BODY)), int
        ),
        "prune_interval": _as_number("[server] prune_interval", server.get("prune_interval", "60")),
        "history_retention_days": _as_number(
            "[server] history_retention_days", server.get("history_retention_days", "30")
        ),
        "timings": timings,
        "follow": _as_bool("[ha] follow", ha.get("follow", "true")),
        "replica_max_lag": _as_number("[ha] replica_max_lag", ha.get("replica_max_lag", "5")),
        "scheduler": dict(sections["scheduler"]),
        "resources": resources,
        "log_level": logging_.get("level", "INFO").upper(),
        "log_format": log_format,
        "users_file": auth.get("users_file") or None,
        "tls_cert": server.get("tls_cert") or None,
        "tls_key": server.get("tls_key") or None,
    }
    if server.get("node_id"):
        kwargs["node_id"] = server["node_id"]
    if bool(kwargs["tls_cert"]) != bool(kwargs["tls_key"]):
        raise ConfigError("[server] tls_cert and tls_key: set both or neither")
    if kwargs["prune_interval"] <= 0:
        raise ConfigError("[server] prune_interval: must be positive")
    if path is not None:
        kwargs["config_path"] = str(path)
    return NodeConfig(**kwargs)
