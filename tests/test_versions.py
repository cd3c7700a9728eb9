"""Versions side by side and governance: which version runs, and what may run at all."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Callable

import pytest

from nbrules import RuleEngine, RuleSetError, VersionError, build_directory
from nbrules.cli import main

from .conftest import DEMO

V2 = DEMO.replace("version: 1.0.0", "version: 2.0.0").replace("{param: limit}", "365")
PATIENT = {"age_days": 400, "mycn_status": "not_amplified"}  # low under 1.0.0 (< 547), high under 2.0.0 (>= 365)


def versions(rules_dir: Callable[..., Path], v1_status: str = "active", v2_status: str = "active") -> Path:
    v2 = V2.replace("expect: {demo_out: low, fired: [young]}", "expect: {demo_out: low, fired: [young]}")
    return rules_dir(**{"demo": DEMO.replace("status: active", f"status: {v1_status}"),
                        "demo-2.0.0": v2.replace("status: active", f"status: {v2_status}")})


def test_newest_active_version_runs_by_default(rules_dir: Callable[..., Path]) -> None:
    with RuleEngine.from_directory(versions(rules_dir)) as eng:
        r = eng.evaluate(PATIENT)
        assert r.outputs["demo_out"] == "high"
        assert [(x.decision, x.version) for x in r.rulesets] == [("demo", "2.0.0")]
        assert r.rulesets[0].file.endswith("demo-2.0.0.yaml") and len(r.rulesets[0].sha256) == 64


def test_a_version_can_be_pinned(rules_dir: Callable[..., Path]) -> None:
    with RuleEngine.from_directory(versions(rules_dir), use=["demo@1.0.0"]) as eng:
        r = eng.evaluate(PATIENT)
        assert r.outputs["demo_out"] == "low" and r.rulesets[0].version == "1.0.0" and r.warnings == ()


def test_a_draft_runs_only_when_pinned(rules_dir: Callable[..., Path]) -> None:
    root = versions(rules_dir, v2_status="draft")
    with RuleEngine.from_directory(root) as eng:
        assert eng.evaluate(PATIENT).rulesets[0].version == "1.0.0"
    with RuleEngine.from_directory(root, use=["demo@2.0.0"]) as eng:
        assert eng.evaluate(PATIENT).outputs["demo_out"] == "high"


def test_a_retired_version_runs_only_when_pinned_and_warns(rules_dir: Callable[..., Path]) -> None:
    root = versions(rules_dir, v1_status="retired")
    with RuleEngine.from_directory(root) as eng:
        assert eng.evaluate(PATIENT).rulesets[0].version == "2.0.0"
    with RuleEngine.from_directory(root, use=["demo@1.0.0"]) as eng:
        r = eng.evaluate(PATIENT)
        assert r.rulesets[0].version == "1.0.0"
        assert [w["code"] for w in r.warnings] == ["NB803"]


def test_only_drafts_is_an_error_that_says_to_pin(rules_dir: Callable[..., Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = rules_dir(demo=DEMO.replace("status: active", "status: draft"))
    with pytest.raises(VersionError) as info:
        RuleEngine.from_directory(root, as_of=datetime.date(2025, 1, 1))
    assert [d.code for d in info.value.diagnostics] == ["NB810", "NB811"]
    assert info.value.diagnostics[1].message == "no version of demo is in force on 2025-01-01: 1.0.0 is draft"
    assert "--use demo@1.0.0" in (info.value.diagnostics[1].hint or "")
    p = tmp_path / "p.json"
    p.write_text(json.dumps(PATIENT))
    assert main(["evaluate", str(p), "--rules", str(root)]) == 3
    err = capsys.readouterr().err
    assert "NB810" in err and "--use demo@1.0.0" in err
    assert main(["evaluate", str(p), "--rules", str(root), "--use", "demo@1.0.0"]) == 0


def _future_v2(rules_dir: Callable[..., Path]) -> Path:
    """demo 1.0.0 active since 2024-01-01; demo 2.0.0 active from 2026-03-01."""
    return rules_dir(demo=DEMO, **{"demo-2.0.0": V2.replace("effective: 2024-01-01", "effective: 2026-03-01")})


def test_a_future_active_version_is_not_in_force_until_its_date(rules_dir: Callable[..., Path]) -> None:
    root = _future_v2(rules_dir)
    with RuleEngine.from_directory(root, as_of=datetime.date(2026, 2, 28)) as eng:
        r = eng.evaluate(PATIENT)
        assert r.outputs["demo_out"] == "low" and r.as_of == "2026-02-28"
        assert r.rulesets[0].selected == ("newest active version in effect on 2026-02-28 (effective 2024-01-01); "
                                          "2.0.0 is active from 2026-03-01")
    with RuleEngine.from_directory(root, as_of=datetime.date(2026, 3, 1)) as eng:
        r = eng.evaluate(PATIENT)
        assert r.outputs["demo_out"] == "high" and r.rulesets[0].version == "2.0.0"
        assert r.rulesets[0].selected == "newest active version in effect on 2026-03-01 (effective 2026-03-01)"
    with RuleEngine.from_directory(root, use=["demo@2.0.0"], as_of=datetime.date(2026, 2, 28)) as eng:
        r = eng.evaluate(PATIENT)
        assert r.outputs["demo_out"] == "high"
        assert r.rulesets[0].selected == "pinned (active, effective 2026-03-01)"


def test_only_a_future_active_version_says_when_and_how(rules_dir: Callable[..., Path]) -> None:
    root = rules_dir(demo=DEMO.replace("effective: 2024-01-01", "effective: 2026-03-01"))
    with pytest.raises(VersionError) as info:
        RuleEngine.from_directory(root, as_of=datetime.date(2026, 2, 28))
    why = info.value.diagnostics[1]
    assert why.message == "no version of demo is in force on 2026-02-28: 1.0.0 is active from 2026-03-01"
    assert "--as-of" in (why.hint or "") and "--use demo@1.0.0" in (why.hint or "")


def test_the_date_is_recorded_and_results_are_byte_identical_for_it(rules_dir: Callable[..., Path],
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = _future_v2(rules_dir)
    p = tmp_path / "p.json"
    p.write_text(json.dumps(PATIENT))
    outs = []
    for _ in range(2):
        assert main(["evaluate", str(p), "--rules", str(root), "--as-of", "2026-02-28"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    doc = json.loads(outs[0])
    assert doc["as_of"] == "2026-02-28" and doc["outputs"] == {"demo_out": "low"}
    assert doc["rulesets"][0]["effective"] == "2024-01-01" and doc["rulesets"][0]["selected"].startswith("newest")
    assert main(["evaluate", str(p), "--rules", str(root), "--as-of", "2026-03-01"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == {"demo_out": "high"}
    assert main(["evaluate", str(p), "--rules", str(root), "--as-of", "2026-02-30"]) == 4
    assert "not a date" in capsys.readouterr().err


def test_by_default_the_date_follows_the_clock(rules_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from nbrules import runtime

    day = [datetime.date(2026, 2, 28)]
    monkeypatch.setattr(runtime, "_today", lambda: day[0])
    with RuleEngine.from_directory(_future_v2(rules_dir)) as eng:
        assert eng.evaluate(PATIENT).outputs["demo_out"] == "low"
        day[0] = datetime.date(2026, 3, 1)  # midnight passes: 2.0.0 comes into force without a restart
        r = eng.evaluate(PATIENT)
        assert r.outputs["demo_out"] == "high" and r.as_of == "2026-03-01"


def test_a_decision_not_in_force_beside_others_is_a_warning(rules_dir: Callable[..., Path]) -> None:
    other = DEMO.replace("decision: demo", "decision: other").replace("demo_out", "other_out")
    root = rules_dir(demo=DEMO, other=other.replace("status: active", "status: draft"))
    with RuleEngine.from_directory(root, as_of=datetime.date(2025, 1, 1)) as eng:
        r = eng.evaluate(PATIENT)
        assert r.outputs == {"demo_out": "low"}
        assert [(w["code"], w["message"]) for w in r.warnings] == [
            ("NB811", "no version of other is in force on 2025-01-01: 1.0.0 is draft")]


def test_pinning_what_is_not_installed(rules_dir: Callable[..., Path]) -> None:
    root = versions(rules_dir)
    with pytest.raises(VersionError) as info:
        RuleEngine.from_directory(root, use=["demo@3.0.0"])
    assert info.value.diagnostics[0].code == "NB802" and "demo@1.0.0, demo@2.0.0" in (info.value.diagnostics[0].hint or "")
    with pytest.raises(VersionError):
        RuleEngine.from_directory(root, use=["nosuch@1.0.0"])


def test_cli_use_option(rules_dir: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = versions(rules_dir)
    p = tmp_path / "p.json"
    p.write_text(json.dumps(PATIENT))
    assert main(["evaluate", str(p), "--rules", str(root), "--use", "demo@1.0.0"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == {"demo_out": "low"}
    assert main(["evaluate", str(p), "--rules", str(root), "--use", "demo@9.9.9"]) == 3
    assert "NB802" in capsys.readouterr().err


# --- governance ------------------------------------------------------------------------------

GAP = DEMO.replace("        - {fact: mycn_status, is: amplified}\n", "")  # young amplified: no rule


def test_an_active_file_with_a_gap_is_refused(rules_dir: Callable[..., Path]) -> None:
    with pytest.raises(RuleSetError) as info:
        RuleEngine.from_directory(rules_dir(demo=GAP))
    codes = [d.code for d in info.value.diagnostics]
    assert codes[0] == "NB801" and "NB601" in codes
    assert "demo@1.0.0 is active but not clean: 1 verify error(s)" in info.value.diagnostics[0].message


def test_an_active_file_with_a_failing_case_is_refused(rules_dir: Callable[..., Path]) -> None:
    bad = DEMO.replace("expect: {demo_out: low, fired: [young]}", "expect: {demo_out: high}")
    with pytest.raises(RuleSetError) as info:
        RuleEngine.from_directory(rules_dir(demo=bad))
    assert [d.code for d in info.value.diagnostics] == ["NB801", "NB701"]


def test_a_draft_may_be_unclean_but_runs_only_when_pinned(rules_dir: Callable[..., Path]) -> None:
    root = rules_dir(demo=GAP.replace("status: active", "status: draft"))
    with RuleEngine.from_directory(root, use=["demo@1.0.0"]) as eng:
        r = eng.evaluate({"age_days": 100, "mycn_status": "amplified"})
        assert r.outputs["demo_out"] is None and "demo_out" in r.not_applicable


def test_future_effective_date_is_a_warning(rules_dir: Callable[..., Path]) -> None:
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    build = build_directory(rules_dir(demo=DEMO.replace("effective: 2024-01-01", f"effective: {tomorrow}")))
    assert [d.code for d in build.diagnostics] == ["NB804"] and build.ok


# --- content changed without a version change -----------------------------------------------


def test_validate_reports_a_file_edited_without_raising_its_version(rules_dir: Callable[..., Path],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = rules_dir(demo=DEMO, **{"demo-2.0.0": V2})
    assert main(["validate", str(root), "--record"]) == 0
    lock = (root / "versions.lock").read_text()
    assert "demo@1.0.0 " in lock and "demo@2.0.0 " in lock
    capsys.readouterr()
    assert main(["validate", str(root)]) == 0  # unchanged: clean
    p = root / "demo.yaml"
    p.write_text(p.read_text().replace("{value: 547", "{value: 548"))
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    [line] = [x for x in out.splitlines() if "NB812" in x]
    assert line.startswith(f"{root.name}/demo.yaml:") and "demo@1.0.0 changed since its hash was recorded" in line
    p.write_text(p.read_text().replace("version: 1.0.0", "version: 1.0.1"))  # a new version: nothing to report
    assert main(["validate", str(root)]) == 0
    p.write_text(p.read_text().replace("version: 1.0.1", "version: 1.0.0"))
    assert main(["validate", str(root), "--record"]) == 1  # shows what it accepts, then records it
    assert main(["validate", str(root)]) == 0


def test_a_recorded_version_keeps_its_hash_when_its_file_is_gone(rules_dir: Callable[..., Path]) -> None:
    root = rules_dir(demo=DEMO, **{"demo-2.0.0": V2})
    assert main(["validate", str(root), "--record"]) == 0
    v2 = (root / "demo-2.0.0.yaml")
    text = v2.read_text()
    v2.unlink()
    assert main(["validate", str(root), "--record"]) == 0
    v2.write_text(text.replace("365", "366"))  # restored with other content under the same version
    assert main(["validate", str(root)]) == 1


def test_a_bad_lock_file_is_a_usage_error(rules_dir: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = rules_dir(demo=DEMO)
    (root / "versions.lock").write_text("demo@1.0.0 not-a-hash\n")
    assert main(["validate", str(root)]) == 4
    assert "versions.lock:1: expected 'decision@version sha256'" in capsys.readouterr().err
    assert main(["validate", "--record"]) == 4  # the bundled rules are not recorded


def test_a_new_day_keeps_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing the versions again at midnight keeps the profile the engine was built with."""
    from nbrules import runtime

    day = [datetime.date(2026, 2, 28)]
    monkeypatch.setattr(runtime, "_today", lambda: day[0])
    with RuleEngine.default(profile="day-547-younger") as eng:
        assert eng.evaluate({"age_days": 100}).profile == "day-547-younger"
        day[0] = datetime.date(2026, 3, 1)
        r = eng.evaluate({"age_days": 100})
        assert r.as_of == "2026-03-01" and r.profile == "day-547-younger"
