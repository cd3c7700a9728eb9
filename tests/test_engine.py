"""Evaluation through the Python API: the result, its trace, determinism, chaining."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Callable

import pytest

from nbrules import RuleEngine, RuleSetError
from nbrules.patient import canonical_json

from .conftest import DEMO

MS = {"age_days": 183, "primary_idrfs": [], "metastatic_sites": ["liver", "skin"], "mibg_bone_or_marrow_avid": False}


def test_result_shape(engine: RuleEngine) -> None:
    d = engine.evaluate(MS).to_dict()
    assert list(d) == ["type", "outputs", "indeterminate", "not_applicable", "settled", "from_input", "fired",
                       "warnings", "rulesets", "knowledge", "input", "input_sha256", "as_of", "engine"]
    ms = next(f for f in d["fired"] if f["decision"] == "inrgss")
    assert ms["rule"] == "MS"
    assert ms["version"] == "1.0.0"
    assert ms["source"].startswith("rules/staging/inrgss.yaml:")
    assert "criteria.md S9" in ms["cite"]
    assert ms["matched"]["age_days"] == 183 and ms["matched"]["metastatic_sites"] == ["liver", "skin"]
    assert ms["set"] == {"inrgss_stage": "MS"}
    assert ms["parameters"]["ms_age_limit_days"] == 547


def test_source_line_points_at_the_rule(engine: RuleEngine) -> None:
    result = engine.evaluate(MS)
    fired = next(f for f in result.fired if f.decision == "inrgss")
    path, line = fired.source.rsplit(":", 1)
    text = (Path(__file__).resolve().parent.parent / path).read_text().splitlines()
    assert text[int(line) - 1].strip() == f"- id: {fired.rule}"


def test_rule_file_hashes_are_the_file_bytes(engine: RuleEngine) -> None:
    repo = Path(__file__).resolve().parent.parent
    for info in engine.evaluate(MS).rulesets:
        assert info.sha256 == hashlib.sha256((repo / info.file).read_bytes()).hexdigest()


def test_input_hash_is_of_the_canonical_input(engine: RuleEngine) -> None:
    a = engine.evaluate(MS)
    b = engine.evaluate({**MS, "metastatic_sites": ["skin", "liver"]})  # list order is not meaningful
    assert a.input_sha256 == b.input_sha256
    assert a.input_sha256 == hashlib.sha256(canonical_json(a.input).encode()).hexdigest()


def test_byte_identical_results(engine: RuleEngine) -> None:
    first = engine.evaluate(MS).to_json()
    again = engine.evaluate(json.loads(json.dumps(MS))).to_json()
    fresh = RuleEngine.default()
    assert first == again == fresh.evaluate(MS).to_json()
    fresh.close()


def test_result_pickles(engine: RuleEngine) -> None:
    r = engine.evaluate(MS)
    assert pickle.loads(pickle.dumps(r)).to_json() == r.to_json()


def test_given_output_is_not_rederived_and_the_result_says_so(engine: RuleEngine) -> None:
    r = engine.evaluate({"inrgss_stage": "L2", "primary_idrfs": [], "metastatic_sites": []})
    assert r.outputs["inrgss_stage"] == "L2"
    assert r.from_input["inrgss_stage"].decision == "inrgss"
    assert not [f for f in r.fired if f.decision == "inrgss"]
    [w] = [w for w in r.warnings if w["code"] == "NB521"]
    assert "derives L1" in w["message"]


def test_invalid_rules_raise_with_every_diagnostic(rules_dir: Callable[..., Path]) -> None:
    bad = DEMO.replace("mycn_status, is: amplified", "mycn_stat, is: amplified").replace("status: active", "status: live")
    with pytest.raises(RuleSetError) as info:
        RuleEngine.from_directory(rules_dir(demo=bad))
    codes = sorted(d.code for d in info.value.diagnostics)
    assert codes == ["NB204", "NB301"]
    clone = pickle.loads(pickle.dumps(info.value))
    assert clone.diagnostics == info.value.diagnostics and clone.exit_code == 3


def test_settled_output_without_a_rule(rules_dir: Callable[..., Path]) -> None:
    # Two rules give the same value on either side of a missing fact: every completion agrees.
    text = DEMO.replace("""  - id: other
    cite: [src]
    when:
      any:
        - {fact: age_days, at_least: {param: limit}}
        - {fact: mycn_status, is: amplified}
    then: {demo_out: high}""", """  - id: young-amplified
    cite: [src]
    when:
      all:
        - {fact: age_days, less_than: {param: limit}}
        - {fact: mycn_status, is: amplified}
    then: {demo_out: high}
  - id: older
    cite: [src]
    when: {fact: age_days, at_least: {param: limit}}
    then: {demo_out: high}""")
    with RuleEngine.from_directory(rules_dir(demo=text)) as eng:
        r = eng.evaluate({"mycn_status": "amplified"})
        assert r.outputs["demo_out"] == "high"
        assert r.settled["demo_out"].rules == ("young-amplified", "older")
        assert r.settled["demo_out"].unknown == ("age_days",)
        assert r.fired == ()
