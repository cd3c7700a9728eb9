"""Diagnostics: immutable findings with a stable code, a location and a hint.

Every problem nbrules reports about a rule file or a patient record is a
:class:`Diagnostic`.  Codes are stable and grouped by pipeline stage
(NB1xx load, NB2xx validate, NB3xx check, NB4xx compile, NB5xx evaluate,
NB6xx verify, NB7xx test, NB8xx governance); each has a kebab-case name and is
documented in ``docs/diagnostics.md``.
"""

from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass, field
from typing import Iterable, Sequence

__all__ = [
    "CODES",
    "Code",
    "count_summary",
    "Diagnostic",
    "Severity",
    "did_you_mean",
    "format_diagnostic",
    "has_errors",
    "problem_details",
    "sort_diagnostics",
]


class Severity(str, enum.Enum):
    """How serious a finding is.  Only errors make a rule set unusable."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Code:
    """One entry of the code registry."""

    code: str
    name: str
    severity: Severity
    summary: str


def _registry(*codes: Code) -> dict[str, Code]:
    table: dict[str, Code] = {}
    for c in codes:
        if c.code in table:  # pragma: no cover - guards the table itself
            raise ValueError(f"duplicate diagnostic code {c.code}")
        table[c.code] = c
    return table


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO

#: Every diagnostic code nbrules can emit.  docs/diagnostics.md documents each one;
#: a test keeps the two in step.
CODES: dict[str, Code] = _registry(
    # load
    Code("NB101", "yaml-syntax", E, "the file is not well-formed YAML"),
    Code("NB102", "duplicate-key", E, "a mapping repeats a key"),
    Code("NB103", "yaml-tag", E, "an explicit YAML tag such as !!python/object is used"),
    Code("NB104", "yaml-alias", E, "a YAML anchor, alias or merge key is used"),
    Code("NB105", "unreadable-file", E, "the file cannot be read or is not UTF-8"),
    Code("NB106", "multiple-documents", E, "the file holds more than one YAML document"),
    Code("NB107", "non-string-key", E, "a mapping key is not a plain string"),
    Code("NB108", "no-rule-files", E, "the rules directory holds no *.yaml files"),
    # knowledge-package files (package.yaml, facts.yaml)
    Code("NB110", "facts-duplicate-value", E, "a fact or output in facts.yaml lists a value twice"),
    Code("NB111", "facts-type-mismatch", E, "a fact's values, unit or range do not fit its type"),
    Code("NB112", "facts-unknown-output", E, "facts.yaml describes an output, or a value, no decision sets"),
    Code("NB113", "package-file-misplaced", E, "a knowledge-package file name is used below the root"),
    Code("NB120", "control-character", E, "the file holds a control character YAML does not allow (NUL, ESC, BEL ...)"),
    Code("NB121", "number-out-of-range", E, "an integer beyond 64 bits, or a number too large to be finite"),
    Code("NB122", "nesting-too-deep", E, "lists and mappings are nested deeper than the loader allows"),
    Code("NB123", "condition-too-deep", E, "a condition nests all/any/not too deep, named conditions expanded"),
    # validate (JSON Schema of the rule-file format)
    Code("NB201", "wrong-type", E, "a value has the wrong type"),
    Code("NB202", "missing-key", E, "a required key is missing"),
    Code("NB203", "unknown-key", E, "a key is not part of the rule-file format"),
    Code("NB204", "value-not-allowed", E, "a value is not one of the allowed values"),
    Code("NB205", "bad-format", E, "a value does not have the required form"),
    Code("NB206", "bad-size", E, "a value is too small, too large, too short or too long"),
    Code("NB207", "duplicate-item", E, "a list that must hold distinct items repeats one"),
    # check (meaning across rules and files)
    Code("NB301", "unknown-fact", E, "a fact is neither patient input nor the output of a decision"),
    Code("NB302", "value-outside-domain", E, "a value is outside the value set of its fact or output"),
    Code("NB303", "type-mismatch", E, "a comparison does not fit the type of its fact"),
    Code("NB304", "duplicate-rule-id", E, "two rules (or scope exclusions) share an id"),
    Code("NB305", "undeclared-parameter", E, "a parameter is used but not declared"),
    Code("NB306", "unknown-citation", E, "a citation names no entry of `sources`"),
    Code("NB307", "output-decided-twice", E, "two decisions decide the same output"),
    Code("NB308", "decision-cycle", E, "decisions depend on each other in a cycle"),
    Code("NB309", "fact-not-read", E, "a condition uses a fact missing from `reads`"),
    Code("NB310", "unknown-output", E, "a rule or case sets an output the decision does not decide"),
    Code("NB311", "duplicate-decision", E, "two files hold the same decision and version"),
    Code("NB312", "bad-case", E, "an example case is not valid"),
    Code("NB313", "unknown-condition", E, "a named condition is used but not declared"),
    Code("NB314", "condition-cycle", E, "named conditions refer to each other in a cycle"),
    Code("NB315", "bad-date", E, "an effective date is not a real calendar date"),
    Code("NB316", "output-domain-mismatch", E, "an output's value set differs from the one in facts.yaml"),
    Code("NB317", "bad-pending-value", E, "a pending value is not a value of its fact"),
    Code("NB318", "unknown-rule", E, "a case expects a rule id that does not exist"),
    Code("NB319", "self-dependency", E, "a decision reads an output it decides itself"),
    Code("NB330", "unused-parameter", W, "a declared parameter is never used"),
    Code("NB331", "unused-source", W, "a declared source is never cited"),
    Code("NB332", "unused-read", W, "a fact in `reads` is never tested"),
    Code("NB333", "unused-condition", W, "a named condition is never used"),
    Code("NB334", "bad-alternative", E, "a parameter alternative has a different type from its value"),
    Code("NB350", "decision-ref-misplaced", E, "a rule file compares a fact with a decision's result"),
    Code("NB351", "unknown-decision-ref", E, "a constraint refers to a decision or output that does not exist"),
    Code("NB352", "decision-ref-mismatch", E, "a constraint compares a fact with an output of another value set"),
    Code("NB353", "duplicate-constraint", E, "two input constraints have the same id"),
    Code("NB354", "bad-placeholder", E, "a constraint's message names neither a fact nor a decision's output"),
    Code("NB355", "shadowed-parameter", E, "a rule file declares a parameter that parameters.yaml declares"),
    Code("NB356", "bad-profile-reading", E, "a profile reads an unknown parameter or an undocumented value"),
    Code("NB360", "reference-not-found", E, "a source names a reference document that cannot be found"),
    Code("NB361", "unknown-reference-row", E, "a citation names a row the reference document does not have"),
    Code("NB380", "bad-applies-if", E, "applies_if_given names a fact that is not a patient fact"),
    # compile
    Code("NB401", "engine-rejected", E, "durable-rules refused the compiled ruleset (a bug in nbrules)"),
    # evaluate (patient input and runtime)
    Code("NB501", "input-not-json", E, "the patient record is not valid JSON"),
    Code("NB502", "input-wrong-type", E, "a patient fact has the wrong type"),
    Code("NB503", "input-unknown-fact", E, "a patient record holds a fact nbrules does not know"),
    Code("NB504", "input-value-not-allowed", E, "a patient fact has a value outside its value set"),
    Code("NB505", "input-out-of-range", E, "a number is outside its allowed range"),
    Code("NB506", "input-duplicate", E, "a list repeats an item, or an object repeats a key"),
    Code("NB507", "input-not-object", E, "the patient record is not a JSON object"),
    Code("NB508", "missing-id", E, "a cohort or batch row has no identifier"),
    Code("NB509", "input-too-large", E, "patient input exceeds a size, nesting or number-length limit"),
    Code("NB510", "contradiction", E, "patient facts violate an input constraint (they cannot all be true)"),
    Code("NB511", "suspicious-input", W, "patient facts violate a warning constraint (they are unlikely together)"),
    Code("NB520", "rules-disagree", W, "rules of one decision set different values for an output"),
    Code("NB521", "given-differs", W, "a value given in the input differs from what the rules derive"),
    Code("NB530", "engine-failure", E, "the rule engine failed while evaluating"),
    Code("NB531", "worker-lost", E, "a batch worker process ended before its rows were done"),
    Code("NB545", "unknown-profile", E, "the profile asked for is not declared in parameters.yaml"),
    Code("NB550", "more-problems", E, "further problems of the same input, counted but not listed"),
    Code("NB551", "input-not-text", E, "a string or key of the input is not valid Unicode text"),
    Code("NB552", "input-timeout", E, "the input did not arrive in time"),
    Code("NB560", "duplicate-id", E, "two rows of a cohort have the same identifier"),
    Code("NB570", "fhir-not-a-resource", E, "FHIR input is not a FHIR resource or Bundle"),
    Code("NB571", "fhir-no-patient", E, "a resource of a FHIR Bulk Data export names no patient"),
    # verify
    Code("NB601", "gap", E, "a combination of known facts where no rule fires"),
    Code("NB602", "overlap", E, "a combination of facts where two rules fire"),
    Code("NB603", "dead-rule", E, "a rule that fires for no patient"),
    Code("NB604", "dead-condition", W, "a test that is always true or always false where it stands"),
    Code("NB605", "declared-gap", I, "a combination outside the system's declared scope"),
    Code("NB606", "scope-overlaps-rule", E, "a rule fires inside a declared scope exclusion"),
    Code("NB607", "dead-scope", W, "a scope exclusion that covers no patient"),
    Code("NB608", "parameter-gated", I, "a rule or scope exclusion that applies only under another parameter value"),
    Code("NB610", "chain-violation", E, "a decision derives a value that an input constraint refuses"),
    Code("NB620", "reload-failed", E, "a reload failed for a reason that is not a finding in the rule files"),
    # test (example cases)
    Code("NB701", "case-failed", E, "an example case gives other outputs or rules than expected"),
    # CDS Hooks: fetching from the request's fhirServer
    Code("NB740", "fhir-fetch-failed", E, "nothing the CDS service needs could be fetched from fhirServer"),
    Code("NB741", "fhir-server-not-url", E, "a CDS request's fhirServer is not an http(s) base URL"),
    Code("NB742", "fhir-server-not-allowed", E,
         "a CDS request's fhirServer is not under the service's --fetch-from prefixes: nothing is fetched from it"),
    Code("NB743", "cds-prefetch-missing", E,
         "a CDS request has none of the service's prefetch keys and no fhirServer to fetch them from"),
    # FHIR input to evaluate --fhir
    Code("NB744", "fhir-no-diagnosis", E,
         "a FHIR record has no neuroblastoma diagnosis the mapping reads: the patient is not evaluated"),
    Code("NB747", "fhir-record-incomplete", E,
         "a FHIR Bundle is one page of a search: results are not written back from part of a record"),
    Code("NB748", "fhir-several-patients", E, "a FHIR Bundle holds several patients and none was chosen (--patient)"),
    Code("NB749", "fhir-patient-not-found", E, "the patient chosen with --patient is not in the FHIR Bundle"),
    # governance
    Code("NB801", "active-not-clean", E, "an active rule file does not validate, verify or pass its cases"),
    Code("NB802", "version-conflict", E, "a pinned version is not installed or not allowed"),
    Code("NB803", "retired-in-use", W, "a retired rule file is used because it was pinned"),
    Code("NB804", "future-effective", W, "an active rule file takes effect after today"),
    # versions in force (runtime.choose_versions) and content under a version (diff)
    Code("NB810", "nothing-in-force", E, "no decision has a version in force on the evaluation date"),
    Code("NB811", "decision-not-in-force", W, "a decision has no version in force on the evaluation date and does not run"),
    Code("NB812", "changed-same-version", E, "a decision@version's content differs from another file's or from its recorded hash"),
)

del E, W, I


@dataclass(frozen=True, init=False)
class Diagnostic:
    """One finding.

    ``path``/``line``/``column`` locate it in a rule file (1-based);
    ``pointer`` is the JSON pointer of the offending node or patient fact.
    ``end_column`` (exclusive) lets the caret underline the whole token.
    ``severity`` is always set: the registry's severity of ``code`` unless given.
    Raises ValueError for a code missing from :data:`CODES`.
    """

    code: str
    message: str
    path: str | None
    line: int | None
    column: int | None
    end_column: int | None
    pointer: str | None
    hint: str | None
    source_line: str | None
    severity: Severity

    def __init__(self, code: str, message: str, path: str | None = None, line: int | None = None,
                 column: int | None = None, end_column: int | None = None, pointer: str | None = None,
                 hint: str | None = None, source_line: str | None = None, severity: Severity | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unregistered diagnostic code {code}")
        for key, value in (("code", code), ("message", message), ("path", path), ("line", line),
                           ("column", column), ("end_column", end_column), ("pointer", pointer), ("hint", hint),
                           ("source_line", source_line),
                           ("severity", CODES[code].severity if severity is None else severity)):
            object.__setattr__(self, key, value)

    @property
    def name(self) -> str:
        """The kebab-case name of the code, e.g. ``unknown-fact``."""
        return CODES[self.code].name

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def location(self) -> str:
        """``path:line:col``, or the JSON pointer for patient input."""
        if self.path is not None:
            parts = [self.path]
            if self.line is not None:
                parts.append(str(self.line))
                if self.column is not None:
                    parts.append(str(self.column))
            return ":".join(parts)
        return self.pointer if self.pointer is not None else ""

    def headline(self) -> str:
        """The one-line form: ``path:line:col: severity CODE [name] message``."""
        sev = self.severity.value
        loc = self.location()
        prefix = f"{loc}: " if loc else ""
        return f"{prefix}{sev} {self.code} [{self.name}] {self.message}"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "message": self.message,
        }
        for key in ("path", "line", "column", "pointer", "hint"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


    def to_problem(self, prefix: str = "") -> dict[str, object]:
        """The entry of an ``errors`` list of a problem-details document (RFC 9457,
        ``application/problem+json``): ``pointer`` (``prefix`` + the JSON pointer, ``""``
        for the whole record), ``code``, ``name``, ``detail`` and ``hint`` when there is one."""
        out: dict[str, object] = {"pointer": prefix + (self.pointer or ""), "code": self.code, "name": self.name,
                                  "detail": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out

    def to_record(self) -> dict[str, object]:
        """The entry of ``problems`` of a batch row's JSON line: ``pointer`` (``""`` for
        the whole row), ``code``, ``name``, ``message`` and ``hint`` when there is one."""
        out: dict[str, object] = {"pointer": self.pointer or "", "code": self.code, "name": self.name,
                                  "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out

    def patient_line(self) -> str:
        """The one-line form of a patient-input problem:
        ``/pointer: CODE [name] message (hint)`` (``(record)`` for the whole record)."""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.pointer or '(record)'}: {self.code} [{self.name}] {self.message}{hint}"


def problem_details(status: int, title: str, errors: Sequence[dict[str, object]]) -> dict[str, object]:
    """A problem-details document (RFC 9457): ``type`` about:blank, ``title``, the HTTP
    ``status`` and ``errors`` (entries as :meth:`Diagnostic.to_problem` makes them)."""
    return {"type": "about:blank", "title": title, "status": status, "errors": list(errors)}


def count_summary(diags: Iterable[Diagnostic]) -> str:
    """``N errors, M warnings`` (singular for one)."""
    errors = warnings = 0
    for d in diags:
        errors += d.severity is Severity.ERROR
        warnings += d.severity is Severity.WARNING
    return f"{errors} error{'' if errors == 1 else 's'}, {warnings} warning{'' if warnings == 1 else 's'}"


def format_diagnostic(d: Diagnostic) -> str:
    """Render a diagnostic with its source line, a caret and the hint."""
    lines = [d.headline()]
    if d.source_line is not None and d.line is not None:
        gutter = str(d.line)
        text = d.source_line.rstrip("\n").expandtabs(1)
        lines.append(f"  {gutter:>4} | {text}")
        col = d.column or 1
        end = d.end_column if d.end_column and d.end_column > col else col + 1
        end = min(end, max(len(text) + 1, col + 1))
        lines.append(f"  {'':>4} | {' ' * (col - 1)}{'^' * (end - col)}")
    if d.hint:
        lines.append(f"  hint: {d.hint}")
    return "\n".join(lines)


def sort_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sort by file, position and code; drop exact duplicates."""
    seen: set[tuple[object, ...]] = set()
    unique: list[Diagnostic] = []
    for d in diags:
        key = (d.code, d.path, d.line, d.column, d.pointer, d.message)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return sorted(
        unique,
        key=lambda d: (d.path or "", d.line or 0, d.column or 0, d.pointer or "", d.code, d.message),
    )


