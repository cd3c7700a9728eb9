"""`nbrules evaluate --fhir` and `--batch DIR` as a new user meets them: a Bundle that is
only one page of a search, a Bundle of several patients (`--patient`), and the rows of a
Bulk Data export carrying what was read.  Clinical values: the MS infant of
tests/data/fhir/ms-infant.json is INRGSS MS (metastases confined to skin, liver and
marrow before 18 months, criteria.md S9); l1-amplified-not-operated.json is INRGSS L1
(a localised tumour without image-defined risk factors, criteria.md S9); a bone
metastasis makes a stage M whatever the age (criteria.md S9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbrules.cli import main

REPO = Path(__file__).resolve().parent.parent
FHIR = REPO / "tests" / "data" / "fhir"
EXAMPLE_BUNDLE = REPO / "examples" / "fhir" / "ms-infant-bundle.json"
EXAMPLE_EXPORT = REPO / "examples" / "fhir" / "bulk"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"


def resources_of(name: str, pid: str | None = None) -> list[dict[str, Any]]:
    """The resources of a CDS request's prefetch, the patient renamed ``pid``."""
    request = json.loads((FHIR / name).read_text())
    old = request["context"]["patientId"]
    out = []
    for value in request["prefetch"].values():
        for res in ([e["resource"] for e in value.get("entry", [])] if value["resourceType"] == "Bundle" else [value]):
            if pid is not None:
                res = json.loads(json.dumps(res).replace(f'"Patient/{old}"', f'"Patient/{pid}"'))
                res["id"] = pid if res["resourceType"] == "Patient" else f"{pid}-{res['id']}"
            out.append(res)
    return out


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], bundle: dict[str, Any], *extra: str) -> tuple[int, Any, str]:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    code = main(["evaluate", "--fhir", str(path), *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


# -- 1. part of a record: no write-back, exit 2, and why ---------------------------------------


def page(entries: list[dict[str, Any]], total: int, next_link: bool) -> dict[str, Any]:
    links = [{"relation": "self", "url": "https://ehr.example/fhir/Observation?patient=p1"}]
    if next_link:
        links.append({"relation": "next", "url": "https://ehr.example/fhir/Observation?patient=p1&_page=2"})
    return {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in entries]}


def test_one_page_of_a_search_writes_nothing_back_and_exits_2(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    everything = resources_of("ms-infant.json")
    first = everything[:7]  # the Patient, the Condition and 5 of the 12 Observations
    code, out, err = run(tmp_path, capsys, page(first, len(everything), next_link=True))
    assert code == 2
    assert out["fhir"] is None  # a stage written from a page could be wrong: the next page may hold a bone site
    assert [p["code"] for p in out["problems"]] == ["NB747"]
    assert "NB747" in err and "next" in err and "whole record" in err
    assert out["read"]["diagnosis"] == "Condition/dx-1"  # what was read is still shown

    # no next link, but a searchset total saying more matched than it holds
    code, out, err = run(tmp_path, capsys, page(first, len(everything), next_link=False))
    assert code == 2 and out["fhir"] is None and "total is 14" in err

    # the whole record in one searchset: written back, exit 0
    code, out, err = run(tmp_path, capsys, page(everything, len(everything), next_link=False))
    assert code == 0 and "problems" not in out and err == ""
    stage = next(e["resource"] for e in out["fhir"]["entry"] if e["resource"]["resourceType"] == "Observation")
    assert {"system": NCIT, "code": "C133431"} in stage["valueCodeableConcept"]["coding"]  # INRGSS MS


def test_the_page_not_read_is_what_changes_the_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Why nothing is written back: with a bone site on the page not read, the MS infant
    is stage M (criteria.md S9), not the MS the first page suggests; from one page the
    metastatic sites are not known, so the stage is indeterminate between the two."""
    everything = resources_of("ms-infant.json")
    bone = {"resourceType": "Observation", "id": "obs-bone", "status": "final",
            "code": {"coding": [{"system": "http://nbrules.dev/fhir/CodeSystem/facts", "code": "metastatic_sites"}]},
            "subject": {"reference": "Patient/p1"},
            "valueCodeableConcept": {"coding": [{"system": "http://nbrules.dev/fhir/CodeSystem/facts", "code": "bone"}]}}
    code, first, _ = run(tmp_path, capsys, page(everything, len(everything) + 1, next_link=True))
    code_all, whole, _ = run(tmp_path, capsys, page(everything + [bone], len(everything) + 1, next_link=False))
    assert code == 2 and first["fhir"] is None
    assert code_all == 0
    assert first["result"]["outputs"]["inrgss_stage"] is None
    assert {"M", "MS"} <= set(first["result"]["indeterminate"]["inrgss_stage"]["candidates"])
    assert whole["result"]["outputs"]["inrgss_stage"] == "M"


# -- 3. several patients: refused unless --patient names one ------------------------------------


def two_patients() -> dict[str, Any]:
    entries = resources_of("ms-infant.json", "p1") + resources_of("l1-amplified-not-operated.json", "p2")
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in entries]}


def test_several_patients_are_refused_with_their_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(tmp_path, capsys, two_patients())
    assert code == 2 and out is None
    assert "NB748" in err and "p1, p2" in err and "--patient" in err


@pytest.mark.parametrize(("pid", "stage"), [("p1", "MS"), ("p2", "L1")])
def test_patient_chooses_one_of_the_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str], pid: str,
                                           stage: str) -> None:
    code, out, err = run(tmp_path, capsys, two_patients(), "--patient", pid)
    assert code == 0, err
    assert out["result"]["outputs"]["inrgss_stage"] == stage
    assert out["read"]["diagnosis"] == f"Condition/{pid}-dx-{1 if pid == 'p1' else 2}"
    other = "p2" if pid == "p1" else "p1"
    assert f"Patient/{other}" not in json.dumps(out["fhir"])  # nothing written back about the other patient
    assert any(why.startswith(f"Patient/{other}:") for why in out["read"]["notUsed"])


def test_a_patient_not_in_the_bundle_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(tmp_path, capsys, two_patients(), "--patient", "p9")
    assert code == 2 and out is None and "NB749" in err and "p9" in err and "p1, p2" in err


@pytest.mark.parametrize("argv", [
    ["evaluate", str(REPO / "examples" / "ms-infant.json"), "--patient", "p1"],
    ["evaluate", "--batch", str(EXAMPLE_EXPORT), "--patient", "p1"],
])
def test_patient_is_refused_where_it_does_not_apply(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 4
    assert "--patient applies only with --fhir" in capsys.readouterr().err


# -- 2. Bulk rows carry what was read; a patient without neuroblastoma is counted apart -----------


def test_bulk_rows_carry_the_reading_and_count_the_patient_without_neuroblastoma_apart(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bulk.jsonl"
    assert main(["evaluate", "--batch", str(EXAMPLE_EXPORT), "--out", str(out)]) == 0
    summary = capsys.readouterr().err
    assert "2 indeterminate, 0 invalid, 1 without a neuroblastoma diagnosis" in summary
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["p1"]["result"]["outputs"]["inrgss_stage"] == "MS"
    assert rows["p1"]["read"]["age"]["element"] == "onsetDateTime" and rows["p1"]["read"]["diagnosis"] == "Condition/dx-1"
    # two MYCN Observations that disagree: both named, and MYCN left unknown rather than guessed
    assert rows["p3"]["read"]["conflicts"] == {"mycn_status": ["Observation/p3-obs-1", "Observation/p3-obs-2"]}
    assert "mycn_status" not in rows["p3"]["result"]["input"]
    assert any("birthDate" in why for why in rows["p3"]["read"]["notUsed"])
    # the CDS Hooks specification's patient has no neuroblastoma: not evaluated, and says so
    none = rows["1288992"]
    assert none["status"] == "no-neuroblastoma-diagnosis" and "result" not in none
    assert none["read"]["diagnosis"] is None

    # the same lines from two worker processes (the reading travels with the row)
    again = tmp_path / "again.jsonl"
    assert main(["evaluate", "--batch", str(EXAMPLE_EXPORT), "--out", str(again), "--workers", "2", "-q"]) == 0
    assert again.read_bytes() == out.read_bytes()


# -- 4. the examples the README points to -----------------------------------------------------


def test_the_readme_example_bundle_is_the_ms_infant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--fhir", str(EXAMPLE_BUNDLE)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"]["outputs"]["inrgss_stage"] == "MS" and out["result"]["outputs"]["cog_risk"] == "low"
    assert out["fhir"]["type"] == "transaction" and out["fhir"]["entry"]


def test_fhir_refuses_format_text_as_the_readme_says(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--fhir", str(EXAMPLE_BUNDLE), "--format", "text"]) == 4
    assert "--fhir writes JSON" in capsys.readouterr().err
    readme = (REPO / "README.md").read_text()
    assert "`--fhir` refuses `--format text`" in readme


def test_readme_names_the_example_files_and_the_test_server_start() -> None:
    readme = (REPO / "README.md").read_text()
    for path in ("examples/fhir/ms-infant-bundle.json", "examples/fhir/bulk/"):
        assert path in readme and (REPO / path).exists(), path
    header = (REPO / "tests" / "fhir_server" / "server.mjs").read_text().split("import ", 1)[0]
    assert "node server.mjs SEED.json [TOKEN]" in header
    assert "node --experimental-websocket tests/fhir_server/server.mjs SEED.json [TOKEN]" in readme


def test_readme_cds_request_example_is_a_valid_request() -> None:
    """The README's full CDS Hooks request (fhirServer, fhirAuthorization, prefetch) is
    one the service's request schema accepts."""
    import jsonschema

    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- cds-request -->\n```json\n") + len("<!-- cds-request -->\n```json\n")
    request = json.loads(readme[start:readme.index("```", start)])
    schema = json.loads((REPO / "schemas" / "cds-request.schema.json").read_text())
    jsonschema.validate(request, schema)
    assert request["fhirAuthorization"]["token_type"] == "Bearer" and request["fhirServer"].startswith("https://")
    assert request["context"]["patientId"] == request["prefetch"]["patient"]["id"]


def test_profile_help_reads_as_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "use the parameter values of profile NAME, declared in the package's parameters.yaml" in text
    assert "of the package's parameters.yaml says" not in text
    assert "--patient ID" in text


def test_the_example_export_has_one_file_per_resource_type() -> None:
    """The example export is laid out as the README says: one NDJSON file per resource
    type, one resource a line."""
    names = sorted(p.name for p in EXAMPLE_EXPORT.iterdir())
    assert names == ["Condition.ndjson", "Observation.ndjson", "Patient.ndjson"]
    for p in EXAMPLE_EXPORT.iterdir():
        assert all(json.loads(line)["resourceType"] == p.stem for line in p.read_text().splitlines())


@pytest.mark.parametrize("total", ["13", -1, 7.5, True])
def test_a_malformed_total_is_rejected_not_taken_as_a_whole_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], total: Any) -> None:
    # Bundle.total is an unsignedInt (FHIR R4): anything else cannot say the 7 entries
    # held are all 14 matches, so no stage may be concluded and nothing written back
    bundle = page(resources_of("ms-infant.json")[:7], 0, next_link=False)
    bundle["total"] = total
    code, out, err = run(tmp_path, capsys, bundle)
    assert code == 2 and out is None
    assert err.startswith("/total: NB50")


