"""nbrules diff: text changes, impact over the whole domain, and cohorts."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from nbrules import RuleEngine, build_directory
from nbrules.cli import main
from nbrules.cohort import Row, rows_from_text
from nbrules.diff import diff_cohort, diff_decisions

from .conftest import REPO


def _pair(root: Path):  # type: ignore[no-untyped-def]
    build = build_directory(root)
    by = {d.key: d for d in build.decisions}
    return by["inrgss@1.0.0"], by["inrgss@1.1.0"]


def test_text_changes_list_parameters_and_rules(two_versions: Path) -> None:
    d = diff_decisions(*_pair(two_versions))
    assert "version: 1.0.0 -> 1.1.0" in d.changes and "status: active -> draft" in d.changes
    assert "parameter ms_age_limit_days: 547 -> 548" in d.changes
    assert "rule M-age: condition changed" in d.changes  # the rule reads the parameter


def test_domain_impact_is_exactly_the_547_day_ms_pattern(two_versions: Path) -> None:
    d = diff_decisions(*_pair(two_versions))
    [complete] = [i for i in d.impacts if i.region == "complete"]
    [t] = complete.transitions
    assert (t.old, t.new) == ("M", "MS")
    for ex in t.examples:  # criteria S9: MS at 547 days only under the < 548 reading
        assert ex["age_days"] == 547 and set(ex["metastatic_sites"]) <= {"skin", "liver", "bone_marrow"}
        assert ex["mibg_bone_or_marrow_avid"] is False
    assert complete.unchanged + t.cells == complete.total


def test_diff_cli_on_two_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(REPO / "rules", old)
    shutil.copytree(REPO / "rules", new)
    (new / "histology/mki-class.yaml").unlink()
    # the input constraint that refers to mki-class goes with it
    c = new / "constraints.yaml"
    text = c.read_text()
    start, end = text.index("  - id: mki-class-matches-count"), text.index("  - id: inss-4s-infants-only")
    c.write_text(text[:start] + text[end:])
    p = new / "risk/cog-risk.yaml"
    p.write_text(p.read_text().replace("  hypodiploid_as:\n    value: favorable", "  hypodiploid_as:\n    value: unfavorable")
                 .replace("      - value: unfavorable\n        note: Count hypodiploid",
                          "      - value: favorable\n        note: Count hypodiploid")
                 .replace("version: 1.0.0", "version: 2.0.0"))
    cases = p.read_text().split("  - name: V2-9 hypodiploid counts as DNA index > 1")
    after = cases[1].split("\n  - name:", 1)[1]
    p.write_text(cases[0] + "  - name:" + after)
    assert main(["diff", str(old), str(new), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)["decisions"]
    by = {(d["old"], d["new"]): d for d in data}
    assert ("mki-class@1.0.0", None) in by
    cog = by[("cog-risk@1.0.0", "cog-risk@2.0.0")]
    assert "parameter hypodiploid_as: favorable -> unfavorable" in cog["changes"]
    [complete] = [i for i in cog["impact"] if i["region"] == "complete"]
    moves = {(t["from"], t["to"]) for t in complete["transitions"]}
    assert moves == {("intermediate", "high"), ("low", "intermediate")}  # V2-9/V2-15 -> V2-10/V2-16; V2-13 -> V2-14
    assert all(ex["ploidy"] == "hypodiploid" for t in complete["transitions"] for ex in t["examples"])


def test_cohort_reports_transitions_ids_and_bad_rows(two_versions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "inrgss@1.0.0", "inrgss@1.1.0", "--rules", str(two_versions),
                 "--cohort", str(REPO / "examples/cohort.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "cohort " in out and ": 8 rows, 6 evaluated, 2 invalid, 2 patients change" in out
    assert "inrgss_stage  M -> MS: 2 patients: p002, p003" in out
    assert "row 6 (id p006): /age_days: NB502 [input-wrong-type] expected a whole number, found text 'two years'" in out
    assert "row 8 (id missing): /id: NB508 [missing-id]" in out


CSV = """id,age_days,metastatic_sites,mibg_bone_or_marrow_avid,bone_marrow_tumor_percent,primary_idrfs
c1,547,liver,false,,[]
c2,547,liver;bone_marrow,false,5,
c3,abc,,,,
,300,[],,,
c5,300,"[""liver""]",maybe,,
"""


def test_csv_rows_are_typed_by_the_patient_schema() -> None:
    rows = rows_from_text(CSV, "csv")
    assert rows[0] == Row(2, "c1", {"age_days": 547, "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": False,
                                    "primary_idrfs": []})
    assert rows[1].facts == {"age_days": 547, "metastatic_sites": ["liver", "bone_marrow"],
                             "mibg_bone_or_marrow_avid": False, "bone_marrow_tumor_percent": 5}
    assert [(d.code, d.pointer) for d in rows[2].problems] == [("NB502", "/age_days")]
    assert [(d.code, d.pointer) for d in rows[3].problems] == [("NB508", "/id")]
    assert rows[4].id == "c5" and [(d.code, d.pointer) for d in rows[4].problems] == [("NB502", "/mibg_bone_or_marrow_avid")]


def test_cohort_diff_on_csv(two_versions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.csv"
    f.write_text(CSV)
    assert main(["diff", "inrgss@1.0.0", "inrgss@1.1.0", "--rules", str(two_versions), "--cohort", str(f)]) == 0
    out = capsys.readouterr().out
    assert "5 rows, 2 evaluated, 3 invalid" in out and "M -> MS: 2 patients: c1, c2" in out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


@pytest.mark.slow
def test_cohort_streams_in_constant_memory(two_versions: Path) -> None:
    old_d, new_d = _pair(two_versions)
    build = build_directory(two_versions)

    def rows(n: int) -> Iterator[Row]:
        for i in range(n):
            age = 300 + (i * 7) % 400
            yield Row(i + 1, f"p{i}", {"age_days": age, "metastatic_sites": ["liver"] if i % 3 else [],
                                       "primary_idrfs": [], "mibg_bone_or_marrow_avid": False})

    with RuleEngine(build, use=[old_d.key], cache_size=4096) as old, \
            RuleEngine(build, use=[new_d.key], cache_size=4096) as new:
        diff_cohort(old, new, rows(5_000), ["inrgss_stage"]).close()  # warm up caches
        gc.collect()
        before = _rss_mb()
        report = diff_cohort(old, new, rows(60_000), ["inrgss_stage"])
        gc.collect()
        grown = _rss_mb() - before
        assert report.rows == 60_000 and report.changed_patients > 0
        assert sum(1 for _ in report.ids(("inrgss_stage", "M", "MS"))) == report.counts[("inrgss_stage", "M", "MS")]
        report.close()
    assert grown < 8, f"resident memory grew by {grown:.1f} MB over 60,000 rows"


def test_a_file_edited_without_raising_its_version_is_reported(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for root in (old, new):
        (root / "staging").mkdir(parents=True)
        shutil.copy(REPO / "rules/staging/inrgss.yaml", root / "staging/inrgss.yaml")
    p = new / "staging/inrgss.yaml"
    p.write_text(p.read_text().replace("  ms_age_limit_days:\n    value: 547", "  ms_age_limit_days:\n    value: 548"))
    assert main(["diff", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "NB812" in x)
    assert "staging/inrgss.yaml:" in line and "inrgss@1.0.0 differs from inrgss@1.0.0" in line
    assert "parameter ms_age_limit_days: 547 -> 548" in out
    assert main(["diff", str(old), str(old), "--format", "json"]) == 0  # same content: nothing to report
    assert json.loads(capsys.readouterr().out)["decisions"][0]["warnings"] == []


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    """The bundled rules plus inrgss 1.1.0, a copy of 1.0.0 with ``old`` replaced by ``new``."""
    root = tmp_path / "rules"
    shutil.copytree(REPO / "rules", root)
    text = (root / "staging/inrgss.yaml").read_text()
    assert old in text
    edited = text.replace("version: 1.0.0\nstatus: active", "version: 1.1.0\nstatus: draft").replace(old, new)
    (root / "staging/inrgss-1.1.0.yaml").write_text(edited)
    return root


_M_MARROW = """      all:
        - {fact: metastatic_sites, contains_any: [bone_marrow]}
        - {fact: bone_marrow_tumor_percent, at_least: {param: ms_marrow_limit_percent}}
        - not: {condition: marrow_at_inclusive_limit}
