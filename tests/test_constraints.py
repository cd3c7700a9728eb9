"""Input constraints written in the rule language (rules/constraints.yaml).

Every edit here is made to the YAML of a copy of the bundled rules, as a clinical
editor would make it: no Python is changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nbrules import PatientInputError, RuleEngine, RuleSetError, build_directory
from nbrules.cli import EXIT_FINDINGS, EXIT_OK, main
from nbrules.verify import verify_decision

from .conftest import REPO


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    root = tmp_path / "rules"
    shutil.copytree(REPO / "rules", root)
    return root


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == count, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def _codes(engine: RuleEngine, facts: dict) -> list[tuple[str, str | None, str]]:
    with pytest.raises(PatientInputError) as info:
        engine.evaluate(facts)
    return [(d.code, d.pointer, d.message) for d in info.value.diagnostics]


def test_moving_the_mki_boundary_in_the_rules_moves_the_constraint(rules: Path) -> None:
    # The MKI class given with a count must be the class mki-class derives (criteria.md §4.2);
    # the constraint refers to the decision, so moving its low/intermediate boundary to 120
    # in the rule file is all it takes.
    mki = rules / "histology" / "mki-class.yaml"
    _edit(mki, "{fact: mki_count, less_than: 100}", "{fact: mki_count, less_than: 120}")
    _edit(mki, "{fact: mki_count, at_least: 100}", "{fact: mki_count, at_least: 120}")
    _edit(mki, "- name: 100 per 5,000 is intermediate\n    given: {mki_count: 100}",
          "- name: 120 per 5,000 is intermediate\n    given: {mki_count: 120}")
    _edit(mki, "version: 1.0.0", "version: 1.1.0")
    with RuleEngine.from_directory(rules) as eng:
        eng.evaluate({"mki_count": 110, "mki": "low"})
        assert _codes(eng, {"mki_count": 110, "mki": "intermediate"}) == [
            ("NB510", "/mki", "mki_count 110 per 5,000 cells is MKI class low, found intermediate")]
    # and before the edit, the bundled rules refuse the same record
    with RuleEngine.from_directory(REPO / "rules") as eng:
        assert _codes(eng, {"mki_count": 110, "mki": "low"}) == [
            ("NB510", "/mki", "mki_count 110 per 5,000 cells is MKI class intermediate, found low")]


def test_a_fact_a_constraint_forbids_is_not_asked_for(engine: RuleEngine) -> None:
    # criteria.md §4.2: MKI applies only to neuroblastoma (and the nodule of GNB nodular);
    # §4.3: ganglioneuroblastoma intermixed is favourable whatever the MKI.
    r = engine.evaluate({"histology_category": "ganglioneuroblastoma_intermixed", "age_days": 300})
    assert r.outputs["inpc_histology"] == "favorable"
    assert "mki" not in r.indeterminate
    assert r.not_applicable["mki"].reason == (
        "needs mki_count, which does not apply to this patient (input constraint mki-count-only-for-neuroblastoma)")
    # for a neuroblastoma, the count is still what would settle the class
    r = engine.evaluate({"histology_category": "neuroblastoma", "age_days": 300})
    assert r.indeterminate["mki"].missing == ("mki_count",)


def test_an_editor_adds_a_constraint_without_code(rules: Path) -> None:
    # A three-fact constraint: 4S needs an infant (criteria.md §3.1) whose marrow is
    # minimally involved (< 10 %, §3.1 footnote).
    _edit(rules / "constraints.yaml", "constraints:\n", """constraints:
  - id: inss-4s-minimal-marrow
    severity: error
    fact: bone_marrow_tumor_percent
    when: {all: [{fact: inss_stage, is: 4S}, {fact: age_days, less_than: 365}]}
    require: {fact: bone_marrow_tumor_percent, less_than: 10}
    message: INSS 4S allows less than 10 % marrow involvement, found {bone_marrow_tumor_percent}
    hint: more extensive involvement is INSS stage 4
    cite: [criteria.md §3.1, brodeur1993]
