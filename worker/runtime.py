"""The worker runtime: Luigi's own worker machinery, made to ride through scheduler failovers.

Nothing of Luigi's worker loop is re-implemented here. ``luigi.worker.Worker`` schedules, asks
for work, forks task processes and reports results; ``luigi.interface._run`` parses the task's
command line and builds the summary. This module only plugs in:

* :class:`~worker.client.HARemoteScheduler` (budgeted retries, several URLs) through Luigi's
  ``worker_scheduler_factory`` hook;
* :class:`HAWorker`, a ``luigi.worker.Worker`` that drains on SIGTERM (Luigi's SIGUSR1 "stop
  requesting work" switch: the running tasks finish and are reported, then the loop ends),
  tells systemd READY=1 once the scheduler accepted ``add_worker`` and WATCHDOG=1 from a thread
  of its own while Luigi's keep-alive thread lives (so a long task never starves the watchdog),
  and, for the one-shot trigger, stays until the tasks it scheduled are finished by *any*
  worker (assistants included), not only by itself;
* structlog JSON logs, with Luigi's task events (START/SUCCESS/FAILURE/...) logged with
  ``task_id``, ``family`` and ``status``.

``luigi-ha worker`` = :func:`run_assistant`; ``luigi-ha run`` = :func:`run_pipeline`.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import luigi
import luigi.interface
import luigi.worker
import structlog
from luigi.cmdline_parser import CmdlineParser
from luigi.execution_summary import LuigiStatusCode, _root_task, _summary_dict
from luigi.rpc import RPCError
from luigi.setup_logging import InterfaceLogging
from luigi.task_register import TaskClassException

from scheduler.credentials import Auth, redact, split
from scheduler.logs import configure_logging
from scheduler.sdnotify import notify, watchdog_interval
from worker.client import HARemoteScheduler, RetryPolicy, SchedulerRejected, SchedulerUnavailable

EXIT_OK = 0
EXIT_PIPELINE_FAILED = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_UNEXPECTED = 4  # Luigi's own [retcode] unhandled_exception

log = structlog.get_logger("luigi_ha.worker")
_events_hooked = False


def setup_logging(level: str = "INFO", fmt: str = "json", config_path: str | None = None, **bound: Any) -> Any:
    """structlog JSON logs for our events and Luigi's; Luigi must not install its own handlers."""
    logger = configure_logging(level, fmt, component="worker", **bound)
    InterfaceLogging._configured = True  # luigi.interface would otherwise add a plain-text handler
    logging.getLogger("luigi-interface").setLevel(level)
    logging.getLogger("luigi").setLevel(level)
    if config_path:
        luigi.configuration.add_config_path(config_path)
    hook_task_events()
    return logger


def hook_task_events() -> None:
    """Log Luigi's task events (they fire in the task's process) with the task id and status."""
    global _events_hooked
    if _events_hooked:
        return
    _events_hooked = True
    events = structlog.get_logger("luigi_ha.worker.task")

    def fields(task: luigi.Task) -> dict[str, Any]:
        return {"task_id": task.task_id, "family": task.task_family, "worker_pid": os.getpid()}

    @luigi.Task.event_handler(luigi.Event.START)
    def _started(task: luigi.Task) -> None:
        events.info("task_started", status="RUNNING", **fields(task))

    @luigi.Task.event_handler(luigi.Event.SUCCESS)
    def _succeeded(task: luigi.Task) -> None:
        events.info("task_succeeded", status="DONE", **fields(task))

    @luigi.Task.event_handler(luigi.Event.FAILURE)
    def _failed(task: luigi.Task, exception: BaseException) -> None:
        events.error("task_failed", status="FAILED", error=f"{type(exception).__name__}: {exception}", **fields(task))

    @luigi.Task.event_handler(luigi.Event.PROCESS_FAILURE)
    def _died(task: luigi.Task, error_msg: str) -> None:
        events.error("task_process_died", status="FAILED", error=error_msg, **fields(task))

    @luigi.Task.event_handler(luigi.Event.TIMEOUT)
    def _timed_out(task: luigi.Task, error_msg: str) -> None:
        events.error("task_timed_out", status="FAILED", error=error_msg, **fields(task))


