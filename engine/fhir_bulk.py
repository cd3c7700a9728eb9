"""Cohorts from a FHIR Bulk Data export: NDJSON files of resources, one file (or more)
per resource type, read into one patient-facts row per patient.

The export is indexed by patient in a temporary sqlite database on disk (one pass over
the files, a line at a time), then read back one patient at a time, so memory holds one
line and one patient's resources, never the export.  A resource's patient is its own id
for a Patient, otherwise the patient its ``subject`` (or ``patient``) references.  Files
are read in name order and patients come out in the order they first appear, so the
same export always gives the same rows.  The facts of each patient are read with the
FHIR mapping exactly as for CDS Hooks (:func:`nbrules.fhir.map_resources`).

A line that cannot be used never disappears: it becomes a row of its own with its
problem (NB501 not JSON, NB509 too long, NB570 not a FHIR resource, NB571 no patient).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .cohort import Row, _lines
from .diagnostics import Diagnostic
from .fhir import FhirMapping, map_resources
from .fhir_out import read_section
from .patient import DEFAULT_MAX_INPUT, parse_patient_json, too_large

__all__ = ["bulk_files", "bulk_rows"]


def bulk_files(directory: Path) -> list[Path]:
    """The NDJSON files of an export directory, in name order."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.lower().endswith(".ndjson"))


def _patient_of(res: dict[str, Any]) -> str | None:
    if res.get("resourceType") == "Patient":
        return res["id"] if isinstance(res.get("id"), str) and res["id"] else None
    for key in ("subject", "patient"):
        ref = res.get(key)
        ref = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(ref, str):
            parts = ref.split("/_history/")[0].rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
                return parts[-1]
    return None


def bulk_rows(directory: Path, mapping: FhirMapping, max_row: int = DEFAULT_MAX_INPUT) -> Iterator[Row]:
    """One :class:`~nbrules.cohort.Row` per patient of the export (id: the Patient id;
    facts: those the mapping reads; read: what was read, :func:`nbrules.fhir_out.read_section`,
    so the row shows the diagnosis, the age's source, what was not used and conflicting
    values), and one per line that cannot be used."""
    number = 0
    with tempfile.TemporaryDirectory(prefix="nbrules-bulk-") as tmp:
        db = sqlite3.connect(Path(tmp) / "index.sqlite")
        try:
            db.execute("CREATE TABLE res (seq INTEGER PRIMARY KEY, pid TEXT NOT NULL, body TEXT NOT NULL)")
            seq = 0
            for path in bulk_files(directory):
                with open(path, "rb") as f:
                    for line_no, line in enumerate(_lines(f, max_row), start=1):
                        where = f"{path.name}:{line_no}"
                        problem: Diagnostic | None = None
                        if line is None:
                            problem = too_large(f"{where}: expected a line of at most {max_row} bytes, found a longer one")
                        elif not line.strip():
                            continue
                        else:
                            data, problems = parse_patient_json(line)
                            if problems:
                                problem = problems[0]
                                problem = Diagnostic(code=problem.code, pointer=problem.pointer,
                                                     message=f"{where}: {problem.message}", hint=problem.hint)
                            elif not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
                                problem = Diagnostic(code="NB570", pointer="/resourceType",
                                                     message=f"{where}: expected a FHIR resource, found no resourceType")
                            else:
                                pid = _patient_of(data)
                                if pid is None:
                                    problem = Diagnostic(
                                        code="NB571", pointer="/subject",
                                        message=f"{where}: {data['resourceType']}/{data.get('id', '?')} names no patient",
                                        hint="a Bulk Data export groups resources by Patient id or subject reference")
                                else:
                                    seq += 1
                                    db.execute("INSERT INTO res VALUES (?, ?, ?)",
                                               (seq, pid, json.dumps(data, ensure_ascii=False)))
                        if problem is not None:
                            number += 1
                            yield Row(number, None, None, (problem,))
            db.execute("CREATE INDEX res_pid ON res (pid, seq)")
            db.commit()
            order = db.execute("SELECT pid FROM res GROUP BY pid ORDER BY MIN(seq)")
            for (pid,) in order:
                entries = [{"resource": json.loads(body)} for (body,) in
                           db.execute("SELECT body FROM res WHERE pid = ? ORDER BY seq", (pid,))]
                mapped = map_resources({"export": {"resourceType": "Bundle", "entry": entries}}, mapping, pid)
                number += 1
                yield Row(number, pid, mapped.facts, read=read_section(mapped))
        finally:
            db.close()
