"""Profiles that belong to the criteria: the COG INSS-era edition chosen as one profile, and
a package of another tumour with an input constraint of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbrules import RuleEngine

from .conftest import DATA

# criteria.md §6.1, row v1-4 and the editions note: INSS 2A/2B, 365 days or older, MYCN amplified,
# favourable histology is low risk in the A3961 table and high in the 2006 (ANBL0531/0532) table.
V1_4 = {"inss_stage": "2A", "age_days": 700, "mycn_status": "amplified", "inpc_histology": "favorable"}
# row v1-9: INSS 3, 12-18 months, not amplified, unfavourable: high (A3961), intermediate (2006 edition)
V1_9 = {"inss_stage": "3", "age_days": 450, "mycn_status": "not_amplified", "inpc_histology": "unfavorable"}


@pytest.mark.parametrize("facts, later, older", [(V1_4, "high", "low"), (V1_9, "intermediate", "high")])
def test_the_edition_is_one_profile(facts: dict[str, object], later: str, older: str) -> None:
    with RuleEngine.default(decisions=["cog-v1-risk"]) as default:
        result = default.evaluate(facts)
        assert result.outputs["cog_v1_risk"] == later and result.profile is None
    with RuleEngine.default(decisions=["cog-v1-risk"], profile="cog-inss-era-a3961") as a3961:
        result = a3961.evaluate(facts)
        assert result.outputs["cog_v1_risk"] == older
        assert result.profile == "cog-inss-era-a3961" and result.knowledge is not None
        assert result.knowledge.profile == "cog-inss-era-a3961"
        assert result.fired[-1].parameters.get("edition") == "a3961"


def test_the_other_tumour_package_has_a_constraint_of_its_own() -> None:
    with RuleEngine.from_directory(DATA / "hepatoblastoma" / "rules") as engine:
        result = engine.evaluate({"liver_sections_involved": []})
        assert result.outputs["pretext_group"] is None and "pretext_group" in result.not_applicable
        assert [(w["code"], w["pointer"]) for w in result.warnings] == [("NB511", "/liver_sections_involved")]
        assert not engine.evaluate({"liver_sections_involved": ["left_lateral"]}).warnings


def test_the_text_report_names_the_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from nbrules.cli import main

    patient = tmp_path / "p.json"
    patient.write_text('{"age_days": 547, "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": false}')
    assert main(["evaluate", str(patient), "--format", "text", "--profile", "day-547-younger"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("| profile: day-547-younger")
    assert main(["evaluate", str(patient), "--format", "text"]) == 0
    assert "profile" not in capsys.readouterr().out.splitlines()[0]
    assert main(["evaluate", str(patient), "--profile", "nosuch"]) == 4
    assert "NB545 [unknown-profile] no profile 'nosuch'" in capsys.readouterr().err
