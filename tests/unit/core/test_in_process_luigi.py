"""The core used in-process, as luigid's own ``Scheduler`` is: Python callers get luigid's leniency.

A ``luigi.worker.Worker`` given a scheduler object calls its methods directly, with Python
objects where the HTTP client would send JSON text.  Input that arrives over the wire
(``wire_input=True``, what the node builds) stays strictly checked.
"""

from __future__ import annotations

import luigi.worker
import pytest

from scheduler.core import Scheduler
from scheduler.core.errors import InvalidArgument


def _offer_unknown_family(scheduler: Scheduler) -> None:
    scheduler.add_task(worker="producer", task_id="NoSuchFamily__x", family="NoSuchFamily", params={}, runnable=True)


def test_worker_reports_an_unknown_task_family_instead_of_crashing() -> None:
    scheduler = Scheduler()
    _offer_unknown_family(scheduler)
    with luigi.worker.Worker(scheduler=scheduler, assistant=True, worker_id="assistant") as worker:
        assert worker.run() is False  # the run failed, and said so, rather than raising
    task = scheduler._tasks["NoSuchFamily__x"]
    assert task.status == "FAILED"
    assert isinstance(task.expl, str) and "NoSuchFamily" in task.expl


def test_an_exception_as_expl_is_stored_as_its_text_in_process() -> None:
    scheduler = Scheduler()
    scheduler.add_task(worker="w", task_id="T", status="FAILED", expl=RuntimeError("boom"))
    assert scheduler.fetch_error(task_id="T")["error"] == "boom"


def test_wire_input_still_rejects_a_non_string_expl() -> None:
    scheduler = Scheduler(wire_input=True)
    with pytest.raises(InvalidArgument, match="expl"):
        scheduler.add_task(worker="w", task_id="T", status="FAILED", expl={"not": "text"})
    assert "T" not in scheduler._tasks


def test_load_and_dump_exist_for_luigi_server_run() -> None:
    scheduler = Scheduler(batch_emails=True)
    scheduler.load()
    scheduler.dump()
    assert scheduler.take_notifications() == [{"kind": "flush"}]
