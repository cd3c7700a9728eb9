"""Each durable-rules pitfall of architecture.md §7, pinned as handled.

The adapter (nbrules.backend) is the only module that imports durable-rules; these
tests exercise it directly and through compiled rule files.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

import pytest

from nbrules import EngineError, RuleEngine, build_bundled, build_directory
from nbrules.backend import CATCH_ALL, DISCRIMINATOR, EngineRuleset, engine_json, live_rulesets
from nbrules.compiler import compile_decision

from .conftest import DEMO

PATIENT = {"all": [{"m": {"$and": [{DISCRIMINATOR: 1}, {"x": 1}]}}]}


def test_no_dispatcher_threads_are_started() -> None:
    before = threading.active_count()
    rs = EngineRuleset("threads", {"a": PATIENT})
    rs.run({"x": 1})
    assert threading.active_count() == before
    rs.close()


def test_assert_fact_fires_every_matching_rule_once() -> None:
    rs = EngineRuleset("every", {"a": PATIENT, "b": {"all": [{"m": {"$and": [{DISCRIMINATOR: 1}, {"$gt": {"x": 0}}]}}]}})
    assert rs.run({"x": 1}) == {"a", "b"}
    rs.close()


def test_no_deprecation_warning_from_durable_rules() -> None:
    # durable.engine's _unix_now calls datetime.utcfromtimestamp (deprecated since Python
    # 3.12) once per session; the adapter does not go through durable.engine at all
    # (tests/test_lean_adapter.py: test_durable_engines_python_layer_is_not_loaded).
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rs = EngineRuleset("quiet", {"a": PATIENT})
        assert rs.run({"x": 1}) == {"a"}
        rs.close()
        RuleEngine.default(cache_size=0).evaluate({"age_days": 183})
    assert [str(w.message) for w in caught if "durable" in w.filename] == []


def test_or_branches_fire_once_per_branch_and_are_deduplicated() -> None:
    both = {"all": [{"m": {"$and": [{DISCRIMINATOR: 1}, {"$or": [{"x": 1}, {"y": 2}]}]}}]}
    seen: list[str] = []
    rs = EngineRuleset("or", {"a": both}, on_fire=seen.append)
    assert rs.run({"x": 1, "y": 2}) == {"a"}
    assert seen.count("a") == 2  # durable-rules ran the action twice; the trace shows it once
    rs.close()


def test_session_is_deleted_after_every_run_matched_or_not() -> None:
    rs = EngineRuleset("sessions", {"a": PATIENT})
    assert rs.run({"x": 1}) == {"a"}
    assert rs.last_sid is not None and not rs.has_session(rs.last_sid)
    assert rs.run({"x": 2}) == frozenset()  # matched only by the catch-all
    assert not rs.has_session(rs.last_sid)
    rs.close()


def test_more_than_1024_evaluations_on_one_ruleset() -> None:
    rs = EngineRuleset("many", {"a": PATIENT})
    for i in range(3000):  # durable-rules raises MemoryError past 1024 live sessions
        rs.run({"x": i % 2})
    rs.close()


def test_action_exceptions_are_surfaced_and_do_not_persist() -> None:
    calls = {"n": 0}

    def boom(name: str) -> None:
        calls["n"] += 1
        if name == "a" and calls["n"] == 1:
            raise ValueError("kaboom")

    rs = EngineRuleset("boom", {"a": PATIENT}, on_fire=boom)
    with pytest.raises(EngineError, match="kaboom"):
        rs.run({"x": 1})
    assert rs.run({"x": 1}) == {"a"}  # a fresh session: the old exception is gone
    rs.close()


def test_definition_is_not_mutated_and_names_can_repeat() -> None:
    definition = {"a": PATIENT}
    snapshot = json.dumps(definition, sort_keys=True)
    one, two = EngineRuleset("same", definition), EngineRuleset("same", definition)
    assert json.dumps(definition, sort_keys=True) == snapshot
    assert one.name != two.name
    assert one.run({"x": 1}) == two.run({"x": 1}) == {"a"}
    one.close()
    two.close()


def test_malformed_ruleset_becomes_an_engine_error() -> None:
    with pytest.raises(EngineError, match="refused"):
        EngineRuleset("bad", {"a": {"all": [{"m": {"$iall": {"$i": 1}}}]}})


def test_closed_rulesets_are_freed_and_refuse_work() -> None:
    before = live_rulesets()
    rs = EngineRuleset("closing", {"a": PATIENT})
    assert live_rulesets() == before + 1
    rs.close()
    rs.close()  # idempotent
    assert live_rulesets() == before
    with pytest.raises(EngineError):
        rs.run({"x": 1})


def _compiled_patterns() -> list[dict]:
    out = []
    for d in build_bundled().decisions:
        out.append(dict(compile_decision(d).definition))
    return out


def test_every_pattern_carries_the_discriminator_and_no_joins_or_rvalues() -> None:
    # $nex alone matches the engine's own state fact and fires forever; field references
    # ($m, arithmetic) misbehave on missing fields; joins abort on missing fields (error 311).
    for definition in _compiled_patterns():
        for name, rule in definition.items():
            assert len(rule["all"]) == 1, name
            m = rule["all"][0]["m"]
            assert m["$and"][0] == {DISCRIMINATOR: 1}, name
            text = json.dumps(rule)
            for forbidden in ('"$m"', '"$l"', '"$r"', '"$add"', '"$sub"', '"$mul"', '"$div"', '"$s"'):
                assert forbidden not in text, (name, forbidden)


def test_missing_fact_never_matches_not_even_a_negated_test(rules_dir: Callable[..., Path]) -> None:
    text = DEMO.replace("        - {fact: mycn_status, is: not_amplified}",
                        "        - not: {fact: mycn_status, is: amplified}")
    with RuleEngine.from_directory(rules_dir(demo=text)) as eng:
        result = eng.evaluate({"age_days": 100})
        assert result.outputs["demo_out"] is None
        assert result.indeterminate["demo_out"].candidates == ("low", "high")


def test_a_test_for_absence_fires_once_with_a_discriminator(rules_dir: Callable[..., Path]) -> None:
    text = DEMO.replace("        - {fact: mycn_status, is: amplified}",
                        "        - {fact: mycn_status, known: false}").replace("status: active", "status: draft")
    # a draft: this variant leaves young amplified patients without a rule, so it may only run pinned
    with RuleEngine.from_directory(rules_dir(demo=text), use=["demo@1.0.0"]) as eng:
        result = eng.evaluate({"age_days": 100})
        assert [f.rule for f in result.fired] == ["other"]


def test_empty_lists_are_not_vacuously_false(engine: RuleEngine) -> None:
    # $iall over [] is false in durable-rules; "no distant disease" must still be recognised.
    result = engine.evaluate({"age_days": 100, "primary_idrfs": [], "metastatic_sites": []})
    assert result.outputs["inrgss_stage"] == "L1"


def test_no_catch_all_in_the_trace(engine: RuleEngine) -> None:
    result = engine.evaluate({"age_days": 100, "primary_idrfs": [], "metastatic_sites": []})
    assert CATCH_ALL not in {f.rule for f in result.fired}


def test_versioned_ruleset_names(engine: RuleEngine) -> None:
    for runner in engine.runners:
        d = runner.decision
        assert runner.engine.name.startswith(f"nbrules:{d.id}@{d.version}:{d.sha256[:12]}:")


def test_reloading_the_same_rules_in_one_process() -> None:
    first = RuleEngine.default()
    second = RuleEngine.default()
    facts = {"age_days": 100, "primary_idrfs": [], "metastatic_sites": []}
    assert first.evaluate(facts).to_json() == second.evaluate(facts).to_json()
    first.close()
    second.close()


def test_build_directory_of_bundled_rules_is_clean() -> None:
    build = build_directory(Path(__file__).resolve().parent.parent / "rules")
    assert build.ok, [d.headline() for d in build.diagnostics]


def _walk(node: object, inside_items: bool = False) -> list[str]:
    problems: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$or" and inside_items:
                problems.append("$or inside $iany/$iall")
            problems += _walk(value, inside_items or key in ("$iany", "$iall"))
    elif isinstance(node, list):
        for item in node:
            problems += _walk(item, inside_items)
    return problems


def test_no_or_inside_item_tests() -> None:
    # createAlpha (rete.c) reads an uninitialised node when $iany/$iall wrap an $or;
    # found by tests/valgrind/check.py.  The compiler emits an outer $or of single $iany.
    for definition in _compiled_patterns():
        for name, rule in definition.items():
            assert _walk(rule) == [], name


def test_numbers_in_exponent_form_reach_durable_rules_readable() -> None:
    """durable-rules' reader fails with error 204 on ``1e-05`` (an exponent without a
    decimal point), which is how Python writes small floats; the adapter writes
    ``1.0e-05``, in facts and in ruleset definitions, and the comparisons hold."""
    import durable_rules_engine

    rs = EngineRuleset("exponent", {
        "positive": {"all": [{"m": {"$and": [{DISCRIMINATOR: 1}, {"$gt": {"x": 0}}]}}]},
        "below": {"all": [{"m": {"$and": [{DISCRIMINATOR: 1}, {"$lt": {"x": 3e-05}}]}}]}})
    try:
        for x in (1e-05, 5e-324, 2e-05, 1e16, 1.5e-07):
            assert rs.run({"x": x}) == ({"positive"} | ({"below"} if x < 3e-05 else set())), x
        assert rs.run({"x": 0}) == {"below"}
        with pytest.raises(Exception, match="204"):  # the pitfall itself, written by hand
            durable_rules_engine.assert_fact(rs._handle, '{"sid":"raw","__nb":1,"x":1e-05}')
    finally:
        rs.close()
    assert json.loads(engine_json({"x": [1e-05, 1e300, 0.5, 3], "y": "1e-05"})) == {"x": [1e-05, 1e300, 0.5, 3],
                                                                                    "y": "1e-05"}
    assert engine_json({"x": 1e-05, "y": 2.5e-07}) == '{"x":1.0e-05,"y":2.5e-07}'
