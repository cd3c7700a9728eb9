"""INRC 2017 response assessment against the published definitions, through the whole engine.

Expectations are written from Park et al., J Clin Oncol 2017;35:2580-87 (Tables 3-5) and
criteria.md §7.1, independently of the rule files' own cases: each component table at
both sides of every threshold, the overall table row by row (with the components built
from raw measurements, so the whole chain runs), the 4S exception, a missing component,
and records without any assessment.
"""

from __future__ import annotations

from typing import Any

import pytest

from nbrules import RuleEngine, build_bundled
from nbrules.compiler import compile_decision
from nbrules.runner import DecisionRunner
from nbrules.results import APPLIES_IF_GIVEN

OUTPUTS = ("inrc_primary_response", "inrc_metastatic_response", "inrc_marrow_response", "inrc_overall_response")


def primary(decrease: float, growth_pct: float, growth_mm: float, residual: float, uptake: str) -> dict[str, Any]:
    return {"primary_decrease_percent": decrease, "primary_growth_from_nadir_percent": growth_pct,
            "primary_growth_from_nadir_mm": growth_mm, "primary_residual_mm": residual, "primary_uptake": uptake}


PRIMARY_ROWS = [
    # Park 2017 Table 3, primary tumour: (facts, expected)
    (primary(95, 0, 0, 9.9, "resolved"), "CR"),             # < 10 mm and uptake resolved
    (primary(95, 0, 0, 10, "resolved"), "PR"),              # 10 mm is not < 10 mm; >= 30 % smaller
    (primary(95, 0, 0, 4, "stable_or_improved"), "PR"),     # uptake not resolved: no CR
    (primary(30, 0, 0, 40, "stable_or_improved"), "PR"),    # exactly 30 % decrease
    (primary(29.9, 0, 0, 40, "stable_or_improved"), "SD"),
    (primary(60, 0, 0, 40, "increased"), "SD"),             # PR needs uptake stable, improved or resolved
    (primary(-25, 20.1, 5, 60, "stable_or_improved"), "PD"),  # > 20 % and >= 5 mm
    (primary(-20, 20, 5, 60, "stable_or_improved"), "PD"),    # criteria.md INRC-PD: "20 % or more", "at least 5 mm"
    (primary(-19.9, 19.9, 10, 60, "stable_or_improved"), "SD"),
    (primary(-30, 30, 4.9, 21, "stable_or_improved"), "SD"),  # < 5 mm absolute
    (primary(50, 40, 8, 28, "stable_or_improved"), "PD"),     # measured from the nadir, not baseline
]


@pytest.mark.parametrize("facts, expected", PRIMARY_ROWS)
def test_primary_tumour_response(engine: RuleEngine, facts: dict[str, Any], expected: str) -> None:
    assert engine.evaluate(facts).outputs["inrc_primary_response"] == expected


def mets(st: bool, bone: bool, new: bool = False, **extra: Any) -> dict[str, Any]:
    return {"soft_tissue_metastases_at_baseline": st, "bone_metastases_at_baseline": bone, "new_lesion": new, **extra}


SOFT = dict(metastatic_sum_growth_from_nadir_percent=0, metastatic_sum_growth_from_nadir_mm=0,
            metastatic_uptake_resolved=False, metastatic_largest_lesion_mm=20, metastatic_largest_node_mm=0)

