"""``luigi-ha drill``: a failover drill against a live cluster, measured from the outside.

One drill:

1. starts the probe pipeline (``examples/drill_probe.py``: N tiny tasks in three levels, each
   ``run()`` recording itself in a run log) with real Luigi workers: one ``luigi-ha run
   --workers W`` process pointed at ``--url`` (the VIP, or node URLs for client-side failover);
2. samples every node's ``GET /leader`` (each ``--node-url``; else the ``--url``) and sends a
   harmless write through ``--url`` every few tens of milliseconds (``add_task`` of a DONE
   ``DrillMarker`` task, which only the leader can commit);
3. once a quarter of the tasks have run, triggers the failure through the pluggable action:
   ``switchover`` (POST /switchover to the current leader) or any shell command, in which
   ``{leader_url}``, ``{leader_host}``, ``{leader_port}`` and ``{leader_id}`` are replaced by the
   current leader's (``ssh {leader_host} systemctl kill -s KILL luigi-ha-scheduler``,
   ``kill -9 1234``);
4. waits for the pipeline to end and reports: the time without a leader (from the last sample
   that saw the old leader to the first that saw the new one), the time from the action until
   ``--url`` answered a write again, the RPC attempts the workers' client had to retry (it
   appends one line per retry to ``$LUIGI_HA_RPC_RETRY_LOG``), tasks that ran twice, tasks that
   never ran, and whether the pipeline completed (``luigi-ha run`` exit code 0).

A database drill (``--target database``) fails the database under the scheduler instead: the
action promotes a replica or switches over (``patronictl -c /etc/patroni/patroni.yml switchover
--force``, ``ssh db1 systemctl kill -s KILL patroni postgresql``). The figures are the same; the
headline is the time until ``--url`` answered a write again, and a new scheduler leader is not
required (the leader may step down and take the lease again on the new primary, or ride through).

Exit status 0 only when nothing was lost, nothing ran twice, the pipeline completed and a new
leader was seen (for a database drill: a write was answered after the action).
``--repeat N`` runs N drills in a row (``--restore CMD`` after each, e.g. to
restart the killed node) and adds p50/p99 of the figures.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from scheduler.credentials import Auth, write_netrc

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"
PROBE_MODULE = "drill_probe"
RETRY_LOG_ENV = "LUIGI_HA_RPC_RETRY_LOG"  # same as worker.client.RETRY_LOG_ENV (kept import-free)

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


# -- observers ------------------------------------------------------------------------------------


@dataclass
class LeaderSample:
    t: float  # monotonic time the answer (or the error) arrived
    url: str
    leader: bool
    node_id: str | None


class LeaderWatch:
    """One thread per URL polling ``GET /leader``; a frozen node only delays its own thread."""

    def __init__(self, urls: list[str], interval: float = 0.02, timeout: float = 0.3) -> None:
        self.urls = urls
        self.interval = interval
        self.timeout = timeout
        self.samples: list[LeaderSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(u,), daemon=True) for u in urls]

    def start(self) -> LeaderWatch:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def _poll(self, url: str) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    r = session.get(url + "/leader", timeout=(self.timeout, self.timeout))
                    try:
                        node_id = r.json().get("node_id")
                    except ValueError:
                        node_id = None
                    sample = LeaderSample(time.monotonic(), url, r.status_code == 200, node_id)
                except requests.RequestException:
                    sample = LeaderSample(time.monotonic(), url, False, None)
                with self._lock:
                    self.samples.append(sample)
                self._stop.wait(self.interval)

    def snapshot(self) -> list[LeaderSample]:
        with self._lock:
            return sorted(self.samples, key=lambda s: s.t)

    def current_leader(self, within: float = 1.0) -> LeaderSample | None:
        now = time.monotonic()
        for s in reversed(self.snapshot()):
            if now - s.t > within:
                return None
            if s.leader:
                return s
        return None

    def takeover(self, action_at: float, old_leader: str | None) -> tuple[float | None, str | None]:
        """(seconds without a leader, new leader id) around ``action_at``; (None, None) if no new leader yet.

        The new leader is the first node seen leading after ``action_at`` that is not the old one
        (or the old one after it was seen not leading). The gap runs from the last sample that saw
        the old leader before that moment to that moment: the resolution is the sampling interval.
        """
        samples = self.snapshot()
        old_lost = False
        first_new: LeaderSample | None = None
        for s in samples:
            if s.t <= action_at:
                continue
            if s.node_id == old_leader and not s.leader:
                old_lost = True
            if s.leader and (s.node_id != old_leader or old_lost):
                first_new = s
                break
        if first_new is None:
            return None, None
        last_old = max((s.t for s in samples if s.leader and s.node_id == old_leader and s.t < first_new.t),
                       default=action_at)
        return first_new.t - last_old, first_new.node_id


@dataclass
class WriteSample:
    sent: float
    done: float
    ok: bool
    status: int | None


class WriteProbe:
    """Sends a harmless write (``add_task`` of a DONE marker task) through the URLs, again and again."""

    def __init__(self, urls: list[str], run_id: str, interval: float = 0.05, timeout: float = 1.0) -> None:
        self.urls = urls
        self.interval = interval
        self.timeout = timeout
        self.samples: list[WriteSample] = []
        self._payload = json.dumps({
            "task_id": f"DrillMarker_{run_id}", "status": "DONE", "runnable": False, "family": "DrillMarker",
            "params": {"run_id": run_id}, "worker": f"luigi-ha-drill-{run_id}",
        })
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> WriteProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        index = 0
        with requests.Session() as session:
            while not self._stop.is_set():
                url = self.urls[index % len(self.urls)]
                sent = time.monotonic()
                status = None
                try:
                    r = session.post(url + "/api/add_task", data={"data": self._payload},
                                     timeout=(min(0.5, self.timeout), self.timeout))
                    status = r.status_code
                    ok = status == 200
                except requests.RequestException:
                    ok = False
                with self._lock:
                    self.samples.append(WriteSample(sent, time.monotonic(), ok, status))
                if not ok:
                    index += 1
                self._stop.wait(self.interval)

    def snapshot(self) -> list[WriteSample]:
        with self._lock:
            return list(self.samples)

    def recovered_after(self, since: float) -> WriteSample | None:
        """The first write sent at or after ``since`` that was answered 200."""
        return next((s for s in self.snapshot() if s.sent >= since and s.ok), None)

    def last_ok(self) -> WriteSample | None:
        return next((s for s in reversed(self.snapshot()) if s.ok), None)


# -- reading what the workers recorded ------------------------------------------------------------


def read_runs(path: Path) -> Counter[str]:
    """How often each task id ran, from the probe's run log."""
    counts: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                counts[parts[1]] += 1
    return counts


