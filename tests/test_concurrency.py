"""Many threads at once: results identical to a sequential run, no crash."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

from nbrules import RuleEngine


def patients() -> list[dict]:
    out = []
    for age, sites, pct, mibg, idrfs in itertools.product(
        [100, 546, 547, 900], [[], ["liver"], ["bone_marrow"], ["bone", "skin"]], [None, 5, 10],
        [None, False, True], [None, [], ["two_compartments"]],
    ):
        p: dict = {"age_days": age, "metastatic_sites": sites}
        if pct is not None and "bone_marrow" in sites:
            p["bone_marrow_tumor_percent"] = pct
        if mibg is not None and sites:
            p["mibg_bone_or_marrow_avid"] = mibg
        if idrfs is not None:
            p["primary_idrfs"] = idrfs
        out.append(p)
    return out


def test_eight_threads_match_a_sequential_run() -> None:
    engine = RuleEngine.default(cache_size=0)  # every evaluation goes through durable-rules
    cases = patients() * 10  # 2,160 evaluations per run, 4,320 in all
    sequential = [engine.evaluate(p).to_json() for p in cases]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda p: engine.evaluate(p).to_json(), cases))
    assert len(cases) >= 2000
    assert threaded == sequential
    engine.close()