METASTATIC_ROWS = [
    # Park 2017 Table 3, soft-tissue and bone metastases; Table 5 for "not involved"
    (mets(False, False), "not_involved"),
    (mets(False, False, new=True), "PD"),
    (mets(True, False, **{**SOFT, "metastatic_sum_decrease_percent": 30}), "PR"),
    (mets(True, False, **{**SOFT, "metastatic_sum_decrease_percent": 29.9}), "SD"),
    (mets(True, False, **{**SOFT, "metastatic_sum_decrease_percent": -21, "metastatic_sum_growth_from_nadir_percent": 21,
                          "metastatic_sum_growth_from_nadir_mm": 5}), "PD"),
    (mets(True, False, **{**SOFT, "metastatic_sum_decrease_percent": -20, "metastatic_sum_growth_from_nadir_percent": 20,
                          "metastatic_sum_growth_from_nadir_mm": 5}), "PD"),  # criteria.md INRC-PD: "20 % or more"
    (mets(True, False, **{**SOFT, "metastatic_sum_decrease_percent": -19.9, "metastatic_sum_growth_from_nadir_percent": 19.9,
                          "metastatic_sum_growth_from_nadir_mm": 6}), "SD"),
    (mets(True, False, **{**SOFT, "metastatic_sum_decrease_percent": 0, "metastatic_sum_growth_from_nadir_percent": 25,
                          "metastatic_sum_growth_from_nadir_mm": 4.9}), "SD"),
    (mets(True, False, **{**SOFT, "metastatic_sum_decrease_percent": 90, "metastatic_uptake_resolved": True,
                          "metastatic_largest_lesion_mm": 9.9, "metastatic_largest_node_mm": 9.9}), "CR"),
    (mets(True, False, **{**SOFT, "metastatic_sum_decrease_percent": 90, "metastatic_uptake_resolved": True,
                          "metastatic_largest_lesion_mm": 0, "metastatic_largest_node_mm": 10}), "PR"),
    (mets(False, True, mibg_relative_bone_score=0.5, metastatic_uptake_resolved=False), "PR"),
    (mets(False, True, mibg_relative_bone_score=0.51, metastatic_uptake_resolved=False), "SD"),
    (mets(False, True, mibg_relative_bone_score=1.19, metastatic_uptake_resolved=False), "SD"),
    (mets(False, True, mibg_relative_bone_score=1.2, metastatic_uptake_resolved=False), "PD"),
    (mets(False, True, mibg_relative_bone_score=0, metastatic_uptake_resolved=True), "CR"),
    (mets(True, True, **{**SOFT, "metastatic_sum_decrease_percent": 40, "mibg_relative_bone_score": 0.7}), "SD"),
    (mets(True, True, **{**SOFT, "metastatic_sum_decrease_percent": 40, "mibg_relative_bone_score": 0.2}), "PR"),
]


@pytest.mark.parametrize("facts, expected", METASTATIC_ROWS)
def test_metastatic_response(engine: RuleEngine, facts: dict[str, Any], expected: str) -> None:
    assert engine.evaluate(facts).outputs["inrc_metastatic_response"] == expected


# Exactly +20 % and +5 mm under each reading of the contested PD boundary (criteria.md §7.1:
# "20 % or more", RECIST 1.1 "at least 20 %"; the strict "> 20 %" is the alternative).
BOUNDARY = {
    "response-primary": ("inrc_primary_response", primary(-20, 20, 5, 60, "stable_or_improved")),
    "response-metastatic": ("inrc_metastatic_response", mets(True, False, **{
        **SOFT, "metastatic_sum_decrease_percent": -20, "metastatic_sum_growth_from_nadir_percent": 20,
        "metastatic_sum_growth_from_nadir_mm": 5})),
}


@pytest.mark.parametrize("decision_id", sorted(BOUNDARY))
@pytest.mark.parametrize("inclusive, expected", [(True, "PD"), (False, "SD")])
def test_progression_boundary_is_a_named_parameter(decision_id: str, inclusive: bool, expected: str) -> None:
    decision = next(d for d in build_bundled().decisions if d.id == decision_id)
    p = decision.parameters["progression_percent_inclusive"]
    assert p.value is True and {v for v, _ in p.alternatives} == {False}
    assert "criteria.md INRC-PD" in p.cite and "recist11" in p.cite
    output, facts = BOUNDARY[decision_id]
    runner = DecisionRunner(compile_decision(decision, {"progression_percent_inclusive": inclusive}))
    try:
        assert runner.decide(runner.view(facts)).outputs[output].value == expected
    finally:
        runner.close()


MARROW_ROWS = [
    # Park 2017 Table 4: (baseline %, now %, fold or None, expected)
    (0, 0, None, "not_involved"),
    (25, 0, None, "CR"),
    (0, 5.1, None, "PD"),          # negative marrow now > 5 %
    (0, 5, None, "MD"),            # <= 5 % is minimal disease
    (0, 0.5, None, "MD"),
    (4, 4, None, "MD"),
    (50, 5, None, "MD"),
    (50, 5.1, None, "SD"),
    (10, 21, 2.1, "PD"),           # > 20 % and more than doubled
    (10, 20, 2, "SD"),             # 20 % is not > 20 %
    (15, 30, 2, "SD"),             # exactly doubled is not > 2-fold
    (30, 45, 1.5, "SD"),
]


