"""Stored task rows -> live tasks: the fast JSON decoder gives exactly what the lenient path gives.

A takeover decodes every stored row with ``task_from_json`` (msgspec, straight into ``Task``
objects; what ``Scheduler.task_decoder()`` hands the store). Whatever it cannot take goes through
``json`` + ``Task.from_row``; these tests pin that both paths agree field for field, that
ordinary rows never take the slow path, and that a damaged row is an error that says so.
"""

from __future__ import annotations

import functools
import json
import math

import msgspec
import pytest

from scheduler.core.entities import Task, task_from_json
from scheduler.core.retry import make_policy
from scheduler.store.codec import dumps

POLICY = {"retry_count": 3, "disable_hard_timeout": 999999999, "disable_window": 3600}
DEFAULT = make_policy(5, 100, 200)  # the scheduler's default, for rows that store no policy
decode = functools.partial(task_from_json, default_policy=DEFAULT)
W1 = "Worker(salt=1, workers=4, host=a, username=etl, pid=7)"

COMPACT = {"id": "A(x=1)", "status": "PENDING", "family": "A", "updated": 1700000000.5, "time": 1700000000.25,
           "seq": 3, "retry_policy": POLICY, "deps": ["B(x=1)", "C(x=1)"], "workers": [W1], "stakeholders": [W1],
           "params": {"x": "1"}, "param_visibilities": {"x": 0}, "module": "pipelines.daily", "runnable": True}
FULL_LEGACY = {**COMPACT, "priority": 0, "resources": {}, "resources_running": None, "worker_running": None,
               "time_running": None, "retry": None, "remove": None, "expl": None, "tracking_url": None,
               "status_message": None, "progress_percentage": None, "accepts_messages": False, "failures": [],
               "first_failure_time": None, "scheduler_disable_time": None, "batchable": False, "batch_id": None,
               "scheduler_message_responses": {}}
RUNNING = {**COMPACT, "status": "RUNNING", "worker_running": W1, "time_running": 1700000001.0,
           "resources_running": {"db": 1}, "resources": {"db": 1}, "priority": 7, "failures": [1.5, 2.5],
           "first_failure_time": 1.5, "expl": "Traceback (most recent call last):\n\tFile \"x.py\"\\n",
           "status_message": "50% done: naïve café ☃ 🦆", "progress_percentage": 50, "accepts_messages": True,
           "scheduler_message_responses": {"m1": "ok"}, "tracking_url": "http://t/1", "batch_id": "b1",
           "batchable": True, "remove": 1700000100.0}
MINIMAL = {"id": "M", "status": "DONE", "updated": 5}  # no time, no seq, no policy: all defaults

ORDINARY_ROWS = [COMPACT, FULL_LEGACY, RUNNING, MINIMAL]
ODD_ROWS = {  # rows msgspec refuses, which the standard library reads
    "infinity": {**COMPACT, "resources": {"db": math.inf}},
    "nan-priority": {**COMPACT, "priority": math.nan},
    "lone-surrogate": {**COMPACT, "params": {"x": "\ud800"}},
    "status-not-in-the-literal": {**COMPACT, "status": "SUSPENDED"},
    "null-params": {**COMPACT, "params": None},
    "flag-not-a-bool": {**COMPACT, "runnable": 1},
}


def fields(task: Task) -> dict:
    return msgspec.structs.asdict(task)


def same(a: object, b: object) -> bool:
    """Equal, treating NaN as equal to NaN (``nan != nan``)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("row", ORDINARY_ROWS, ids=["compact", "full-legacy", "running", "minimal"])
def test_the_fast_path_decodes_every_row_the_core_writes_without_falling_back(row: dict, monkeypatch) -> None:
    expected = fields(Task.from_row(json.loads(dumps(row)), DEFAULT))
    monkeypatch.setattr(Task, "from_row", classmethod(lambda cls, *args: pytest.fail("fell back to Task.from_row")))
    assert same(fields(decode(dumps(row))), expected)
    assert same(fields(decode(dumps(row).encode())), expected)  # COPY hands over bytes


@pytest.mark.parametrize("row", list(ODD_ROWS.values()), ids=list(ODD_ROWS))
def test_rows_msgspec_refuses_are_read_by_the_standard_library_with_the_same_result(row: dict) -> None:
    text = dumps(row)
    with pytest.raises(msgspec.MsgspecError):
        msgspec.json.decode(text, type=Task)
    assert same(fields(decode(text)), fields(Task.from_row(json.loads(text), DEFAULT)))


def test_a_loaded_task_holds_its_run_time_forms() -> None:
    task = decode(dumps(COMPACT))
    assert task.deps == {"B(x=1)": None, "C(x=1)": None} and task.workers == {W1: None} == task.stakeholders
    assert task.time == 1700000000.25 and task.seq == 3
    assert task.retry_policy is make_policy(3, 999999999, 3600)  # shared, as the scheduler's own are
    minimal = decode(dumps(MINIMAL))
    assert minimal.time == 5 and minimal.seq == 0 and minimal.deps == {} and minimal.retry_policy is DEFAULT
    assert (minimal.family, minimal.params, minimal.failures, minimal.runnable) == ("", {}, (), False)
    assert minimal.params is not decode(dumps(MINIMAL)).params  # defaults are never shared


def test_values_keep_their_json_types() -> None:
    task = decode(dumps({**MINIMAL, "priority": 3, "time": 4.0, "resources": {"big": 10**30}}))
    assert (task.priority, type(task.priority)) == (3, int)
    assert (task.time, type(task.time)) == (4.0, float)
    assert task.resources == {"big": 10**30}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"id": "A", "stat', "Unterminated|Expecting"),
        ("[1, 2]", "must be a JSON object"),
        ('{"status": "PENDING", "updated": 1}', "not usable .*KeyError.*'id'"),
        ('{"id": "A", "status": "PENDING", "updated": 1, "resources_running": 5}', "not usable .*TypeError"),
    ],
    ids=["not-json", "not-an-object", "no-id", "unusable-value"],
)
def test_a_damaged_row_is_a_value_error_that_names_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode(text)


def test_tasks_compare_and_hash_by_identity() -> None:
    policy = make_policy(3, 10, 20)
    a = Task.new("A", "PENDING", now=1.0, seq=1, retry_policy=policy)
    b = Task.new("A", "PENDING", now=1.0, seq=1, retry_policy=policy)
    assert a != b and a == a and len({a, b}) == 2
