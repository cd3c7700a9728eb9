"""The adapter's lean path (nbrules.backend drives durable_rules_engine directly).

The former path through durable-rules' Python layer (``durable.engine.Host``, kept in
tests/former_adapter.py) is the oracle: the lean path must start the same actions, in
the same order, for the same facts; every rule firing comes from the C engine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbrules.backend as backend
from nbrules import EngineError, RuleEngine
from nbrules.backend import CATCH_ALL, DISCRIMINATOR, EngineRuleset, engine_json, fact_text
from nbrules.compiler import engine_fact

from .former_adapter import FormerRuleset

PATIENT = {"all": [{"m": {"$and": [{DISCRIMINATOR: 1}, {"x": 1}]}}]}


def _rule(test: dict[str, Any]) -> dict[str, Any]:
    return {"all": [{"m": {"$and": [{DISCRIMINATOR: 1}, test]}}]}


#: Patients of every kind for the bundled decisions: complete, partly known, empty,
#: several rules matching, MS, L1, high-risk MYCN, and response assessments.
PATIENTS: list[dict[str, Any]] = [
    {},
    {"age_days": 183, "primary_idrfs": [], "metastatic_sites": ["liver", "skin"], "mibg_bone_or_marrow_avid": False},
    {"age_days": 900, "metastatic_sites": ["bone"]},
    {"age_days": 300, "primary_idrfs": [], "metastatic_sites": []},
    {"age_days": 300, "metastatic_sites": ["liver"]},
    {"mycn_status": "amplified", "inss_stage": "1"},
    {"age_days": 2000, "primary_idrfs": ["two_compartments"], "metastatic_sites": ["bone", "bone_marrow"],
     "mibg_bone_or_marrow_avid": True, "bone_marrow_tumor_percent": 40, "histology_category": "neuroblastoma",
     "differentiation_grade": "undifferentiated", "mki": "high", "mycn_status": "amplified",
     "chr11q_status": "aberrant", "chr1p_status": "aberrant", "ploidy": "diploid", "symptoms": [],
     "resection_extent": "incomplete", "inss_stage": "4"},
    {"age_days": 100, "primary_idrfs": [], "metastatic_sites": ["skin", "liver", "bone_marrow"],
     "mibg_bone_or_marrow_avid": False, "bone_marrow_tumor_percent": 5, "histology_category": "neuroblastoma",
     "differentiation_grade": "poorly_differentiated", "mki": "low", "mycn_status": "not_amplified",
     "chr11q_status": "normal", "chr1p_status": "normal", "ploidy": "hyperdiploid",
     "symptoms": ["evolving_hepatomegaly"], "resection_extent": "complete", "inss_stage": "4S"},
    {"inrc_primary_response": "PD", "inrc_metastatic_response": "PD", "inrc_marrow_response": "PD", "age_days": 400},
    {"inrc_primary_response": "CR", "inrc_metastatic_response": "CR", "inrc_marrow_response": "CR"},
]


def test_same_actions_in_the_same_order_as_durable_engine_on_every_bundled_decision() -> None:
    engine = RuleEngine.default(cache_size=0)
    several = 0
    try:
        for runner in engine.runners:
            lean_seen: list[str] = []
            former_seen: list[str] = []
            lean = EngineRuleset(runner.program.label, runner.program.definition, on_fire=lean_seen.append)
            former = FormerRuleset(runner.program.label, runner.program.definition, on_fire=former_seen.append)
            try:
                for p in PATIENTS:
                    fact = engine_fact(runner.view(p), runner.decision.facts)
                    lean_seen.clear()
                    former_seen.clear()
                    assert lean.run(fact) == former.run(fact), (runner.decision.key, p)
                    assert lean_seen == former_seen, (runner.decision.key, p)
                    assert lean_seen[-1:] == [CATCH_ALL] or CATCH_ALL in lean_seen
                    several += len(lean_seen) > 2
            finally:
                lean.close()
                former.close()
    finally:
        engine.close()
    assert several > 0  # some runs started more than one rule's action besides the catch-all


def test_rules_fire_in_the_c_engines_order_not_the_definitions() -> None:
    definition = {"z": _rule({"x": 1}), "a": _rule({"$gt": {"x": 0}}), "m": _rule({"$lt": {"x": 5}}),
                  "never": _rule({"x": 2})}
    lean_seen: list[str] = []
    former_seen: list[str] = []
    lean = EngineRuleset("order", definition, on_fire=lean_seen.append)
    former = FormerRuleset("order", definition, on_fire=former_seen.append)
    try:
        assert lean.run({"x": 1}) == former.run({"x": 1}) == {"z", "a", "m"}
        assert lean_seen == former_seen
        assert sorted(lean_seen) == sorted(["z", "a", "m", CATCH_ALL])
    finally:
        lean.close()
        former.close()


def test_a_rule_split_into_alternatives_fires_each_time_and_is_reported_once() -> None:
    # INRC 2017 (Park et al., criteria.md §7.1): progressive disease in any component is
    # overall PD.  The compiler splits rule O-PD into two alternatives (primary PD; metastatic
    # or marrow PD outside the 4S exception); the second has an $or with two true branches.
    engine = RuleEngine.default(cache_size=0)
    try:
        runner = next(r for r in engine.runners if r.decision.id == "response-overall")
        seen: list[str] = []
        runner.engine._on_fire = seen.append
        fired, scopes = runner._fire({"inrc_primary_response": "PD", "inrc_metastatic_response": "PD",
                                      "inrc_marrow_response": "PD", "age_days": 400})
        assert sorted(seen) == sorted(["r0~0", "r0~1", "r0~1", CATCH_ALL])
        assert [r.id for r in fired] == ["O-PD"] and scopes == []
        assert fired[0].then == {"inrc_overall_response": "PD"}
    finally:
        engine.close()


@pytest.mark.parametrize("code, words", [(1, "not even the catch-all"), (2, "already observed"), (3, "deferred")])
def test_refusal_codes_are_engine_errors_and_no_unstarted_session_is_deleted(
        monkeypatch: pytest.MonkeyPatch, code: int, words: str) -> None:
    deleted: list[str] = []
    monkeypatch.setattr(backend, "_assert_fact", lambda handle, text: (code, 0))
    monkeypatch.setattr(backend, "_delete_state", lambda handle, sid: deleted.append(sid))
    rs = EngineRuleset("codes", {"a": PATIENT})
    try:
        with pytest.raises(EngineError, match=words):
            rs.run({"x": 1})
        assert deleted == []  # a session that started no action must not be deleted (valgrind)
    finally:
        rs.close()


def test_error_numbers_and_bad_facts_are_engine_errors() -> None:
    rs = EngineRuleset("errors", {"a": PATIENT})
    try:
        with pytest.raises(EngineError, match="error code: 302"):  # more properties than durable-rules holds
            rs.run({f"k{i}": i for i in range(300)})
        with pytest.raises(EngineError, match="not JSON serializable"):
            rs.run({"x": object()})
        assert rs.run({"x": 1}) == {"a"}
    finally:
        rs.close()


def test_sessions_are_deleted_after_a_failing_action_and_a_strange_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(name: str) -> None:
        raise RuntimeError("kaboom")

    rs = EngineRuleset("strange", {"a": PATIENT}, on_fire=boom)
    try:
        with pytest.raises(EngineError, match="an action failed.*kaboom"):
            rs.run({"x": 1})
        assert rs.last_sid is not None and not rs.has_session(rs.last_sid)
        rs._on_fire = None
        real = backend._start_action_for_state
        monkeypatch.setattr(backend, "_start_action_for_state",
                            lambda handle, state: (real(handle, state)[0], '{"invented":{"m":{}}}'))
        with pytest.raises(EngineError, match="unexpected action message"):
            rs.run({"x": 1})
        assert not rs.has_session(rs.last_sid)
        monkeypatch.undo()
        assert rs.run({"x": 1}) == {"a"}
        assert not rs.has_session(rs.last_sid)
    finally:
        rs.close()


def test_rule_names_the_messages_cannot_carry_are_refused() -> None:
    with pytest.raises(EngineError, match="quote or backslash"):
        EngineRuleset("names", {'a"b': PATIENT})


#: A number written with an exponent after a bare digit (``1e-05``, ``1e+16``): refused by
#: durable-rules' reader with error 204.
_BARE_EXPONENT = re.compile(r'(?<![\w.\-"])-?\d+e')


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text(max_size=8), st.booleans(),
    st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers()), max_size=4))))
def test_fact_text_is_the_same_data_with_no_bare_exponent(fact: dict[str, Any]) -> None:
    text = fact_text(fact)
    assert json.loads(text) == json.loads(engine_json(fact)) == fact
    numbers = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # strings left out
    assert _BARE_EXPONENT.search(numbers) is None, text


def test_durable_rules_reads_fact_text_numbers_as_the_same_values() -> None:
    values = [1e-05, 5e-324, 1.5e-07, 1e16, 1e22, 1e300, 0.1, 2.5, -0.0, 123456789012345678.0, 2 ** 63 - 1, 0]
    definition = {f"eq{i}": _rule({"x": v}) for i, v in enumerate(values)}
    rs = EngineRuleset("numbers", definition)
    try:
        for i, v in enumerate(values):
            fired = rs.run({"x": v})
            assert f"eq{i}" in fired, (v, fact_text({"x": v}))
            assert fired <= {f"eq{j}" for j, w in enumerate(values) if w == v}, v
    finally:
        rs.close()


def test_durable_engines_python_layer_is_not_loaded() -> None:
    code = ("import sys\nfrom nbrules import RuleEngine\n"
            "RuleEngine.default().evaluate({'age_days': 300, 'primary_idrfs': [], 'metastatic_sites': []})\n"
            "print(sorted(m for m in sys.modules if m.startswith('durable')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['durable_rules_engine']", out  # the C extension only: no durable, durable.engine
