"""Reading cohorts of patients, one row at a time (JSONL or CSV with an id column).

Rows are streamed: memory does not grow with the file.  A row that cannot be read
is never dropped; it comes back with its problems (JSON pointer, expected, found):
a line that is not UTF-8, a row over the size limit (read in bounded pieces and
skipped), a CSV field over the ``csv`` module's 128 KiB limit, JSON nested too
deeply, an integer of more than 4,300 digits, text with lone surrogates.

A CSV record is one line, parsed on its own (an unclosed quote costs that line only).
Rows are numbered by line (a CSV's header is line 1); blank lines are skipped.

CSV cells are typed by the patient schema: empty means unknown; booleans are
``true``/``false``; numbers are plain decimals; lists are ``a;b;c`` or a JSON array,
with ``[]`` for an empty list (assessed, none found).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, cast

from .diagnostics import Diagnostic
from .loader import join_pointer
from .patient import DEFAULT_MAX_INPUT, not_text, parse_patient_json, too_large
from .validator import describe_value
from .vocabulary import FactSpec, input_facts

__all__ = ["Row", "read_rows", "detect_format", "CohortFormatError"]

_INT = re.compile(r"^[-+]?\d+$")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


class CohortFormatError(ValueError):
    """The file as a whole cannot be read as a cohort (e.g. a CSV without the id column)."""


@dataclass(frozen=True)
class Row:
    """One patient of a cohort: 1-based row ``number`` (the line number, for JSONL and CSV alike:
    a CSV's header is line 1),
    its ``id``, and either its ``facts`` or the ``problems`` that stopped it.  ``read``: for
    a patient of a FHIR Bulk Data export, what was read from the resources
    (:func:`nbrules.fhir_out.read_section`), written with the row's result."""

    number: int
    id: str | None
    facts: dict[str, Any] | None
    problems: tuple[Diagnostic, ...] = ()
    read: dict[str, Any] | None = None

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


def read_rows(stream: IO[str] | IO[bytes], fmt: str, id_column: str = "id",
              facts: Mapping[str, FactSpec] | None = None, max_row: int = DEFAULT_MAX_INPUT) -> Iterator[Row]:
    """Stream the rows of a JSONL or CSV cohort.  CSV cells are typed by ``facts``
    (the input vocabulary of the package in force; default: the bundled one).

    A binary stream is decoded here, row by row, so a line that is not UTF-8 costs that
    row only; a JSONL line longer than ``max_row`` bytes is skipped in bounded pieces and
    reported (NB509).  A row whose id an earlier row already has comes back with problem
    NB560 and no facts (it is not evaluated: results keyed by id would be ambiguous); the
    first row with that id is read as usual.  The ids seen are kept (a few dozen bytes
    per row).
    """
    rows: Iterator[Row]
    if fmt == "jsonl":
        rows = _jsonl(stream, id_column, max_row)
    elif fmt == "csv":
        text: Any = stream if isinstance(stream, io.TextIOBase) else io.TextIOWrapper(
            cast(IO[bytes], stream), encoding="utf-8-sig", errors="surrogateescape", newline="")
        rows = _csv(text, id_column, input_facts() if facts is None else facts, max_row)
    else:
        raise CohortFormatError(f"unknown cohort format '{fmt}' (jsonl or csv)")
    first: dict[str, int] = {}
    for row in rows:
        yield unique_id(row, first, id_column)


def unique_id(row: Row, first: dict[str, int], id_column: str) -> Row:
    """``row``, or when an earlier row (``first``: id -> row number, updated) has its id,
    the row with problem NB560 and no facts."""
    if row.id is not None:
        earlier = first.setdefault(row.id, row.number)
        if earlier != row.number:
            return Row(row.number, row.id, None, (Diagnostic(
                code="NB560", pointer=join_pointer("", id_column),
                message=f"expected a unique identifier, found '{row.id}' again (first in row {earlier})",
                hint="give every row its own id; this row was not evaluated"),))
    return row


def _missing_id(id_column: str, found: Any = None) -> Diagnostic:
    """NB508 for a row whose ``id_column`` is missing (``found`` None) or holds no usable
    identifier (not text or a number, or blank text)."""
    what = "none" if found is None else describe_value(found)
    return Diagnostic(code="NB508", pointer=join_pointer("", id_column),
                      message=f"expected an identifier (non-blank text or a number) in '{id_column}', found {what}",
                      hint=f"give every row its own '{id_column}'")


def _lines(stream: IO[Any], limit: int) -> Iterator[str | bytes | None]:
    """The lines of ``stream``, each read with at most ``limit`` + 1 characters in
    memory; None for a line longer than ``limit`` (the rest of it is skipped)."""
    first = True
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if first:
            first = False
            line = line[3:] if line[:3] == b"\xef\xbb\xbf" else line[1:] if line[:1] == "\ufeff" else line
        if len(line) > limit and line[-1:] not in (b"\n", "\n"):
            while True:
                rest = stream.readline(65536)
                if not rest or rest[-1:] in (b"\n", "\n"):
                    break
            yield None
            continue
        yield line


def _jsonl(stream: IO[Any], id_column: str, max_row: int = DEFAULT_MAX_INPUT) -> Iterator[Row]:
    for number, line in enumerate(_lines(stream, max_row), start=1):
        row = jsonl_row(number, line, id_column, max_row)
        if row is not None:
            yield row


def jsonl_lines(stream: IO[bytes], max_row: int = DEFAULT_MAX_INPUT) -> Iterator[tuple[int, bytes | str | None]]:
    """(line number, line) of a JSONL stream, unparsed, for :func:`jsonl_row` to parse
    elsewhere (in a worker process); None for a line over ``max_row`` bytes."""
    return enumerate(_lines(stream, max_row), start=1)


def jsonl_row(number: int, line: bytes | str | None, id_column: str,
              max_row: int = DEFAULT_MAX_INPUT) -> Row | None:
    """The row of one JSONL line (None for a blank line), without the check that its id
    is unique (:func:`read_rows` makes it; NB560)."""
    if line is None:
        return Row(number, None, None, (too_large(f"expected a row of at most {max_row} bytes, found a longer one"),))
    if not line.strip():
        return None
    data, problems = parse_patient_json(line)
    if problems:
        return Row(number, None, None, tuple(problems))
    if not isinstance(data, dict):
        return Row(number, None, None, (Diagnostic(
            code="NB507", pointer="", message=f"expected a JSON object of patient facts, found {describe_value(data)}"),))
    raw_id = data.pop(id_column, None)
    row_id = None if raw_id is None or isinstance(raw_id, (dict, list, bool)) else str(raw_id)
    if row_id is None or not row_id.strip():
        return Row(number, None, data, (_missing_id(id_column, raw_id),))
    return Row(number, row_id, data)


def _csv(stream: IO[str], id_column: str, specs: Mapping[str, FactSpec],
         max_row: int = DEFAULT_MAX_INPUT) -> Iterator[Row]:
    """A CSV record is one physical line (patient facts never need a newline in a field),
    parsed on its own: an unclosed quote costs that line only.  Rows are numbered by
    line, the header being line 1; blank lines are skipped (their numbers are not reused)."""
    lines = _lines(stream, max_row)
    header: list[str] | None = None
    number = 0
    for line in lines:
        number += 1
        if header is None:
            if line is None or not str(line).strip():
                raise CohortFormatError("the CSV header (line 1) is missing, blank or over the size limit")
            try:
                header = [h.strip() for h in next(csv.reader([str(line)], strict=True))]
            except csv.Error as exc:
                raise CohortFormatError(f"the CSV header (line 1) cannot be read: {exc}") from None
            if id_column not in header:
                raise CohortFormatError(f"the CSV header has no '{id_column}' column (found: {', '.join(header)})")
            id_index = header.index(id_column)
            continue
        if line is None:
            yield Row(number, None, None, (too_large(f"expected a row of at most {max_row} bytes, found a longer one"),))
            continue
        text_line = str(line)
        if not text_line.strip():
            continue
        try:
            cells = next(csv.reader([text_line], strict=True))
        except csv.Error as exc:  # an unclosed quote, a field over 128 KiB: this line only
            unreadable = too_large(f"expected a CSV row the csv module can read: {exc}") if "field limit" in str(exc) \
                else Diagnostic(code="NB501", pointer="", message=f"expected a CSV row on one line with every quote "
                                f"closed, found: {exc}", hint="a CSV row is one line; close the quote on this line")
            yield Row(number, None, None, (unreadable,))
            continue
        if not any(c.strip() for c in cells):
            continue
        if any(not_text(c) for c in cells):  # bytes that were not UTF-8 (surrogateescape)
            shown_id = cells[id_index].encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip() \
                if id_index < len(cells) else None
            yield Row(number, shown_id or None, None, (Diagnostic(
                code="NB551", pointer="", message="expected UTF-8 text, found bytes that are not"),))
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
            if len(text) > 4300:
                return None, too_large("expected a number of at most 4,300 digits, found a longer one", pointer)
            return int(text), None
        return None, Diagnostic(code="NB502", pointer=pointer, message=f"expected a whole number, found text '{text}'")
    if spec.kind == "number":
        if _NUMBER.match(text):
            value = float(text)
            return (int(value) if value.is_integer() else value), None
        return None, Diagnostic(code="NB502", pointer=pointer, message=f"expected a number, found text '{text}'")
    if spec.kind == "set":
        if text.startswith("["):
            items, problems = parse_patient_json(text)
            if problems:
                return None, replace(problems[0], pointer=pointer + (problems[0].pointer or ""))
            if not isinstance(items, list):
                return None, Diagnostic(code="NB502", pointer=pointer,
                                        message=f"expected a JSON list or items separated by ';', found text '{text}'")
            return items, None
        return [item.strip() for item in text.split(";") if item.strip()], None
    return text, None


def rows_from_text(text: str, fmt: str, id_column: str = "id") -> list[Row]:
    """All rows of a small cohort held in memory (tests, HTTP uploads)."""
    return list(read_rows(io.StringIO(text), fmt, id_column))
