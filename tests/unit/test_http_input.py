"""What the HTTP layer accepts as Luigi's ``data=<json>`` argument, and what it refuses with a 400.

Everything refused here used to decode (or fail to decode) into a 500 or into a value that broke
something later: the JSON decoder's own recursion limit, a stored lone surrogate that every
scrape of /metrics then failed on.
"""

from __future__ import annotations

import json

import pytest

from scheduler.http_input import MAX_DEPTH, BadInput, decode_data


def nested(depth: int) -> str:
    return json.dumps({"task_id": "T", "params": {"p": "x"}, "deep": json.loads("[" * depth + "]" * depth)})


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_missing_or_empty_data_means_no_arguments(raw: str | None) -> None:
    assert decode_data(raw) == {}


def test_luigis_own_add_task_decodes_as_it_is() -> None:
    raw = json.dumps({"task_id": "Extract_2026_abc", "worker": "w1", "deps": ["A_1", "B_2"],
                      "params": {"date": "2026-11-23"}, "resources": {"db": 1}, "family": "Extract"})
    assert decode_data(raw)["deps"] == ["A_1", "B_2"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 100_000])
def test_nesting_deeper_than_the_limit_is_refused_naming_the_limit(depth: int) -> None:
    raw = '{"a": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(BadInput, match=f"nested too deeply: the limit is {MAX_DEPTH}"):
        decode_data(raw)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert decode_data(nested(MAX_DEPTH - 2))["task_id"] == "T"


def test_many_brackets_side_by_side_are_not_depth() -> None:
    raw = json.dumps({"deps": [[i] for i in range(500)], "params": {str(i): {} for i in range(500)}})
    assert len(decode_data(raw)["deps"]) == 500


@pytest.mark.parametrize("raw", [
    '{"family": "F\\ud800"}',
    '{"params": {"k\\udfff": "v"}}',
    '{"deps": ["ok", "x\\uDC00y"]}',
    '{"a": [[[{"b": "\\ud83d"}]]]}',
])
def test_a_lone_surrogate_anywhere_is_refused(raw: str) -> None:
    with pytest.raises(BadInput, match="lone surrogate"):
        decode_data(raw)


def test_a_surrogate_pair_is_ordinary_text_and_an_escaped_backslash_is_not_an_escape() -> None:
    assert decode_data('{"family": "Snake\\ud83d\\udc0d"}')["family"] == "Snake\U0001f40d"
    assert decode_data('{"family": "\\\\ud800"}')["family"] == "\\ud800"


@pytest.mark.parametrize(("raw", "problem"), [
    ("{", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('"text"', "must be a JSON object, got str"),
])
def test_what_is_not_a_json_object_is_named(raw: str, problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        decode_data(raw)
