"""Issue 10, proof (b): another tumour as its own knowledge package, without Python.

tests/data/hepatoblastoma/rules/ stages hepatoblastoma (PRETEXT I-IV, 2005 definitions of
Roebuck DJ et al., Pediatr Radiol 2007;37:123-32, Table 1) from the liver sections
involved, with a parameter of its own (the simplified "number of sections" reading as
the alternative).  It goes through every command and the HTTP service.  The expected
groups below come from the 2005 definitions: I, one section involved and three adjoining
sections free; II, one or two involved and two adjoining free; III, two or three involved
and no two adjoining free; IV, all four involved.  The sections adjoin in the order left
lateral, left medial, right anterior, right posterior.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from nbrules import RuleEngine, build_directory
from nbrules.cli import main
from nbrules.compiler import compile_decision
from nbrules.runner import DecisionRunner
from nbrules.verify import DecisionSpace

from .conftest import DATA, REPO

HB = DATA / "hepatoblastoma"
RULES = HB / "rules"

# (sections involved, PRETEXT group by the 2005 definitions, by the number of sections)
GROUPS = [
    (["left_lateral"], "I", "I"),
    (["right_posterior"], "I", "I"),
    (["left_medial"], "II", "I"),                      # right anterior and posterior free, adjoining
    (["right_anterior"], "II", "I"),                   # left lateral and medial free, adjoining
    (["left_lateral", "left_medial"], "II", "II"),
    (["right_anterior", "right_posterior"], "II", "II"),
    (["left_lateral", "right_posterior"], "II", "II"),  # the two middle sections free
    (["left_lateral", "right_anterior"], "III", "II"),  # left medial and right posterior free, not adjoining
    (["left_medial", "right_posterior"], "III", "II"),
    (["left_medial", "right_anterior"], "III", "II"),
    (["left_lateral", "left_medial", "right_anterior"], "III", "III"),
    (["left_medial", "right_anterior", "right_posterior"], "III", "III"),
    (["left_lateral", "left_medial", "right_anterior", "right_posterior"], "IV", "IV"),
]


def test_validate_test_verify_are_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(RULES)]) == 0
    assert main(["test", str(RULES)]) == 0
    assert main(["verify", str(RULES), "--all-parameters"]) == 0
    out = capsys.readouterr().out
    assert "1 valid decision, 0 errors" in out and "12 cases, 12 passed" in out
    assert "no gaps, overlaps or dead rules" in out


@pytest.mark.parametrize("sections, by_2005, by_count", GROUPS)
def test_pretext_groups_follow_the_2005_definitions(sections: list[str], by_2005: str, by_count: str) -> None:
    build = build_directory(RULES)
    with RuleEngine(build) as eng:
        result = eng.evaluate({"liver_sections_involved": sections})
        assert result.outputs == {"pretext_group": by_2005}
        assert result.knowledge is not None and result.knowledge.package == "hepatoblastoma-pretext"
    [d] = build.decisions
    runner = DecisionRunner(compile_decision(d, {"pretext_reading": "section_count"}))
    try:
        rules, _ = runner._fire({"liver_sections_involved": sections})
        assert [r.rule.then["pretext_group"] for r in rules if hasattr(r.rule, "then")] == [by_count]
    finally:
        runner.close()


@pytest.mark.parametrize("params", [None, {"pretext_reading": "section_count"}])
def test_durable_rules_agrees_with_the_rules_on_every_cell(params: dict[str, Any] | None) -> None:
    """The rules have more alternatives than durable-rules holds in one rule: the compiler
    splits them, and durable-rules must still fire exactly what the rules say."""
    [d] = build_directory(RULES).decisions
    space = DecisionSpace(d, params)
    program = compile_decision(d, params)
    assert any("~" in name for name in program.definition)  # the split happened
    runner = DecisionRunner(program)
    checked = 0
    try:
        for cell in space.iter_cells(space.feasible):
            rules, scopes = runner._fire(space.facts_of(cell))
            assert [r.id for r in rules] == [r.id for r, m in zip(d.rules, space.rule_true) if m >> cell & 1]
            assert [s.id for s in scopes] == [s.id for s, m in zip(d.scopes, space.scope_true) if m >> cell & 1]
            checked += 1
    finally:
        runner.close()
    assert checked == 17  # the 16 subsets of four sections, and unknown


def test_evaluate_render_and_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(HB / "patient.json"), "--rules", str(RULES)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outputs"] == {"pretext_group": "II"}
    assert result["fired"][0]["source"].startswith("rules/staging/pretext.yaml:")
    assert "roebuck2007 Table 1" in result["fired"][0]["cite"]
    assert result["knowledge"]["package"] == "hepatoblastoma-pretext" and len(result["knowledge"]["sha256"]) == 64
    assert main(["evaluate", str(HB / "patient.json"), "--rules", str(RULES), "--format", "text"]) == 0
    assert "PRETEXT group  PRETEXT II" in capsys.readouterr().out  # titles and labels of its own vocabulary
    # a fact of the other package is not a fact here
    bad = tmp_path / "nb.json"
    bad.write_text('{"age_days": 100}')
    assert main(["evaluate", str(bad), "--rules", str(RULES)]) == 2
    assert "/age_days: NB503" in capsys.readouterr().err

    assert main(["render", "--rules", str(RULES), "--format", "md"]) == 0
    table = capsys.readouterr().out
    assert "PRETEXT-III" in table and "pretext_reading" in table and "Roebuck" in table

    out = tmp_path / "out.jsonl"
    assert main(["evaluate", "--batch", str(HB / "cohort.csv"), "--rules", str(RULES), "--out", str(out), "-q"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["hb-1", "hb-2", "hb-3", "hb-4", "hb-5", "hb-6"]
    got = {r["id"]: r["result"]["outputs"]["pretext_group"] for r in rows if r["status"] != "invalid"}
    assert got == {"hb-1": "I", "hb-2": "II", "hb-3": "III", "hb-4": "IV", "hb-5": None}
    assert rows[4]["status"] == "indeterminate"  # an empty cell is unknown, not "no section"
    assert rows[5]["status"] == "invalid" and rows[5]["problems"][0]["code"] == "NB504"


def test_http_service_serves_the_other_package() -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from load_test import start_server

    from .test_service import call

    proc, url = start_server("--rules", str(RULES), "--fhir-mapping", str(HB / "fhir-mapping.yaml"))
    try:
        status, _, body = call(url, "POST", "/evaluate", {"liver_sections_involved": ["left_medial"]})
        assert status == 200 and body["outputs"] == {"pretext_group": "II"}
        status, _, body = call(url, "POST", "/evaluate", {"age_days": 100})
        assert status == 422 and body["errors"][0]["pointer"] == "/age_days"
        health = call(url, "GET", "/health")[2]
        assert health["knowledge"]["package"] == "hepatoblastoma-pretext"
        patient = call(url, "GET", "/openapi.json")[2]["components"]["schemas"]["Patient"]
        assert list(patient["properties"]) == ["liver_sections_involved"]
        [service] = call(url, "GET", "/cds-services")[2]["services"]
        assert (service["id"], service["title"]) == ("hepatoblastoma-pretext", "Hepatoblastoma PRETEXT group")
        request = {"hook": "patient-view", "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "2024-01-01"},
            "conditions": {"resourceType": "Condition", "id": "dx", "onsetDateTime": "2025-01-01",
                           "subject": {"reference": "Patient/p1"},
                           "code": {"coding": [{"system": "http://example.org/fhir/CodeSystem/liver-tumour-facts",
                                                "code": "hepatoblastoma"}]}},
            "observations": {"resourceType": "Observation", "id": "o1", "status": "final",
                             "subject": {"reference": "Patient/p1"},
                             "code": {"coding": [{"system": "http://example.org/fhir/CodeSystem/liver-tumour-facts",
                                                  "code": "liver_sections_involved"}]},
                             "valueCodeableConcept": {"coding": [{
                                 "system": "http://example.org/fhir/CodeSystem/liver-tumour-facts",
                                 "code": "right_anterior"}]}}}}
        status, _, cards = call(url, "POST", "/cds-services/hepatoblastoma-pretext", request)
        assert status == 200
        assert any("PRETEXT group II" in c["summary"] for c in cards["cards"]), cards
    finally:
        proc.terminate()
        proc.wait(timeout=30)
