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
