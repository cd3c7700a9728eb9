"""INSS stage from the surgical findings (Brodeur 1993; criteria.md §3.1, §3.2).

Expectations are read off the stage definitions and footnotes of criteria.md §3.1,
independently of the rule file's cases, and run through the whole engine.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from nbrules import RuleEngine

from .conftest import REPO

# A localised unilateral primary, nothing across the midline, no distant disease.
LOCAL = dict(contralateral_nodes="negative", crosses_midline=False, midline_bilateral_extension=False,
             metastatic_sites=[])
# The 4S pattern of dissemination in an infant, MIBG negative in the marrow.
PATTERN_4S = dict(metastatic_sites=["liver", "skin"], mibg_bone_or_marrow_avid=False, age_days=100)


def stage(engine: RuleEngine, **facts: Any) -> str | None:
    return engine.evaluate(facts).outputs["inss_stage"]


# (what the definition says, facts, stage)
STAGES = [
    # 1: complete gross excision, with or without microscopic residual; ipsilateral nodes negative
    ("1", dict(LOCAL, resection_extent="complete", ipsilateral_nodes="negative"), "1"),
    # 2A: incomplete gross excision; ipsilateral non-adherent nodes negative (biopsy alone = incomplete)
    ("2A", dict(LOCAL, resection_extent="incomplete", ipsilateral_nodes="negative"), "2A"),
    # 2B: with or without complete gross excision, ipsilateral non-adherent nodes positive
    ("2B complete", dict(LOCAL, resection_extent="complete", ipsilateral_nodes="positive"), "2B"),
    ("2B incomplete", dict(LOCAL, resection_extent="incomplete", ipsilateral_nodes="positive"), "2B"),
    # 3: unresectable unilateral tumour infiltrating across the midline, with or without nodes
    ("3 midline", dict(LOCAL, crosses_midline=True, resection_extent="incomplete", ipsilateral_nodes="negative"), "3"),
    ("3 midline, nodes", dict(LOCAL, crosses_midline=True, resection_extent="incomplete",
                              ipsilateral_nodes="positive"), "3"),
    # 3: localised unilateral tumour with contralateral regional node involvement
    ("3 contralateral", dict(LOCAL, contralateral_nodes="positive", resection_extent="complete",
                             ipsilateral_nodes="negative"), "3"),
    # 3: midline tumour with bilateral extension by infiltration or by nodes
    ("3 bilateral", dict(LOCAL, midline_bilateral_extension=True, resection_extent="incomplete",
                         ipsilateral_nodes="negative"), "3"),
    # 4: dissemination to distant nodes, bone, marrow, liver, skin or other organs except as for 4S
    ("4 bone", dict(LOCAL, resection_extent="complete", ipsilateral_nodes="negative", metastatic_sites=["bone"],
                    mibg_bone_or_marrow_avid=True, age_days=100), "4"),
    ("4 distant nodes", dict(LOCAL, resection_extent="complete", ipsilateral_nodes="negative",
                             metastatic_sites=["distant_lymph_nodes"], mibg_bone_or_marrow_avid=False,
                             age_days=100), "4"),
    ("4 lung", dict(LOCAL, resection_extent="complete", ipsilateral_nodes="negative", metastatic_sites=["lung"],
                    mibg_bone_or_marrow_avid=False, age_days=100), "4"),
    # 4S: localised primary as for 1, 2A or 2B; skin, liver and/or marrow; infant
    ("4S with a stage 1 primary", dict(LOCAL, resection_extent="complete", ipsilateral_nodes="negative",
                                       **PATTERN_4S), "4S"),
    ("4S with a 2A primary", dict(LOCAL, resection_extent="incomplete", ipsilateral_nodes="negative",
                                  **PATTERN_4S), "4S"),
    ("4S with a 2B primary", dict(LOCAL, resection_extent="incomplete", ipsilateral_nodes="positive",
                                  **PATTERN_4S), "4S"),
    ("4S marrow 5 %", dict(LOCAL, resection_extent="incomplete", **{**PATTERN_4S, "metastatic_sites": ["bone_marrow"]},
                          bone_marrow_tumor_percent=5), "4S"),
    # a 4S pattern with a stage 3 primary is 4
    ("4S pattern, contralateral nodes", dict(LOCAL, resection_extent="incomplete", contralateral_nodes="positive",
                                             **PATTERN_4S), "4"),
    ("4S pattern, unresectable across the midline", dict(LOCAL, resection_extent="incomplete", crosses_midline=True,
                                                         **PATTERN_4S), "4"),
    ("4S pattern, midline bilateral extension", dict(LOCAL, resection_extent="incomplete",
                                                     midline_bilateral_extension=True, **PATTERN_4S), "4"),
    # marrow must be < 10 %; MIBG, if performed, negative in the marrow
    ("4S pattern, marrow 10 %", dict(LOCAL, resection_extent="incomplete",
                                     **{**PATTERN_4S, "metastatic_sites": ["bone_marrow"]},
                                     bone_marrow_tumor_percent=10), "4"),
    ("4S pattern, MIBG positive in the marrow", dict(LOCAL, resection_extent="incomplete",
                                                     **{**PATTERN_4S, "metastatic_sites": ["liver", "bone_marrow"],
                                                        "mibg_bone_or_marrow_avid": True},
                                                     bone_marrow_tumor_percent=2), "4"),
]


@pytest.mark.parametrize("label, facts, expected", STAGES, ids=[s[0] for s in STAGES])
def test_inss_stage_definitions(engine: RuleEngine, label: str, facts: dict, expected: str) -> None:
    assert stage(engine, **facts) == expected


@pytest.mark.parametrize("age, expected", [(0, "4S"), (364, "4S"), (365, "4"), (366, "4"), (547, "4"), (548, "4")])
def test_4s_is_limited_to_infants_under_365_days(engine: RuleEngine, age: int, expected: str) -> None:
    facts = dict(LOCAL, resection_extent="incomplete", **{**PATTERN_4S, "age_days": age})
    assert stage(engine, **facts) == expected


@pytest.mark.parametrize("percent, expected", [(0.1, "4S"), (9.9, "4S"), (10, "4"), (10.1, "4"), (50, "4")])
def test_4s_marrow_below_10_percent(engine: RuleEngine, percent: float, expected: str) -> None:
    facts = dict(LOCAL, resection_extent="incomplete", **{**PATTERN_4S, "metastatic_sites": ["skin", "bone_marrow"]},
                 bone_marrow_tumor_percent=percent)
    assert stage(engine, **facts) == expected


@pytest.mark.parametrize("site", ["bone", "distant_lymph_nodes", "lung", "cns", "pleura", "peritoneum", "other"])
def test_dissemination_beyond_skin_liver_marrow_is_4(engine: RuleEngine, site: str) -> None:
    facts = dict(LOCAL, resection_extent="complete", ipsilateral_nodes="negative",
                 **{**PATTERN_4S, "metastatic_sites": ["liver", site]})
    assert stage(engine, **facts) == "4"


def test_a_completely_resected_midline_crossing_tumour_is_staged_by_its_nodes(engine: RuleEngine) -> None:
    # "Unresectable unilateral tumor infiltrating across the midline": the literal reading (the
    # default of parameter midline_crossing_resected) does not make a resected one stage 3.
    base = dict(LOCAL, crosses_midline=True, resection_extent="complete")
    assert stage(engine, **base, ipsilateral_nodes="negative") == "1"
    assert stage(engine, **base, ipsilateral_nodes="positive") == "2B"
    assert stage(engine, **{**base, "contralateral_nodes": "positive"}, ipsilateral_nodes="negative") == "3"
    d = next(d for d in engine.decisions if d.id == "inss")
    assert [v for v, _ in d.parameters["midline_crossing_resected"].alternatives] == ["always_3"]


def test_missing_surgical_findings_give_candidates_and_what_settles_them(engine: RuleEngine) -> None:
    r = engine.evaluate(dict(LOCAL, resection_extent="not_done", ipsilateral_nodes="negative"))
    ind = r.indeterminate["inss_stage"]
    assert (ind.candidates, ind.missing) == (("1", "2A"), ("resection_extent",))
    r = engine.evaluate(dict(LOCAL, resection_extent="not_done", ipsilateral_nodes="negative", crosses_midline=True))
    ind = r.indeterminate["inss_stage"]
    assert (ind.candidates, ind.missing) == (("1", "3"), ("resection_extent",))
    r = engine.evaluate(dict(LOCAL, resection_extent="complete"))
    ind = r.indeterminate["inss_stage"]
    assert (ind.candidates, ind.missing) == (("1", "2B"), ("ipsilateral_nodes",))
    r = engine.evaluate(dict(LOCAL, resection_extent="incomplete", metastatic_sites=["liver"], age_days=100))
    ind = r.indeterminate["inss_stage"]
    assert (ind.candidates, ind.missing) == (("4", "4S"), ("mibg_bone_or_marrow_avid",))
    assert engine.evaluate({}).indeterminate["inss_stage"].candidates == ("1", "2A", "2B", "3", "4", "4S")


def test_pending_surgery_does_not_block_what_it_cannot_change(engine: RuleEngine) -> None:
    # 2B is "with or without complete gross excision"; distant disease at 1 year or older is 4.
    assert stage(engine, **dict(LOCAL, resection_extent="not_done", ipsilateral_nodes="positive")) == "2B"
    assert stage(engine, resection_extent="not_done", metastatic_sites=["liver"], age_days=400) == "4"


def test_inss_is_never_derived_from_inrgss(engine: RuleEngine) -> None:
    r = engine.evaluate({"inrgss_stage": "L1", "age_days": 400, "metastatic_sites": []})
    assert "inss_stage" in r.indeterminate
    d = next(d for d in engine.decisions if d.id == "inss")
    assert "inrgss_stage" not in d.reads and "primary_idrfs" not in d.reads


def test_a_given_stage_wins_with_nb521_when_the_findings_disagree(engine: RuleEngine) -> None:
    facts = dict(LOCAL, resection_extent="complete", ipsilateral_nodes="negative", inss_stage="2A")
    r = engine.evaluate(facts)
    assert r.outputs["inss_stage"] == "2A" and "inss_stage" in r.from_input
    assert [(w["code"], w["pointer"]) for w in r.warnings] == [("NB521", "/inss_stage")]
    assert "derives 1" in r.warnings[0]["message"]
    r = engine.evaluate({**facts, "inss_stage": "1"})
    assert r.outputs["inss_stage"] == "1" and r.warnings == ()


# --- the COG INSS-era table from the surgical findings (criteria.md §6.1) -----------------

COG_V1_FROM_FINDINGS = [
    # (findings, biology, INSS stage the definitions give, COG INSS-era risk in the default edition)
    (dict(LOCAL, resection_extent="complete", ipsilateral_nodes="negative", age_days=2000),
     dict(mycn_status="amplified"), "1", "low"),                                           # v1-1
    (dict(LOCAL, resection_extent="incomplete", ipsilateral_nodes="positive", age_days=800),
     dict(mycn_status="not_amplified"), "2B", "low"),                                      # v1-3
    (dict(LOCAL, crosses_midline=True, resection_extent="incomplete", age_days=400),
     dict(mycn_status="not_amplified", inpc_histology="unfavorable"), "3", "intermediate"),  # v1-9, 2006 edition
    (dict(LOCAL, contralateral_nodes="positive", resection_extent="complete", age_days=100),
     dict(mycn_status="amplified"), "3", "high"),                                           # v1-7
    (dict(LOCAL, resection_extent="incomplete", **PATTERN_4S),
     dict(mycn_status="not_amplified", inpc_histology="favorable", ploidy="hyperdiploid"), "4S", "low"),  # v1-17
    (dict(LOCAL, resection_extent="incomplete", **{**PATTERN_4S, "age_days": 400}),
     dict(mycn_status="not_amplified", inpc_histology="favorable", ploidy="hyperdiploid"), "4",
     "intermediate"),  # v1-12, 2006 edition
]


@pytest.mark.parametrize("findings, biology, inss, risk", COG_V1_FROM_FINDINGS,
                         ids=[f"INSS {c[2]} -> {c[3]}" for c in COG_V1_FROM_FINDINGS])
def test_cog_v1_risk_is_settled_from_the_surgical_findings(engine: RuleEngine, findings: dict, biology: dict,
                                                           inss: str, risk: str) -> None:
    r = engine.evaluate({**findings, **biology})
    assert r.outputs["inss_stage"] == inss and "inss_stage" not in r.from_input
    assert r.outputs["cog_v1_risk"] == risk and "cog_v1_risk" not in r.indeterminate
    without_findings = {k: v for k, v in {**findings, **biology}.items()
                        if k in ("age_days", "mycn_status", "inpc_histology", "ploidy")}
    assert "cog_v1_risk" in engine.evaluate(without_findings).indeterminate  # before: indeterminate


def test_cog_v1_risk_before_surgery_names_the_finding_that_settles_it(engine: RuleEngine) -> None:
    r = engine.evaluate(dict(LOCAL, crosses_midline=True, resection_extent="not_done", ipsilateral_nodes="negative",
                             age_days=400, mycn_status="not_amplified", inpc_histology="unfavorable"))
    ind = r.indeterminate["cog_v1_risk"]
    assert ind.candidates == ("low", "intermediate")  # INSS 1 -> v1-1, INSS 3 -> v1-9 (2006 edition)
    assert ind.via == {"inss_stage": ("resection_extent",)}


def test_text_explanation_of_an_inss_derivation() -> None:
    proc = subprocess.run([sys.executable, "-m", "nbrules.cli", "evaluate", "examples/inss-midline-toddler.json",
                           "--format", "text"], cwd=REPO, capture_output=True, text=True, check=True)
    text = proc.stdout
    assert any(line.split() == ["INSS", "stage", "3"] for line in text.splitlines())
    why = " ".join(text.split("Why:", 1)[1].split())
    assert "inss 1.0.0, rule 3-midline (rules/staging/inss.yaml:" in why
    assert "Unresectable unilateral tumour infiltrating across the midline" in why
    assert ("matched: Extent of resection = incomplete; Primary crosses the midline = yes; "
            "Metastatic sites = none") in why
    assert "cites: brodeur1993" in why
    assert "rule v1-9-toddler" in why and "matched: INSS stage = 3; Age at diagnosis = 400 days" in why
