"""INRGSS (criteria.md §1.2 S1-S11, §2.1 IDRF 1-20), written from the criteria table.

Expectations here are read off criteria.md, independently of the rule file's cases.
"""

from __future__ import annotations

import pytest

from nbrules import RuleEngine

IDRFS = [
    "two_compartments", "neck_vessel_encasement", "skull_base_extension", "neck_trachea_compression",
    "brachial_plexus_encasement", "cervicothoracic_vessel_encasement", "cervicothoracic_trachea_compression",
    "thoracic_aorta_encasement", "thoracic_airway_compression", "costovertebral_junction_infiltration",
    "thoracoabdominal_vessel_encasement", "porta_hepatis_infiltration", "mesenteric_root_encasement",
    "coeliac_sma_origin_encasement", "renal_pedicle_invasion", "abdominal_vessel_encasement",
    "iliac_vessel_encasement", "sciatic_notch_crossing", "intraspinal_extension", "adjacent_organ_infiltration",
]

MS_BASE = {"age_days": 300, "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": False}


def stage(engine: RuleEngine, **facts: object) -> str | None:
    return engine.evaluate(facts).outputs["inrgss_stage"]


def test_there_are_twenty_idrfs_in_the_vocabulary() -> None:
    from nbrules.vocabulary import input_facts

    assert input_facts()["primary_idrfs"].values == tuple(IDRFS)


@pytest.mark.parametrize("idrf", IDRFS)
def test_s2_any_single_idrf_without_metastasis_is_l2(engine: RuleEngine, idrf: str) -> None:
    assert stage(engine, primary_idrfs=[idrf], metastatic_sites=[]) == "L2"


def test_s2_no_idrf_no_metastasis_is_l1(engine: RuleEngine) -> None:
    assert stage(engine, primary_idrfs=[], metastatic_sites=[]) == "L1"


@pytest.mark.parametrize("age, expected", [(546, "MS"), (547, "M"), (548, "M"), (0, "MS"), (364, "MS"), (365, "MS")])
def test_s9_ms_age_limit_below_547_days(engine: RuleEngine, age: int, expected: str) -> None:
    assert stage(engine, **{**MS_BASE, "age_days": age}) == expected


@pytest.mark.parametrize("percent, expected", [(0.5, "MS"), (9.9, "MS"), (10, "M"), (10.1, "M"), (60, "M")])
def test_s9_s11_marrow_below_10_percent(engine: RuleEngine, percent: float, expected: str) -> None:
    facts = {**MS_BASE, "metastatic_sites": ["bone_marrow"], "bone_marrow_tumor_percent": percent}
    assert stage(engine, **facts) == expected


def test_s9_mibg_positive_in_bone_or_marrow_excludes_ms(engine: RuleEngine) -> None:
    assert stage(engine, **{**MS_BASE, "mibg_bone_or_marrow_avid": True}) == "M"


@pytest.mark.parametrize("site", ["bone", "distant_lymph_nodes", "lung", "cns", "pleura", "peritoneum", "other"])
def test_s4_s5_s9_sites_outside_skin_liver_marrow_are_m(engine: RuleEngine, site: str) -> None:
    assert stage(engine, **{**MS_BASE, "metastatic_sites": ["liver", site]}) == "M"
    assert stage(engine, **{**MS_BASE, "metastatic_sites": [site]}) == "M"


@pytest.mark.parametrize("sites", [["skin"], ["liver"], ["skin", "liver"]])
def test_s9_ms_sites(engine: RuleEngine, sites: list[str]) -> None:
    assert stage(engine, **{**MS_BASE, "metastatic_sites": sites}) == "MS"


def test_s9_skin_liver_marrow_together_below_limits_is_ms(engine: RuleEngine) -> None:
    facts = {**MS_BASE, "metastatic_sites": ["skin", "liver", "bone_marrow"], "bone_marrow_tumor_percent": 5}
    assert stage(engine, **facts) == "MS"


def test_s10_ms_primary_may_have_idrfs(engine: RuleEngine) -> None:
    assert stage(engine, **{**MS_BASE, "primary_idrfs": ["two_compartments", "intraspinal_extension"]}) == "MS"


def test_metastasis_is_decided_before_the_idrfs(engine: RuleEngine) -> None:
    # Implementation note of §1.2: with distant disease, the IDRFs do not matter.
    result = engine.evaluate({"age_days": 900, "metastatic_sites": ["bone"]})
    assert result.outputs["inrgss_stage"] == "M"
    assert "inrgss_stage" not in result.indeterminate


def test_missing_facts_give_the_exact_candidates(engine: RuleEngine) -> None:
    r = engine.evaluate({"age_days": 300, "metastatic_sites": ["bone_marrow"], "mibg_bone_or_marrow_avid": False})
    ind = r.indeterminate["inrgss_stage"]
    assert (ind.candidates, ind.missing) == (("M", "MS"), ("bone_marrow_tumor_percent",))
    r = engine.evaluate({"age_days": 300, "metastatic_sites": ["liver"]})
    ind = r.indeterminate["inrgss_stage"]
    assert (ind.candidates, ind.missing) == (("M", "MS"), ("mibg_bone_or_marrow_avid",))
    r = engine.evaluate({})
    assert r.indeterminate["inrgss_stage"].candidates == ("L1", "L2", "M", "MS")
