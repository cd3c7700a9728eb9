"""nbrules verify: exhaustive analysis of every decision, and the engine agreeing with it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from nbrules import RuleEngine, build_bundled, build_directory
from nbrules.cli import main
from nbrules.compiler import compile_decision
from nbrules.runner import DecisionRunner
from nbrules.verify import DecisionSpace, candidates, verify_decision

from .conftest import REPO

BUILD = build_bundled()
DECISIONS = {d.id: d for d in BUILD.decisions}


@pytest.mark.parametrize("decision_id", list(DECISIONS))
def test_bundled_decision_verifies_clean(decision_id: str) -> None:
    report = verify_decision(DECISIONS[decision_id])
    problems = [d.headline() for d in report.diagnostics if d.severity.value != "info"]
    assert problems == []
    assert report.known_cells > 0


def test_declared_gaps_are_information() -> None:
    report = verify_decision(DECISIONS["inrg"])
    gaps = {f["rules"][0]: f for f in report.findings if f["code"] == "NB605"}
    assert set(gaps) == {"GN-mature", "MS-from-18-months"}
    assert all(ex["histology_category"] == "ganglioneuroma_mature" for ex in gaps["GN-mature"]["examples"])
    assert report.ok


def test_verify_cli_prints_cells_and_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify"]) == 0
    out = capsys.readouterr().out
    for d in DECISIONS.values():
        assert re.search(rf"^{re.escape(d.key)}: \d+ complete cells .* \d+ ms: clean", out, re.M), d.key
    summary = rf"{len(DECISIONS)} verifications, \d+ complete cells in [\d.]+ s: no gaps, overlaps or dead rules"
    assert re.search(summary, out)


# --- mutations of a copy of the bundled rules -----------------------------------------------


def mutate(tmp_path: Path, file: str, old: str, new: str) -> Path:
    root = tmp_path / "rules"
    shutil.copytree(REPO / "rules", root)
    path = root / file
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    return root


def findings(root: Path, decision_id: str, code: str) -> list[dict[str, Any]]:
    build = build_directory(root)
    # a case may now name a deleted rule (NB318); the file itself must still load and validate
    assert not [d for d in build.errors() if d.code < "NB300"], [d.headline() for d in build.errors()]
    d = next(x for x in build.decisions if x.id == decision_id)
    return [f for f in verify_decision(d).findings if f["code"] == code]


def _block(text: str, rule_id: str) -> str:
    start = text.index(f"  - id: {rule_id}\n")
    ends = [i for i in (text.find("\n  - id: ", start + 1), text.find("\ncases:", start)) if i != -1]
    return text[start:min(ends) + 1]


def test_deleting_a_rule_leaves_a_gap_with_an_example(tmp_path: Path) -> None:
    text = (REPO / "rules/risk/inrg.yaml").read_text()
    block = _block(text, "G")
    root = mutate(tmp_path, "risk/inrg.yaml", block, "")
    [gap] = findings(root, "inrg", "NB601")
    # row G: L2, < 18 months, not NB-stroma-rich, MYCN not amplified, 11q aberrant
    assert gap["cells"] > 0
    for ex in gap["examples"]:
        assert ex["inrgss_stage"] == "L2" and ex["age_days"] < 547 and ex["mycn_status"] == "not_amplified"
        assert ex["chr11q_status"] == "aberrant"
        assert ex["histology_category"] in ("neuroblastoma", "ganglioneuroblastoma_nodular")


def test_widening_a_threshold_creates_an_overlap(tmp_path: Path) -> None:
    root = mutate(tmp_path, "staging/inrgss.yaml",
                  "        - {fact: age_days, at_least: {param: ms_age_limit_days}}",
                  "        - {fact: age_days, at_least: 500}")
    [overlap] = findings(root, "inrgss", "NB602")
    assert overlap["rules"] == ["MS", "M-age"]
    assert "set different values for inrgss_stage" in overlap["message"]
    for ex in overlap["examples"]:
        assert 500 <= ex["age_days"] < 547 and set(ex["metastatic_sites"]) <= {"skin", "liver", "bone_marrow"}


def test_duplicating_a_row_creates_an_overlap(tmp_path: Path) -> None:
    text = (REPO / "rules/risk/cog-risk.yaml").read_text()
    block = _block(text, "V2-12")
    root = mutate(tmp_path, "risk/cog-risk.yaml", block, block + block.replace("id: V2-12", "id: V2-12-copy"))
    [overlap] = findings(root, "cog-risk", "NB602")
    assert overlap["rules"] == ["V2-12", "V2-12-copy"] and "both fire" in overlap["message"]
    assert all(ex["inrgss_stage"] == "M" and ex["age_days"] >= 547 for ex in overlap["examples"])


def test_narrowing_a_threshold_leaves_a_gap(tmp_path: Path) -> None:
    text = (REPO / "rules/risk/cog-risk.yaml").read_text()
    old = _block(text, "V2-4")
    root = mutate(tmp_path, "risk/cog-risk.yaml", old,
                  old.replace("        - {condition: under_18_months}", "        - {fact: age_days, less_than: 500}"))
    [gap] = findings(root, "cog-risk", "NB601")
    for ex in gap["examples"]:
        assert ex["inrgss_stage"] == "L2" and 500 <= ex["age_days"] < 547 and ex["mycn_status"] == "not_amplified"


def test_contradictory_rule_is_dead_and_redundant_test_is_reported(tmp_path: Path) -> None:
    text = (REPO / "rules/risk/cog-risk.yaml").read_text()
    old = _block(text, "V2-12")
    new = old.replace("        - {condition: from_18_months}",
                      "        - {condition: from_18_months}\n        - {fact: age_days, at_least: 0}")
    new2 = _block(text, "V2-1").replace("        - {condition: not_amplified}",
                                        "        - {condition: not_amplified}\n        - {fact: inrgss_stage, is: L2}")
    root = mutate(tmp_path, "risk/cog-risk.yaml", old, new)
    path = root / "risk/cog-risk.yaml"
    path.write_text(path.read_text().replace(_block(text, "V2-1"), new2))
    assert [f["rules"] for f in findings(root, "cog-risk", "NB603")] == [["V2-1"]]
    dead = findings(root, "cog-risk", "NB604")
    assert [f["rules"] for f in dead] == [["V2-12"]] and "always true" in dead[0]["message"]
    assert findings(root, "cog-risk", "NB601")  # L1 not amplified now falls through


def test_a_declared_gap_that_a_rule_enters_is_an_error(tmp_path: Path) -> None:
    text = (REPO / "rules/risk/cog-risk.yaml").read_text()
    old = _block(text, "V2-17")
    root = mutate(tmp_path, "risk/cog-risk.yaml", old, old.replace("        - {condition: under_18_months}\n", ""))
    [hit] = findings(root, "cog-risk", "NB606")
    assert hit["rules"] == ["V2-17", "MS-from-18-months"]


def test_verify_cli_exits_1_on_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (REPO / "rules/risk/inrg.yaml").read_text()
    root = mutate(tmp_path, "risk/inrg.yaml", _block(text, "G"), "")
    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert "error NB601 [gap] no rule fires for" in out and "inrgss_stage: L2" in out


# --- indeterminate answers are the analysis' answers ---------------------------------------


def _partial_cells(space: DecisionSpace, limit: int) -> list[int]:
    mask = space.feasible & ~space.complete
    cells = list(space.iter_cells(mask))
    step = max(1, len(cells) // limit)
    return cells[::step]


@pytest.mark.parametrize("decision_id", list(DECISIONS))
def test_runtime_candidates_equal_the_cells_compatible_with_the_known_facts(decision_id: str) -> None:
    d = DECISIONS[decision_id]
    space = DecisionSpace(d)
    runner = DecisionRunner(compile_decision(d))
    try:
        for cell in _partial_cells(space, 300):
            facts = space.facts_of(cell)
            outcome = runner.decide(runner.view(facts))
            for out, oc in outcome.outputs.items():
                want, maybe_none = candidates(space, out, facts)
                if oc.status in ("set", "settled"):
                    assert want == (oc.value,) and not maybe_none, (facts, out)
                elif oc.status == "indeterminate":
                    assert (want, maybe_none) == (oc.candidates, oc.may_be_out_of_scope), (facts, out)
                else:
                    assert want == (), (facts, out, oc)
    finally:
        runner.close()


@pytest.mark.parametrize("output, facts", [
    ("inrg_group", {"inrgss_stage": "MS", "age_days": 200, "mycn_status": "not_amplified"}),
    ("inrg_group", {"inrgss_stage": "L2", "age_days": 300, "histology_category": "neuroblastoma",
                    "mycn_status": "not_amplified"}),
    ("inrg_group", {"inrgss_stage": "M", "age_days": 400, "mycn_status": "not_amplified"}),
    ("cog_risk", {"inrgss_stage": "L1", "mycn_status": "amplified", "resection_extent": "not_done"}),
    ("cog_risk", {"inrgss_stage": "M", "age_days": 400, "mycn_status": "not_amplified", "inpc_histology": "favorable",
                  "ploidy": "hyperdiploid"}),
])
def test_missing_fact_cases_match_the_analysis(engine: RuleEngine, output: str, facts: dict) -> None:
    d = next(r.decision for r in engine.runners if output in r.decision.decides)
    result = engine.evaluate(facts)
    want, _ = candidates(DecisionSpace(d), output, facts)
    assert result.indeterminate[output].candidates == want


# --- the compiled engine agrees with the rules as written ----------------------------------


def _agree(decision_id: str, mask_of: Callable[[DecisionSpace], int], params: dict | None = None) -> int:
    d = DECISIONS[decision_id]
    space = DecisionSpace(d, params)
    runner = DecisionRunner(compile_decision(d, params))
    checked = 0
    try:
        for cell in space.iter_cells(mask_of(space)):
            rules, scopes = runner._fire(space.facts_of(cell))
            want_rules = {r.id for r, m in zip(d.rules, space.rule_true) if m >> cell & 1}
            want_scopes = {s.id for s, m in zip(d.scopes, space.scope_true) if m >> cell & 1}
            assert {r.id for r in rules} == want_rules, space.facts_of(cell)
            assert {s.id for s in scopes} == want_scopes, space.facts_of(cell)
            checked += 1
    finally:
        runner.close()
    return checked


def single_unknown(space: DecisionSpace) -> int:
    mask = 0
    for k, r in enumerate(space.radix):
        m = space.slice(k, r - 1)
        for j, rj in enumerate(space.radix):
            if j != k:
                m &= ~space.slice(j, rj - 1)
        mask |= m
    return mask & space.feasible


@pytest.mark.parametrize("decision_id", list(DECISIONS))
def test_engine_agrees_with_reference_on_every_complete_cell(decision_id: str) -> None:
    assert _agree(decision_id, lambda s: s.complete) > 0


@pytest.mark.slow
@pytest.mark.parametrize("decision_id", list(DECISIONS))
def test_engine_agrees_with_reference_on_every_cell_with_one_unknown_fact(decision_id: str) -> None:
    assert _agree(decision_id, single_unknown) > 0


PARAM_ALTERNATIVES = [(d.id, name, v) for d in BUILD.decisions for name, p in d.parameters.items()
                      for v, _ in p.alternatives]


@pytest.mark.slow
@pytest.mark.parametrize("decision_id, name, value", PARAM_ALTERNATIVES,
                         ids=[f"{d}:{n}={v}" for d, n, v in PARAM_ALTERNATIVES])
def test_every_parameter_reading_verifies_and_agrees(decision_id: str, name: str, value: Any) -> None:
    report = verify_decision(DECISIONS[decision_id], {name: value})
    assert report.ok, [d.headline() for d in report.diagnostics if d.is_error]
    assert _agree(decision_id, lambda s: s.complete, {name: value}) > 0
