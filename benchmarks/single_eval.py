#!/usr/bin/env python3
"""Single evaluation through the Python API: a complete patient, and the first
evaluation of a partly known one, with their baselines measured in the same run.

    python benchmarks/single_eval.py [--patients 2000] [--former 60]

Prints p50/p99 in µs and the ratios:
  * complete patients, per-cell cache on (the default) and warm: goal p99 <= 150 µs;
    baseline: a dict lookup of the finished result by the patient's facts; and the p99
    of each patient's fastest of 3 calls (on a shared or virtual machine, pauses of
    ~100 µs hit about one call in a hundred and decide the plain p99);
  * the first evaluation of a partly known patient (two to four facts removed, cache
    off so every evaluation is a first one): goal p99 <= 5 ms; baseline: the former
    missing-fact analysis (durable-rules run on every box of unknown facts, kept as the
    tests' oracle in tests/reference_analysis.py) on the same patients.
Engine runs per decision are counted for both analyses.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import cohort, own_tail, percentile  # noqa: E402

from nbrules import RuleEngine  # noqa: E402
from tests.reference_analysis import ReferenceRunner  # noqa: E402

#: Facts removed to make a patient partly known (some are read by several decisions).
REMOVABLE = ("mycn_status", "chr11q_status", "ploidy", "histology_category", "differentiation_grade", "mki",
             "chr1p_status", "symptoms", "resection_extent", "inss_stage")


def partly_known(patients: list[dict[str, Any]], seed: int = 15) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for p in patients:
        q = dict(p)
        for f in rng.sample(REMOVABLE, rng.randint(2, 4)):
            q.pop(f, None)
        out.append(q)
    return out


def timed(fn: Callable[[dict[str, Any]], Any], patients: list[dict[str, Any]]) -> tuple[float, float]:
    """(p50, p99) in µs of ``fn`` on each patient."""
    times = []
    for p in patients:
        t = time.perf_counter()
        fn(p)
        times.append(time.perf_counter() - t)
    return percentile(times, 0.5) * 1e6, percentile(times, 0.99) * 1e6


def former_engine() -> RuleEngine:
    import nbrules.runtime as runtime

    saved = runtime.DecisionRunner
    runtime.DecisionRunner = ReferenceRunner  # type: ignore[misc]
    try:
        return RuleEngine.default(cache_size=0)
    finally:
        runtime.DecisionRunner = saved  # type: ignore[misc]


def runs(engine: RuleEngine) -> int:
    return sum(r.engine_runs for r in engine.runners)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--former", type=int, default=60, help="partly known patients for the former analysis (slow)")
    args = ap.parse_args()
    complete = cohort(args.patients)
    partial = partly_known(cohort(args.patients, seed=7))

    with RuleEngine.default() as engine:
        for p in complete:  # warm the per-cell cache
            engine.evaluate(p)
        table = {repr(sorted(p.items())): engine.evaluate(p).to_json() for p in complete}
        c50, c99 = timed(engine.evaluate, complete)
        b99 = own_tail(engine.evaluate, complete)
    d50, d99 = timed(lambda p: table[repr(sorted(p.items()))], complete)

    with RuleEngine.default(cache_size=0) as engine:
        engine.evaluate(partial[0])  # first call pays lazy set-up, as the former one below
        before = runs(engine)
        n50, n99 = timed(engine.evaluate, partial)
        new_runs = (runs(engine) - before) / len(partial)
    old = former_engine()
    try:
        old.evaluate(partial[0])
        few = partial[:args.former]
        before = runs(old)
        o50, o99 = timed(old.evaluate, few)
        old_runs = (runs(old) - before) / len(few)
    finally:
        old.close()

    print(f"complete patient, cache warm: p50 {c50:.0f} µs, p99 {c99:.0f} µs (goal p99 <= 150 µs); "
          f"dict lookup of the finished result: p50 {d50:.1f} µs, p99 {d99:.1f} µs; "
          f"engine : lookup at p99 = {c99 / d99:.0f}×; each patient's fastest of 3 calls: p99 {b99:.0f} µs "
          f"(the program's own tail, without the machine's pauses)")
    print(f"first evaluation of a partly known patient ({len(partial)} patients, cache off): "
          f"p50 {n50:.0f} µs, p99 {n99:.0f} µs (goal p99 <= 5,000 µs), {new_runs:.1f} engine runs per patient")
    print(f"former engine-search analysis on the first {len(few)} of them: p50 {o50:.0f} µs, p99 {o99:.0f} µs, "
          f"{old_runs:.1f} engine runs per patient")
    print(f"speed-up at p99: {o99 / n99:.1f}× (p50: {o50 / n50:.1f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