def read_retries(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def probe_dir(explicit: str | None = None) -> Path:
    """Where ``drill_probe.py`` lives: ``--probe-dir``, else this repository's ``examples/``."""
    candidates = [Path(explicit)] if explicit else [EXAMPLES_DIR]
    for c in candidates:
        if (c / f"{PROBE_MODULE}.py").is_file():
            return c.resolve()
    raise FileNotFoundError(f"{PROBE_MODULE}.py not found in {', '.join(map(str, candidates))}; pass --probe-dir")


def expected_task_ids(directory: Path, run_id: str, tasks: int) -> set[str]:
    """Every task id of ``DrillProbe(run_id, tasks)``, computed by Luigi from the probe module."""
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    module = importlib.import_module(PROBE_MODULE)
    ids: set[str] = set()
    stack = [module.DrillProbe(run_id=run_id, tasks=tasks)]
    while stack:
        task = stack.pop()
        if task.task_id in ids:
            continue
        ids.add(task.task_id)
        stack.extend(task.requires())
    return ids


# -- one drill ------------------------------------------------------------------------------------


@dataclass
class DrillOptions:
    urls: list[str]
    action: str
    node_urls: list[str] = field(default_factory=list)
    target: str = "scheduler"  # or "database": the action fails the database, not a node
    tasks: int = 200
    workers: int = 4
    task_seconds: float = 0.05
    trigger_fraction: float = 0.25
    timeout: float = 300.0
    rpc_budget: float = 120.0
    sample_interval: float = 0.02
    probe_dir: str | None = None
    workdir: str | None = None
    keep: bool = False
    progress: bool = False


@dataclass
class DrillReport:
    run_id: str
    action: str
    leader_before: str | None = None
    leader_before_url: str | None = None
    leader_after: str | None = None
    action_seconds: float | None = None  # how long the action itself took
    time_without_leader_s: float | None = None
    write_recovery_s: float | None = None  # action start -> first write answered 200 afterwards
    failed_writes: int = 0  # probe writes that got no 200 after the action
    worker_rpc_retries: int = 0  # failed attempts the workers' client retried
    worker_rpc_retries_by_method: dict[str, int] = field(default_factory=dict)
    worker_rpc_errors_by_status: dict[str, int] = field(default_factory=dict)
    tasks_expected: int = 0
    tasks_run: int = 0
    tasks_run_twice: int = 0
    tasks_lost: int = 0
    twice_ids: list[str] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)
    tasks_run_before_action: int = 0
    pipeline_exit_code: int | None = None
    pipeline_completed: bool = False
    pipeline_seconds: float | None = None
    workdir: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _leader_placeholders(url: str | None, node_id: str | None) -> dict[str, str]:
    parsed = urlparse(url or "")
    return {
        "{leader_url}": url or "",
        "{leader_host}": parsed.hostname or "",
        "{leader_port}": str(parsed.port or ""),
        "{leader_id}": node_id or "",
    }


