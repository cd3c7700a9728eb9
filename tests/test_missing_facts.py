"""Missing facts give indeterminate outputs with the right candidates and the facts needed;
outputs that do not depend on them stay determinate (issue #3, criteria.md §5.1 note 3, §6.2)."""

from __future__ import annotations

from nbrules import RuleEngine


def ind(engine: RuleEngine, output: str, **facts: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    r = engine.evaluate(facts)
    assert r.outputs[output] is None
    i = r.indeterminate[output]
    return i.candidates, i.missing


def test_ms_not_amplified_11q_unknown_is_inrg_c_or_q(engine: RuleEngine) -> None:
    assert ind(engine, "inrg_group", inrgss_stage="MS", age_days=200, mycn_status="not_amplified") == \
        (("C", "Q"), ("chr11q_status",))


def test_l2_young_not_amplified_11q_unknown_is_d_or_g(engine: RuleEngine) -> None:
    assert ind(engine, "inrg_group", inrgss_stage="L2", age_days=300, histology_category="neuroblastoma",
               mycn_status="not_amplified") == (("D", "G"), ("chr11q_status",))


def test_m_young_not_amplified_ploidy_unknown(engine: RuleEngine) -> None:
    assert ind(engine, "inrg_group", inrgss_stage="M", age_days=400, mycn_status="not_amplified") == \
        (("F", "J"), ("ploidy",))


def test_l1_amplified_before_surgery_is_cog_low_or_high(engine: RuleEngine) -> None:
    assert ind(engine, "cog_risk", inrgss_stage="L1", mycn_status="amplified", resection_extent="not_done") == \
        (("low", "high"), ("resection_extent",))
    assert ind(engine, "cog_risk", inrgss_stage="L1", mycn_status="amplified") == \
        (("low", "high"), ("resection_extent",))


def test_m_at_three_years_is_cog_high_whatever_mycn(engine: RuleEngine) -> None:
    r = engine.evaluate({"inrgss_stage": "M", "age_days": 1095})
    assert r.outputs["cog_risk"] == "high" and "cog_risk" not in r.indeterminate
    assert r.outputs["inrg_group"] == "P"


def test_unknown_mycn_is_indeterminate_except_m_from_18_months(engine: RuleEngine) -> None:
    for stage, age in [("L1", 300), ("L2", 300), ("M", 300), ("MS", 300)]:
        r = engine.evaluate({"inrgss_stage": stage, "age_days": age})
        assert r.outputs["cog_risk"] is None, stage
        assert "mycn_status" in r.indeterminate["cog_risk"].missing, stage


def test_chain_reports_the_inputs_behind_a_derived_fact(engine: RuleEngine) -> None:
    # Stage depends on the missing IDRFs; COG v2 then depends on the stage.
    r = engine.evaluate({"age_days": 300, "metastatic_sites": [], "mycn_status": "not_amplified"})
    assert r.indeterminate["inrgss_stage"].candidates == ("L1", "L2")
    cog = r.indeterminate["cog_risk"]
    assert cog.candidates == ("low", "intermediate")
    assert cog.missing == ("inrgss_stage",) and cog.via == {"inrgss_stage": ("primary_idrfs",)}


def test_indeterminate_stage_restricts_the_next_decision(engine: RuleEngine) -> None:
    # L1 or L2 only: COG v2 may not consider M or MS rows.
    r = engine.evaluate({"age_days": 2000, "metastatic_sites": [], "mycn_status": "amplified",
                         "resection_extent": "complete"})
    assert r.indeterminate["cog_risk"].candidates == ("low", "high")  # L1 resected -> low, L2 -> high


def test_unknown_histology_category_may_fall_outside_inrg(engine: RuleEngine) -> None:
    r = engine.evaluate({"inrgss_stage": "L1", "mycn_status": "not_amplified"})
    i = r.indeterminate["inrg_group"]
    assert i.candidates == ("A", "B") and i.may_be_out_of_scope  # GN mature is outside the table


def test_out_of_scope_is_not_applicable_with_reason(engine: RuleEngine) -> None:
    r = engine.evaluate({"inrgss_stage": "L2", "histology_category": "ganglioneuroma_mature"})
    assert r.outputs["inrg_group"] is None
    na = r.not_applicable["inrg_group"]
    assert na.scope == "GN-mature" and "not part of the INRG table" in na.reason
    assert na.source is not None and na.source.startswith("rules/risk/inrg.yaml:")