"""


def test_an_equivalent_rewrite_of_a_condition_is_no_change(tmp_path: Path) -> None:
    # the same rule written otherwise: items reordered, nested all, 'not' pushed inside the
    # named condition (De Morgan), a list of one value, 'not less_than' for 'at_least'
    rewritten = """      all:
        - all:
          - not: {fact: bone_marrow_tumor_percent, less_than: {param: ms_marrow_limit_percent}}
          - any:
            - not: {param: ms_marrow_limit_inclusive, is: true}
            - not: {fact: bone_marrow_tumor_percent, is: {param: ms_marrow_limit_percent}}
        - {fact: metastatic_sites, contains_all: [bone_marrow]}
"""
    d = diff_decisions(*_pair(_edited(tmp_path, _M_MARROW, rewritten)))
    assert d.changes == ["version: 1.0.0 -> 1.1.0", "status: active -> draft"]
    assert "no change in the text of the rules" not in d.text()  # version and status did change
    # the domain analysis agrees independently: no cell changes its stage
    assert all(not i.transitions for i in d.impacts)


def test_a_real_change_is_shown_in_words_as_before(tmp_path: Path) -> None:
    changed = _M_MARROW.replace("bone_marrow_tumor_percent, at_least", "bone_marrow_tumor_percent, greater_than")
    d = diff_decisions(*_pair(_edited(tmp_path, _M_MARROW, changed)))
    i = d.changes.index("rule M-marrow: condition changed")
    minus, plus = d.changes[i + 1], d.changes[i + 2]
    assert minus.startswith("  - ") and "bone_marrow_tumor_percent ≥ 10 (ms_marrow_limit_percent)" in minus
    assert plus.startswith("  + ") and "bone_marrow_tumor_percent > 10 (ms_marrow_limit_percent)" in plus
    # S11: marrow at exactly 10 % is M; under "> 10" only those cells stop being M by this rule
    [complete] = [x for x in d.impacts if x.region == "complete"]
    assert complete.transitions and all(t.old == "M" for t in complete.transitions)
    assert all(ex["bone_marrow_tumor_percent"] == 10 for t in complete.transitions for ex in t.examples)


def test_a_change_under_a_parameter_not_in_force_still_shows(tmp_path: Path) -> None:
    # marrow_at_inclusive_limit only counts under ms_marrow_limit_inclusive: true (not the default);
    # its edit changes no cell under the defaults, but it is a change of the rules
    old = "      - {fact: bone_marrow_tumor_percent, is: {param: ms_marrow_limit_percent}}\n"
    new = "      - {fact: bone_marrow_tumor_percent, at_most: {param: ms_marrow_limit_percent}}\n"
    d = diff_decisions(*_pair(_edited(tmp_path, old, new)))
    assert "named condition marrow_at_inclusive_limit changed" in d.changes
    assert "rule M-marrow: condition changed" in d.changes