def expand(command: str, url: str | None, node_id: str | None) -> str:
    for key, value in _leader_placeholders(url, node_id).items():
        command = command.replace(key, value)
    return command


def _find_leader(node_urls: list[str], timeout: float = 1.0) -> tuple[str | None, str | None]:
    """(URL that answered /leader 200, its node id); a VIP answers for the leader."""
    for url in node_urls:
        try:
            r = requests.get(url + "/leader", timeout=timeout)
        except requests.RequestException:
            continue
        if r.status_code == 200:
            with contextlib.suppress(ValueError):
                return url, r.json().get("node_id")
            return url, None
    return None, None


def _switchover(leader_url: str | None, urls: list[str]) -> None:
    for url in [u for u in [leader_url, *urls] if u]:
        try:
            r = requests.post(url + "/switchover", timeout=5)
        except requests.RequestException:
            continue
        if r.status_code == 200:
            return
    raise RuntimeError("no node accepted POST /switchover (is any node the leader?)")


def _probe_env(workdir: Path, probe: Path) -> dict[str, str]:
    client_cfg = workdir / "luigi-client.cfg"
    client_cfg.write_text(
        "[worker]\nwait_interval = 0.1\nwait_jitter = 0.1\nping_interval = 0.5\n\n"
        "[scheduler]\nrecord_task_history = false\n"
    )
    pythonpath = [str(probe), str(REPO_ROOT)]
    if os.environ.get("PYTHONPATH"):
        pythonpath.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "LUIGI_CONFIG_PATH": str(client_cfg),
        "DRILL_DATA": str(workdir / "data"),
        "DRILL_RUNS_LOG": str(workdir / "runs.log"),
        RETRY_LOG_ENV: str(workdir / "rpc-retries.log"),
        "PYTHONUNBUFFERED": "1",
    }