@pytest.mark.parametrize("baseline, now, fold, expected", MARROW_ROWS)
def test_marrow_response(engine: RuleEngine, baseline: float, now: float, fold: float | None, expected: str) -> None:
    facts: dict[str, Any] = {"marrow_baseline_tumor_percent": baseline, "marrow_tumor_percent": now}
    if fold is not None:
        facts["marrow_tumor_fold_change"] = fold
    assert engine.evaluate(facts).outputs["inrc_marrow_response"] == expected


# Raw measurements that give each component response (checked by the tests above).
PRIMARY = {"CR": primary(95, 0, 0, 5, "resolved"), "PR": primary(50, 0, 0, 25, "stable_or_improved"),
           "SD": primary(10, 0, 0, 45, "stable_or_improved"), "PD": primary(-40, 40, 12, 70, "increased")}
METS = {"NI": mets(False, False),
        "CR": mets(False, True, mibg_relative_bone_score=0, metastatic_uptake_resolved=True),
        "PR": mets(False, True, mibg_relative_bone_score=0.4, metastatic_uptake_resolved=False),
        "SD": mets(False, True, mibg_relative_bone_score=0.8, metastatic_uptake_resolved=False),
        "PD": mets(False, True, mibg_relative_bone_score=1.5, metastatic_uptake_resolved=False)}
MARROW = {"NI": (0, 0), "CR": (30, 0), "MD": (30, 3), "SD": (30, 15), "PD": (0, 10)}

OVERALL_ROWS = [
    # Park 2017 Table 5: primary, metastases, marrow -> overall (NI = not involved)
    ("CR", "CR", "CR", "CR"),
    ("CR", "NI", "NI", "CR"),
    ("CR", "NI", "CR", "CR"),
    ("PR", "CR", "CR", "PR"),
    ("CR", "PR", "NI", "PR"),
    ("PR", "PR", "MD", "PR"),      # MD is allowed beside a PR
    ("PR", "NI", "NI", "PR"),
    ("PR", "SD", "CR", "MR"),      # CR/PR in one, SD in another
    ("SD", "CR", "NI", "MR"),
    ("SD", "NI", "CR", "MR"),
    ("SD", "SD", "SD", "SD"),
    ("SD", "NI", "NI", "SD"),
    ("SD", "SD", "NI", "SD"),
    ("PD", "CR", "CR", "PD"),
    ("CR", "PD", "CR", "PD"),
    ("CR", "CR", "PD", "PD"),
    ("PR", "PR", "PD", "PD"),
    # marrow MD where the table names no row: the default reading counts MD like a PR
    ("CR", "CR", "MD", "PR"),
    ("SD", "NI", "MD", "MR"),
]


def assessment(p: str, m: str, b: str) -> dict[str, Any]:
    base, now = MARROW[b]
    return {"age_days": 1100, **PRIMARY[p], **METS[m], "marrow_baseline_tumor_percent": base,
            "marrow_tumor_percent": now}


@pytest.mark.parametrize("p, m, b, expected", OVERALL_ROWS, ids=["-".join(r) for r in OVERALL_ROWS])
def test_overall_response(engine: RuleEngine, p: str, m: str, b: str, expected: str) -> None:
    r = engine.evaluate(assessment(p, m, b))
    names = {"NI": "not_involved"}
    assert r.outputs["inrc_primary_response"] == p
    assert r.outputs["inrc_metastatic_response"] == names.get(m, m)
    assert r.outputs["inrc_marrow_response"] == names.get(b, b)
    assert r.outputs["inrc_overall_response"] == expected


def infant_l1(age: int, **extra: Any) -> dict[str, Any]:
    """First staged L1 (no IDRF, no metastasis at diagnosis); new disease in liver since."""
    return {"age_days": age, "primary_idrfs": [], "metastatic_sites": [], **PRIMARY["SD"],
            **mets(False, False, new=True), "marrow_baseline_tumor_percent": 0, "marrow_tumor_percent": 0, **extra}


def test_infant_first_staged_l1_with_a_4s_pattern_is_not_progression(engine: RuleEngine) -> None:
    r = engine.evaluate(infant_l1(200, new_disease_4s_pattern=True))
    assert r.outputs["inrgss_stage"] == "L1"
    assert r.outputs["inrc_metastatic_response"] == "PD"
    assert r.outputs["inrc_overall_response"] is None
    na = r.not_applicable["inrc_overall_response"]
    assert na.scope == "O-4S-pattern" and "not counted as progression" in na.reason.lower()


