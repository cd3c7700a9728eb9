#!/usr/bin/env python3
"""2 workers against 1, as ``nbrules evaluate --batch --workers N`` runs them.

    python benchmarks/workers.py COHORT.jsonl [--trials 5] [--json]

In this process (a fresh one, holding no more than the CLI does: its heap decides what a
fork shares), paired trials back to back: the same cohort with one process and with two
(this one and a forked worker), each from an engine built from the same checked rules
with an empty per-cell cache, the worker's start included in the clock.  Prints the
median ratio of the times and the CPU work of the two processes against one (above 1:
rows and results through pipes, cells met in both, pages the fork copies).
``benchmarks/run.py`` runs it on its cohort.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

from nbrules.batch import EngineSpec, run_batch

#: The decisions the hand-written baseline of benchmarks/run.py implements (the staging and
#: risk chain, not the INRC response decisions, which apply only to a response assessment).
DECISIONS = ("inrgss", "inrg", "mki-class", "inpc", "cog-risk", "cog-v1-risk")


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def scaling(cohort: str, trials: int) -> dict[str, list[float]]:
    """Per trial: time with 1 process / time with 2, and CPU of 2 / CPU of 1."""
    spec = EngineSpec(decisions=DECISIONS)
    ratios, work = [], []
    with open(os.devnull, "w") as sink, spec.build() as checked:
        with spec.build(checked.build) as warm:  # imports, files, first-use costs
            run_batch(cohort, sink, "jsonl", spec, workers=1, engine=warm)
        for _ in range(trials):
            with spec.build(checked.build) as fresh:
                cpu = time.process_time()
                one = run_batch(cohort, sink, "jsonl", spec, workers=1, engine=fresh)
                cpu_one = time.process_time() - cpu
            with spec.build(checked.build) as fresh:
                cpu, children = time.process_time(), _children_cpu()
                two = run_batch(cohort, sink, "jsonl", spec, workers=2, engine=fresh)
                cpu_two = time.process_time() - cpu + _children_cpu() - children
            ratios.append(one.seconds / two.seconds)
            work.append(cpu_two / cpu_one)
    return {"ratios": ratios, "work": work}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cohort", help="a JSONL cohort (one patient per line, with an id)")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    figures = scaling(args.cohort, args.trials)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(summary(figures))
    return 0


def summary(figures: dict[str, list[float]]) -> str:
    """The figures of :func:`scaling` in one line, against the goal."""
    ratios, work = sorted(figures["ratios"]), statistics.median(figures["work"])
    return (f"2 workers against 1: {statistics.median(ratios):.2f}x (median of {len(ratios)}: "
            f"{', '.join(f'{x:.2f}' for x in ratios)}; goal: at least 1.7x on 2 free cores); the two processes do "
            f"{work:.2f}x the CPU work of one (so at most {2 / work:.2f}x on 2 free cores: rows and results "
            f"through pipes, cells met in both, pages the fork copies)")


if __name__ == "__main__":
    sys.exit(main())