def has_errors(diags: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diags)


def did_you_mean(word: str, candidates: Sequence[str] | Iterable[str]) -> str | None:
    """A ``did you mean 'x'?`` hint, or None when nothing is close.

    Close spellings first (``limt`` -> ``limit``), then a shared beginning
    (``citation`` -> ``cite``, ``mycn_amplifed`` -> ``mycn_status``).
    """
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    if word.lower() in lowered:
        return f"did you mean '{lowered[word.lower()]}'?"
    if len(word) > 3 * max((len(c) for c in pool), default=0):
        # no misspelling: three times a candidate's length, no ratio can reach 0.6; and
        # difflib's time grows with the square of it (a 300 KB value in a patient took 2 s)
        return None
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.75)
    if not close:
        def prefix(c: str) -> int:
            n = 0
            for a, b in zip(word.lower(), c.lower()):
                if a != b:
                    break
                n += 1
            return n

        scored = [(prefix(c), difflib.SequenceMatcher(None, word, c).ratio(), c) for c in pool]
        scored = [t for t in scored if t[0] >= 3 and t[0] >= 0.4 * len(t[2])]
        if scored:
            close = [max(scored)[2]]
    if not close:
        close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return None


@dataclass
class DiagnosticSink:
    """Collects diagnostics during one stage (mutable on purpose: stages append)."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(self, d: Diagnostic) -> None:
        self.items.append(d)

    def extend(self, ds: Iterable[Diagnostic]) -> None:
        self.items.extend(ds)

    @property
    def has_errors(self) -> bool:
        return has_errors(self.items)
