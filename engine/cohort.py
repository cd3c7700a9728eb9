"""Reading cohorts of patients, one row at a time (JSONL or CSV with an id column).

Rows are streamed: memory does not grow with the file.  A row that cannot be read
is never dropped; it comes back with its problems (JSON pointer, expected, found).

CSV cells are typed by the patient schema: empty means unknown; booleans are
``true``/``false``; numbers are plain decimals; lists are ``a;b;c`` or a JSON array,
with ``[]`` for an empty list (assessed, none found).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from .diagnostics import Diagnostic
from .loader import join_pointer
from .patient import parse_patient_json
from .validator import describe_value
from .vocabulary import FactSpec, input_facts

__all__ = ["Row", "read_rows", "detect_format", "CohortFormatError"]

_INT = re.compile(r"^[-+]?\d+$")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


class CohortFormatError(ValueError):
    """The file as a whole cannot be read as a cohort (e.g. a CSV without the id column)."""


@dataclass(frozen=True)
class Row:
    """One patient of a cohort: 1-based row ``number`` (line for JSONL, data row for CSV),
    its ``id``, and either its ``facts`` or the ``problems`` that stopped it."""

    number: int
    id: str | None
    facts: dict[str, Any] | None
    problems: tuple[Diagnostic, ...] = ()

    @property
    def ok(self) -> bool:
        return self.facts is not None and not self.problems


def detect_format(path: str | Path) -> str:
    """``jsonl`` or ``csv`` from the file name."""
    name = str(path).lower()
    if name.endswith((".csv", ".csv.txt")):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise CohortFormatError(f"cannot tell the format of '{path}': name it .jsonl or .csv, or give --input-format")


def read_rows(stream: IO[str], fmt: str, id_column: str = "id",
              facts: Mapping[str, FactSpec] | None = None) -> Iterator[Row]:
    """Stream the rows of a JSONL or CSV cohort.  CSV cells are typed by ``facts``
    (the input vocabulary of the package in force; default: the bundled one).

    A row whose id an earlier row already has comes back with problem NB560 and no
    facts (it is not evaluated: results keyed by id would be ambiguous); the first row
    with that id is read as usual.  The ids seen are kept (a few dozen bytes per row).
    """
    if fmt == "jsonl":
        rows = _jsonl(stream, id_column)
    elif fmt == "csv":
        rows = _csv(stream, id_column, input_facts() if facts is None else facts)
    else:
        raise CohortFormatError(f"unknown cohort format '{fmt}' (jsonl or csv)")
    first: dict[str, int] = {}
    for row in rows:
        if row.id is not None:
            earlier = first.setdefault(row.id, row.number)
            if earlier != row.number:
                row = Row(row.number, row.id, None, (Diagnostic(
                    code="NB560", pointer=join_pointer("", id_column),
                    message=f"expected a unique identifier, found '{row.id}' again (first in row {earlier})",
                    hint="give every row its own id; this row was not evaluated"),))
        yield row


def _missing_id(id_column: str) -> Diagnostic:
    return Diagnostic(code="NB508", pointer=join_pointer("", id_column),
                      message=f"expected an identifier in '{id_column}', found none",
                      hint=f"give every row a '{id_column}'")


def _jsonl(stream: IO[str], id_column: str) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        data, problems = parse_patient_json(line)
        if problems:
            yield Row(number, None, None, tuple(problems))
            continue
        if not isinstance(data, dict):
            yield Row(number, None, None, (Diagnostic(
                code="NB507", pointer="", message=f"expected a JSON object of patient facts, found {describe_value(data)}"),))
            continue
        raw_id = data.pop(id_column, None)
        row_id = None if raw_id is None or isinstance(raw_id, (dict, list, bool)) else str(raw_id)
        if row_id is None or row_id == "":
            yield Row(number, None, data, (_missing_id(id_column),))
            continue
        yield Row(number, row_id, data)


def _csv(stream: IO[str], id_column: str, specs: Mapping[str, FactSpec]) -> Iterator[Row]:
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    if id_column not in header:
        raise CohortFormatError(f"the CSV header has no '{id_column}' column (found: {', '.join(header)})")
    id_index = header.index(id_column)
    for number, cells in enumerate(reader, start=1):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            yield Row(number, cells[id_index].strip() if id_index < len(cells) else None, None, (Diagnostic(
                code="NB502", pointer="",
                message=f"expected {len(header)} columns as in the header, found {len(cells)}"),))
            continue
        row_id = cells[id_index].strip() or None
        facts: dict[str, Any] = {}
        problems: list[Diagnostic] = []
        for name, cell in zip(header, cells):
            if name == id_column:
                continue
            text = cell.strip()
            if text == "":
                continue
            value, problem = _convert(name, text, specs)
            if problem is not None:
                problems.append(problem)
            else:
                facts[name] = value
        if row_id is None:
            problems.append(_missing_id(id_column))
        yield Row(number, row_id, facts, tuple(problems))


def _convert(name: str, text: str, specs: Mapping[str, FactSpec]) -> tuple[Any, Diagnostic | None]:
    spec = specs.get(name)
    pointer = join_pointer("", name)
    if spec is None:
        return text, None  # reported as an unknown fact by the patient schema
    if spec.kind == "boolean":
        if text.lower() in ("true", "false"):
            return text.lower() == "true", None
        return None, Diagnostic(code="NB502", pointer=pointer, message=f"expected true or false, found text '{text}'")
    if spec.kind == "integer":
        if _INT.match(text):
            return int(text), None
        return None, Diagnostic(code="NB502", pointer=pointer, message=f"expected a whole number, found text '{text}'")
    if spec.kind == "number":
        if _NUMBER.match(text):
            value = float(text)
            return (int(value) if value.is_integer() else value), None
        return None, Diagnostic(code="NB502", pointer=pointer, message=f"expected a number, found text '{text}'")
    if spec.kind == "set":
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                items = None
            if not isinstance(items, list):
                return None, Diagnostic(code="NB502", pointer=pointer,
                                        message=f"expected a JSON list or items separated by ';', found text '{text}'")
            return items, None
        return [item.strip() for item in text.split(";") if item.strip()], None
    return text, None


def rows_from_text(text: str, fmt: str, id_column: str = "id") -> list[Row]:
    """All rows of a small cohort held in memory (tests, HTTP uploads)."""
    return list(read_rows(io.StringIO(text), fmt, id_column))
