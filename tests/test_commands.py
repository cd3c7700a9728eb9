"""The library functions behind the CLI verbs (nbrules.commands), called without the CLI.

Clinical expectations come from docs/criteria.md: INRGSS MS is metastatic disease in a
child younger than 18 months (547 days, NAACCR item 1185) with metastases confined to
skin, liver and/or bone marrow (row S9); older, it is M.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import pytest

from nbrules import (Diagnostic, RulesHaveErrors, Severity, UsageError, diff_rules, evaluate_batch, open_engine,
                     patient_schema_of, render_rules, run_rule_cases, validate_rules, verify_rules)
from nbrules.diagnostics import count_summary, problem_details
from nbrules.errors import EXIT_RULES, EXIT_USAGE

from .conftest import REPO

INRGSS = str(REPO / "rules/staging/inrgss.yaml")
LIVER_INFANT = {"age_days": 300, "primary_idrfs": [], "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": False}
LIVER_OLDER = {**LIVER_INFANT, "age_days": 800}


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A copy of the bundled rules whose INRGSS file cites a source it does not declare."""
    root = tmp_path / "broken"
    shutil.copytree(REPO / "rules", root)
    f = root / "staging/inrgss.yaml"
    f.write_text(f.read_text().replace("cite: [", "cite: [no-such-source, ", 1))
    return root


# -- validate --------------------------------------------------------------------------------


def test_validate_the_bundled_rules_is_clean() -> None:
    report = validate_rules()
    assert report.ok and not report.failing(strict=True)
    assert report.label == "rules" and report.files >= 14 and report.valid_decisions >= 11
    assert report.summary().startswith("rules: ") and report.summary().endswith("0 errors, 0 warnings")


def test_validate_reports_findings_as_objects(broken: Path) -> None:
    report = validate_rules(str(broken))
    assert not report.ok and report.failing()
    [d] = [d for d in report.diagnostics if d.code == "NB306"]
    assert isinstance(d, Diagnostic) and d.severity is Severity.ERROR
    assert d.path is not None and d.path.endswith("inrgss.yaml") and d.line and "no-such-source" in d.message
    # the other files are still counted valid
    assert 0 < report.valid_decisions < validate_rules().valid_decisions


def test_validate_one_file_reports_only_that_file(broken: Path) -> None:
    report = validate_rules(str(broken / "staging/inrgss.yaml"), str(broken))
    assert report.files == 1 and report.valid_decisions == 0
    assert {d.path for d in report.diagnostics} == {report.label}


def test_validate_records_the_lock_only_when_clean(tmp_path: Path, broken: Path) -> None:
    clean = tmp_path / "clean"
    shutil.copytree(REPO / "rules", clean)
    report = validate_rules(str(clean), record=True)
    assert report.recorded is not None and report.recorded.path == clean / "versions.lock"
    assert report.recorded.path.is_file() and report.recorded.versions == report.recorded.total > 10
    # the recorded file changed without raising its version: NB812
    f = clean / "histology/mki-class.yaml"
    f.write_text(f.read_text().replace("title:", "title: Edited", 1))
    assert "NB812" in {d.code for d in validate_rules(str(clean)).diagnostics}
    refused = validate_rules(str(broken), record=True)
    assert refused.record_refused and refused.recorded is None and not (broken / "versions.lock").exists()
    with pytest.raises(UsageError, match="name the rules directory"):
        validate_rules(record=True)


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        validate_rules(str(tmp_path / "nowhere"))
    assert info.value.exit_code == EXIT_USAGE and "does not exist" in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).message == info.value.message


# -- test ------------------------------------------------------------------------------------


def test_run_rule_cases_of_one_file() -> None:
    report = run_rule_cases(INRGSS)
    assert report.runnable and report.ok and report.failed == 0
    [one] = report.decisions
    assert one.decision.id == "inrgss" and report.total == len(one.results) > 5
    assert all(r.passed for r in one.results)


