"""The per-cell cache of a DecisionRunner: off means off, and its key holds only what the
rules in force can tell apart."""

from __future__ import annotations

import itertools
from typing import Any

from nbrules import RuleEngine
from nbrules.runner import DecisionRunner

#: Partly known patients (criteria.md §4: grade and MKI apply to neuroblastoma and nodular
#: ganglioneuroblastoma only; COG's default tables do not read the grade).
GRADES = [None, "undifferentiated", "poorly_differentiated", "differentiating"]


def _patients() -> list[dict[str, Any]]:
    out = []
    for age, sites, hist, grade, mycn, ploidy in itertools.product(
            [200, 400, 900], [[], ["bone"], ["skin"]],
            [None, "neuroblastoma", "ganglioneuroblastoma_intermixed"], GRADES,
            [None, "not_amplified"], [None, "hyperdiploid"]):
        p: dict[str, Any] = {"age_days": age, "metastatic_sites": sites, "primary_idrfs": []}
        for k, v in (("histology_category", hist), ("differentiation_grade", grade), ("mycn_status", mycn),
                     ("ploidy", ploidy)):
            if v is not None:
                p[k] = v
        if grade is not None and hist == "ganglioneuroblastoma_intermixed":
            continue  # refused by the input constraint grade-only-for-neuroblastoma
        out.append(p)
    return out


def _cog(engine: RuleEngine) -> DecisionRunner:
    return next(r for r in engine.runners if r.decision.id == "cog-risk")


def test_cache_size_zero_keeps_nothing() -> None:
    with RuleEngine.default(cache_size=0) as engine:
        patient = {"age_days": 400, "metastatic_sites": ["bone"], "primary_idrfs": []}
        first = engine.evaluate(patient).to_json()
        runs = {r.decision.id: r.engine_runs for r in engine.runners}
        assert engine.evaluate(patient).to_json() == first
        for r in engine.runners:
            assert len(r._cache) == 0 and not r._analysed
        # every decision that ran the first time runs its engine again: nothing was remembered
        again = {r.decision.id: r.engine_runs - runs[r.decision.id] for r in engine.runners}
        assert again["cog-risk"] == 1 and again["inrg"] == 1


def test_grade_is_not_in_the_cog_key_under_the_default_tables() -> None:
    with RuleEngine.default() as engine:
        cog = _cog(engine)
        untested = [name for name, classify in cog._key_classifiers if classify is None]
        assert untested == ["differentiation_grade"]
        base = {"inrgss_stage": "L2", "age_days": 400, "mycn_status": "not_amplified", "inpc_histology": "favorable",
                "ploidy": "hyperdiploid", "chr11q_status": "normal", "chr1p_status": "normal", "symptoms": [],
                "resection_extent": "complete"}
        keys = {cog.cache_key(cog.view({**base, "differentiation_grade": g}), {}) for g in GRADES[1:]}
        assert len(keys) == 1
        # known and unknown stay apart: a settled answer names the facts still missing
        assert cog.cache_key(cog.view(base), {}) not in keys
        before = cog.engine_runs
        for g in GRADES[1:]:
            cog.decide(cog.view({**base, "differentiation_grade": g}))
        assert cog.engine_runs - before == 1


def test_inrg_reads_the_grade_so_it_stays_in_its_key() -> None:
    with RuleEngine.default() as engine:
        inrg = next(r for r in engine.runners if r.decision.id == "inrg")
        assert all(classify is not None for _, classify in inrg._key_classifiers)


def test_the_short_key_gives_the_same_results_as_no_cache() -> None:
    patients = _patients()
    with RuleEngine.default(cache_size=0) as plain, RuleEngine.default() as cached:
        for _ in range(2):  # the second pass is served from the cache
            for p in patients:
                assert cached.evaluate(p).to_json() == plain.evaluate(p).to_json(), p
        assert len(_cog(cached)._cache) < len(patients)