def _stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """End the pipeline we started (its own session: the runner and its task processes)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _Progress:
    """A single updating line on stderr."""

    def __init__(self, enabled: bool, prefix: str) -> None:
        self.enabled = enabled
        self.prefix = prefix
        self._width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{self.prefix} {text}"
        pad = max(0, self._width - len(line))
        self._width = len(line)
        sys.stderr.write("\r" + line + " " * pad)
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run_drill(options: DrillOptions, label: str = "drill") -> DrillReport:
    run_id = f"drill-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    report = DrillReport(run_id=run_id, action=options.action)
    probe = probe_dir(options.probe_dir)
    base = Path(options.workdir) if options.workdir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=base))
    report.workdir = str(workdir)
    urls = [u.rstrip("/") for u in options.urls]
    node_urls = [u.rstrip("/") for u in options.node_urls] or urls
    expected = expected_task_ids(probe, run_id, options.tasks)
    report.tasks_expected = len(expected)
    runs_log = workdir / "runs.log"
    retry_log = workdir / "rpc-retries.log"
    progress = _Progress(options.progress, f"[{label}]")

    watch = LeaderWatch(node_urls, interval=options.sample_interval).start()
    writes = WriteProbe(urls, run_id).start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        leader_url, leader_id = _find_leader(node_urls)
        if leader_id is None:
            report.problems.append("no leader before the drill started")
            return report
        report.leader_before, report.leader_before_url = leader_id, leader_url
        argv = [sys.executable, "-m", "scheduler.cli", "run"]
        for u in urls:
            argv += ["--scheduler-url", u]
        argv += ["--module", PROBE_MODULE, "--workers", str(options.workers), "--rpc-budget", str(options.rpc_budget),
                 "DrillProbe", "--run-id", run_id, "--tasks", str(options.tasks),
                 "--seconds", str(options.task_seconds)]
        with open(workdir / "pipeline.log", "wb") as out:
            started = time.monotonic()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_probe_env(workdir, probe),
                                    start_new_session=True)
        deadline = started + options.timeout
        threshold = max(1, math.ceil(options.trigger_fraction * len(expected)))

        def status_line(phase: str) -> str:
            n = sum(read_runs(runs_log).values())
            cur = watch.current_leader()
            retries = len(read_retries(retry_log))
            return (f"{phase}: {n}/{len(expected)} tasks run, leader={cur.node_id if cur else '-'}, "
                    f"worker retries={retries}, {time.monotonic() - started:.1f}s")

        while proc.poll() is None and sum(read_runs(runs_log).values()) < threshold:
            if time.monotonic() > deadline:
                report.problems.append(f"the pipeline did not reach {threshold} runs within {options.timeout}s")
                return report
            progress.show(status_line("warming up"))
            time.sleep(0.05)
        if proc.poll() is not None:
            report.problems.append(f"the pipeline ended (exit {proc.returncode}) before the action could be taken")
        report.tasks_run_before_action = sum(read_runs(runs_log).values())

        leader_url, leader_id = _find_leader(node_urls)
        if leader_id is not None:
            report.leader_before, report.leader_before_url = leader_id, leader_url
        action_started = time.monotonic()
        try:
            if options.action == "switchover":
                _switchover(report.leader_before_url, node_urls)
            else:
                command = expand(options.action, report.leader_before_url, report.leader_before)
                done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
                if done.returncode != 0:
                    report.problems.append(f"the action exited {done.returncode}: {done.stderr.strip()[:300]}")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            report.problems.append(f"the action failed: {exc}")
        action_finished = time.monotonic()
        report.action_seconds = round(action_finished - action_started, 4)

        while proc.poll() is None:
            if time.monotonic() > deadline:
                report.problems.append(f"the pipeline did not finish within {options.timeout}s")
                break
            gap, _ = watch.takeover(action_started, report.leader_before)
            progress.show(status_line("after action" if gap is not None else "leaderless"))
            time.sleep(0.1)
        report.pipeline_seconds = round(time.monotonic() - started, 3)
        if proc.poll() is None:
            _stop_process_group(proc)
        report.pipeline_exit_code = proc.returncode

        # The new leader and the first write after the action may come after a fast pipeline.
        settle_until = time.monotonic() + 60
        while time.monotonic() < settle_until and (
            (options.target != "database" and watch.takeover(action_started, report.leader_before)[0] is None)
            or writes.recovered_after(action_finished) is None
        ):
            progress.show(status_line("waiting for the new leader"))
            time.sleep(0.05)
        progress.done()
    finally:
        watch.stop()
        writes.stop()
        if proc is not None:
            _stop_process_group(proc)

    gap, new_leader = watch.takeover(action_started, report.leader_before)
    report.time_without_leader_s = round(gap, 4) if gap is not None else None
    report.leader_after = new_leader
    first_write = writes.recovered_after(action_finished)
    report.write_recovery_s = round(first_write.done - action_started, 4) if first_write else None
    report.failed_writes = sum(1 for s in writes.snapshot() if s.sent >= action_started and not s.ok)

    retries = read_retries(retry_log)
    report.worker_rpc_retries = len(retries)
    report.worker_rpc_retries_by_method = dict(Counter(str(r.get("method")) for r in retries))
    report.worker_rpc_errors_by_status = dict(Counter(str(r.get("status") or "conn") for r in retries))
    counts = read_runs(runs_log)
    report.tasks_run = sum(counts.values())
    twice = sorted(t for t, c in counts.items() if c > 1)
    lost = sorted(expected - set(counts))
    report.tasks_run_twice, report.twice_ids = len(twice), twice[:20]
    report.tasks_lost, report.lost_ids = len(lost), lost[:20]
    report.pipeline_completed = report.pipeline_exit_code == 0 and not lost

    if report.pipeline_exit_code != 0:
        report.problems.append(f"the pipeline failed (luigi-ha run exit {report.pipeline_exit_code}); "
                               f"see {workdir / 'pipeline.log'}")
    if twice:
        report.problems.append(f"{len(twice)} task(s) ran more than once")
    if lost:
        report.problems.append(f"{len(lost)} task(s) never ran")
    if new_leader is None and options.target != "database":
        report.problems.append("no new leader was seen after the action")
    if first_write is None:
        report.problems.append("no write was answered after the action")
    if report.ok and not options.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        report.workdir = ""
    return report


# -- repeats and summaries ------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of ``values``; None when empty."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    k = max(0, min(len(data) - 1, math.ceil(p / 100 * len(data)) - 1))
    return data[k]


def summarise(reports: list[DrillReport]) -> dict[str, Any]:
    def stats(name: str) -> dict[str, float | None]:
        values = [getattr(r, name) for r in reports if getattr(r, name) is not None]
        return {
            "p50": percentile(values, 50), "p99": percentile(values, 99),
            "min": min(values, default=None), "max": max(values, default=None), "n": len(values),
        }

    return {
        "drills": len(reports),
        "ok": sum(r.ok for r in reports),
        "write_recovery_s": stats("write_recovery_s"),
        "time_without_leader_s": stats("time_without_leader_s"),
        "worker_rpc_retries": stats("worker_rpc_retries"),
        "tasks_run_twice": sum(r.tasks_run_twice for r in reports),
        "tasks_lost": sum(r.tasks_lost for r in reports),
        "pipelines_failed": sum(not r.pipeline_completed for r in reports),
    }


def wait_until_nodes_answer(node_urls: list[str], timeout: float = 60.0) -> bool:
    """True once every URL answers /leader (200 or 503) and one of them leads."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = []
        for url in node_urls:
            try:
                codes.append(requests.get(url.rstrip("/") + "/leader", timeout=0.5).status_code)
            except requests.RequestException:
                codes.append(None)
        if None not in codes and 200 in codes:
            return True
        time.sleep(0.1)
    return False


