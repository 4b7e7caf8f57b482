"""Assemble and run one scheduler node process: config -> database -> lease -> node -> HTTP.

Start-up refuses to run on a database it cannot reach or whose schema is not current (unless
``auto_upgrade``), with a message that says what to do; that is better than a node that starts,
looks healthy and then answers 503 forever.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from typing import Any

import luigi.configuration
from aiohttp import web

from lease import LeaderLease, make_holder_id, redact_url
from lease import create_engine as create_db_engine
from scheduler.auth import Authenticator
from scheduler.config import NodeConfig
from scheduler.core import Scheduler, SchedulerSettings
from scheduler.csrf import same_origin_writes
from scheduler.http import build_app
from scheduler.http_errors import JsonErrorRunner
from scheduler.logs import configure_logging
from scheduler.mail import Mailer
from scheduler.metrics import NodeMetrics
from scheduler.node import Node
from scheduler.store import Store
from scheduler.store.tables import FENCE_FUNCTION
from scheduler.users import UsersFileError, load_users


class StartupError(RuntimeError):
    """The node cannot start; the message is meant for the operator as it is."""


def open_store(config: NodeConfig, *, upgrade: bool | None = None) -> Store:
    """Connect, check reachability, and bring the schema to head when allowed."""
    engine = create_db_engine(config.db_url)
    store = Store(engine)
    if not store.ping():
        raise StartupError(
            f"cannot reach the database at {redact_url(config.db_url)}: check [database] connection "
            "(or LUIGI_HA_DB_URL / --db), that the server is up and that this host may connect"
        )
    if upgrade if upgrade is not None else config.auto_upgrade:
        store.upgrade()
    elif not store.is_current():
        raise StartupError(
            f"the database schema at {redact_url(config.db_url)} is not current: run `luigi-ha db upgrade` "
            "or set [database] auto_upgrade = true"
        )
    return store


def scheduler_settings(config: NodeConfig) -> SchedulerSettings:
    """Luigi's ``[scheduler]`` keys from our own config file, validated at start."""
    try:
        return SchedulerSettings.from_mapping(config.scheduler, resources=config.resources)
    except ValueError as exc:
        raise StartupError(f"[scheduler] {exc}") from exc


def access_guards(config: NodeConfig, node: Node, log: Any) -> list[Any]:
    """The authentication and cross-site middlewares when ``[auth]`` is on; a warning when it is off."""
    if not config.users_file:
        log.warning("authentication_off", listen=f"{config.host}:{config.port}",
                    advice="anyone who reaches this address can change the scheduler's state; "
                           "set [auth] users_file (luigi-ha auth add-user)")
        return []
    try:
        users = load_users(config.users_file)
    except UsersFileError as exc:
        raise StartupError(f"[auth] users_file: {exc}") from exc
    if not users:
        raise StartupError(f"[auth] users_file {config.users_file} holds no user: add one with luigi-ha auth add-user")
    authenticator = Authenticator(users, registry=node.metrics.registry, log=log)
    return [authenticator.middleware, same_origin_writes]


def tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"[server] tls_cert/tls_key: cannot load {config.tls_cert}: {exc}") from exc
    return context


def build_node(config: NodeConfig, store: Store, log: Any) -> Node:
    settings = scheduler_settings(config)
    # The lease holder is this process incarnation (``node:pid:random``), not just the node id: a
    # scheduler restarted by systemd must not reclaim the lease its dead predecessor still holds
    # in the database (the standby takes over as after any crash), and two processes started
    # with the same node id by mistake can never both believe they hold it.
    lease = LeaderLease(
        store.engine,
        config.lease_name,
        make_holder_id(config.node_id),
        config.timings,
        fence_function=FENCE_FUNCTION,
    )
    node: Node | None = None
    metrics = NodeMetrics(lambda: node.status_counts() if node is not None else None)

    def core_factory() -> Scheduler:
        return Scheduler(metrics=metrics, settings=settings, wire_input=True)

    if config.config_path is not None:
        # luigi's notification code reads [email], [smtp], [batch_email] through its own config.
        luigi.configuration.add_config_path(config.config_path)

    node = Node(
        node_id=config.node_id,
        store=store,
        lease=lease,
        core_factory=core_factory,
        metrics=metrics,
        renew_interval=config.timings.renew_interval,
        prune_interval=config.prune_interval,
        public_url=config.public_url,
        log=log,
        mailer_factory=lambda: Mailer(settings.batch_emails, log),
        history_retention=config.history_retention_days * 86400.0,
        follow=config.follow,
        replica_max_lag=config.replica_max_lag,
    )
    return node


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM/SIGINT; on the way out release the lease for a fast handover."""
    log = configure_logging(config.log_level, config.log_format, node_id=config.node_id)
    log.info("starting", **config.describe())
    store = await asyncio.to_thread(open_store, config)
    node = build_node(config, store, log)
    app = build_app(node, max_body_bytes=config.max_body_bytes, guards=access_guards(config, node, log))
    runner = JsonErrorRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True, ssl_context=tls_context(config))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from exc
    log.info("listening", host=config.host, port=config.port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    try:
        await node.run()
    finally:
        await runner.cleanup()
        store.engine.dispose()
        log.info("stopped")
