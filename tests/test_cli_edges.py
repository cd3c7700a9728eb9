"""The command line's rough edges, each fixed as a kind (issue 14, point 5): one rule file
for validate/test/verify, diff of any two rule files, ``--batch -``, options that do not
apply, duplicate ids, ``--decisions``, JSON ``null``, messages that carry their problems."""

from __future__ import annotations

import io
import json
import pickle
import sys
from pathlib import Path
from typing import Callable

import pytest

from nbrules import PatientInputError, RuleEngine, RuleSetError, VersionError
from nbrules.cli import main

from .conftest import DATA, DEMO, REPO

INFANT = REPO / "examples" / "ms-infant.json"
INRGSS = REPO / "rules" / "staging" / "inrgss.yaml"
INRG = REPO / "rules" / "risk" / "inrg.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def draft_copy(tmp_path: Path, version: str = "1.1.0", edit: tuple[str, str] | None = None) -> Path:
    """inrgss.yaml copied elsewhere as a draft of another version (as an editor does)."""
    text = INRGSS.read_text()
    text = text.replace("\nversion: 1.0.0\n", f"\nversion: {version}\n").replace("\nstatus: active\n", "\nstatus: draft\n")
    if edit is not None:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1], 1)
    folder = tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    path = folder / "inrgss-draft.yaml"
    path.write_text(text)
    return path


# -- validate / test / verify FILE -----------------------------------------------------------


@pytest.mark.parametrize("verb", ["validate", "test", "verify"])
def test_verbs_take_one_bundled_rule_file(capsys: pytest.CaptureFixture[str], verb: str) -> None:
    code, out, err = run(capsys, verb, str(INRG))  # inrg reads inrgss_stage: the other files give context
    assert code == 0, out + err
    assert "does not exist" not in err
    assert "inrgss@" not in out and "inrg@1.0" in out or verb == "validate"
    if verb == "validate":
        assert out.strip() == "rules/risk/inrg.yaml: 1 file, 1 valid decision, 0 errors, 0 warnings"


