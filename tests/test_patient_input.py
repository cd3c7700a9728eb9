"""Patient input: every problem reported with its JSON pointer, expectation and finding."""

from __future__ import annotations

import pickle

import pytest

from nbrules import PatientInputError, RuleEngine
from nbrules.patient import parse_patient_json


def problems(engine: RuleEngine, facts: object) -> list[tuple[str, str | None, str]]:
    with pytest.raises(PatientInputError) as info:
        engine.evaluate(facts)  # type: ignore[arg-type]
    return [(d.code, d.pointer, d.message) for d in info.value.diagnostics]


def test_string_number_is_rejected_not_compared_as_text(engine: RuleEngine) -> None:
    # durable-rules would compare "9" with 547 as text; the schema stops it first.
    assert problems(engine, {"age_days": "9"}) == [("NB502", "/age_days", "expected a whole number, found text '9'")]


def test_true_as_one_or_text_is_rejected(engine: RuleEngine) -> None:
    got = problems(engine, {"mibg_bone_or_marrow_avid": 1, "metastatic_sites": ["liver"]})
    assert got == [("NB502", "/mibg_bone_or_marrow_avid", "expected true or false, found the number 1")]
    got = problems(engine, {"mibg_bone_or_marrow_avid": "true"})
    assert got == [("NB502", "/mibg_bone_or_marrow_avid", "expected true or false, found text 'true'")]


def test_every_problem_is_reported_at_once(engine: RuleEngine) -> None:
    got = problems(engine, {
        "age_days": -1,
        "mycn_status": "amplifed",
        "metastatic_sites": ["liver", "liver"],
        "bone_marrow_tumor_percent": 101,
        "mycn": "amplified",
    })
    assert sorted(got) == sorted([
        ("NB505", "/age_days", "expected a number >= 0, found the number -1"),
        ("NB504", "/mycn_status", "expected one of amplified, not_amplified; found text 'amplifed'"),
        ("NB506", "/metastatic_sites/1", "text 'liver' appears more than once in this list"),
        ("NB505", "/bone_marrow_tumor_percent", "expected a number <= 100, found the number 101"),
        ("NB503", "/mycn", "expected a patient fact, found unknown fact 'mycn'"),
    ])


def test_unknown_fact_gets_a_suggestion(engine: RuleEngine) -> None:
    with pytest.raises(PatientInputError) as info:
        engine.evaluate({"mycn_stats": "amplified"})
    assert info.value.diagnostics[0].hint == "did you mean 'mycn_status'?"


def test_list_item_outside_value_set(engine: RuleEngine) -> None:
    got = problems(engine, {"primary_idrfs": ["renal_pedicle"]})
    assert got[0][:2] == ("NB504", "/primary_idrfs/0")


def test_not_an_object(engine: RuleEngine) -> None:
    assert problems(engine, [1, 2]) == [("NB507", "", "expected a JSON object of patient facts, found a list of 2 items")]


@pytest.mark.parametrize(
    "facts, pointer",
    [
        ({"bone_marrow_tumor_percent": 5, "metastatic_sites": ["liver"]}, "/bone_marrow_tumor_percent"),
        ({"bone_marrow_tumor_percent": 0, "metastatic_sites": ["bone_marrow"]}, "/metastatic_sites"),
        ({"histology_category": "ganglioneuroma_maturing", "differentiation_grade": "differentiating"}, "/differentiation_grade"),
        ({"histology_category": "ganglioneuroblastoma_intermixed", "mki": "low"}, "/mki"),
        ({"inss_stage": "4S", "age_days": 400}, "/inss_stage"),
        ({"mki_count": 50, "mki": "high"}, "/mki"),
    ],
)
def test_contradictions_are_errors(engine: RuleEngine, facts: dict, pointer: str) -> None:
    got = problems(engine, facts)
    assert [(c, p) for c, p, _ in got] == [("NB510", pointer)]


def test_unlikely_combinations_are_warnings_in_the_result(engine: RuleEngine) -> None:
    result = engine.evaluate({"inss_stage": "1", "metastatic_sites": ["liver"], "age_days": 100})
    assert [(w["code"], w["pointer"]) for w in result.warnings] == [("NB511", "/inss_stage")]


def test_mki_count_of_exactly_200_follows_the_reading_in_force(engine: RuleEngine) -> None:
    # criteria.md §4.2: 200/5,000 is intermediate under the Shimada wording (the default of
    # mki_high_min_count) and high under the PathologyOutlines one (tests/test_constraints.py).
    engine.evaluate({"mki_count": 200, "mki": "intermediate"})
    got = problems(engine, {"mki_count": 200, "mki": "high"})
    assert got == [("NB510", "/mki", "mki_count 200 per 5,000 cells is MKI class intermediate, found high")]


@pytest.mark.parametrize(
    "text, code, pointer",
    [
        ('{"age_days": 1, "age_days": 2}', "NB506", "/age_days"),
        ('{"bone_marrow_tumor_percent": NaN}', "NB501", ""),
        ('{"age_days": 12', "NB501", ""),
        (b"\xff\xfe", "NB501", ""),
    ],
)
def test_json_parsing_is_strict(text: str | bytes, code: str, pointer: str) -> None:
    data, diags = parse_patient_json(text)
    assert data is None
    assert [(d.code, d.pointer) for d in diags] == [(code, pointer)]


def test_patient_error_pickles_with_diagnostics(engine: RuleEngine) -> None:
    with pytest.raises(PatientInputError) as info:
        engine.evaluate({"age_days": "x"})
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is PatientInputError
    assert clone.diagnostics == info.value.diagnostics
    assert clone.exit_code == 2


def test_fast_path_agrees_with_json_schema() -> None:
    """Valid records skip jsonschema: the compiled check must accept exactly what it accepts."""
    import random

    from jsonschema import Draft202012Validator

    from nbrules.patient import _fast_check
    from nbrules.vocabulary import input_facts, patient_schema

    specs = input_facts()
    fast = _fast_check(specs)
    schema = Draft202012Validator(patient_schema(specs))
    samples: dict[str, list[object]] = {}
    for name, spec in specs.items():
        good: list[object]
        if spec.kind == "enum":
            good = list(spec.values)
        elif spec.kind == "boolean":
            good = [True, False]
        elif spec.kind == "set":
            good = [[], [spec.values[0]], list(spec.values[:3])]
        else:
            good = [spec.minimum or 0, (spec.maximum or 1000) // 2, spec.maximum or 10**6]
        bad = ["x", 1, 1.5, -1, 10**9, True, None, [], ["x"], [spec.values[0]] * 2 if spec.values else "y", {}]
        samples[name] = good + bad
    rng = random.Random(7)
    names = list(specs)
    records: list[object] = [{}, [], "x", None]
    for name, values in samples.items():
        records += [{name: v} for v in values]
    for _ in range(3000):
        chosen = rng.sample(names, rng.randint(1, 6))
        records.append({n: rng.choice(samples[n]) for n in chosen})
    records += [{"unknown_fact": 1}, {"age_days": 10.0}, {"age_days": 10.5}]
    for r in records:
        assert fast(r) == (not list(schema.iter_errors(r))), r
    assert not fast({"bone_marrow_tumor_percent": float("nan")})  # jsonschema would accept NaN


def test_non_finite_numbers_are_rejected(engine: RuleEngine) -> None:
    assert problems(engine, {"bone_marrow_tumor_percent": float("nan")})[0][:2] == ("NB505", "/bone_marrow_tumor_percent")
