"""Results written back as FHIR (engine/fhir_out.py), validated with the fhir.resources
R4B models (the FHIR R4 resources used here are unchanged in R4B).  Clinical values are
those of criteria.md for the MS infant of tests/data/fhir/ms-infant.json (INRGSS MS:
metastases confined to skin, liver and marrow before 18 months, criteria.md S9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbrules.cds import cards_for
from nbrules.fhir import load_mapping
from nbrules.fhir_out import evaluate_fhir
from nbrules import RuleEngine

resources = pytest.importorskip("fhir.resources.R4B")
from fhir.resources.R4B.bundle import Bundle  # noqa: E402

FHIR = Path(__file__).resolve().parent / "data" / "fhir"
MAPPING = load_mapping()
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
WHEN = "2026-11-29T15:00:00Z"


def as_bundle(request: dict[str, Any]) -> dict[str, Any]:
    """The prefetch of a CDS Hooks request as one collection Bundle."""
    entries = []
    for value in request["prefetch"].values():
        entries += [e["resource"] for e in value.get("entry", [])] if value["resourceType"] == "Bundle" else [value]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in entries]}


def test_stage_risk_and_provenance_are_valid_fhir_and_reference_what_was_used(engine: RuleEngine) -> None:
    bundle = as_bundle(json.loads((FHIR / "ms-infant.json").read_text()))
    result, mapped, out = evaluate_fhir(engine, bundle, MAPPING, WHEN)
    Bundle.model_validate(out)  # every entry validated against the FHIR model
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in out["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(e)
    [stage] = [e for e in by_type["Observation"] if e["resource"]["code"]["coding"][0]["code"] == "C133427"]
    assert stage["resource"]["valueCodeableConcept"]["coding"] == [{"system": NCIT, "code": "C133431"}]
    assert stage["resource"]["meta"]["profile"] == [
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-neuroblastoma-inrgss-stage"]
    assert stage["resource"]["focus"] == [{"reference": "Condition/dx-1"}]
    cog = next(e for e in by_type["RiskAssessment"] if e["resource"]["code"]["text"] == "COG risk")
    assert cog["resource"]["prediction"][0]["outcome"]["coding"][0]["code"] == "low"
    basis = {b["reference"] for b in cog["resource"]["basis"]}
    assert stage["fullUrl"] in basis  # the COG risk group read the INRGSS stage written above
    assert basis - {stage["fullUrl"]} <= {"Patient/p1", "Condition/dx-1"} | {
        f"Observation/{e['resource']['id']}" for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"}
    provenance = next(e["resource"] for e in by_type["Provenance"] if e["resource"]["target"] == [{"reference": cog["fullUrl"]}])
    rules = [x["what"]["display"] for x in provenance["entity"] if x["role"] == "derivation"]
    assert rules and all("rule" in r and ".yaml:" in r for r in rules) and provenance["recorded"] == WHEN
    again = evaluate_fhir(engine, bundle, MAPPING, WHEN)[2]
    assert json.dumps(again, sort_keys=True) == json.dumps(out, sort_keys=True)  # deterministic


def test_nothing_is_written_for_what_was_given_or_not_determined(engine: RuleEngine) -> None:
    bundle = as_bundle(json.loads((FHIR / "l1-amplified-not-operated.json").read_text()))
    result, _, out = evaluate_fhir(engine, bundle, MAPPING, WHEN)
    Bundle.model_validate(out)
    written = {e["resource"].get("code", {}).get("text") for e in out["entry"]}
    assert "INRGSS stage" not in written  # L1 was taken from the record, not derived
    assert result.outputs.get("cog_risk") is None and "COG risk" not in written


def test_cards_offer_suggestions_that_create_the_results(engine: RuleEngine) -> None:
    request = json.loads((FHIR / "ms-infant.json").read_text())
    body = cards_for(engine, MAPPING, request, recorded=WHEN)
    stage = next(c for c in body["cards"] if "INRGSS stage" in c["summary"])
    [suggestion] = stage["suggestions"]
    assert stage["selectionBehavior"] == "any" and [a["type"] for a in suggestion["actions"]] == ["create", "create"]
    obs, prov = (a["resource"] for a in suggestion["actions"])
    Bundle.model_validate({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": obs}, {"resource": prov}]})
    assert obs["valueCodeableConcept"]["coding"][0]["code"] == "C133431" and prov["resourceType"] == "Provenance"


def test_cli_evaluate_fhir_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nbrules.cli import main

    bundle = {**as_bundle(json.loads((FHIR / "ms-infant.json").read_text())), "timestamp": WHEN}
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    assert main(["evaluate", "--fhir", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"]["outputs"]["inrgss_stage"] == "MS" and out["read"]["diagnosis"] == "Condition/dx-1"
    assert out["read"]["age"]["element"] == "onsetDateTime"
    Bundle.model_validate(out["fhir"])
    assert {e["resource"]["recorded"] for e in out["fhir"]["entry"] if e["resource"]["resourceType"] == "Provenance"} == {WHEN}
    path.write_text(json.dumps({"age_days": 100}))  # a patient record, not FHIR
    assert main(["evaluate", "--fhir", str(path)]) == 2
    assert "NB570" in capsys.readouterr().err


def _references(node: Any) -> list[str]:
    """Every ``reference`` in a FHIR resource, however deep."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "reference" and isinstance(v, str)] + \
            [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