def test_validate_a_file_outside_the_rules_reports_its_own_lines(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    path = draft_copy(tmp_path, edit=("then: {inrgss_stage: MS}", "then: {inrgss_stage: MX}"))
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 1
    assert f"{path}:" in out and "NB" in out
    assert all(not line.startswith("rules/") for line in out.splitlines())  # only the file asked about


def test_test_a_file_with_a_failing_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = draft_copy(tmp_path)
    assert run(capsys, "test", str(path))[0] == 0
    # the MS case (an infant with liver metastases) now expects M: the case must fail, exit 1
    path = draft_copy(tmp_path, edit=("expect: {inrgss_stage: MS, fired: [MS]}", "expect: {inrgss_stage: M}"))
    code, out, _ = run(capsys, "test", str(path))
    assert code == 1 and "FAILED" in out and str(path) in out


def test_a_missing_file_or_directory_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", "/nonexistent/rules.yaml")
    assert code == 4 and len(err.strip().splitlines()) == 1


# -- diff --------------------------------------------------------------------------------------


def test_diff_of_two_rule_files_in_different_folders(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = draft_copy(tmp_path)
    code, out, err = run(capsys, "diff", str(INRGSS), str(path))
    assert code == 0, err
    assert out.startswith(f"inrgss 1.0.0 -> 1.1.0 (rules/staging/inrgss.yaml -> {path})")
    assert "status: active -> draft" in out


def test_diff_of_two_files_with_the_same_version_compares_their_texts(capsys: pytest.CaptureFixture[str],
                                                                      tmp_path: Path) -> None:
    path = draft_copy(tmp_path, version="1.0.0")
    code, out, err = run(capsys, "diff", str(INRGSS), str(path))
    assert code == 0, err
    assert "status: active -> draft" in out


def test_diff_of_two_different_decisions_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "diff", str(INRGSS), str(INRG))
    assert code == 4 and out == ""
    assert err.strip().splitlines() == [
        f"nbrules diff: '{INRGSS}' is decision inrgss and '{INRG}' is decision inrg; "
        "diff compares two versions of one decision"]
    code, _, err = run(capsys, "diff", "inrgss@1.0.0", "mki-class@1.0.0")
    assert code == 4 and "two versions of one decision" in err


# -- batch from standard input; options that do not apply ---------------------------------------


def test_batch_dash_reads_jsonl_from_stdin_without_a_format(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    stdin(monkeypatch, b'{"id": "p1", "age_days": 183}\n{"id": "p2", "age_days": 900}\n')
    code, out, err = run(capsys, "evaluate", "--batch", "-", "-q")
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["p1", "p2"]


def test_batch_dash_reads_csv_when_told(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    stdin(monkeypatch, b"id,age_days\np1,183\n")
    code, out, _ = run(capsys, "evaluate", "--batch", "-", "--input-format", "csv", "-q")
    assert code == 0 and json.loads(out)["result"]["input"] == {"age_days": 183}


@pytest.mark.parametrize("argv, says", [
    (["evaluate", str(INFANT), "--batch", str(REPO / "examples" / "cohort.jsonl")], "not both"),
    (["evaluate", "--batch", str(REPO / "examples" / "cohort.jsonl"), "--format", "text"], "--format text"),
    (["evaluate", "--batch", str(REPO / "examples" / "cohort.jsonl"), "--workers", "0"],
     "--workers: 0 is out of range (1 to"),
    (["evaluate", "--batch", str(REPO / "examples" / "cohort.jsonl"), "--workers", "-2"],
     "--workers: -2 is out of range (1 to"),
    (["evaluate", str(INFANT), "--workers", "2"], "--workers applies only with --batch"),
    (["evaluate", str(INFANT), "--out", "x.jsonl"], "--out applies only with --batch"),
    (["evaluate", str(INFANT), "--id-column", "pid", "-q"], "--id-column, --quiet apply only with --batch"),
    (["evaluate", str(INFANT), "--cache-size", "-1"], "--cache-size: -1 is out of range (0 to"),
    (["evaluate", str(INFANT), "--decisions", "inrg,,cog-risk"], "--decisions"),
    (["evaluate", str(INFANT), "--decisions", "inrgs"], "no decision 'inrgs' in force"),
    (["diff", "inrgss@1.0.0", "inrgss@1.0.0", "--id-column", "pid"], "--id-column applies only with --cohort"),
    (["diff", str(INRGSS), str(REPO / "rules")], "two rules directories"),
])
def test_options_that_do_not_apply_are_refused_in_one_line(capsys: pytest.CaptureFixture[str],
                                                           argv: list[str], says: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 4 and out == ""
    assert len(err.strip().splitlines()) == 1 and says in err, err


# -- duplicate ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, text", [
    ("jsonl", '{"id": "p1", "age_days": 183}\n{"id": "p2", "age_days": 900}\n{"id": "p1", "age_days": 30}\n'),
    ("csv", "id,age_days\np1,183\np2,900\np1,30\n"),
])
def test_a_duplicate_id_gives_an_error_record(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                              fmt: str, text: str) -> None:
    src = tmp_path / f"c.{fmt}"
    src.write_text(text)
    code, out, err = run(capsys, "evaluate", "--batch", str(src))
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in records[:2]] == ["indeterminate", "indeterminate"]
    first, third = (1, 3) if fmt == "jsonl" else (2, 4)  # rows are line numbers; a CSV's header is line 1
    assert records[2]["row"] == third and records[2]["id"] == "p1" and records[2]["status"] == "invalid"
    [problem] = records[2]["problems"]
    assert problem["code"] == "NB560" and problem["pointer"] == "/id" and f"first in row {first}" in problem["message"]
    assert "1 invalid" in err


# -- choosing decisions ----------------------------------------------------------------------------


def test_evaluate_chooses_decisions_and_runs_what_they_read(engine: RuleEngine) -> None:
    facts = json.loads(INFANT.read_text())
    result = engine.evaluate(facts, decisions=["inrg"])
    assert list(result.outputs) == ["inrgss_stage", "inrg_group", "inrg_risk"]  # inrgss runs: inrg reads its stage
    assert result.outputs["inrg_group"] == "C"  # Cohn 2009 group C: MS, <18 months, not amplified, 11q normal
    assert [r.decision for r in result.rulesets] == ["inrgss", "inrg"]
    # the same outputs, trace included, as running everything
    full = engine.evaluate(facts)
    assert [f for f in full.fired if f.decision in ("inrgss", "inrg")] == list(result.fired)
    with pytest.raises(VersionError) as info:
        engine.evaluate(facts, decisions=["nope"])
    assert "nope" in str(info.value) and "NB802" in str(info.value)


def test_engine_built_with_decisions() -> None:
    with RuleEngine.default(decisions=["mki-class"], cache_size=0) as eng:
        result = eng.evaluate({"mki_count": 150})
        assert result.outputs == {"mki": "intermediate"}  # 100-199 per 5,000 cells: Shimada 1999
        assert eng.requested_outputs() == ("mki",)
    with pytest.raises(VersionError):
        RuleEngine.default(decisions=["nope"])


def test_cli_decisions_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "evaluate", str(INFANT), "--decisions", "cog-risk")
    assert code == 0
    result = json.loads(out)
    assert "cog_v1_risk" not in result["outputs"] and result["outputs"]["cog_risk"] == "low"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_batch_status_is_computed_over_the_chosen_outputs(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          workers: str) -> None:
    # no INSS stage: the INSS-era table cannot be settled, every other decision can
    facts = json.loads(INFANT.read_text())
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", **facts}) + "\n" for i in range(3)))
    code, out, _ = run(capsys, "evaluate", "--batch", str(src), "-q", "--workers", workers)
    assert code == 0 and {json.loads(line)["status"] for line in out.splitlines()} == {"indeterminate"}
    code, out, _ = run(capsys, "evaluate", "--batch", str(src), "-q", "--workers", workers,
                       "--decisions", "inrg,cog-risk")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {r["status"] for r in records} == {"ok"}
    assert "cog_v1_risk" not in records[0]["result"]["outputs"]