def test_a_malformed_total_read_as_a_library_is_an_incomplete_record(engine: Any) -> None:
    from nbrules.fhir import load_mapping, map_resources
    from nbrules.fhir_out import unread_pages

    bundle = page(resources_of("ms-infant.json")[:7], 0, next_link=False)
    bundle["total"] = "13"
    mapped = map_resources({"observations": bundle}, load_mapping())
    assert mapped.incomplete and "not a count" in mapped.incomplete[0]
    assert unread_pages(bundle) is not None and "not a count" in str(unread_pages(bundle))


def test_a_record_without_neuroblastoma_is_not_evaluated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the criteria (criteria.md) classify neuroblastoma only: a patient with no
    # neuroblastoma diagnosis gets no stage or risk group, not an all-indeterminate result
    leukaemia = {"resourceType": "Condition", "id": "all", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91857003"}]}}
    others = [r for r in resources_of("ms-infant.json") if r["resourceType"] != "Condition"]
    for resources, why in ((others, "it holds no Condition"), (others + [leukaemia], "Condition/all")):
        code, out, err = run(tmp_path, capsys, {"resourceType": "Bundle", "type": "collection",
                                                "entry": [{"resource": r} for r in resources]})
        assert code == 2
        assert out["status"] == "no-neuroblastoma-diagnosis" and "result" not in out and out["fhir"] is None
        assert [p["code"] for p in out["problems"]] == ["NB744"] and out["read"]["diagnosis"] is None
        assert err.startswith("/entry: NB744") and why in err and "nothing is written back" in err

    # the diagnosis may be on a page not read: both are said
    bundle = page(others, len(others) + 1, next_link=True)
    code, out, err = run(tmp_path, capsys, bundle)
    assert code == 2 and [p["code"] for p in out["problems"]] == ["NB744", "NB747"]


def test_results_already_recorded_are_not_written_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # evaluate, accept the transaction, evaluate the record again: nothing new to create
    first = json.loads(EXAMPLE_BUNDLE.read_text())
    code, out, _ = run(tmp_path, capsys, first)
    assert code == 0 and out["read"]["recorded"] == {}
    created = {e["fullUrl"]: {**e["resource"], "id": e["fullUrl"].removeprefix("urn:uuid:")}
               for e in out["fhir"]["entry"] if e["resource"]["resourceType"] != "Provenance"}
    outputs = {r["meta"]["tag"][0]["code"]: (url, r) for url, r in created.items()}
    assert "inrgss_stage" in outputs and len(outputs) > 1

    again = {**first, "entry": first["entry"] + [{"resource": r} for r in created.values()]}
    code, out, _ = run(tmp_path, capsys, again)
    assert code == 0 and out["fhir"]["entry"] == []
    assert set(out["read"]["recorded"]) == set(outputs)
    stage_ref = f"Observation/{outputs['inrgss_stage'][1]['id']}"
    assert out["read"]["recorded"]["inrgss_stage"] == [{"ref": stage_ref, "value": "MS"}]

    # only the stage recorded: the rest is written, and what is based on the stage names
    # the Observation in the record, not a resource the transaction no longer creates
    only_stage = {**first, "entry": first["entry"] + [{"resource": outputs["inrgss_stage"][1]}]}
    code, out, _ = run(tmp_path, capsys, only_stage)
    kinds = [e["resource"]["meta"]["tag"][0]["code"] for e in out["fhir"]["entry"]
             if e["resource"]["resourceType"] != "Provenance"]
    assert code == 0 and "inrgss_stage" not in kinds and set(kinds) == set(outputs) - {"inrgss_stage"}
    text = json.dumps(out["fhir"])
    assert outputs["inrgss_stage"][0] not in text and f"\"reference\": \"{stage_ref}\"" in text
    full_urls = {e["fullUrl"] for e in out["fhir"]["entry"]}
    refs = [v for v in text.split('"reference": "')[1:]]
    assert all(not r.startswith("urn:uuid:") or r.split('"')[0] in full_urls for r in refs)