def run_drills(options: DrillOptions, repeat: int = 1, restore: str | None = None, settle: float = 1.0,
               on_report: Callable[[DrillReport], None] | None = None) -> Iterator[DrillReport]:
    """Yield ``repeat`` drill reports; between drills run ``restore`` and wait for every node."""
    node_urls = options.node_urls or options.urls
    for i in range(repeat):
        report = run_drill(options, label=f"drill {i + 1}/{repeat}" if repeat > 1 else "drill")
        if on_report is not None:
            on_report(report)
        yield report
        if restore:
            command = expand(restore, report.leader_before_url, report.leader_before)
            subprocess.run(command, shell=True, timeout=300, check=False)
        if i + 1 < repeat:
            wait_until_nodes_answer(node_urls)
            time.sleep(settle)


def format_report(report: DrillReport) -> str:
    def s(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}s"

    lines = [
        f"drill {report.run_id}: {'OK' if report.ok else 'PROBLEMS'}",
        f"  action               {report.action!r} ({s(report.action_seconds)}), leader {report.leader_before} -> "
        f"{report.leader_after}",
        f"  time without leader  {s(report.time_without_leader_s)}",
        f"  writes answered again after {s(report.write_recovery_s)} ({report.failed_writes} failed probe writes)",
        f"  worker RPC retries   {report.worker_rpc_retries} {report.worker_rpc_retries_by_method or ''}",
        f"  tasks                {report.tasks_run} runs of {report.tasks_expected} tasks, "
        f"{report.tasks_run_twice} twice, {report.tasks_lost} never ran",
        f"  pipeline             {'completed' if report.pipeline_completed else 'FAILED'} "
        f"(exit {report.pipeline_exit_code}, {s(report.pipeline_seconds)})",
    ]
    lines += [f"  problem: {p}" for p in report.problems]
    if report.workdir:
        lines.append(f"  files kept in {report.workdir}")
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]) -> str:
    def s(d: dict[str, Any]) -> str:
        def f(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}s"

        return f"p50 {f(d['p50'])}  p99 {f(d['p99'])}  min {f(d['min'])}  max {f(d['max'])}"

    return "\n".join([
        f"{summary['drills']} drills, {summary['ok']} OK",
        f"  action -> writes answered again: {s(summary['write_recovery_s'])}",
        f"  time without leader:             {s(summary['time_without_leader_s'])}",
        f"  tasks run twice {summary['tasks_run_twice']}, tasks lost {summary['tasks_lost']}, "
        f"pipelines failed {summary['pipelines_failed']}",
    ])


