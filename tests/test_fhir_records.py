"""FHIR records as they are: status, subject, duplicates, onset[x], standard codes, and
the CDS Hooks 2.0 contract (issue 12).  Clinical expectations come from criteria.md:
INRGSS MS needs age < 18 months (547 days, criteria.md §0.1/§1.1), otherwise distant
metastases are stage M."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nbrules.cds import cards_for
from nbrules.fhir import load_mapping, map_resources
from nbrules import RuleEngine

FHIR = Path(__file__).resolve().parent / "data" / "fhir"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
LOCAL = "http://nbrules.dev/fhir/CodeSystem/facts"
MAPPING = load_mapping()


def condition(cid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": NCIT, "code": "C3270"}]}, **extra}


def verified(code: str) -> dict[str, Any]:
    return {"coding": [{"system": VER, "code": code}]}


def observation(oid: str, fact: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": LOCAL, "code": fact}]},
            "valueCodeableConcept": {"coding": [{"system": LOCAL, "code": value}]}, **extra}


def prefetch(*resources: dict[str, Any], birth: str = "2024-01-01") -> dict[str, Any]:
    return {"patient": {"resourceType": "Patient", "id": "p1", "birthDate": birth},
            "conditions": {"resourceType": "Bundle", "type": "searchset",
                           "entry": [{"resource": r} for r in resources if r["resourceType"] == "Condition"]},
            "observations": {"resourceType": "Bundle", "type": "searchset",
                             "entry": [{"resource": r} for r in resources if r["resourceType"] == "Observation"]}}


def request(*resources: dict[str, Any], birth: str = "2024-01-01") -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p1"},
            "prefetch": prefetch(*resources, birth=birth)}


def reason(mapped: Any, ref: str) -> str:
    return next(n for n in mapped.not_used if n.startswith(ref + ":"))


# --- 1. status and provenance ---------------------------------------------------------

def test_entered_in_error_diagnosis_never_decides_the_age_or_the_stage(engine: RuleEngine) -> None:
    # the toddler: the erroneous Condition's onset would make her 30 days old (MS)
    wrong = condition("wrong", onsetDateTime="2024-01-31", verificationStatus=verified("entered-in-error"))
    right = condition("right", onsetDateTime="2025-07-31", verificationStatus=verified("confirmed"))
    liver = observation("m1", "metastatic_sites", "liver")
    mapped = map_resources(prefetch(wrong, right, liver), MAPPING, "p1")
    assert mapped.facts["age_days"] == 577 and mapped.diagnosis == "Condition/right"
    assert "verificationStatus entered-in-error: never used" in reason(mapped, "Condition/wrong")
    stage = next(c for c in cards_for(engine, MAPPING, request(wrong, right, liver))["cards"]
                 if "INRGSS stage" in c["summary"])
    assert "INRGSS stage M" in stage["summary"] and "INRGSS stage MS" not in stage["summary"]


@pytest.mark.parametrize("status", ["refuted", "unconfirmed", "provisional", "differential"])
def test_only_a_confirmed_or_unstated_diagnosis_is_used(status: str) -> None:
    mapped = map_resources(prefetch(condition("dx", onsetDateTime="2024-03-01", verificationStatus=verified(status))),
                           MAPPING, "p1")
    assert mapped.diagnosis is None and "age_days" not in mapped.facts
    assert f"verificationStatus {status}" in reason(mapped, "Condition/dx")
    unstated = map_resources(prefetch(condition("dx", onsetDateTime="2024-03-01")), MAPPING, "p1")
    assert unstated.facts["age_days"] == 60 and unstated.diagnosis_status["verificationStatus"] == "not given"


def test_observations_by_status_data_absent_reason_and_subject() -> None:
    obs = [observation("ok", "mycn_status", "amplified"),
           observation("err", "chr11q_status", "aberrant", status="entered-in-error"),
           observation("cancel", "chr1p_status", "aberrant", status="cancelled"),
           {**observation("absent", "ploidy", "diploid"), "dataAbsentReason": {"coding": [{"code": "not-performed"}]}},
           {**observation("other", "mki", "high"), "subject": {"reference": "http://ehr.example/fhir/Patient/p2"}},
           {**observation("nosub", "inpc_histology", "favorable"), "subject": None}]
    mapped = map_resources(prefetch(condition("dx", onsetDateTime="2024-03-01"), *obs), MAPPING, "p1")
    assert mapped.facts["mycn_status"] == "amplified"
    assert not {"chr11q_status", "chr1p_status", "ploidy", "mki", "inpc_histology"} & set(mapped.facts)
    assert "status entered-in-error" in reason(mapped, "Observation/err")
    assert "status cancelled" in reason(mapped, "Observation/cancel")
    assert "dataAbsentReason not-performed" in reason(mapped, "Observation/absent")
    assert "not Patient/p1" in reason(mapped, "Observation/other")
    assert "no subject" in reason(mapped, "Observation/nosub")


def test_a_condition_and_a_patient_of_someone_else_are_not_used() -> None:
    other = {**condition("dx", onsetDateTime="2024-03-01"), "subject": {"reference": "Patient/p2/_history/3"}}
    pre = prefetch(other)
    pre["second"] = {"resourceType": "Patient", "id": "p2", "birthDate": "2020-01-01"}
    mapped = map_resources(pre, MAPPING, "p1")
    assert mapped.diagnosis is None and "its subject is Patient/p2/_history/3" in reason(mapped, "Condition/dx")
    assert "not the patient of the request" in reason(mapped, "Patient/p2")


def test_duplicates_are_merged_and_amendments_supersede() -> None:
    v1 = observation("mycn", "mycn_status", "not_amplified", meta={"versionId": "1"})
    v2 = observation("mycn", "mycn_status", "amplified", status="amended", meta={"versionId": "2"})
    same = observation("ploidy", "ploidy", "diploid")
    pre = prefetch(condition("dx", onsetDateTime="2024-03-01"), v1, same)
    pre["more"] = {"resourceType": "Bundle", "entry": [{"resource": v2}, {"resource": copy.deepcopy(same)}]}
    mapped = map_resources(pre, MAPPING, "p1")
    assert mapped.facts["mycn_status"] == "amplified" and mapped.sources["mycn_status"] == ["Observation/mycn"]
    assert "version 1 is superseded by version 2" in reason(mapped, "Observation/mycn")
    assert mapped.facts["ploidy"] == "diploid" and not mapped.conflicts  # an identical copy is one resource
    unordered = prefetch(condition("dx", onsetDateTime="2024-03-01"), observation("m", "mycn_status", "amplified"))
    unordered["more"] = observation("m", "mycn_status", "not_amplified")
    mapped = map_resources(unordered, MAPPING, "p1")
    assert "mycn_status" not in mapped.facts and "none is used" in reason(mapped, "Observation/m")


# --- 2. age and dates -----------------------------------------------------------------

@pytest.mark.parametrize(("onset", "days", "element"), [
    ({"onsetAge": {"value": 6, "unit": "mo", "system": "http://unitsofmeasure.org", "code": "mo"}}, 182, "onsetAge"),
    ({"onsetAge": {"value": 40, "system": "http://unitsofmeasure.org", "code": "d"}}, 40, "onsetAge"),
    ({"onsetDateTime": "2024-03-01T23:30:00-05:00"}, 60, "onsetDateTime"),  # the date as written
    ({"onsetPeriod": {"start": "2024-02-01", "end": "2024-04-01"}}, 31, "onsetPeriod.start"),
    ({"onsetRange": {"low": {"value": 3, "code": "wk", "system": "http://unitsofmeasure.org"},
                     "high": {"value": 21, "code": "d", "system": "http://unitsofmeasure.org"}}}, 21, "onsetRange"),
])
def test_every_form_of_onset_gives_the_age(onset: dict[str, Any], days: int, element: str) -> None:
    dx = condition("dx", recordedDate="2025-06-01", **onset)  # recordedDate is later: never preferred
    mapped = map_resources(prefetch(dx), MAPPING, "p1")
    assert mapped.facts["age_days"] == days
    assert mapped.age is not None and mapped.age["element"] == element and mapped.age["fallback"] is False


@pytest.mark.parametrize(("onset", "why"), [
    ({"onsetDateTime": "2024-03"}, "not a full date"),
    ({"onsetString": "early spring"}, "free text"),
    ({"onsetRange": {"low": {"value": 1, "code": "mo"}, "high": {"value": 3, "code": "mo"}}}, "does not give one age"),
    ({"onsetAge": {"value": 6, "code": "months"}}, "not a UCUM age unit"),
    ({"onsetDateTime": "2023-12-01"}, "before the birth date"),
    ({"onsetDateTime": "2024-03-01", "abatementDateTime": "2024-02-01"}, "abatement is before its onset"),
])
def test_an_onset_that_gives_no_age_leaves_it_unknown_with_the_reason(onset: dict[str, Any], why: str) -> None:
    mapped = map_resources(prefetch(condition("dx", recordedDate="2024-05-01", **onset)), MAPPING, "p1")
    assert "age_days" not in mapped.facts and why in reason(mapped, "Condition/dx")


def test_recorded_date_is_a_named_fallback(engine: RuleEngine) -> None:
    dx = condition("dx", recordedDate="2024-03-01")
    mapped = map_resources(prefetch(dx), MAPPING, "p1")
    assert mapped.facts["age_days"] == 60 and mapped.age is not None and mapped.age["fallback"] is True
    body = cards_for(engine, MAPPING, request(dx))
    assert body["extension"]["nbrules"]["age"]["element"] == "recordedDate"
    card = body["cards"][0]
    assert "60 days" in card["detail"] and "fallback" in card["detail"]
    assert card["extension"]["nbrules"]["age"]["days"] == 60


def test_onset_age_is_read_where_recorded_date_would_mislead(engine: RuleEngine) -> None:
    # the case: onsetAge 6 months, recordedDate months later
    request_ = json.loads((FHIR / "mcode-neuroblastoma-stages.json").read_text())
    body = cards_for(engine, MAPPING, request_)
    assert body["extension"]["nbrules"]["age"] == {
        "days": 182, "from": "Condition/primary-cancer-condition-neuroblastoma", "element": "onsetAge",
        "method": "onsetAge 6 mo = 182 days (rounded down)", "fallback": False}


# --- 3. standard codes ------------------------------------------------------------------

def test_mcode_stage_observations_and_snomed_diagnosis_are_read() -> None:
    request_ = json.loads((FHIR / "mcode-neuroblastoma-stages.json").read_text())
    pre = request_["prefetch"]
    pre["observations"]["entry"].append({"resource": json.loads((FHIR / "mcode-inss-stage-2B.json").read_text())})
    mapped = map_resources(pre, MAPPING, request_["context"]["patientId"])
    assert mapped.diagnosis == "Condition/primary-cancer-condition-neuroblastoma"
    assert mapped.facts["inrgss_stage"] == "MS" and mapped.facts["inss_stage"] == "2B"
    assert set(mapped.sources["inrgss_stage"]) == {"Condition/primary-cancer-condition-neuroblastoma.stage",
                                                   "Observation/neuroblastoma-inrgss-stage-MS"}


@pytest.mark.parametrize(("system", "code"), [("http://snomed.info/sct", "432328008"),
                                              ("http://terminology.hl7.org/CodeSystem/icd-o-3", "9500/3"),
                                              ("http://terminology.hl7.org/CodeSystem/icd-o-3", "9490/3")])
def test_diagnosis_codes_of_other_systems(system: str, code: str) -> None:
    dx = {**condition("dx", onsetDateTime="2024-03-01"), "code": {"coding": [{"system": system, "code": code}]}}
    assert map_resources(prefetch(dx), MAPPING, "p1").diagnosis == "Condition/dx"


def test_stage_type_must_agree_with_the_summary() -> None:
    inss_type = {"coding": [{"system": "http://snomed.info/sct", "code": "409720004"}]}
    dx = condition("dx", onsetDateTime="2024-03-01",
                   stage=[{"summary": {"coding": [{"system": NCIT, "code": "C133430"}]}, "type": inss_type,
                           "assessment": [{"reference": "Observation/missing"}]}])
    mapped = map_resources(prefetch(dx), MAPPING, "p1")
    assert "inrgss_stage" not in mapped.facts
    assert any("is a inrgss_stage value but the stage type says inss_stage" in n for n in mapped.not_used)
    assert any("stage.assessment Observation/missing is not in the prefetch" in n for n in mapped.not_used)


# --- 4. the CDS Hooks 2.0 contract ------------------------------------------------------

def test_no_neuroblastoma_means_no_cards(engine: RuleEngine) -> None:
    leukaemia = {**condition("all"), "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91857003"}]}}
    body = cards_for(engine, MAPPING, request(leukaemia))
    assert body["cards"] == [] and body["extension"]["nbrules"]["notUsed"] == [
        {"resource": "Condition/all", "reason": "not a diagnosis in the mapping"}]


def test_a_failed_or_paginated_prefetch_is_reported_not_taken_as_missing_facts(engine: RuleEngine) -> None:
    req = request(condition("dx", onsetDateTime="2024-03-01"))
    req["prefetch"]["observations"] = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "timeout", "diagnostics": "upstream lab system timed out"}]}
    body = cards_for(engine, MAPPING, req)
    assert body["extension"]["nbrules"]["failedFetches"] == ["observations: error timeout: upstream lab system timed out"]
    missing, first = body["cards"][-1], body["cards"][0]
    assert "upstream lab system timed out" in missing["detail"] and "could not be fetched" in missing["summary"]
    # the failure comes first, and no decision below it is presented as definite
    assert "could not be fetched" in first["summary"] and "upstream lab system timed out" in first["detail"]
    assert all(c["indicator"] == "warning" and "suggestions" not in c for c in body["cards"])
    assert "Facts the record does not give" not in missing["detail"]
    paged = request(condition("dx", onsetDateTime="2024-03-01"))
    paged["prefetch"]["conditions"]["link"] = [{"relation": "next", "url": "http://ehr.example/fhir?page=2"}]
    body = cards_for(engine, MAPPING, paged)
    assert body["extension"]["nbrules"]["incomplete"] == [
        "conditions: incomplete: the Bundle has a 'next' link; later pages were not read"]
    no_dx = request()
    no_dx["prefetch"]["conditions"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden"}]}
    [card] = cards_for(engine, MAPPING, no_dx)["cards"]  # cannot say "no neuroblastoma": it says why
    assert card["indicator"] == "warning" and "forbidden" in card["detail"]


def test_cards_keep_the_specification_limits(engine: RuleEngine) -> None:
    for name in ("ms-infant.json", "l1-amplified-not-operated.json", "mcode-neuroblastoma-stages.json"):
        for card in cards_for(engine, MAPPING, json.loads((FHIR / name).read_text()))["cards"]:
            assert len(card["summary"]) < 140 and len(card["source"]["label"]) <= 80
            if card["summary"].endswith("…"):
                assert not card["summary"][-2].isspace()
            assert card["indicator"] in ("info", "warning", "critical")


def test_results_must_name_outputs_in_force(tmp_path: Path, engine: RuleEngine) -> None:
    from nbrules.errors import MappingError

    text = (Path(__file__).resolve().parent.parent / "mappings" / "fhir-r4.yaml").read_text()
    bad = tmp_path / "m.yaml"
    bad.write_text(text.replace("  cog_risk: {as: risk}", "  cog_rsk: {as: risk}"))
    with pytest.raises(MappingError) as err:
        load_mapping(bad, outputs=engine.build.vocabulary)
    [problem] = err.value.diagnostics
    assert problem.code == "NB301" and "cog_rsk" in problem.message and "cog_risk" in (problem.hint or "")
    assert load_mapping(outputs=engine.build.vocabulary).results["cog_risk"] == {"as": "risk"}


# --- 7. incoming FHIR checked by a FHIR model library (in the tests) ---------------------

def test_the_test_records_are_valid_fhir_by_the_fhir_resources_models() -> None:
    """Every resource of the CDS test requests is valid by fhir.resources (R4B models; the
    elements nbrules reads are the same in R4), except the one written without a subject
    on purpose.  At run time the service does not validate whole resources with it (see
    benchmarks/fhir_validation.py and README "CDS Hooks"): the elements read are typed by
    schemas/cds-request.schema.json, answered with JSON pointers."""
    r4b = pytest.importorskip("fhir.resources.R4B")
    invalid = []
    for path in sorted(FHIR.glob("*.json")):
        for value in (json.loads(path.read_text()).get("prefetch") or {}).values():
            if not value:
                continue
            for res in [e["resource"] for e in value.get("entry", [])] if value["resourceType"] == "Bundle" else [value]:
                try:
                    r4b.get_fhir_model_class(res["resourceType"]).model_validate(res)
                except ValueError as exc:  # pydantic's ValidationError is a ValueError
                    invalid.append((path.name, f"{res['resourceType']}/{res.get('id')}", str(exc).split("\n")[1]))
    assert invalid == [("l1-amplified-not-operated.json", "Condition/asthma", "subject")]