""")
    with RuleEngine.from_directory(rules) as eng:
        patient = {"inss_stage": "4S", "age_days": 100, "metastatic_sites": ["bone_marrow"],
                   "bone_marrow_tumor_percent": 25}
        assert _codes(eng, patient) == [("NB510", "/bone_marrow_tumor_percent",
                                         "INSS 4S allows less than 10 % marrow involvement, found 25")]
        eng.evaluate({**patient, "age_days": 400, "inss_stage": "4"})


def test_verify_leaves_out_what_a_constraint_excludes_and_only_that(rules: Path) -> None:
    # COG v1 has no row for INSS 4S at one year or older, because 4S is an infant stage
    # (criteria.md §3.1): the constraint makes those cells impossible, so verify is clean.
    build = build_directory(rules)
    cog = next(d for d in build.decisions if d.id == "cog-v1-risk")
    assert verify_decision(cog).ok
    assert main(["verify", "--rules", str(rules)]) == EXIT_OK
    # without the constraint, verify finds the gap and shows such a patient
    text = (rules / "constraints.yaml").read_text(encoding="utf-8")
    start = text.index("  - id: inss-4s-infants-only")
    end = text.index("  - id: inss-distant-needs-sites")
    (rules / "constraints.yaml").write_text(text[:start] + text[end:], encoding="utf-8")
    build = build_directory(rules)
    cog = next(d for d in build.decisions if d.id == "cog-v1-risk")
    report = verify_decision(cog)
    gaps = [f for f in report.findings if f["code"] == "NB601"]
    assert gaps and all(e["inss_stage"] == "4S" and e["age_days"] >= 365 for e in gaps[0]["examples"])
    assert main(["verify", "--rules", str(rules)]) == EXIT_FINDINGS


@pytest.mark.parametrize(
    "old, new, code, line_text",
    [
        ("{decision: mki-class, output: mki}", "{decision: mki-klass, output: mki}", "NB351", "require: {fact: mki"),
        ("{decision: mki-class, output: mki}", "{decision: inpc, output: inpc_histology}", "NB352",
         "require: {fact: mki"),
        ("found {mki}", "found {mki_clas}", "NB354", "message: mki_count"),
        ("  - id: mki-only-for-neuroblastoma", "  - id: grade-only-for-neuroblastoma", "NB353",
         "- id: grade-only-for-neuroblastoma"),
        ("    severity: warning\n    fact: mibg_bone_or_marrow_avid", "    severity: notice\n    fact: mibg_bone_or_marrow_avid",
         "NB204", "severity: notice"),
        ("{fact: inss_stage, is: 4S}", "{fact: inss_stage, is: 5S}", "NB302", "when: {fact: inss_stage, is: 5S}"),
    ],
)
def test_bad_constraints_are_located(rules: Path, old: str, new: str, code: str, line_text: str) -> None:
    path = rules / "constraints.yaml"
    _edit(path, old, new)
    build = build_directory(rules)
    errors = [d for d in build.errors() if d.path == "rules/constraints.yaml"]
    assert [d.code for d in errors] == [code]
    d = errors[0]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert d.line is not None and line_text in lines[d.line - 1] and d.column is not None
    assert not build.ok


def test_a_rule_file_cannot_compare_with_a_decision(rules: Path) -> None:
    _edit(rules / "histology" / "inpc.yaml", "reads: [histology_category, differentiation_grade, mki, age_days]",
          "reads: [histology_category, differentiation_grade, mki, age_days, mki_count]")
    _edit(rules / "histology" / "inpc.yaml", "conditions:\n", "conditions:\n  odd: {fact: mki, is: {decision: mki-class, output: mki}}\n")
    build = build_directory(rules)
    assert "NB350" in [d.code for d in build.errors() if d.path == "rules/histology/inpc.yaml"]


def test_verify_checks_the_chain_the_ms_age_edit_alone(rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # criteria.md §0.1 note A: INRGSS, INRG and COG v2 place 18 months at 547 days. Moving
    # the INRGSS MS limit alone to 548 stages a child of 547 days MS, for whom INRG and COG
    # version 2 (MS rows only under 547 days) have no group.
    _edit(rules / "staging" / "inrgss.yaml", "  ms_age_limit_days:\n    value: 547", "  ms_age_limit_days:\n    value: 548")
    build = build_directory(rules)
    inrgss = next(d for d in build.decisions if d.id == "inrgss")
    report = verify_decision(inrgss)
    [chain] = [f for f in report.findings if f["code"] == "NB610"]
    assert chain["rules"] == ["MS", "ms-under-eighteen-months"]
    assert all(e["age_days"] == 547 for e in chain["examples"])
    assert "cog-risk, inrg" in chain["message"]
    assert chain["location"].startswith("rules/staging/inrgss.yaml:")
    # those patients are exactly the ones left without a group (as a draft, run when pinned:
    # an active file with a chain violation is refused, like one with a gap)
    with pytest.raises(RuleSetError):
        RuleEngine.from_directory(rules)
    _edit(rules / "staging" / "inrgss.yaml", "status: active", "status: draft")
    with RuleEngine.from_directory(rules, use=["inrgss@1.0.0"], cache_size=0) as eng:
        r = eng.evaluate({**chain["examples"][0], "mycn_status": "not_amplified", "chr11q_status": "normal"})
    assert r.outputs["inrgss_stage"] == "MS"
    assert "inrg_group" in r.not_applicable and "cog_risk" in r.not_applicable
    capsys.readouterr()
    assert main(["verify", "--rules", str(rules)]) == EXIT_FINDINGS
    assert "NB610 [chain-violation]" in capsys.readouterr().out


def test_the_same_edit_made_throughout_keeps_the_chain_closed(rules: Path) -> None:
    # The coherent proposal moves 18 months to 548 days in INRGSS and in the one shared
    # parameter INRG, COG v2, INPC and the constraint read: no chain finding.
    _edit(rules / "staging" / "inrgss.yaml", "  ms_age_limit_days:\n    value: 547", "  ms_age_limit_days:\n    value: 548")
    _edit(rules / "parameters.yaml", "  eighteen_months_days:\n    value: 547", "  eighteen_months_days:\n    value: 548")
    build = build_directory(rules)
    for d in build.decisions:
        assert not [f for f in verify_decision(d).findings if f["code"] == "NB610"], d.key


# -- shared parameters and profiles (rules/parameters.yaml) ------------------------------------

MS_547 = {"age_days": 547, "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": False,
          "mycn_status": "not_amplified", "chr11q_status": "normal"}


def test_eighteen_months_is_declared_once_and_read_by_each_system() -> None:
    build = build_directory(REPO / "rules")
    assert build.ok
    users = sorted(d.id for d in build.decisions if "eighteen_months_days" in d.parameters)
    assert users == ["cog-risk", "inpc", "inrg"]
    assert {d.parameters["eighteen_months_days"].value for d in build.decisions if d.id in users} == {547}


def test_one_binding_of_the_constraints_serves_every_decision_run_with_its_own_parameters() -> None:
    """Binding the constraints reads only the values of the shared parameters and the
    parameters of the decisions they refer to (mki-class here): each decision of the
    bundled package, run with its own parameters, gets the one binding; moving either
    kind gets another, whose conditions differ."""
    build = build_directory(REPO / "rules")
    assert build.constraints is not None
    cs = build.constraints.rebind(())
    default = cs.bound()
    assert all(cs.bound({d.id: d.param_values()}) is default for d in build.decisions)

    def violations(bound: tuple) -> list:
        return [b.violation for b in bound]

    for moved in ({"inrg": {"eighteen_months_days": 365}},
                  {"mki-class": {"mki_high_min_count": 150}}):
        other = cs.bound(moved)
        assert other is not default and violations(other) != violations(default), moved
    # the shared value as a later decision gives it back: the binding in force
    assert cs.bound({"inrg": {"eighteen_months_days": 365}, "cog-risk": {"eighteen_months_days": 547}}) is default


def test_a_shared_parameter_declared_again_in_a_rule_file_is_refused(rules: Path) -> None:
    _edit(rules / "risk" / "inrg.yaml", "parameters:\n",
          "parameters:\n  eighteen_months_days:\n    value: 548\n    note: a second 18 months\n")
    build = build_directory(rules)
    [d] = [d for d in build.errors() if d.code == "NB355"]
    assert d.path == "rules/risk/inrg.yaml" and d.pointer == "/parameters/eighteen_months_days"


def test_a_profile_reading_must_be_documented(rules: Path) -> None:
    _edit(rules / "parameters.yaml", "      ms_age_limit_days: 548", "      ms_age_limit_days: 600")
    build = build_directory(rules)
    assert [(d.code, d.path) for d in build.errors()] == [("NB356", "rules/parameters.yaml")]


def test_the_profile_moves_every_18_month_cut_together_and_the_result_names_it() -> None:
    # criteria.md §0.1 note A: read as "day 547 is younger", an MS child of 547 days is MS
    # in INRGSS and gets an INRG group (MS, under 18 months, not amplified, 11q normal: C).
    with RuleEngine.default(cache_size=0) as eng:
        r = eng.evaluate(MS_547)
        assert (r.outputs["inrgss_stage"], r.outputs["inrg_group"], r.profile) == ("M", "P", None)
        assert "profile" not in r.to_dict()
    with RuleEngine.default(profile="day-547-younger") as eng:
        r = eng.evaluate(MS_547)
        assert (r.outputs["inrgss_stage"], r.outputs["inrg_group"]) == ("MS", "C")
        assert r.to_dict()["profile"] == "day-547-younger" and '"profile":"day-547-younger"' in r.to_compact_json()
        ms = next(f for f in r.fired if f.decision == "inrgss")
        assert ms.parameters["ms_age_limit_days"] == 548


def test_profile_on_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import json

    patient = tmp_path / "p.json"
    patient.write_text(json.dumps(MS_547))
    assert main(["evaluate", str(patient), "--profile", "day-547-younger"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["profile"] == "day-547-younger"
    assert main(["evaluate", str(patient), "--profile", "no-such"]) == 4
    assert "profiles: day-547-younger" in capsys.readouterr().err
    assert main(["verify", "--all-parameters"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "inrgss@1.0.0 with profile day-547-younger" in out and "inrg@1.0.1 with profile day-547-younger" in out
    assert main(["render", "inrgss", "--profile", "day-547-younger"]) == EXIT_OK
    assert "under 548 days (ms_age_limit_days)" in capsys.readouterr().out


def test_compiled_constraint_tests_agree_with_the_reference_interpreter() -> None:
    import random

    from nbrules.conditions import evaluate
    from nbrules.vocabulary import input_facts

    build = build_directory(REPO / "rules")
    assert build.constraints is not None
    specs = input_facts()
    rng = random.Random(10)

    def value(spec):  # type: ignore[no-untyped-def]
        if spec.kind == "enum":
            return rng.choice(spec.values)
        if spec.kind == "boolean":
            return rng.random() < 0.5
        if spec.kind == "set":
            return rng.sample(spec.values, rng.randint(0, min(3, len(spec.values))))
        return rng.choice([0, 1, 99, 100, 199, 200, 201, 364, 365, 546, 547, 548, 10, 9.5])

    checked = 0
    for _ in range(3000):
        facts = {n: value(s) for n, s in specs.items() if rng.random() < 0.6}
        for b in build.constraints.bound():
            assert b.test is not None
            assert b.test(facts) == evaluate(b.violation, facts), (b.constraint.id, facts)
            checked += 1
    assert checked == 3000 * len(build.constraints)