@contextlib.contextmanager
def _credentials_for_requests(auth: Auth | None, urls: list[str]) -> Iterator[None]:
    """Give ``auth`` to every requests call of the drill and of its probe pipeline's processes.

    A netrc file (``$NETRC``, mode 0600, removed afterwards) reaches the drill's own probes and the
    ``luigi-ha run`` child alike, without a password in a URL, a command line or the environment.
    """
    if auth is None:
        yield
        return
    previous = os.environ.get("NETRC")
    with tempfile.TemporaryDirectory(prefix="luigi-ha-drill-") as tmp:
        os.environ["NETRC"] = str(write_netrc(Path(tmp) / "netrc", urls, auth))
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("NETRC", None)
            else:
                os.environ["NETRC"] = previous


def main(args: Any) -> int:
    """The ``luigi-ha drill`` command (arguments parsed by scheduler.cli)."""
    if not args.url:
        print("luigi-ha drill: --url is required", file=sys.stderr)
        return EXIT_USAGE
    if args.repeat < 1 or args.tasks < 1 or args.workers < 1:
        print("luigi-ha drill: --repeat, --tasks and --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    options = DrillOptions(
        urls=args.url, node_urls=args.node_url or [], action=args.action, target=args.target, tasks=args.tasks,
        workers=args.workers,
        task_seconds=args.task_seconds, trigger_fraction=args.trigger_at, timeout=args.timeout,
        rpc_budget=args.rpc_budget, probe_dir=args.probe_dir, workdir=args.workdir, keep=args.keep,
        progress=args.progress if args.progress is not None else sys.stderr.isatty(),
    )
    try:
        probe_dir(options.probe_dir)
    except FileNotFoundError as exc:
        print(f"luigi-ha drill: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def show(report: DrillReport) -> None:
        if not args.json:
            print(format_report(report), flush=True)

    with _credentials_for_requests(getattr(args, "auth", None), [*args.url, *(args.node_url or [])]):
        reports = list(run_drills(options, repeat=args.repeat, restore=args.restore, on_report=show))
    if args.json:
        if args.repeat == 1:
            print(json.dumps(reports[0].to_dict()))
        else:
            print(json.dumps({"summary": summarise(reports), "drills": [r.to_dict() for r in reports]}))
    elif args.repeat > 1:
        print(format_summary(summarise(reports)))
    return EXIT_OK if all(r.ok for r in reports) else EXIT_PROBLEMS