def import_modules(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


class HAWorker(luigi.worker.Worker):
    """``luigi.worker.Worker`` + SIGTERM drain, systemd notify/watchdog, wait-for-others (trigger)."""

    def __init__(self, *args: Any, wait_for_others: bool = False, idle_grace: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wait_for_others = wait_for_others
        self._idle_grace = idle_grace
        self._stuck_since: float | None = None
        self._main_pid = os.getpid()
        self._sigterms = 0
        self._watchdog_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.drained = False
        try:
            signal.signal(signal.SIGTERM, self._on_sigterm)
            signal.siginterrupt(signal.SIGTERM, False)
        except ValueError:  # not the main thread (e.g. inside a test runner): no drain switch
            pass

    @property
    def worker_id(self) -> str:
        return self._id

    # -- SIGTERM: stop asking for work, let running tasks finish and be reported ----------------

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._main_pid:
            # A forked task process inherited this handler: die as SIGTERM means there (Luigi's
            # terminate() on timeout, systemd at the end of TimeoutStopSec).
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self._sigterms += 1
        if self._sigterms > 1:
            log.warning("second_sigterm", action="stopping now; running tasks are terminated")
            raise KeyboardInterrupt
        log.info("drain_requested", running_tasks=len(self._running_tasks), worker_id=self._id)
        notify("STOPPING=1", f"STATUS=draining: {len(self._running_tasks)} task(s) running")
        self.drained = True
        self._start_phasing_out()

    # -- systemd readiness and watchdog ---------------------------------------------------------

    def _add_worker(self) -> None:
        super()._add_worker()
        log.info("worker_connected", worker_id=self._id, scheduler=getattr(self._scheduler, "current_url", None))
        notify("READY=1", f"STATUS=connected to {getattr(self._scheduler, 'current_url', 'the scheduler')}")

    def __enter__(self) -> HAWorker:
        super().__enter__()
        interval = watchdog_interval()
        if interval:
            self._watchdog = threading.Thread(target=self._watchdog_loop, args=(interval,), daemon=True,
                                              name="luigi-ha-watchdog")
            self._watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> bool:
        self._watchdog_stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        return super().__exit__(*exc)

    def _watchdog_loop(self, interval: float) -> None:
        while not self._watchdog_stop.wait(interval):
            # Luigi's keep-alive thread pings the scheduler for as long as the worker lives; while
            # it runs the worker is alive even if a task takes hours.
            if self._keep_alive_thread.is_alive():
                notify("WATCHDOG=1")

    # -- the trigger waits for tasks that other workers (assistants) run ------------------------

    def _keep_alive(self, get_work_response: Any) -> bool:
        """Luigi's rule, plus (trigger only): stay while other workers run tasks of this pipeline.

        Called when the scheduler has no task for us and nothing runs locally. While some of our
        tasks run elsewhere (``running_tasks``) they may finish and unblock the rest: wait. With
        ``--workers 0`` (schedule only) pending tasks that nobody runs yet are waited for during
        ``idle_grace`` seconds (an assistant between two tasks sleeps up to wait_interval +
        wait_jitter); after that, or with workers > 0, Luigi's own rule decides, so failed tasks
        end the run (exit 1) instead of waiting for the scheduler's retry_delay.
        """
        if self._wait_for_others and not self._stop_requesting_work:
            if get_work_response.running_tasks:
                self._stuck_since = None
                return True
            if get_work_response.n_pending_tasks and self.worker_processes == 0:
                now = time.monotonic()
                self._stuck_since = self._stuck_since or now
                if now - self._stuck_since < self._idle_grace:
                    return True
                log.warning("trigger_gives_up", pending_tasks=get_work_response.n_pending_tasks,
                            waited_s=round(now - self._stuck_since, 1),
                            reason="tasks are pending but no worker has run any of them")
        return super()._keep_alive(get_work_response)


class HAWorkerSchedulerFactory(luigi.interface._WorkerSchedulerFactory):
    """Luigi's hook for which scheduler client and worker class ``luigi.interface`` uses."""

    def __init__(self, urls: Sequence[str], policy: RetryPolicy | None = None, auth: Auth | None = None,
                 **worker_kwargs: Any) -> None:
        self.urls = list(urls)
        self.policy = policy or RetryPolicy()
        self.auth = auth
        self.worker_kwargs = worker_kwargs
        self.worker: HAWorker | None = None

    def create_remote_scheduler(self, url: str) -> HARemoteScheduler:
        return HARemoteScheduler(self.urls or [url], self.policy, auth=self.auth)

    def create_worker(self, scheduler: Any, worker_processes: int, assistant: bool = False) -> HAWorker:
        self.worker = HAWorker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant,
                               **self.worker_kwargs)
        return self.worker


def run_assistant(urls: Sequence[str], modules: Sequence[str], workers: int, policy: RetryPolicy,
                  auth: Auth | None = None) -> int:
    """``luigi-ha worker``: a Luigi assistant that runs any runnable task, until SIGTERM."""
    import_modules(modules)
    factory = HAWorkerSchedulerFactory(urls, policy, auth=auth, keep_alive=True)
    scheduler = factory.create_remote_scheduler(urls[0])
    worker = factory.create_worker(scheduler, workers, assistant=True)
    log.info("assistant_starting", worker_id=worker.worker_id, urls=[redact(u) for u in urls], modules=list(modules),
             workers=workers)
    try:
        with worker:
            worker.run()
    except SchedulerUnavailable as exc:
        log.error("scheduler_unavailable", error=str(exc))
        return EXIT_UNAVAILABLE
    except RPCError as exc:
        log.error("scheduler_rejected", error=str(exc))
        return EXIT_UNEXPECTED
    except KeyboardInterrupt:
        return 130
    finally:
        scheduler.close()
    log.info("assistant_stopped", worker_id=worker.worker_id, drained=worker.drained)
    return EXIT_OK


def run_pipeline(urls: Sequence[str], modules: Sequence[str], task_argv: Sequence[str], workers: int,
                 policy: RetryPolicy, idle_grace: float = 30.0, auth: Auth | None = None) -> int:
    """``luigi-ha run``: schedule ``task_argv`` (Luigi's command line), run it, return an exit code.

    With ``workers`` > 0 this process runs tasks itself (like ``luigi --workers N``); with 0 it
    only schedules and waits while assistants run them. Either way it stays while tasks of the
    pipeline run anywhere (see :meth:`HAWorker._keep_alive`). Exit 0 only when the pipeline
    succeeded: Luigi's detailed summary says SUCCESS (or SUCCESS_WITH_RETRY), or, when other
    workers ran some of the tasks, the root task is complete.
    """
    import_modules(modules)
    factory = HAWorkerSchedulerFactory(urls, policy, auth=auth, wait_for_others=True, idle_grace=idle_grace)
    argv = [*task_argv, "--workers", str(workers), "--scheduler-url", split(urls[0])[0], "--no-lock"]
    log.info("run_starting", argv=argv, urls=[redact(u) for u in urls])
    try:
        result = luigi.interface._run(argv, worker_scheduler_factory=factory, detailed_summary=True)
    except SchedulerUnavailable as exc:
        log.error("scheduler_unavailable", error=str(exc))
        return EXIT_UNAVAILABLE
    except SchedulerRejected as exc:
        log.error("scheduler_rejected", error=str(exc))
        return EXIT_UNEXPECTED
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except TaskClassException as exc:
        log.error("unknown_task", error=str(exc))
        return EXIT_CONFIG
    except Exception:
        log.exception("run_crashed")
        return EXIT_UNEXPECTED
    worker = result.worker
    status = result.status
    with CmdlineParser.global_instance(list(argv)):  # task parameters given on the command line
        try:
            root = _root_task(worker)
        except IndexError:
            root = None
        sets = _summary_dict(worker)
        root_complete = False
        if root is not None:
            try:
                root_complete = bool(root.complete())
            except Exception:
                log.exception("root_complete_check_failed", task_id=root.task_id)
    # Luigi's own rule (luigi.retcodes): nothing failed and the root was completed here or
    # already done. When other workers ran the tasks, Luigi files them under "run by another
    # worker" and still says SUCCESS, so then the root's complete() is what decides.
    succeeded = status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY)
    root_done_here = root is not None and (root in sets["completed"] or root in sets["already_done"])
    ok = root_complete or (succeeded and root_done_here)
    drained = bool(getattr(worker, "drained", False))
    log.info("run_finished", ok=ok, luigi_status=status.name, task_id=getattr(root, "task_id", None),
             root_complete=root_complete, drained=drained, worker_id=getattr(worker, "_id", None))
    return EXIT_OK if ok else EXIT_PIPELINE_FAILED
