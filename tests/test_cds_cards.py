"""Card text of the CDS Hooks service (engine/cds.py): words a clinician reads, not codes
or identifiers.  The MS infant (tests/data/fhir/ms-infant.json) is INRGSS MS (NCIt C133431,
criteria.md S9), INRG group C, very low risk (Cohn 2009); its INSS stage is 4 or 4S until
the surgical facts of INSS (Brodeur 1993) are given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nbrules import RuleEngine
from nbrules.cds import cards_for
from nbrules.fhir import load_mapping

FHIR = Path(__file__).resolve().parent / "data" / "fhir"
MAPPING = load_mapping()
WHEN = "2026-11-29T15:00:00Z"


def _cards(engine: RuleEngine, request: dict[str, Any]) -> list[dict[str, Any]]:
    return list(cards_for(engine, MAPPING, request, recorded=WHEN)["cards"])


def test_summaries_show_value_labels_and_only_standard_codes(engine: RuleEngine) -> None:
    cards = _cards(engine, json.loads((FHIR / "ms-infant.json").read_text()))
    summaries = [c["summary"] for c in cards]
    assert any("INRGSS stage MS (NCIt C133431)" in s for s in summaries)
    assert any("INRG risk very low" in s for s in summaries) and not any("very_low" in s for s in summaries)
    assert not any("nbrules.dev" in s or "inss-" in s for s in summaries)
    # a local code is not shown, but stays machine-readable
    request = json.loads((FHIR / "ms-infant.json").read_text())
    request["prefetch"]["conditions"]["entry"][0]["resource"]["stage"] = [{"summary": {"coding": [
        {"system": "http://nbrules.dev/fhir/CodeSystem/facts", "code": "inss-4"}]}}]
    inss = next(c for c in _cards(engine, request) if "INSS stage" in c["summary"])
    assert "INSS stage 4 (from the record)" in inss["summary"] and "http" not in inss["summary"]
    assert inss["extension"]["nbrules"]["codes"]["inss_stage"]["code"] == "inss-4"


def test_missing_card_names_facts_by_their_titles(engine: RuleEngine) -> None:
    cards = _cards(engine, json.loads((FHIR / "ms-infant.json").read_text()))
    missing = next(c for c in cards if "missing from the record" in c["summary"])
    # the title, with the fact's id after it for whoever maps the EHR's codes
    assert "Extent of resection (`resection_extent`)" in missing["detail"]
    assert "resection_extent" in missing["extension"]["nbrules"]["missing"]


def test_cards_are_byte_identical_when_the_prefetch_states_its_time(engine: RuleEngine) -> None:
    request = json.loads((FHIR / "ms-infant.json").read_text())
    request["prefetch"]["observations"]["meta"] = {"lastUpdated": "2026-11-28T09:30:00+01:00"}
    request["prefetch"]["patient"]["meta"] = {"lastUpdated": "2026-11-28T08:00:00Z"}  # 09:00+01:00, earlier
    first = cards_for(engine, MAPPING, request, recorded="2026-11-29T15:00:00Z")
    second = cards_for(engine, MAPPING, request, recorded="2026-11-29T15:00:07Z")  # a later answer
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    recorded = {a["resource"]["recorded"] for c in first["cards"] for s in c.get("suggestions", [])
                for a in s["actions"] if a["resource"]["resourceType"] == "Provenance"}
    assert recorded == {"2026-11-28T09:30:00+01:00"}  # the latest time the prefetch states


# --- results nbrules wrote back, read back (trial finding 1) --------------------------

LOCAL = "http://nbrules.dev/fhir/CodeSystem/facts"


def _site(obs_id: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": obs_id, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": LOCAL, "code": "metastatic_sites"}]},
            "valueCodeableConcept": {"coding": [{"system": LOCAL, "code": code}]}}


def _written_back(engine: RuleEngine) -> dict[str, Any]:
    """The MS infant after every card's suggestion was accepted: its stage Observation in
    the observations search, its RiskAssessments in the riskAssessments search."""
    request = json.loads((FHIR / "ms-infant.json").read_text())
    created = [a["resource"] for c in _cards(engine, request) for s in c.get("suggestions", []) for a in s["actions"]
               if a["resource"]["resourceType"] != "Provenance"]
    assert {r["resourceType"] for r in created} == {"Observation", "RiskAssessment"}
    request["prefetch"]["observations"]["entry"] += [{"resource": r} for r in created if r["resourceType"] == "Observation"]
    request["prefetch"]["riskAssessments"] = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": r} for r in created if r["resourceType"] == "RiskAssessment"]}
    return request


def test_what_nbrules_already_recorded_is_not_offered_again(engine: RuleEngine) -> None:
    body = cards_for(engine, MAPPING, _written_back(engine), recorded=WHEN)
    stage = next(c for c in body["cards"] if "INRGSS stage" in c["summary"])
    # derived again from the findings (S9), not taken from the record, and already there
    assert "INRGSS stage MS (NCIt C133431)" in stage["summary"] and "from the record" not in stage["summary"]
    assert "is already in the record" in stage["detail"] and stage["indicator"] == "info"
    assert not any("suggestions" in c for c in body["cards"])
    assert set(body["extension"]["nbrules"]["recorded"]) == {"inrgss_stage", "inrg_group", "inrg_risk", "cog_risk"}


def test_a_stage_written_back_does_not_hide_a_new_bone_metastasis(engine: RuleEngine) -> None:
    # The trial: MS written back, then a bone metastasis recorded.  Bone is outside the MS
    # pattern, so the stage is M (criteria.md S9, Monclair 2009) and INSS 4 (Brodeur 1993):
    # the cards must not show MS / very low as info, and say that what was recorded is out of date.
    request = _written_back(engine)
    request["prefetch"]["observations"]["entry"].append({"resource": _site("obs-bone", "bone")})
    body = cards_for(engine, MAPPING, request, recorded=WHEN)
    stage = next(c for c in body["cards"] if "INRGSS stage" in c["summary"])
    inss = next(c for c in body["cards"] if "INSS stage" in c["summary"])
    assert "INRGSS stage M (NCIt C133430)" in stage["summary"] and stage["indicator"] == "warning"
    assert "Out of date: the record holds INRGSS stage MS" in stage["detail"]
    assert "INSS stage 4" in inss["summary"] and "4S" not in inss["summary"]
    inrg = next(c for c in body["cards"] if "INRG risk" in c["summary"])
    assert "very low" not in inrg["summary"] and inrg["indicator"] == "warning" and "INRG risk very low" in inrg["detail"]
    assert not any("MS" in c["summary"].split(":", 1)[1] for c in body["cards"] if c["indicator"] == "info")


def test_a_given_stage_the_findings_contradict_is_a_warning_and_nothing_built_on_it_is_offered(
        engine: RuleEngine) -> None:
    # A stage entered by hand (no nbrules tag) is taken as given; the findings (a bone
    # site: M, criteria.md S9) disagree, and the engine's NB521 reaches the clinician.
    request = json.loads((FHIR / "ms-infant.json").read_text())
    request["prefetch"]["observations"]["entry"] += [{"resource": _site("obs-bone", "bone")}, {"resource": {
        "resourceType": "Observation", "id": "stage-by-hand", "status": "final", "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "code": "C133427"}]},
        "valueCodeableConcept": {"coding": [{"system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
                                             "code": "C133431"}]}}}]
    body = cards_for(engine, MAPPING, request, recorded=WHEN)
    assert [w["code"] for w in body["extension"]["nbrules"]["warnings"]] == ["NB521"]
    stage = next(c for c in body["cards"] if "INRGSS stage" in c["summary"])
    assert stage["indicator"] == "warning" and "NB521" in stage["detail"] and "derives M" in stage["detail"]
    risks = [c for c in body["cards"] if "INRG risk" in c["summary"] or "COG risk" in c["summary"]]
    assert risks and all(c["indicator"] == "warning" and "suggestions" not in c for c in risks)


# --- incomplete reading (trial finding 2) ---------------------------------------------

def test_an_incomplete_page_of_observations_gives_no_definite_result(engine: RuleEngine) -> None:
    # 5 of 12 Observations, the rest behind a next link nobody followed: an unread page may
    # hold a bone site, which makes MS into M (criteria.md S9); so the sites are unknown.
    for how in ("next", "total"):
        request = json.loads((FHIR / "ms-infant.json").read_text())
        page = request["prefetch"]["observations"]
        page["entry"] = page["entry"][:5]
        page["total"] = 12
        if how == "next":
            page["link"] = [{"relation": "next", "url": "https://elsewhere.example/fhir/Observation?page=2"}]
        body = cards_for(engine, MAPPING, request, recorded=WHEN)
        first = body["cards"][0]
        assert "read incompletely" in first["summary"] and "could not be fetched" not in first["summary"]
        assert "metastatic_sites" in body["extension"]["nbrules"]["partial"]
        stage = next(c for c in body["cards"] if "INRGSS stage" in c["summary"])
        assert "INRGSS stage MS" not in stage["summary"] and " or " in stage["summary"]
        assert all(c["indicator"] == "warning" and "suggestions" not in c for c in body["cards"])


# --- messages (trial finding 7) --------------------------------------------------------

def test_no_python_none_in_texts_and_a_conflict_is_listed_once(engine: RuleEngine) -> None:
    # conflicting.json: two MYCN Observations that disagree, and no birth date
    body = cards_for(engine, MAPPING, json.loads((FHIR / "conflicting.json").read_text()), recorded=WHEN)
    text = json.dumps(body)
    assert "None" not in text and "Patient.birthDate is missing" in text
    missing = body["cards"][-1]
    assert "mycn_status" in missing["detail"].split("Conflicting values")[1]
    assert "mycn_status" not in missing["detail"].split("Conflicting values")[0]
    assert "mycn_status" not in missing["extension"]["nbrules"]["missing"]


def test_decision_cards_name_facts_by_their_titles(engine: RuleEngine) -> None:
    cards = _cards(engine, json.loads((FHIR / "ms-infant.json").read_text()))
    details = "\n".join(c["detail"] for c in cards if "missing from the record" not in c["summary"])
    assert "Matched: " in details and "age_days" not in details and "Age at diagnosis" in details
    assert "settled by: " in details and "resection_extent" not in details and "Extent of resection" in details


def test_a_prefetch_key_not_given_is_reported_not_taken_as_absent_data(engine: RuleEngine) -> None:
    # CDS Hooks: prefetch holds what the service asked for; a key left out (and nothing
    # fetched for it) is data not delivered, not data the record lacks
    request = json.loads((FHIR / "ms-infant.json").read_text())
    no_conditions = {**request, "prefetch": {k: v for k, v in request["prefetch"].items() if k != "conditions"}}
    body = _cards(engine, no_conditions)
    [card] = body  # no diagnosis read: the card says the record was not given, nothing else
    assert card["indicator"] == "warning" and "was not given" in card["summary"]
    assert "conditions: not given" in card["detail"]

    no_observations = {**request, "prefetch": {k: v for k, v in request["prefetch"].items() if k != "observations"}}
    cards = _cards(engine, no_observations)
    assert "was not given" in cards[0]["summary"] and "observations: not given" in cards[0]["detail"]
    assert all(c["indicator"] == "warning" and not c.get("suggestions") for c in cards[1:])
    assert not any("missing from the record" in c["summary"] for c in cards)

    # the optional riskAssessments is not in this prefetch: its absence is not reported
    assert "riskAssessments" not in request["prefetch"]
    full = cards_for(engine, MAPPING, request, recorded=WHEN)
    assert full["extension"]["nbrules"]["incomplete"] == [] and full["cards"][0]["indicator"] == "info"
