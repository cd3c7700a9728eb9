"""The per-row shortcuts give what the plain code gives.

Each shortcut of the batch path (cells remembered per value, the result written by
one orjson call around pre-encoded fragments, canonical facts with precomputed
orders, the walk for lone surrogates and depth skipped when the text cannot hold
them) is checked here against the plain computation it replaces, on the inputs
where they could part: list items in other orders, integer floats, facts given as
``null``, warnings in the document, ``\\u`` escapes and nesting at the limit.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from nbrules import RuleEngine
from nbrules.domain import NumberPartition
from nbrules.patient import MAX_DEPTH, canonical_facts, inspect_json, parse_patient_json


def _plain(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _values(part: Any, rng: random.Random) -> list[Any]:
    """Values of every kind the partition's fact takes, around each cut for numbers."""
    spec = part.spec
    if spec.kind == "enum":
        return list(spec.values) + ["not-a-value"]
    if spec.kind == "boolean":
        return [True, False]
    if spec.kind == "set":
        out: list[Any] = [[]]
        for _ in range(60):
            items = rng.sample(list(spec.values), rng.randint(1, len(spec.values)))
            out.append(items)
            out.append(list(reversed(items)))  # same set, other order: same cell
        return out
    assert isinstance(part, NumberPartition)
    lo = spec.minimum if spec.minimum is not None else -1000.0
    out = []
    for iv in part._intervals:
        for edge in (iv.lo, iv.hi):
            if math.isfinite(edge):
                out += [edge, edge - 1, edge + 1, edge - 0.5, edge + 0.5]
                if edge == int(edge):
                    out += [int(edge), float(int(edge))]
    out += [lo, rng.uniform(lo, lo + 10_000)]
    lo_bound = spec.minimum if spec.minimum is not None else -math.inf
    hi_bound = spec.maximum if spec.maximum is not None else math.inf
    return [v for v in out if lo_bound <= v <= hi_bound]


def test_cells_remembered_per_value_are_the_cells_classify_gives() -> None:
    rng = random.Random(7)
    with RuleEngine.default() as eng:
        state = eng._acquire()
        try:
            checked = 0
            for runner in state.runners:
                for part in runner.program.domain.partitions.values():
                    for value in _values(part, rng):
                        expected = part.classify(value)
                        assert part.cell_of(value) == expected, (part.fact, value)
                        assert part.cell_of(value) == expected, (part.fact, value)  # now from the memo
                        checked += 1
        finally:
            eng._release(state)
    assert checked > 500


def test_documents_with_warnings_and_tiny_floats_are_the_plain_encoding() -> None:
    """Given outputs the rules would derive otherwise (NB521 warnings in the document),
    floats Python writes in exponent form, and plain records: the bytes of the fragment
    path, of the part-by-part path and of the standard library are the same."""
    patients: list[dict[str, Any]] = [
        # bone metastases make the INRG stage M: given as L1, the document carries NB521
        {"age_days": 400, "metastatic_sites": ["bone"], "inrgss_stage": "L1", "mycn_status": "not_amplified"},
        {"age_days": 100, "metastatic_sites": ["bone_marrow", "liver"], "bone_marrow_tumor_percent": 1e-05,
         "histology_category": "neuroblastoma", "mycn_status": "amplified"},
        {"age_days": 546.0, "metastatic_sites": [], "primary_idrfs": ["two_compartments"],
         "histology_category": "ganglioneuroma_maturing", "mycn_status": "not_amplified"},
    ]
    with RuleEngine.default() as eng:
        warned = 0
        for p in patients:
            r = eng.evaluate(p)
            warned += bool(r.warnings)
            assert r.to_compact_json() == r._parts_json() == _plain(r.to_dict())
    assert warned >= 1


def test_canonical_facts_with_precomputed_orders_are_canonical_facts() -> None:
    rng = random.Random(3)
    with RuleEngine.default() as eng:
        state = eng._acquire()
        try:
            v = state.validator
            sets = [s for s in v.specs.values() if s.kind == "set"]
            for _ in range(300):
                record: dict[str, Any] = {}
                for spec in rng.sample(list(v.specs.values()), 8):
                    if spec.kind == "set":
                        record[spec.name] = rng.sample(list(spec.values), rng.randint(0, len(spec.values)))
                    elif spec.kind == "enum":
                        record[spec.name] = rng.choice(spec.values)
                    elif spec.kind == "boolean":
                        record[spec.name] = rng.random() < 0.5
                    else:
                        record[spec.name] = rng.choice([0, 1.0, 3.5, 10, 12.0])
                    if rng.random() < 0.1:
                        record[spec.name] = None  # unknown, as if left out
                fast = v.canonical(record)
                plain = canonical_facts(v.known(record), v.specs)
                assert list(fast.items()) == list(plain.items())
                assert all(type(fast[k]) is type(plain[k]) for k in fast)
            assert sets  # lists were sorted by value-set order
        finally:
            eng._release(state)


def test_the_walk_is_skipped_only_where_it_cannot_find_a_problem() -> None:
    texts: list[str | bytes] = [
        '{"a":"\\ud800"}', b'{"a":"\\ud800"}', '{"\\udfff":1}', '{"a":"\ud800"}', '{"a":["x\\u00e9"]}',
        '{"a":"caf\u00e9"}', "{}", "[]",
    ]
    for depth in range(MAX_DEPTH - 2, MAX_DEPTH + 3):
        texts.append("[" * depth + "]" * depth)
        texts.append('{"a":' * depth + "1" + "}" * depth)
        texts.append(("[" * depth + "]" * depth).encode())
    for text in texts:
        data, problems = parse_patient_json(text)
        raw = text.decode() if isinstance(text, bytes) else text
        full = inspect_json(json.loads(raw))
        if full is None:
            assert problems == [], text
        else:
            assert [p.code for p in problems] == [full.code] and problems[0].pointer == full.pointer, text
            assert data is None


def test_plans_remembered_are_bounded_whatever_callers_ask() -> None:
    """The plan memo is keyed by the decisions a caller asks for, in its order and with its
    repeats (the HTTP API's ``decisions``): many distinct requests must not grow it without bound."""
    from nbrules import RuleEngine

    with RuleEngine.default() as engine:
        state = engine._acquire()
        try:
            ids = [d.id for d in engine.decisions]
            first = state.plan(ids[:1])
            for n in range(1, 600):
                assert state.plan(ids[:1] * n) == first
            assert len(state._plans) <= 256
        finally:
            engine._release(state)
