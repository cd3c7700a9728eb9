"""Stages written back as FHIR are read back as the same stage (engine/fhir_out.py and
engine/fhir.py, through the mapping mappings/fhir-r4.yaml).  Stage values are those of
criteria.md (INSS 1, 2A, 2B, 3, 4, 4S, Brodeur 1993; INRGSS L1, L2, M, MS, Monclair 2009);
the MS infant of tests/data/fhir/ms-infant.json is INRGSS MS (criteria.md S9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbrules import RuleEngine
from nbrules.fhir import load_mapping
from nbrules.fhir_out import evaluate_fhir_json, stage_value

FHIR = Path(__file__).resolve().parent / "data" / "fhir"
MAPPING = load_mapping()
WHEN = "2026-11-29T15:00:00Z"
SCT = "http://snomed.info/sct"
STAGES = [("inss_stage", v) for v in ("1", "2A", "2B", "3", "4", "4S")] + \
         [("inrgss_stage", v) for v in ("L1", "L2", "M", "MS")]


def _record() -> list[dict[str, Any]]:
    """The Patient and diagnosis of the MS infant, without its observations."""
    request = json.loads((FHIR / "ms-infant.json").read_text())
    return [request["prefetch"]["patient"], *(e["resource"] for e in request["prefetch"]["conditions"]["entry"])]


def _feed(engine: RuleEngine, resources: list[dict[str, Any]]) -> dict[str, Any]:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    return evaluate_fhir_json(engine, json.dumps(bundle), MAPPING, WHEN)


@pytest.mark.parametrize("fact,value", STAGES)
def test_every_stage_value_written_is_read_back(engine: RuleEngine, fact: str, value: str) -> None:
    [type_code] = [c for c, f in MAPPING.stage_types.items() if f == fact]
    obs = {"resourceType": "Observation", "id": "written", "status": "final",
           "code": {"coding": [{"system": type_code[0], "code": type_code[1]}]},
           "subject": {"reference": "Patient/p1"}, "valueCodeableConcept": stage_value(engine, MAPPING, fact, value)}
    out = _feed(engine, [*_record(), obs])
    assert out["result"]["outputs"][fact] == value
    assert out["read"]["sources"][fact] == ["Observation/written"] and not out["read"]["notUsed"]


def test_inss_values_use_snomed_where_the_mapping_has_it(engine: RuleEngine) -> None:
    assert stage_value(engine, MAPPING, "inss_stage", "2B")["coding"][0] == {"system": SCT, "code": "409724008"}
    assert all(not c["system"].endswith("/inss_stage") for v in ("1", "4", "4S")
               for c in stage_value(engine, MAPPING, "inss_stage", v)["coding"])


def test_evaluate_fhir_output_fed_back_gives_the_same_stage(engine: RuleEngine) -> None:
    request = json.loads((FHIR / "ms-infant.json").read_text())
    resources = [request["prefetch"]["patient"]]
    for key in ("conditions", "observations"):
        resources += [e["resource"] for e in request["prefetch"][key]["entry"]]
    first = _feed(engine, resources)
    assert first["result"]["outputs"]["inrgss_stage"] == "MS"
    [written] = [e["resource"] for e in first["fhir"]["entry"] if e["resource"]["resourceType"] == "Observation"
                 and e["resource"]["code"]["coding"][0]["code"] == "C133427"]
    again = _feed(engine, [*_record(), {**written, "id": "stage-1"}])
    assert again["result"]["outputs"]["inrgss_stage"] == "MS" and "inrgss_stage" in again["result"]["from_input"]


def test_derived_inss_stage_written_back_is_read_back(engine: RuleEngine) -> None:
    # The MS infant with a complete resection of a unilateral primary and no contralateral
    # nodes: a localised primary with dissemination limited to skin, liver and marrow
    # before 1 year is INSS 4S (Brodeur 1993, criteria.md §3.1).
    from nbrules.fhir import map_resources
    from nbrules.fhir_out import write_back

    request = json.loads((FHIR / "ms-infant.json").read_text())
    mapped = map_resources(request["prefetch"], MAPPING, "p1")
    facts = {**mapped.facts, "resection_extent": "complete", "contralateral_nodes": "negative",
             "crosses_midline": False, "midline_bilateral_extension": False}
    result = engine.evaluate(facts)
    assert result.outputs["inss_stage"] == "4S"
    [inss] = [w.resource for w in write_back(engine, result, MAPPING, mapped, "p1", WHEN) if w.output == "inss_stage"]
    assert inss["code"]["coding"][0] == {"system": SCT, "code": "409720004"}
    again = _feed(engine, [*_record(), {**inss, "id": "inss-1"}])
    assert again["result"]["outputs"]["inss_stage"] == "4S"
    assert again["read"]["sources"]["inss_stage"] == ["Observation/inss-1"]