# -- null means unknown -----------------------------------------------------------------------------


def test_json_null_is_unknown_like_a_missing_fact_or_an_empty_csv_cell(
        engine: RuleEngine, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    facts = json.loads(INFANT.read_text())
    del facts["mycn_status"]
    with_null = {**facts, "mycn_status": None}
    assert engine.evaluate(with_null).to_json() == engine.evaluate(facts).to_json()
    assert "mycn_status" in engine.evaluate(with_null).indeterminate["inrg_group"].missing
    # a blank first line (skipped, but counted) puts the JSONL row on line 2, as the CSV's is
    (tmp_path / "c.jsonl").write_text('\n{"id": "p1", "age_days": 183, "mycn_status": null}\n')
    (tmp_path / "c.csv").write_text("id,age_days,mycn_status\np1,183,\n")
    outs = []
    for name in ("c.jsonl", "c.csv"):
        code, out, _ = run(capsys, "evaluate", "--batch", str(tmp_path / name), "-q")
        assert code == 0
        outs.append(out)
    assert outs[0] == outs[1]


def test_null_for_an_unknown_fact_is_still_reported(engine: RuleEngine) -> None:
    with pytest.raises(PatientInputError) as info:
        engine.evaluate({"age_dayz": None})
    assert info.value.diagnostics[0].code == "NB503"


# -- messages carry their problems -------------------------------------------------------------------


def test_str_of_a_patient_input_error_lists_its_problems(engine: RuleEngine) -> None:
    with pytest.raises(PatientInputError) as info:
        engine.evaluate({"age_days": "183", "mycn_status": "amp"})
    text = str(info.value)
    assert "/age_days" in text and "NB502" in text and "expected a whole number" in text
    assert "/mycn_status" in text and "NB504" in text
    assert str(pickle.loads(pickle.dumps(info.value))) == text


def test_str_of_a_rule_set_error_lists_its_problems() -> None:
    with pytest.raises(RuleSetError) as info:
        RuleEngine.from_directory(DATA / "invalid" / "NB301-unknown-fact" / "rules")
    text = str(info.value)
    assert "NB301" in text and ".yaml:" in text


def test_a_reload_that_drops_a_chosen_decision_is_refused(rules_dir: Callable[..., Path]) -> None:
    root = rules_dir(demo=DEMO)
    with RuleEngine.from_directory(root, decisions=["demo"], cache_size=0) as eng:
        (root / "demo.yaml").write_text(DEMO.replace("decision: demo\n", "decision: demo-renamed\n"))
        report = eng.reload()
        assert not report.ok and any("demo" in d.message and d.code == "NB802" for d in report.diagnostics)
        assert eng.evaluate({"age_days": 100, "mycn_status": "not_amplified"}).outputs == {"demo_out": "low"}
