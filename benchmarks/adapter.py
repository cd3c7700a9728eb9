#!/usr/bin/env python3
"""The durable-rules adapter alone: its lean path against the former path through
durable-rules' Python layer (``durable.engine.Host``, kept in tests/former_adapter.py),
measured in the same run.

    python benchmarks/adapter.py [--patients 3000] [--trials 3]

On benchmarks/run.py's cohort, for the runners of ``RuleEngine.default(cache_size=0)``:
  * one engine run (``EngineRuleset.run`` against the former path) on the facts each
    decision asserts, µs per run;
  * whole evaluations with the cache off (every decision runs durable-rules for every
    patient), patients/s with each path;
and the ratios (former / lean), per paired trial and their median.  The two paths are
first checked to start the same actions in the same order for every fact.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import cohort  # noqa: E402

from nbrules import RuleEngine  # noqa: E402
from nbrules.backend import EngineRuleset  # noqa: E402
from nbrules.compiler import engine_fact  # noqa: E402
from tests.former_adapter import FormerRuleset  # noqa: E402


def same_actions(lean: EngineRuleset, former: FormerRuleset, facts: list[dict[str, Any]]) -> None:
    seen: dict[str, list[str]] = {"lean": [], "former": []}
    lean._on_fire, former._on_fire = seen["lean"].append, seen["former"].append
    try:
        for f in facts:
            seen["lean"].clear()
            seen["former"].clear()
            assert lean.run(f) == former.run(f), f
            assert seen["lean"] == seen["former"], (f, seen)
    finally:
        lean._on_fire = former._on_fire = None


def per_run(rulesets: list[tuple[Any, list[dict[str, Any]]]]) -> float:
    n, t = 0, time.perf_counter()
    for rs, facts in rulesets:
        run = rs.run
        for f in facts:
            run(f)
        n += len(facts)
    return (time.perf_counter() - t) / n * 1e6


def patients_per_s(engine: RuleEngine, patients: list[dict[str, Any]]) -> float:
    t = time.perf_counter()
    for p in patients:
        engine.evaluate(p)
    return len(patients) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=3000)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    patients = cohort(args.patients)
    engine = RuleEngine.default(cache_size=0)
    lean_rs, former_rs = [], []
    for runner in engine.runners:
        facts = [engine_fact(runner.view(p), runner.decision.facts) for p in patients]
        former = FormerRuleset(runner.program.label, runner.program.definition)
        same_actions(runner.engine, former, facts)
        lean_rs.append((runner.engine, facts))
        former_rs.append((former, facts))
    runs = sum(len(f) for _, f in lean_rs)
    print(f"{args.patients} patients, {len(engine.runners)} decisions, {runs} engine runs per pass; "
          "the two paths start the same actions in the same order on every fact")
    run_ratios, eval_ratios = [], []
    leans = {r: r.engine for r in engine.runners}
    formers = {r: f for r, (f, _) in zip(engine.runners, former_rs)}
    for trial in range(1, args.trials + 1):
        lean_us, former_us = per_run(lean_rs), per_run(former_rs)
        for r in engine.runners:
            r.engine = formers[r]  # type: ignore[assignment]
        former_ps = patients_per_s(engine, patients)
        for r in engine.runners:
            r.engine = leans[r]
        lean_ps = patients_per_s(engine, patients)
        run_ratios.append(former_us / lean_us)
        eval_ratios.append(lean_ps / former_ps)
        print(f"trial {trial}: one engine run {lean_us:.1f} µs lean, {former_us:.1f} µs former "
              f"(x{former_us / lean_us:.2f}); cache off {lean_ps:.0f} patients/s lean, {former_ps:.0f} former "
              f"(x{lean_ps / former_ps:.2f})")
    print(f"median: one engine run x{statistics.median(run_ratios):.2f} faster, "
          f"evaluation with the cache off x{statistics.median(eval_ratios):.2f} faster")
    for f, _ in former_rs:
        f.close()
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
