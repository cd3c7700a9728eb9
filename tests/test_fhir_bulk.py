"""Cohorts from a FHIR Bulk Data export (NDJSON per resource type, grouped by patient):
`nbrules evaluate --batch DIR`.  The clinical values are those of the CDS tests for the
same records (ms-infant: INRGSS MS, COG risk low; criteria.md S9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbrules.cli import main

FHIR = Path(__file__).resolve().parent / "data" / "fhir"


def export(tmp_path: Path, names: list[str]) -> Path:
    """Writes the prefetch of the named CDS requests as a Bulk Data export, one NDJSON
    file per resource type, patients renamed so that each is its own; resources of one
    patient interleaved with the others' as an export does."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for i, name in enumerate(names):
        request = json.loads((FHIR / name).read_text())
        pid = request["context"]["patientId"]
        for value in request["prefetch"].values():
            for res in ([e["resource"] for e in value.get("entry", [])] if value["resourceType"] == "Bundle" else [value]):
                text = json.dumps(res).replace(f'"Patient/{pid}"', f'"Patient/q{i}"')
                res = json.loads(text)
                if res["resourceType"] == "Patient":
                    res["id"] = f"q{i}"
                elif "subject" in res:
                    res["id"] = f"{res['id']}-{i}"
                by_type.setdefault(res["resourceType"], []).append(res)
    out = tmp_path / "export"
    out.mkdir()
    for kind, resources in by_type.items():
        (out / f"{kind}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in resources))
    return out


def test_bulk_export_gives_one_row_per_patient_and_keeps_every_bad_line(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    directory = export(tmp_path, ["ms-infant.json", "l1-amplified-not-operated.json", "cds-spec-patient-view.json"])
    with open(directory / "Observation.ndjson", "a") as f:
        f.write('{"resourceType": "Observation", "id": "orphan", "status": "final"}\n')
        f.write("not json\n")
    out = tmp_path / "results.jsonl"
    assert main(["evaluate", "--batch", str(directory), "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    problems = [r for r in rows if r["id"] is None]
    # l1-amplified-not-operated.json's asthma Condition and haemoglobin Observation name no patient either
    assert sorted(p["problems"][0]["code"] for p in problems) == ["NB501", "NB571", "NB571", "NB571"]
    assert any("Observation.ndjson:" in p["problems"][0]["message"] for p in problems)
    patients = {r["id"]: r for r in rows if r["id"] is not None}
    assert set(patients) == {"q0", "q1", "q2"}  # the specification's patient too: a row, with no facts but its age
    ms = patients["q0"]["result"]["outputs"]
    assert ms["inrgss_stage"] == "MS" and ms["cog_risk"] == "low"
    assert patients["q1"]["result"]["outputs"]["inrgss_stage"] == "L1"
    again = tmp_path / "again.jsonl"
    assert main(["evaluate", "--batch", str(directory), "--out", str(again), "--quiet", "--workers", "2"]) == 0
    assert again.read_text() == out.read_text()  # same export, same rows, in the same order


def test_a_file_is_not_an_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\n')
    assert main(["evaluate", "--batch", str(path), "--input-format", "fhir-ndjson"]) != 0
    assert "directory of .ndjson files" in capsys.readouterr().err
