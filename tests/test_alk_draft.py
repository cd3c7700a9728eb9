"""Issue 10, proof (a): a draft that reads a new fact, written without Python.

The data under tests/data/alk-draft/ is what a clinical editor writes: the ALK fact
appended to facts.yaml, and a draft version 2.0.0 of cog-risk (a copy of 1.0.0 with one
named parameter, ``alk_mutation_as``, that counts an ALK mutation as an unfavourable
biological feature).  It is a DRAFT for illustration, not a published criterion; the
expectations below follow from its stated proposal and from the COG version 2 rows it
leaves unchanged (criteria.md V2-13 to V2-16: all-favourable MS infants are low risk,
MS with an unfavourable feature under 12 months intermediate, from 12 to 18 months high).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nbrules import RuleEngine
from nbrules.cli import main

from .conftest import DATA, REPO

DRAFT = DATA / "alk-draft"
INFANT = {"inrgss_stage": "MS", "age_days": 200, "mycn_status": "not_amplified", "symptoms": [],
          "inpc_histology": "favorable", "chr11q_status": "normal", "chr1p_status": "normal", "ploidy": "hyperdiploid"}


def _draft_package(tmp_path: Path, *, declare: bool = True) -> Path:
    root = tmp_path / "rules"
    shutil.copytree(REPO / "rules", root)
    shutil.copy(DRAFT / "risk" / "cog-risk-2.0.0.yaml", root / "risk" / "cog-risk-2.0.0.yaml")
    if declare:
        with (root / "facts.yaml").open("a", encoding="utf-8") as fh:
            fh.write((DRAFT / "alk_status.facts.yaml").read_text(encoding="utf-8"))
    return root


def test_undeclared_fact_is_refused_with_how_to_declare_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _draft_package(tmp_path, declare=False)
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert "NB301 [unknown-fact] fact 'alk_status'" in out
    assert "declare it in facts.yaml" in out


def test_draft_validates_tests_and_verifies_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _draft_package(tmp_path)
    for verb in ("validate", "test", "verify"):
        assert main([verb, str(root)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "cog-risk@2.0.0" in out and "no gaps, overlaps or dead rules" in out


def test_draft_moves_alk_mutated_patients_to_another_group(tmp_path: Path) -> None:
    root = _draft_package(tmp_path)
    with RuleEngine.from_directory(root) as published, \
            RuleEngine.from_directory(root, use=["cog-risk@2.0.0"]) as draft:
        mutated = {**INFANT, "alk_status": "mutated"}
        # the active version ignores the new fact; the draft counts it as unfavourable
        assert published.evaluate(mutated).outputs["cog_risk"] == "low"
        result = draft.evaluate(mutated)
        assert result.outputs["cog_risk"] == "intermediate"
        assert [f.rule for f in result.fired if f.decision == "cog-risk"] == ["V2-14"]
        assert draft.evaluate({**INFANT, "alk_status": "wild_type"}).outputs["cog_risk"] == "low"
        older = {**mutated, "age_days": 400}
        assert published.evaluate(older).outputs["cog_risk"] == "intermediate"  # V2-15
        assert draft.evaluate(older).outputs["cog_risk"] == "high"  # V2-16
        assert published.knowledge.sha256 != draft.knowledge.sha256  # another decision file in force


def test_diff_shows_the_impact_of_the_draft(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _draft_package(tmp_path)
    assert main(["diff", "cog-risk@1.0.0", "cog-risk@2.0.0", "--rules", str(root),
                 "--cohort", str(DRAFT / "cohort.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "parameter alk_mutation_as added: unfavorable" in out
    complete = out.split("impact on cog_risk,")[1]
    assert "low -> intermediate:" in complete and "intermediate -> high:" in complete
    assert "intermediate -> low" not in complete and "high ->" not in complete  # it only ever raises the group
    assert "alk_status: mutated" in complete
    assert "cog_risk  low -> intermediate: 1 patient: alk-1" in out