def test_every_reference_in_the_suggestions_resolves(engine: RuleEngine) -> None:
    request = json.loads((FHIR / "ms-infant.json").read_text())
    inputs = {f"{r['resourceType']}/{r['id']}" for r in as_bundle(request)["entry"] for r in [r["resource"]]}
    created = [a["resource"] for c in cards_for(engine, MAPPING, request, recorded=WHEN)["cards"]
               for s in c.get("suggestions", []) for a in s["actions"] if a["type"] == "create"]
    ids = {f"{r['resourceType']}/{r['id']}" for r in created}
    assert len(ids) == len(created) >= 6  # stage, INRG, COG and their Provenance, each with its own id
    refs = [r for res in created for r in _references(res)]
    assert any(r in ids for r in refs) and set(refs) <= ids | inputs


def test_every_reference_in_the_transaction_bundle_resolves(engine: RuleEngine) -> None:
    bundle = as_bundle(json.loads((FHIR / "ms-infant.json").read_text()))
    inputs = {f"{r['resourceType']}/{r['id']}" for r in bundle["entry"] for r in [r["resource"]]}
    out = evaluate_fhir(engine, bundle, MAPPING, WHEN)[2]
    urls = {e["fullUrl"] for e in out["entry"]}
    assert all(u.startswith("urn:uuid:") for u in urls) and len(urls) == len(out["entry"])
    refs = [r for e in out["entry"] for r in _references(e["resource"])]
    assert any(r in urls for r in refs) and set(refs) <= urls | inputs


def test_inrg_card_writes_the_group_and_the_risk(engine: RuleEngine) -> None:
    # MS, 183 days old at diagnosis, MYCN not amplified, no 11q aberration: INRG group C, very low risk
    # (Cohn 2009, criteria.md INRG table).
    request = json.loads((FHIR / "ms-infant.json").read_text())
    card = next(c for c in cards_for(engine, MAPPING, request, recorded=WHEN)["cards"] if "INRG group" in c["summary"])
    risks = [a["resource"] for s in card["suggestions"] for a in s["actions"]
             if a["resource"]["resourceType"] == "RiskAssessment"]
    outcomes = {r["code"]["text"]: r["prediction"][0]["outcome"]["coding"][0]["code"] for r in risks}
    assert outcomes == {"INRG group": "C", "INRG risk": "very_low"}
    Bundle.model_validate({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in risks]})
