"""FHIR R4 resources to patient facts, driven by ``mappings/fhir-r4.yaml``.

Used by the CDS Hooks service.  Which codes mean which fact lives in the mapping
file, not here.  Nothing is guessed: a fact no resource supplies stays unknown; two
resources giving different values for one fact leave it unknown and say so; a
resource or code the mapping does not know is listed as not used, with the reason.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .diagnostics import Diagnostic, did_you_mean
from .errors import MappingError
from .loader import LoadedFile, join_pointer, load_source
from .resources import mappings_dir
from .sources import RuleSource
from .validator import SCHEMA_CODES, schema_problems, schema_validator
from .vocabulary import FactSpec, input_facts

__all__ = ["FhirMapping", "MappedFacts", "load_mapping", "map_resources"]

USABLE_STATUS = ("final", "amended", "corrected")


@dataclass(frozen=True)
class FhirMapping:
    """The parsed mapping: code lookups for the diagnosis, stages and observations."""

    diagnosis: frozenset[tuple[str, str]]
    stages: Mapping[str, Mapping[tuple[str, str], str]]  # fact -> (system, code) -> value
    stage_codes: Mapping[str, Mapping[str, tuple[str, str]]]  # fact -> value -> (system, code)
    observations: Mapping[tuple[str, str], tuple[str, str, Mapping[tuple[str, str], str]]]  # code -> fact, kind, values
    sha256: str
    #: The fact that receives the age at diagnosis in days (``diagnosis.age_fact``); None: not computed.
    age_fact: str | None = None

    def stage_code(self, fact: str, value: str) -> tuple[str, str] | None:
        """The (system, code) of a stage value, e.g. NCIt C133431 for MS."""
        return self.stage_codes.get(fact, {}).get(value)


_KINDS = {"coded": ("enum",), "list": ("set",), "boolean": ("boolean",), "integer": ("integer",),
          "number": ("number", "integer")}


def load_mapping(path: Path | None = None, facts: Mapping[str, FactSpec] | None = None) -> FhirMapping:
    """Read and check a mapping file (default: the bundled ``fhir-r4.yaml``) against the
    input facts of the package in force (``facts``; default: the bundled vocabulary).

    Raises :class:`MappingError` with every problem located at ``path:line:col``:
    the YAML, the format (``schemas/fhir-mapping.schema.json``), and the meaning
    (facts nbrules knows, values in their value sets, kinds that fit their types).
    """
    path = path or mappings_dir() / "fhir-r4.yaml"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read the FHIR mapping {path}: {exc.strerror or exc}") from exc
    loaded = load_source(RuleSource(name=path.name, display=str(path), path=path, data=data))
    problems = list(loaded.diagnostics)
    if loaded.ok:
        problems += [loaded.diag(SCHEMA_CODES[p.kind], p.message, p.pointer, key=p.on_key, hint=p.hint)
                     for p in schema_problems(schema_validator("fhir-mapping.schema.json"), loaded.data)]
        if not problems:
            problems += _meaning_problems(loaded, input_facts() if facts is None else facts)
    if problems:
        raise MappingError(f"the FHIR mapping {path} has {len(problems)} problem(s)", problems)
    return _build(loaded.data, loaded.source.sha256)


def _meaning_problems(loaded: LoadedFile, facts: Mapping[str, FactSpec]) -> list[Diagnostic]:
    data: Mapping[str, Any] = loaded.data
    out: list[Diagnostic] = []

    def system_ok(entry: Mapping[str, Any], pointer: str) -> None:
        s = entry["system"]
        if s not in data["systems"] and ":" not in s:
            out.append(loaded.diag("NB204", f"expected a system named in 'systems' or a URI; found '{s}'",
                                   pointer + "/system", hint=did_you_mean(s, list(data["systems"]))))

    def values_ok(fact: str, entries: list[Mapping[str, Any]], pointer: str) -> None:
        spec = facts[fact]
        for i, e in enumerate(entries):
            system_ok(e, f"{pointer}/{i}")
            if spec.values and e["value"] not in spec.values:
                out.append(loaded.diag("NB302", f"'{e['value']}' is not a value of {fact} (expected {spec.describe()})",
                                       f"{pointer}/{i}/value", hint=did_you_mean(e["value"], list(spec.values))))

    def fact_ok(fact: str, pointer: str) -> bool:
        if fact in facts:
            return True
        out.append(loaded.diag("NB301", f"unknown fact '{fact}'", pointer, key=True,
                               hint=did_you_mean(fact, list(facts)) or "facts are those of facts.yaml in the rules directory"))
        return False

    for i, c in enumerate(data["diagnosis"]["codes"]):
        system_ok(c, f"/diagnosis/codes/{i}")
    age = data["diagnosis"].get("age_fact")
    if age is not None and fact_ok(age, "/diagnosis/age_fact") and facts[age].kind != "integer":
        out.append(loaded.diag("NB303", f"age_fact '{age}' is {facts[age].describe()}; the age in days is a whole number",
                               "/diagnosis/age_fact"))
    for fact, entries in data.get("stages", {}).items():
        if fact_ok(fact, join_pointer("/stages", fact)):
            values_ok(fact, entries, join_pointer("/stages", fact))
    seen: dict[tuple[str, str], str] = {}
    for fact, spec in data["observations"].items():
        at = join_pointer("/observations", fact)
        if not fact_ok(fact, at):
            continue
        if facts[fact].kind not in _KINDS[spec["kind"]]:
            fitting = [k for k, kinds in _KINDS.items() if facts[fact].kind in kinds]
            out.append(loaded.diag("NB303", f"kind '{spec['kind']}' does not fit {fact}, which is {facts[fact].describe()}",
                                   at + "/kind", hint=f"use kind: {' or '.join(fitting)}"))
        if spec["kind"] in ("coded", "list"):
            if "values" not in spec:
                out.append(loaded.diag("NB202", f"missing required key 'values' (kind '{spec['kind']}' needs its codes)",
                                       at, key=True))
            else:
                values_ok(fact, spec["values"], at + "/values")
        for i, c in enumerate(spec["codes"]):
            system_ok(c, f"{at}/codes/{i}")
            code = (data["systems"].get(c["system"], c["system"]), str(c["code"]))
            if code in seen and seen[code] != fact:
                out.append(loaded.diag("NB207", f"code {code[0]}|{code[1]} already gives {seen[code]}",
                                       f"{at}/codes/{i}", hint="one code, one fact"))
            seen.setdefault(code, fact)
    return out


def _build(data: Mapping[str, Any], sha256: str) -> FhirMapping:
    systems: Mapping[str, str] = data["systems"]

    def key(entry: Mapping[str, Any]) -> tuple[str, str]:
        return systems.get(entry["system"], entry["system"]), str(entry["code"])

    stages: dict[str, dict[tuple[str, str], str]] = {}
    stage_codes: dict[str, dict[str, tuple[str, str]]] = {}
    for fact, entries in data.get("stages", {}).items():
        for e in entries:
            stages.setdefault(fact, {})[key(e)] = str(e["value"])
            stage_codes.setdefault(fact, {}).setdefault(str(e["value"]), key(e))
    observations: dict[tuple[str, str], tuple[str, str, dict[tuple[str, str], str]]] = {}
    for fact, spec in data["observations"].items():
        values = {key(v): str(v["value"]) for v in spec.get("values", [])}
        for c in spec["codes"]:
            observations[key(c)] = (fact, spec["kind"], values)
    return FhirMapping(frozenset(key(c) for c in data["diagnosis"]["codes"]), stages, stage_codes, observations, sha256,
                       data["diagnosis"].get("age_fact"))


@dataclass
class MappedFacts:
    """Facts read from the resources, where each came from, and what could not be used."""

    facts: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)
    not_used: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)


def _resources(prefetch: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for value in prefetch.values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry", []) or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict):
                    yield res
        else:
            yield value


def _ref(res: Mapping[str, Any]) -> str:
    return f"{res.get('resourceType', '?')}/{res.get('id', '?')}"


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    return [(str(c.get("system", "")), str(c.get("code", ""))) for c in concept.get("coding", []) or []
            if isinstance(c, dict)]


def _date(value: Any) -> datetime.date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None  # a partial date (year or year-month) cannot give an age in days
    try:
        return datetime.date.fromisoformat(value[:10])
    except ValueError:
        return None


class _Collector:
    def __init__(self) -> None:
        self.out = MappedFacts()
        self.values: dict[str, list[tuple[Any, str]]] = {}

    def put(self, fact: str, value: Any, ref: str) -> None:
        self.values.setdefault(fact, []).append((value, ref))

    def finish(self, lists: set[str]) -> MappedFacts:
        for fact, found in self.values.items():
            refs = [r for _, r in found]
            if fact in lists:
                items = [v for v, _ in found if v is not None]
                if any(v is None for v, _ in found) and items:
                    self.out.conflicts[fact] = refs  # "none" and items together
                    continue
                self.out.facts[fact] = sorted(set(items))
            else:
                distinct = {repr(v) for v, _ in found}
                if len(distinct) > 1:
                    self.out.conflicts[fact] = refs
                    continue
                self.out.facts[fact] = found[0][0]
            self.out.sources[fact] = refs
        return self.out


def map_resources(prefetch: Mapping[str, Any], mapping: FhirMapping) -> MappedFacts:
    """Patient facts from the resources of a CDS Hooks prefetch."""
    col = _Collector()
    birth: datetime.date | None = None
    diagnoses: list[tuple[datetime.date | None, Mapping[str, Any]]] = []
    observations: list[Mapping[str, Any]] = []
    lists = {fact for _, (fact, kind, _) in mapping.observations.items() if kind == "list"}
    for res in _resources(prefetch):
        kind = res.get("resourceType")
        if kind == "Patient":
            birth = _date(res.get("birthDate"))
            if birth is None:
                col.out.not_used.append(f"{_ref(res)}: no full birthDate, so age at diagnosis is unknown")
        elif kind == "Condition":
            if set(_codings(res.get("code"))) & mapping.diagnosis:
                diagnoses.append((_date(res.get("onsetDateTime")) or _date(res.get("recordedDate")), res))
            else:
                col.out.not_used.append(f"{_ref(res)}: not a diagnosis in the mapping")
        elif kind == "Observation":
            observations.append(res)
        else:
            col.out.not_used.append(f"{_ref(res)}: resource type {kind} is not used")
    if diagnoses:
        diagnoses.sort(key=lambda d: (d[0] is None, d[0] or datetime.date.max))
        onset, dx = diagnoses[0]
        for _, other in diagnoses[1:]:
            col.out.not_used.append(f"{_ref(other)}: a later Condition of the diagnosis; the earliest is used")
        age = mapping.age_fact
        if age is not None and onset is not None and birth is not None and onset >= birth:
            col.put(age, (onset - birth).days, f"{_ref(dx)} and Patient.birthDate")
        elif age is not None and onset is None:
            col.out.not_used.append(f"{_ref(dx)}: no onsetDateTime or recordedDate, so age at diagnosis is unknown")
        for stage in dx.get("stage", []) or []:
            codes = _codings(stage.get("summary") if isinstance(stage, dict) else None)
            matched = False
            for fact, table in mapping.stages.items():
                for c in codes:
                    if c in table:
                        col.put(fact, table[c], _ref(dx))
                        matched = True
            if codes and not matched:
                col.out.not_used.append(f"{_ref(dx)}: stage {codes[0][0]}|{codes[0][1]} is not in the mapping")
    for obs in observations:
        ref = _ref(obs)
        codes = _codings(obs.get("code"))
        target = next((mapping.observations[c] for c in codes if c in mapping.observations), None)
        if target is None:
            shown = f"{codes[0][0]}|{codes[0][1]}" if codes else "no code"
            col.out.not_used.append(f"{ref}: code {shown} is not in the mapping")
            continue
        if obs.get("status") not in USABLE_STATUS:
            col.out.not_used.append(f"{ref}: status {obs.get('status')} (only final, amended or corrected are used)")
            continue
        fact, kind, values = target
        value, problem = _value(obs, kind, values)
        if problem:
            col.out.not_used.append(f"{ref}: {problem}")
        else:
            col.put(fact, value, ref)
    return col.finish(lists)


def _value(obs: Mapping[str, Any], kind: str, values: Mapping[tuple[str, str], str]) -> tuple[Any, str | None]:
    if kind in ("coded", "list"):
        codes = _codings(obs.get("valueCodeableConcept"))
        if kind == "list" and any(code == "none" for _, code in codes):
            return None, None  # assessed, none present
        for c in codes:
            if c in values:
                return values[c], None
        shown = f"{codes[0][0]}|{codes[0][1]}" if codes else "no valueCodeableConcept"
        return None, f"value {shown} is not in the mapping"
    if kind == "boolean":
        v = obs.get("valueBoolean")
        return (v, None) if isinstance(v, bool) else (None, "expected valueBoolean")
    raw = obs.get("valueInteger")
    if raw is None and isinstance(obs.get("valueQuantity"), dict):
        raw = obs["valueQuantity"].get("value")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None, "expected valueInteger or valueQuantity.value"
    if kind == "integer":
        if isinstance(raw, float) and not raw.is_integer():
            return None, f"expected a whole number, found {raw}"
        return int(raw), None
    return raw, None
