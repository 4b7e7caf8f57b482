"""The row codec: what is written reads back as exactly the same Python values."""

from __future__ import annotations

import math

import pytest

from scheduler.store.codec import dumps, loads, loads_rows

TRICKY = [
    {"max_batch_size": math.inf, "low": -math.inf},
    {"big": 2**70, "neg": -(2**65), "small": 5e-324, "pi": 3.141592653589793, "neg0": -0.0},
    {"lone": "\ud800", "ok": '🦆 日本語 \u0000 \t \n \\ "'},
    {"deep": [[[[[[[[[[{"x": [1, 2.5, None, True, False, ""]}]]]]]]]]]]},
    {},
]


@pytest.mark.parametrize("value", TRICKY, ids=range(len(TRICKY)))
def test_rows_round_trip_exactly(value: dict) -> None:
    assert repr(loads(dumps(value))) == repr(value)  # repr: -0.0 stays negative, big ints stay ints


def test_many_rows_decode_together_in_order() -> None:
    texts = [dumps(v) for v in TRICKY]
    assert repr(loads_rows(texts)) == repr(TRICKY)
    assert loads_rows([]) == []
    assert math.isnan(loads_rows([dumps({"x": math.nan})])[0]["x"])


@pytest.mark.parametrize("bad", ['{"id": "B"', '{"a":1},{"b":2}', ""], ids=["truncated", "two-values", "empty"])
def test_a_damaged_row_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match="not valid JSON|one value each"):
        loads_rows(['{"id":"A"}', bad, '{"id":"C"}'])


def test_text_is_compact_ascii_json() -> None:
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"\\u00e9"]}'


def test_rows_decode_across_chunk_boundaries() -> None:
    from scheduler.store.codec import DECODE_CHUNK

    for n in (DECODE_CHUNK - 1, DECODE_CHUNK, DECODE_CHUNK + 1, 2 * DECODE_CHUNK + 1):
        values = [{"i": i, "s": "x" * (i % 3)} for i in range(n)]
        texts = [dumps(v) for v in values]
        assert loads_rows(texts) == values
        assert loads_rows(tuple(texts)) == values  # any sequence; the caller's list is left alone
        assert texts == [dumps(v) for v in values]
    with pytest.raises(ValueError, match="not valid JSON"):
        loads_rows([dumps({"i": i}) for i in range(DECODE_CHUNK)] + ['{"i":'])
