#!/usr/bin/env python3
"""Memory of `nbrules evaluate --batch DIR` on FHIR Bulk Data exports of growing size.

    python benchmarks/bulk_fhir.py [--patients 5000]

Writes two exports (N and 4N patients; each a Patient, a neuroblastoma Condition and
three Observations, the resource types in separate NDJSON files as an export has them),
runs the batch on each in its own process, and prints the peak resident memory of each
run, the ratio of the two peaks against the ratio of the input sizes, and rows/s.
Bounded memory means the peak ratio stays near 1 while the input grows fourfold.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
LOCAL = "http://nbrules.dev/fhir/CodeSystem/facts"


def write_export(directory: Path, n: int) -> int:
    directory.mkdir()
    files = {k: open(directory / f"{k}.ndjson", "w") for k in ("Patient", "Condition", "Observation")}
    try:
        for i in range(n):
            pid = f"p{i}"
            subject = {"reference": f"Patient/{pid}"}
            files["Patient"].write(json.dumps({"resourceType": "Patient", "id": pid, "birthDate": "2024-01-01"}) + "\n")
            files["Condition"].write(json.dumps({"resourceType": "Condition", "id": f"c{i}", "subject": subject,
                                                 "code": {"coding": [{"system": NCIT, "code": "C3270"}]},
                                                 "onsetDateTime": f"2024-{1 + i % 12:02d}-15"}) + "\n")
            for j, (fact, value) in enumerate((("mycn_status", "amplified" if i % 5 == 0 else "not_amplified"),
                                               ("metastatic_sites", "liver" if i % 3 == 0 else "none"),
                                               ("ploidy", "hyperdiploid"))):
                files["Observation"].write(json.dumps({
                    "resourceType": "Observation", "id": f"o{i}-{j}", "status": "final", "subject": subject,
                    "code": {"coding": [{"system": LOCAL, "code": fact}]},
                    "valueCodeableConcept": {"coding": [{"system": LOCAL, "code": value}]}}) + "\n")
    finally:
        for f in files.values():
            f.close()
    return sum(p.stat().st_size for p in directory.iterdir())


def peak_run(directory: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one batch run in a process of its own."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run([sys.executable, '-m', 'nbrules.cli', 'evaluate', '--batch', sys.argv[1], '--out', "
             "sys.argv[2], '--quiet'], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", probe, str(directory), str(out)], capture_output=True, text=True,
                          check=True)
    peak, seconds = done.stdout.split()
    return float(peak), float(seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = []
        for n in (args.patients, 4 * args.patients):
            size = write_export(Path(tmp) / f"export-{n}", n)
            peak, seconds = peak_run(Path(tmp) / f"export-{n}", Path(tmp) / f"out-{n}.jsonl")
            rows = sum(1 for _ in open(Path(tmp) / f"out-{n}.jsonl"))
            figures.append((n, size, peak, seconds, rows))
            print(f"{n:>7,} patients, {size / 1e6:6.1f} MB of NDJSON: peak {peak:6.1f} MB, "
                  f"{rows / seconds:,.0f} rows/s ({rows:,} rows)")
        (n1, s1, p1, _, _), (n2, s2, p2, _, _) = figures
        print(f"input x{s2 / s1:.1f}, peak memory x{p2 / p1:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
