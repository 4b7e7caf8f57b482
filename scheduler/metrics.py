"""Prometheus metrics of one scheduler node.

Three families of names, each for a reason:

* the names luigid's own Prometheus collector exports (``luigi_task_started_total`` ...,
  labelled by task ``family``), so dashboards built for luigid keep working;
* the names widely used Luigi alert rules expect (``luigi_tasks_success_total``,
  ``luigi_tasks_failed_total``, ``luigi_task_running``) and ``luigi_pending_tasks`` for worker
  autoscaling;
* ``luigi_ha_*``: what only a replicated scheduler has (leadership, lease, group commit, RPCs).

Each node owns a private registry so several nodes can live in one test process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from scheduler.roles import Role

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _printable(label: object) -> str:
    """``label`` as text the exposition can encode: a lone surrogate becomes ``\\udXXX``.

    The exposition is encoded as UTF-8 in one piece, so a single unencodable label value (a task
    family from a database written before the HTTP layer refused such text) would fail every
    scrape until the process restarts.
    """
    label = str(label)
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        return label.encode("utf-8", "backslashreplace").decode("utf-8")
    return label


class _StateCollector:
    """Gauges read from the node at scrape time, so they can never drift from the state."""

    def __init__(self, read_counts: Callable[[], dict[str, int] | None]) -> None:
        self._read_counts = read_counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = self._read_counts() or {}
        running = GaugeMetricFamily("luigi_task_running", "Tasks currently RUNNING (leader only)")
        running.add_metric([], counts.get("RUNNING", 0) + counts.get("BATCH_RUNNING", 0))
        yield running
        pending = GaugeMetricFamily("luigi_pending_tasks", "Tasks PENDING, for worker autoscaling")
        pending.add_metric([], counts.get("PENDING", 0))
        yield pending
        by_status = GaugeMetricFamily("luigi_ha_tasks", "Tasks in the leader's state by status", labels=["status"])
        for status, n in sorted(counts.items()):
            by_status.add_metric([status], n)
        yield by_status


class _DatabaseCollector:
    """The node's view of its database, read at scrape time from a :class:`lease.primary.HostTracker`.

    * ``luigi_ha_db_reconnects_total``: connections opened after one was lost (failovers, server
      restarts, dead hosts);
    * ``luigi_ha_db_is_primary``: 1 while the node's last connection reached a writable primary
      and none has been lost since;
    * ``luigi_ha_seconds_since_last_commit``: on the leader, seconds since its last confirmed
      commit (lease renewal or batch), 0 elsewhere. It grows when a leader cannot commit but
      has not stepped down (a commit waiting on the database), which the leadership gauges
      alone do not show.

    Present before :meth:`watch` (all zero), so the names exist on every node from the start.
    """

    def __init__(self) -> None:
        self._tracker: Any = None
        self._leading: Callable[[], bool] = lambda: False

    def watch(self, tracker: Any, leading: Callable[[], bool]) -> None:
        self._tracker = tracker
        self._leading = leading

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        tracker = self._tracker
        reconnects = CounterMetricFamily(
            "luigi_ha_db_reconnects", "Database connections opened after a connection was lost"
        )
        reconnects.add_metric([], tracker.reconnects if tracker is not None else 0)
        yield reconnects
        current = tracker.current if tracker is not None else None
        primary = GaugeMetricFamily("luigi_ha_db_is_primary", "1 while the node's database connection is to a primary")
        primary.add_metric([], 1 if current is not None and current.primary and tracker.connected_now else 0)
        yield primary
        since = GaugeMetricFamily(
            "luigi_ha_seconds_since_last_commit", "Seconds since the leader's last confirmed database commit"
        )
        seconds = tracker.seconds_since_commit() if tracker is not None and self._leading() else None
        since.add_metric([], seconds or 0.0)
        yield since


class _RoleCollector:
    """``luigi_ha_role{role=...}``: 1 for the node's current role, 0 for the others.

    Read at scrape time from the node's role model, the same one ``/status`` and ``/leader`` read.
    """

    def __init__(self) -> None:
        self.read: Callable[[], str | None] = lambda: None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        current = self.read()
        family = GaugeMetricFamily("luigi_ha_role", "1 for the role this node is in", labels=["role"])
        for role in (r.value for r in Role):
            family.add_metric([role], 1.0 if role == current else 0.0)
        yield family


class NodeMetrics:
    """The node's registry plus the metrics-collector hooks the scheduling core calls.

    The core calls ``handle_task_started/failed/disabled/done`` exactly where luigid's collector
    hooks fire; this class turns them into counters. The hooks never raise: a metrics problem
    must not fail an RPC (luigid's collector does, on tasks that never ran).
    """

    def __init__(self, read_counts: Callable[[], dict[str, int] | None] = lambda: None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.task_started = Counter("luigi_task_started", "Tasks handed to a worker", ["family"], registry=r)
        self.task_done = Counter("luigi_task_done", "Tasks that became DONE", ["family"], registry=r)
        self.task_failed = Counter("luigi_task_failed", "Tasks that became FAILED", ["family"], registry=r)
        self.task_disabled = Counter("luigi_task_disabled", "Tasks that became DISABLED", ["family"], registry=r)
        self.execution_time = Gauge(
            "luigi_task_execution_time_seconds", "Run time of the last finished run", ["family"], registry=r
        )
        self.tasks_success = Counter("luigi_tasks_success", "Tasks that succeeded (alias)", ["family"], registry=r)
        self.tasks_failed = Counter("luigi_tasks_failed", "Tasks that failed (alias)", ["family"], registry=r)
        self.rpc_seconds = Histogram(
            "luigi_ha_rpc_duration_seconds", "RPC latency by method, as seen by the HTTP layer", ["method"],
            buckets=_FAST_BUCKETS, registry=r,
        )
        self.rpc_errors = Counter("luigi_ha_rpc_errors", "RPCs answered with an error", ["method", "code"], registry=r)
        self.commit_seconds = Histogram(
            "luigi_ha_commit_duration_seconds", "Time of one fenced group commit", buckets=_FAST_BUCKETS, registry=r
        )
        self.commit_batch = Histogram(
            "luigi_ha_commit_batch_requests", "Requests answered by one group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r,
        )
        self.is_leader = Gauge("luigi_ha_is_leader", "1 while this node holds the leader lease", registry=r)
        self.lease_epoch = Gauge("luigi_ha_lease_epoch", "Epoch (fencing token) of the lease this node holds",
                                 registry=r)
        self.takeovers = Counter("luigi_ha_takeovers", "Times this node became leader", registry=r)
        self.stepdowns = Counter("luigi_ha_stepdowns", "Times this node stopped leading", ["reason"], registry=r)
        self.renew_seconds = Histogram(
            "luigi_ha_lease_renew_duration_seconds", "Latency of lease renewals", buckets=_FAST_BUCKETS, registry=r
        )
        self.since_renew = Gauge(
            "luigi_ha_seconds_since_renew", "Seconds since the last successful lease renewal (leader)", registry=r
        )
        self.load_seconds = Gauge("luigi_ha_takeover_load_seconds", "Time to load the state at the last takeover",
                                  registry=r)
        self.standby_lag = Gauge(
            "luigi_ha_standby_lag_seconds",
            "How far a following standby's read copy may be behind the committed state (+Inf: no copy)",
            registry=r,
        )
        r.register(_StateCollector(read_counts))
        self._roles = _RoleCollector()
        r.register(self._roles)
        self.database = _DatabaseCollector()
        r.register(self.database)
        self._series: dict[tuple[int, str], Any] = {}

    def watch_role(self, read: Callable[[], str | None]) -> None:
        """Where ``luigi_ha_role`` reads the node's current role."""
        self._roles.read = read

    def _child(self, metric: Counter | Gauge | Histogram, label: str) -> Any:
        """``metric.labels(label)``, looked up once per metric and label value.

        ``labels()`` checks and hashes its arguments under a lock on every call (about 2 us); the
        leader calls these for every RPC and every finished task. A series still appears only
        when first used, as with ``labels()``, so a family that never failed shows no failures.
        """
        key = (id(metric), label)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(_printable(label))
        return child

    def observe_rpc(self, method: str, seconds: float) -> None:
        """Record one RPC's latency (``method`` is one of the protocol's, so the set stays small)."""
        self._child(self.rpc_seconds, method).observe(seconds)

    # -- hooks called by the scheduling core -------------------------------------------------

    def handle_task_started(self, task: Any) -> None:
        self._child(self.task_started, task.family).inc()

    def handle_task_failed(self, task: Any) -> None:
        self._child(self.task_failed, task.family).inc()
        self._child(self.tasks_failed, task.family).inc()
        self._record_time(task)

    def handle_task_disabled(self, task: Any, config: Any = None) -> None:
        self._child(self.task_disabled, task.family).inc()
        self._record_time(task)

    def handle_task_done(self, task: Any) -> None:
        self._child(self.task_done, task.family).inc()
        self._child(self.tasks_success, task.family).inc()
        self._record_time(task)

    def _record_time(self, task: Any) -> None:
        started = getattr(task, "time_running", None)
        updated = getattr(task, "updated", None)
        if started is not None and updated is not None:
            self._child(self.execution_time, task.family).set(max(0.0, updated - started))

    # -- exposition --------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
