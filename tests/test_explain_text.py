"""The text explanation reads without a glossary (issue 14, point 7): fact titles and value
labels from the vocabulary, ages in days with years and months, only the facts a rule
tested, no empty pointer before a warning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from nbrules import RuleEngine
from nbrules.explain import explain, fact_value, show_age
from nbrules.resources import bundled_rules_dir
from nbrules.sources import RuleSource, directory_sources
from nbrules.vocabulary import input_facts

from .conftest import REPO
from .test_versions import PATIENT, versions


def _text(engine: RuleEngine, facts: dict) -> str:
    return explain(engine.evaluate(facts), {d.id: d for d in engine.decisions}, engine.build.vocabulary)


@pytest.mark.parametrize("days, shown", [
    (183, "183 days (6 months)"),
    (364, "364 days (11 months)"),
    (365, "365 days (1 year)"),       # the first birthday, whatever the leap years
    (547, "547 days (1 year 5 months)"),  # the two readings of 18 months (criteria.md §1.3)
    (548, "548 days (1 year 6 months)"),
    (577, "577 days (1 year 6 months)"),  # completed months: 18.96 months is 18
    (1825, "1825 days (4 years 11 months)"),
    (1826, "1826 days (5 years)"),  # 5 x 365 days and one leap day
    (12, "12 days"),
])
def test_ages_in_days_with_completed_years_and_months(days: int, shown: str) -> None:
    assert show_age(days) == shown


def test_values_are_labelled_from_the_vocabulary() -> None:
    vocab = input_facts()
    assert fact_value("mycn_status", "not_amplified", vocab) == vocab["mycn_status"].label("not_amplified")
    assert fact_value("mibg_bone_or_marrow_avid", False, vocab) == "no"
    assert fact_value("metastatic_sites", [], vocab) == "none"
    assert fact_value("metastatic_sites", ["liver", "skin"], vocab) == ", ".join(
        vocab["metastatic_sites"].label(v) for v in ("liver", "skin"))
    labelled = replace(vocab["mycn_status"], labels=(("amplified", "MYCN amplified (> 4-fold)"),))
    assert fact_value("mycn_status", "amplified", {"mycn_status": labelled}) == "MYCN amplified (> 4-fold)"


def test_text_names_facts_by_their_titles(engine: RuleEngine) -> None:
    facts = json.loads((REPO / "examples" / "ms-infant.json").read_text())
    text = _text(engine, facts)
    vocab = engine.build.vocabulary
    assert f"  {vocab['age_days'].title}" in text and "183 days (6 months)" in text
    assert f"{vocab['mycn_status'].title}" in text and "not_amplified" not in text
    assert "age_days" not in text.split("Why:")[0]  # no snake_case fact names before the trace


def test_matched_lists_only_the_facts_a_rule_tested(engine: RuleEngine) -> None:
    # MS: liver only, so the marrow percentage is not needed (Monclair 2009; criteria.md S9)
    facts = {"age_days": 200, "primary_idrfs": [], "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": False}
    result = engine.evaluate(facts)
    [ms] = [f for f in result.fired if f.rule == "MS"]
    assert ms.matched["bone_marrow_tumor_percent"] is None  # the trace keeps every fact the rule can read
    text = _text(engine, facts)
    matched = text.split("rule MS", 1)[1].split("set:", 1)[0]
    assert "unknown" not in matched
    assert "Bone-marrow tumour cells" not in matched and "metastatic sites = liver" in " ".join(matched.split()).lower()


def test_a_rule_that_tests_for_an_unknown_fact_lists_it() -> None:
    """With unknown_biology_policy = unfavorable, COG v2 row V2-6 fires for an L2 tumour at 18
    months or older whose histology is unknown; the unknown histology is what it matched."""
    sources = directory_sources(bundled_rules_dir(), "rules")
    cog = next(s for s in sources if s.name == "risk/cog-risk.yaml")
    text = cog.data.decode()
    policy = "  unknown_biology_policy:\n    value: indeterminate\n"
    assert policy in text
    text = text.replace(policy, policy.replace("indeterminate", "unfavorable")).replace(
        "\nstatus: active\n", "\nstatus: draft\n")
    edited = RuleSource.from_text(cog.name, text, cog.display)
    with RuleEngine.from_sources([s if s is not cog else edited for s in sources], use=["cog-risk@1.0.0"]) as eng:
        out = _text(eng, {"inrgss_stage": "L2", "age_days": 900, "mycn_status": "not_amplified"})
    entry = out.split("rule V2-6 ", 1)[1].split("set:", 1)[0]
    assert "INPC histology (FH/UH) = unknown" in entry


def test_no_empty_pointer_before_a_warning(rules_dir: Callable[..., Path]) -> None:
    with RuleEngine.from_directory(versions(rules_dir, v1_status="retired"), use=["demo@1.0.0"]) as eng:
        text = _text(eng, PATIENT)
    warnings = text.split("Warnings\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert warnings and warnings[0].startswith("  NB803 [retired-in-use] ")


def test_a_fact_given_with_a_pending_value_is_not_asked_for(engine: RuleEngine) -> None:
    # INSS is post-surgical (criteria.md §3.1): before surgery (resection_extent not_done, a
    # pending value of inss.yaml) a midline-crossing tumour without node involvement is 1 or 3
    # by the resection. The user gave the extent; the text must not ask for it again.
    facts = json.loads((REPO / "examples" / "inss-before-surgery.json").read_text())
    text = _text(engine, facts)
    inss = next(line for line in text.splitlines() if line.lstrip().startswith("INSS stage "))
    assert "INDETERMINATE: 1 or 3" in inss
    assert "would be settled by" not in inss
    assert "Extent of resection is not done (surgery not yet performed), a pending value; the answer waits for it" in inss
    # downstream, the decision that reads the INSS stage waits for the same pending fact
    v1 = next(line for line in text.splitlines() if line.lstrip().startswith("COG INSS-era risk"))
    assert "INSS stage waits for Extent of resection (pending)" in v1
    # a fact left out entirely is still one that would settle the output
    facts.pop("resection_extent")
    inss = next(line for line in _text(engine, facts).splitlines() if line.lstrip().startswith("INSS stage "))
    assert "would be settled by Extent of resection" in inss and "pending" not in inss
