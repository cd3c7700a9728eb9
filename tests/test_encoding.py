"""The fast JSON encoder writes exactly the standard library's text.

Results are written with orjson (nbrules.encoding); the documented format is the text
of ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``, and the input hash
is over the same text with keys sorted.  These tests hold the standard library as the
oracle: on arbitrary JSON data, on the values where orjson writes other text (tiny and
huge floats, big integers, lone surrogates, keys that are not strings), and on whole
results and hashes of a cohort with such values.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nbrules import RuleEngine
from nbrules.encoding import canonical, canonical_utf8, compact
from nbrules.patient import facts_sha256


def _plain(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sorted(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_compact_and_canonical_are_the_standard_library_text(value: Any) -> None:
    assert compact(value) == _plain(value)
    assert canonical(value) == _sorted(value)
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in _sorted(value)):  # UTF-8 text (no lone surrogate)
        assert canonical_utf8(value) == _sorted(value).encode("utf-8")


def test_values_orjson_writes_otherwise_fall_back_to_the_standard_library() -> None:
    tricky = [1e-05, -2.5e-07, 5e-324, 1e16, 1.5e300, 2 ** 64, -(2 ** 70), "\ud800", {1: "a"},
              {"x": [0.00001, "0.00001"]}, 0.0001, 123456789012345.0, "\u2028\x7f\x00\x1f\"\\/é"]
    for value in tricky:
        assert compact(value) == _plain(value), value
        assert canonical(value) == _sorted(value), value
        if value != "\ud800":  # a lone surrogate is no UTF-8 text
            assert canonical_utf8(value) == _sorted(value).encode("utf-8"), value


def test_results_and_hashes_of_a_cohort_are_the_plain_encoding() -> None:
    """Whole results, with numbers Python writes in exponent form, through the fast path."""
    rng = random.Random(15)
    patients: list[dict[str, Any]] = []
    for _ in range(300):
        sites = rng.choice([[], ["bone_marrow"], ["liver", "bone_marrow"], ["bone"]])
        p: dict[str, Any] = {"age_days": rng.choice([10, 400, 546.0, 547, 2000]), "metastatic_sites": sites,
                             "histology_category": rng.choice(["neuroblastoma", "ganglioneuroma_maturing"]),
                             "mycn_status": rng.choice(["amplified", "not_amplified"])}
        if "bone_marrow" in sites:
            p["bone_marrow_tumor_percent"] = rng.choice([1e-05, 2.5e-07, 9.9, 10, 0.0001, 40.0])
        if rng.random() < 0.5:
            del p["mycn_status"]  # partly known: indeterminate outputs in the document too
        patients.append(p)
    with RuleEngine.default() as eng:
        tiny = 0
        for p in patients:
            r = eng.evaluate(p)
            assert r.to_compact_json() == _plain(r.to_dict())
            assert r.input_sha256 == facts_sha256(r.input) == hashlib.sha256(
                _sorted(r.input).encode("utf-8")).hexdigest()
            tiny += "e-" in _plain(r.input)
    assert tiny > 10  # the exponent form was met