@pytest.mark.parametrize("facts", [infant_l1(365, new_disease_4s_pattern=True),   # no longer an infant
                                   infant_l1(200, new_disease_4s_pattern=False),  # not the 4S pattern
                                   {**infant_l1(200, new_disease_4s_pattern=True), **PRIMARY["PD"]}])
def test_progression_outside_the_4s_exception(engine: RuleEngine, facts: dict[str, Any]) -> None:
    assert engine.evaluate(facts).outputs["inrc_overall_response"] == "PD"


def test_an_unknown_pattern_leaves_progression_open(engine: RuleEngine) -> None:
    r = engine.evaluate(infant_l1(200))
    ind = r.indeterminate["inrc_overall_response"]
    assert ind.candidates == ("PD",) and ind.may_be_out_of_scope and ind.missing == ("new_disease_4s_pattern",)


def test_a_missing_component_makes_the_overall_response_indeterminate(engine: RuleEngine) -> None:
    facts = assessment("PR", "NI", "CR")
    for k in METS["NI"]:
        del facts[k]
    r = engine.evaluate(facts)
    assert r.outputs["inrc_overall_response"] is None
    ind = r.indeterminate["inrc_overall_response"]
    # metastases CR/PR/not involved -> PR, SD -> MR, PD -> PD (a 3-year-old: no 4S exception)
    assert set(ind.candidates) == {"PR", "MR", "PD"}
    assert ind.missing == ("inrc_metastatic_response",)
    assert {"soft_tissue_metastases_at_baseline", "bone_metastases_at_baseline", "new_lesion"} <= set(
        ind.via["inrc_metastatic_response"])


def test_without_an_assessment_the_response_outputs_are_declared_not_applicable(engine: RuleEngine) -> None:
    r = engine.evaluate({"age_days": 183, "primary_idrfs": [], "metastatic_sites": ["liver", "skin"],
                         "mibg_bone_or_marrow_avid": False})
    assert r.outputs["inrgss_stage"] == "MS"
    for name in OUTPUTS:
        assert r.outputs[name] is None and name not in r.indeterminate
        assert r.not_applicable[name].scope == APPLIES_IF_GIVEN
        assert "no response assessment" in r.not_applicable[name].reason
    assert not any(f.decision.startswith("response-") for f in r.fired)


def test_one_response_fact_opens_every_response_decision(engine: RuleEngine) -> None:
    r = engine.evaluate({"marrow_baseline_tumor_percent": 0, "marrow_tumor_percent": 0})
    assert r.outputs["inrc_marrow_response"] == "not_involved"
    for name in ("inrc_primary_response", "inrc_metastatic_response", "inrc_overall_response"):
        assert name in r.indeterminate and name not in r.not_applicable


def test_text_explanation_of_a_response_assessment(engine: RuleEngine) -> None:
    from nbrules.explain import explain

    r = engine.evaluate(assessment("PR", "PR", "SD"))
    text = explain(r, {d.id: d for d in engine.decisions})
    assert any(line.split() == ["inrc", "overall", "response", "MR"] for line in text.splitlines())
    assert "Minor response - CR or PR in at least one component, SD in at least one other, no PD." in text
    # the bone-only patient's soft-tissue measurements were not needed, so they are not listed as matched
    assert "metastatic_sum_decrease_percent" not in text and "Metastases: decrease" not in text
    plain = explain(engine.evaluate({"age_days": 900}), {d.id: d for d in engine.decisions})
    assert "not applicable: inrc marrow response, inrc metastatic response, inrc primary response," in plain


def test_a_number_without_a_minimum_has_finite_cells() -> None:
    """primary_decrease_percent has no minimum (a tumour can more than double): the cell below
    the 30 % cut needs a finite example value, which durable-rules can be given."""
    import math

    from nbrules import build_bundled
    from nbrules.domain import decision_domain

    d = next(x for x in build_bundled().decisions if x.id == "response-primary")
    cells = decision_domain(d).partitions["primary_decrease_percent"].cells
    values = [c.representative for c in cells]
    assert all(math.isfinite(v) for v in values)
    assert values[0] < 30 <= values[1]
