#!/usr/bin/env python3
"""What validating incoming FHIR with fhir.resources would cost a CDS request.

    python benchmarks/fhir_validation.py [--repeat 200]

For the CDS Hooks test requests of tests/data/fhir, measures in one run: the time of
the answer as the service computes it (``cards_for``: mapping, evaluation, cards), the
time of validating every prefetched resource with fhir.resources' R4B models
(``model_validate``, pydantic), and the one-time import of those models; prints each
and the ratio validation / answer.  It also says which fixture resources the models
reject, since a runtime validation would have to decide what to do with them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FHIR = REPO / "tests" / "data" / "fhir"
REQUESTS = ("ms-infant.json", "mcode-neuroblastoma-stages.json", "l1-amplified-not-operated.json",
            "conflicting.json", "mcode-inss-stage-2B.json")


def resources_of(request: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for value in (request.get("prefetch") or {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            out += [e["resource"] for e in value.get("entry", []) if isinstance(e, dict) and "resource" in e]
        elif isinstance(value, dict):
            out.append(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from nbrules import RuleEngine
    from nbrules.cds import cards_for
    from nbrules.fhir import load_mapping

    engine = RuleEngine.default()
    mapping = load_mapping()
    requests = [json.loads((FHIR / name).read_text()) for name in REQUESTS]
    for r in requests:
        cards_for(engine, mapping, r)  # warm: the engine's first evaluation
    start = time.perf_counter()
    import fhir.resources.R4B as r4b  # noqa: F401 (the import is part of the cost)
    from fhir.resources.R4B import get_fhir_model_class
    imported = time.perf_counter() - start

    rejected: list[str] = []

    def validate(resources: list[dict[str, Any]]) -> None:
        for res in resources:
            try:
                get_fhir_model_class(res["resourceType"]).model_validate(res)
            except Exception as exc:  # pydantic.ValidationError and unknown types alike
                rejected.append(f"{res.get('resourceType')}/{res.get('id')}: {str(exc).splitlines()[0]}")

    for r in requests:
        validate(resources_of(r))  # warm: the model classes are built on first use
    rejected.clear()
    start = time.perf_counter()
    for _ in range(args.repeat):
        for r in requests:
            cards_for(engine, mapping, r)
    answer = (time.perf_counter() - start) / (args.repeat * len(requests))
    start = time.perf_counter()
    for _ in range(args.repeat):
        for r in requests:
            validate(resources_of(r))
    check = (time.perf_counter() - start) / (args.repeat * len(requests))
    n = sum(len(resources_of(r)) for r in requests) / len(requests)
    print(f"requests: {len(requests)} (mean {n:.1f} resources each), {args.repeat} rounds")
    print(f"answer (cards_for) per request:             {answer * 1000:8.3f} ms")
    print(f"fhir.resources validation per request:      {check * 1000:8.3f} ms")
    print(f"ratio validation / answer:                  {check / answer:8.2f}")
    print(f"one-time import of fhir.resources.R4B:      {imported * 1000:8.1f} ms")
    for line in sorted(set(rejected))[:20]:
        print(f"rejected: {line}")
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