def test_run_rule_cases_counts_a_failing_case(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    shutil.copytree(REPO / "rules", root)
    f = root / "staging/inrgss.yaml"
    # the classic MS infant (183 days, liver and skin) made to expect M: S9 says MS, so the case fails
    f.write_text(f.read_text().replace("expect: {inrgss_stage: MS, fired: [MS]}", "expect: {inrgss_stage: M}", 1))
    report = run_rule_cases(str(f), str(root))
    assert report.runnable and not report.ok and report.failed == 1
    [bad] = report.decisions[0].failed
    assert bad.case.name == "classic MS infant, liver and skin" and bad.diagnostic().code == "NB701"


def test_run_rule_cases_refuses_broken_rules(broken: Path) -> None:
    report = run_rule_cases(str(broken))
    assert not report.runnable and not report.ok and report.total == 0
    assert "NB306" in {d.code for d in report.diagnostics}
    assert count_summary(report.build_diagnostics).startswith("1 error")


def test_an_unknown_profile_is_nb545() -> None:
    with pytest.raises(UsageError, match=r"NB545 \[unknown-profile\] no profile 'nope'"):
        run_rule_cases(INRGSS, profile="nope")


# -- verify ----------------------------------------------------------------------------------


def test_verify_one_file_and_every_parameter() -> None:
    plain = verify_rules(INRGSS)
    assert [label for label, _ in plain.runs] == [""] and not plain.failed and not plain.skipped
    assert plain.complete_cells == plain.runs[0][1].known_cells > 0
    every = verify_rules(INRGSS, all_parameters=True)
    labels = [label for label, _ in every.runs]
    assert labels[0] == "" and " with ms_age_limit_days = 548" in labels
    data = every.to_dict()
    assert [d["parameters"] for d in data] == [label.strip() for label in labels]
    assert all(d["decision"] == "inrgss" and d["ok"] for d in data)


def test_verify_skips_a_broken_file_and_says_so(broken: Path) -> None:
    report = verify_rules(str(broken))
    assert [d.id for d in report.skipped] == ["inrgss"] and report.rule_errors and not report.built_ok
    assert "NB306" in {d.code for d in report.diagnostics}
    assert "inrgss" not in {r.decision.id for _, r in report.runs} and report.runs


# -- render ----------------------------------------------------------------------------------


def test_render_one_decision() -> None:
    md = render_rules(decision="inrgss")
    assert "MS" in md and "547" in md and "Monclair" in md
    html = render_rules(decision="inrgss@1.0.0", format="html")
    assert html.lstrip().lower().startswith("<!doctype html") and "MS" in html
    with pytest.raises(UsageError, match="no decision 'nope'; installed: "):
        render_rules(decision="nope")


def test_render_refuses_broken_rules(broken: Path) -> None:
    with pytest.raises(RulesHaveErrors) as info:
        render_rules(str(broken))
    assert info.value.exit_code == EXIT_RULES
    assert info.value.message == "broken: the rule files have errors (1 error, 0 warnings)"
    assert [d.code for d in info.value.diagnostics] == ["NB306"]


# -- diff ------------------------------------------------------------------------------------


def test_diff_two_versions_with_a_cohort(two_versions: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort.jsonl"
    rows = [{"id": "infant", **LIVER_INFANT}, {"id": "older", **LIVER_OLDER},
            {"id": "boundary", **LIVER_INFANT, "age_days": 547}]
    cohort.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = diff_rules("inrgss@1.0.0", "inrgss@1.1.0", str(two_versions), cohort=str(cohort))
    try:
        [d] = report.decisions
        assert "parameter ms_age_limit_days: 547 -> 548" in d.changes
        assert report.cohort is not None
        data = report.to_dict()
        changes = json.dumps(data["cohort"])
        # S9: 547 days is not younger than 18 months (M); the 548-day reading makes it MS.
        assert "boundary" in changes and "infant" not in changes and "older" not in changes
    finally:
        report.close()


def test_diff_refuses_two_different_decisions(two_versions: Path) -> None:
    with pytest.raises(UsageError, match="diff compares two versions of one decision"):
        diff_rules("inrgss@1.0.0", "inrg@1.0.1", str(two_versions))
    with pytest.raises(UsageError, match="is neither decision@version"):
        diff_rules("inrgss", "inrgss@1.1.0", str(two_versions))


# -- evaluate --------------------------------------------------------------------------------


def test_open_engine_evaluates_per_the_criteria() -> None:
    engine = open_engine(decisions=["inrgss"])
    try:
        assert engine.evaluate(LIVER_INFANT).outputs["inrgss_stage"] == "MS"
        assert engine.evaluate(LIVER_OLDER).outputs["inrgss_stage"] == "M"
    finally:
        engine.close()


def test_open_engine_refusals(tmp_path: Path, broken: Path) -> None:
    with pytest.raises(UsageError, match=r"--decisions: no decision 'nope' in force; in force: "):
        open_engine(decisions=["nope"])
    with pytest.raises(UsageError, match="does not exist"):
        open_engine(str(tmp_path / "nowhere"))
    with pytest.raises(RulesHaveErrors):
        open_engine(str(broken))


def test_evaluate_batch_writes_every_row_then_renames(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", **LIVER_INFANT}) + "\n" + json.dumps({"id": "b", "age_days": "x"}) + "\n"
                   + json.dumps({"id": "c", **LIVER_OLDER}) + "\n")
    out = tmp_path / "out.jsonl"
    summary = evaluate_batch(str(src), str(out), decisions=["inrgss"])
    assert out.is_file() and not Path(f"{out}.partial").exists()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["a", "b", "c"] and summary.rows == 3 and summary.invalid == 1
    stages = [r["result"]["outputs"]["inrgss_stage"] for r in (lines[0], lines[2])]
    assert stages == ["MS", "M"]  # S9: 300 days with liver metastases is MS; 800 days is M
    [problem] = lines[1]["problems"]
    assert problem["pointer"] == "/age_days" and problem["code"] == "NB502" and problem["name"] == "input-wrong-type"
    stream = io.StringIO()
    evaluate_batch(str(src), stream, decisions=["inrgss"])
    assert stream.getvalue() == out.read_text()


def test_evaluate_batch_refusals(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        evaluate_batch(str(tmp_path / "missing.jsonl"), io.StringIO())
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", **LIVER_INFANT}) + "\n")
    (tmp_path / "dir").mkdir()
    with pytest.raises(UsageError, match="it exists and is not a regular file"):
        evaluate_batch(str(src), str(tmp_path / "dir"))


def test_patient_schema_of_the_bundled_rules() -> None:
    schema = patient_schema_of()
    assert schema["properties"]["age_days"]["type"] == "integer"
    assert "liver" in json.dumps(schema["properties"]["metastatic_sites"])


# -- the one formatter of diagnostics ----------------------------------------------------------


def test_severity_is_always_set_and_each_form_comes_from_one_place() -> None:
    d = Diagnostic("NB502", "expected a whole number, found text 'x'", pointer="/age_days", hint="give days")
    assert d.severity is Severity.ERROR and Diagnostic("NB605", "m").severity is Severity.INFO
    assert Diagnostic("NB610", "m", severity=Severity.WARNING).severity is Severity.WARNING
    assert d.to_problem("/0") == {"pointer": "/0/age_days", "code": "NB502", "name": "input-wrong-type",
                                  "detail": d.message, "hint": "give days"}
    assert d.to_record() == {"pointer": "/age_days", "code": "NB502", "name": "input-wrong-type",
                             "message": d.message, "hint": "give days"}
    assert d.patient_line() == f"/age_days: NB502 [input-wrong-type] {d.message} (give days)"
    assert Diagnostic("NB501", "bad").patient_line() == "(record): NB501 [input-not-json] bad"
    assert problem_details(422, "t", [d.to_problem()])["errors"][0]["pointer"] == "/age_days"
    assert count_summary([d, Diagnostic("NB330", "w"), Diagnostic("NB605", "i")]) == "1 error, 1 warning"
    with pytest.raises(ValueError, match="unregistered"):
        Diagnostic("NB999", "x")
