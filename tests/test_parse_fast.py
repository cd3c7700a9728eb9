"""The strict JSON parse of patient records reads plain records with orjson: it must give
exactly what the standard library's strict parse gives (the same data, with the same
types, or the same problem with its pointer), whatever the text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbrules.patient import MAX_DEPTH, _plain_record, _strict_parse, parse_patient_json


def _same(text: str | bytes) -> None:
    data, problems = parse_patient_json(text)
    expected, expected_problems = _strict_parse(text)
    assert [(p.code, p.pointer, p.message) for p in problems] == \
        [(p.code, p.pointer, p.message) for p in expected_problems], text
    assert repr(data) == repr(expected), text  # repr: 1 and 1.0, -0.0 and 0.0 differ


HOSTILE: list[str] = [
    '{"age_days": 1, "age_days": 2}',  # a fact given twice (NB506)
    '{"age_days": 1, "age_d\\u0061ys": 2}',  # ... once escaped
    '{"a": {"b": 1, "b": 2}}',  # ... inside an inner object
    '{"a": [{"b": 1}, {"b": 1, "b": 2}]}',
    '{"a": "x:y", "a": 2}',  # a colon in a string hides a member from the count
    '{"a": "{", "a": 2}',
    '{"bone_marrow_tumor_percent": NaN}', '{"a": Infinity}', '{"a": -Infinity}',
    '{"a": 1e400}', '{"a": -1e400}',  # read as infinity by the standard library
    '{"age_days": 12345678901234567890123}', '{"a": -9223372036854775809}', '{"a": 18446744073709551616}',
    '{"a": 9223372036854775807}', '{"a": 999999999999999999}',
    '{"a": 1.0}', '{"a": -0}', '{"a": -0.0}', '{"a": 1E2}', '{"a": 2.5e-8}', '{"a": 0.1}',
    '{"a": "' + "9" * 5000 + '"}', '{"a": ' + "9" * 5000 + "}",  # longer than Python reads (NB509)
    '{"a": "\\ud800"}', '{"\\udfff": 1}', '{"a": "\\ud83d\\ude00"}', '{"a": "caf\\u00e9"}',
    '\ufeff{"a": 1}', '{"a": 1}\n', ' {"a": 1} ', '{"a": 1} x', '{"a": 1,}', '{"a": 01}', '{"a": "x\ty"}',
    "{}", "[]", "1", '"x"', "null", "", "   ", '{"a": [1, [2, [3]]]}', '{"id": "p:1", "age_days": 3}',
    '{"a": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}", '{"a": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}",
    '{"a": ' + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "}",
    '{"metastatic_sites": ["bone", "liver"], "age_days": 400, "mycn_status": "amplified"}',
]


@pytest.mark.parametrize("text", HOSTILE)
def test_the_fast_parse_gives_what_the_strict_parse_gives(text: str) -> None:
    _same(text)
    _same(text.encode("utf-8", "surrogatepass"))


def test_bytes_that_are_not_utf8_and_a_byte_order_mark() -> None:
    for text in (b"\xff\xfe", b'{"a": "\xff"}', b'\xef\xbb\xbf{"a": 1}', b'{"a": "\xed\xa0\x80"}'):
        _same(text)


def test_a_key_given_twice_is_refused_with_its_pointer() -> None:
    data, problems = parse_patient_json(b'{"age_days": 1, "mycn_status": "amplified", "age_days": 2}')
    assert data is None and [(p.code, p.pointer) for p in problems] == [("NB506", "/age_days")]


def test_plain_records_take_the_fast_path() -> None:
    # what a cohort's lines look like: read by orjson, with the standard library's result
    line = b'{"id":"p1","age_days":400,"metastatic_sites":["bone"],"bone_marrow_tumor_percent":9.9,"mibg":false}\n'
    assert _plain_record(line, MAX_DEPTH) == json.loads(line)
    assert _plain_record(b'{"a": 1, "a": 2}', MAX_DEPTH) is None


_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_values: Any = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _values, max_size=8), st.booleans(), st.sampled_from([0, 1, 2]))
def test_any_record_parses_alike(record: dict[str, Any], as_bytes: bool, twice: int) -> None:
    text = json.dumps(record, ensure_ascii=bool(twice == 2))
    if twice == 1 and record:  # a key given twice, written by hand
        key = json.dumps(next(iter(record)))
        text = text[:-1] + ("," if len(text) > 2 else "") + f"{key}: 0}}"
    _same(text.encode("utf-8", "surrogatepass") if as_bytes else text)
