"""``task_list_chunks``: ``task_list``'s answer as JSON text, built a bounded piece at a time.

The HTTP layer serves a big listing from these pieces so that it never holds the event loop for
the whole listing; joined, they must be exactly the JSON of ``task_list``'s answer.
"""

from __future__ import annotations

import json

import pytest
from core_harness import FakeClock

from scheduler.core import Scheduler
from tests.support.core_workload import random_workload

QUERIES = [
    {},
    {"status": "PENDING"},
    {"status": "DONE", "upstream_status": ""},
    {"status": "PENDING", "upstream_status": "UPSTREAM_DISABLED"},
    {"status": "PENDING", "upstream_status": "UPSTREAM_MISSING_INPUT"},
    {"search": "t1"},
    {"status": "FAILED", "search": "T"},
    {"limit": False},
    {"max_shown_tasks": 3},
    {"max_shown_tasks": 3, "search": "T1"},
    {"max_shown_tasks": 2, "status": "PENDING", "upstream_status": "UPSTREAM_DISABLED"},
]


@pytest.mark.parametrize("seed", range(4))
def test_the_pieces_join_to_the_json_of_task_list(seed: int, clock: FakeClock) -> None:
    s = random_workload(400 + seed, 120, clock)
    for query in QUERIES:
        for chunk in (1, 3, 200):
            pieces = list(s.task_list_chunks(**query, chunk=chunk))
            assert json.loads("".join(pieces)) == s.task_list(**query), (query, chunk)


def test_each_piece_serialises_at_most_a_chunk_of_tasks(make) -> None:
    s: Scheduler = make().s
    for i in range(25):
        s.add_task(task_id=f"T{i}", worker="W1", family="T")
    pieces = [piece for piece in s.task_list_chunks(chunk=10) if piece not in ("", "{", "}")]
    assert [piece.count('"display_name"') for piece in pieces] == [10, 10, 5]


def test_bad_arguments_are_refused_before_any_piece(make) -> None:
    s: Scheduler = make().s
    with pytest.raises(ValueError, match="max_shown_tasks"):
        s.task_list_chunks(max_shown_tasks="lots")
