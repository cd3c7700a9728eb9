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

__all__ = ["DERIVED_TAG", "FhirMapping", "MappedFacts", "evaluate_record", "load_mapping", "map_resources",
           "outcome_text"]

#: The ``meta.tag`` system of the resources nbrules writes back (:mod:`nbrules.fhir_out`);
#: the tag's code is the output (e.g. ``inrgss_stage``).  A resource with this tag is a
#: result nbrules derived, never a finding: reading it back, it is not taken as a given
#: fact (the findings derive it again) but kept in :attr:`MappedFacts.recorded`.
DERIVED_TAG = "http://nbrules.dev/fhir/CodeSystem/derived"

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
    #: Staging-system codes (Observation.code of a stage Observation, Condition.stage.type)
    #: -> the stage fact, e.g. NCIt C133427 (INRGSS) -> the INRGSS stage fact.
    stage_types: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: Outputs written back as FHIR (``results``): output -> ``{"as": "stage"|"risk", "profile": url}``.
    results: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def stage_code(self, fact: str, value: str) -> tuple[str, str] | None:
        """The (system, code) of a stage value, e.g. NCIt C133431 for MS."""
        return self.stage_codes.get(fact, {}).get(value)


_KINDS = {"coded": ("enum",), "list": ("set",), "boolean": ("boolean",), "integer": ("integer",),
          "number": ("number", "integer")}


def load_mapping(path: Path | None = None, facts: Mapping[str, FactSpec] | None = None,
                 outputs: Iterable[str] | None = None) -> FhirMapping:
    """Read and check a mapping file (default: the bundled ``fhir-r4.yaml``) against the
    input facts of the package in force (``facts``; default: the bundled vocabulary), and
    its ``results`` against the outputs of the decisions in force (``outputs``; not
    checked when None, nor for the bundled mapping, whose results for outputs no
    decision in force sets are then never written).

    Raises :class:`MappingError` with every problem located at ``path:line:col``:
    the YAML, the format (``schemas/fhir-mapping.schema.json``), and the meaning
    (facts nbrules knows, values in their value sets, kinds that fit their types).
    """
    given = path is not None
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
        if not problems and outputs is not None and given:
            # a mapping named by the user is checked; the bundled one, used with another
            # package, simply has nothing to write for outputs no decision in force sets
            known = set(outputs)
            problems += [loaded.diag("NB301", f"unknown output '{name}' in results", join_pointer("/results", name),
                                     key=True, hint=did_you_mean(name, sorted(known)) or "results name outputs of the decisions in force")
                         for name in loaded.data.get("results", {}) if name not in known]
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
    for fact, codes in data.get("stage_types", {}).items():
        at = join_pointer("/stage_types", fact)
        if fact_ok(fact, at) and fact not in data.get("stages", {}):
            out.append(loaded.diag("NB301", f"stage type for {fact}, which has no value codes under 'stages'", at,
                                   key=True, hint="add its stage values under 'stages'"))
        for i, c in enumerate(codes):
            system_ok(c, f"{at}/{i}")
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
    stage_types = {key(c): fact for fact, codes in data.get("stage_types", {}).items() for c in codes}
    return FhirMapping(frozenset(key(c) for c in data["diagnosis"]["codes"]), stages, stage_codes, observations, sha256,
                       data["diagnosis"].get("age_fact"), stage_types, dict(data.get("results", {})))


@dataclass
class MappedFacts:
    """Facts read from the resources, where each came from, and what could not be used.

    ``diagnosis`` is the reference of the Condition taken as the diagnosis (None: the
    record has no usable diagnosis in the mapping); ``age`` says how the age at
    diagnosis was obtained (``{"days", "from", "element", "method", "fallback"}``);
    ``failed`` lists the prefetch entries that are OperationOutcomes (a failed fetch,
    with its diagnostics), ``incomplete`` the Bundles with a ``next`` link (later pages
    not read), a ``total`` above the entries delivered or a ``total`` that is not a
    non-negative integer.  ``partial``: list facts
    (e.g. metastatic sites) left unknown because the search that holds them was read
    incompletely (fact -> why).  ``recorded``: results nbrules wrote back earlier and
    found in the record (tagged :data:`DERIVED_TAG`), output -> ``[{"ref", "value"}]``
    (``value`` None when the mapping cannot read it); they are not facts.
    """

    facts: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)
    not_used: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    diagnosis: str | None = None
    diagnosis_status: dict[str, str] = field(default_factory=dict)
    age: dict[str, Any] | None = None
    failed: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    partial: dict[str, str] = field(default_factory=dict)
    recorded: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


#: Condition.verificationStatus codes that make a Condition the diagnosis; absent also
#: counts (the element is optional in FHIR R4).  entered-in-error and refuted are never
#: used; unconfirmed, provisional and differential are not used either: a classification
#: needs a confirmed diagnosis (the reason is listed).
CONFIRMED = ("confirmed",)
#: Observation.status values that are results (FHIR R4 observation-status).
USABLE_STATUS = ("final", "amended", "corrected")
#: UCUM units of an Age and their length in days; months and years are averages (a
#: Gregorian year of 365.25 days), so an age given in months is approximate to a day.
AGE_UNITS = {"d": 1.0, "wk": 7.0, "mo": 365.25 / 12, "a": 365.25}
UCUM = "http://unitsofmeasure.org"


def _resources(prefetch: Mapping[str, Any], out: MappedFacts, origin: dict[int, str],
               partial_keys: set[str]) -> Iterable[Mapping[str, Any]]:
    """The resources of the prefetch; ``origin`` receives the key each came from, and
    ``partial_keys`` the keys whose search was not read whole."""
    for key, value in prefetch.items():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "OperationOutcome":
            out.failed.append(f"{key}: {outcome_text(value)}")
        elif value.get("resourceType") == "Bundle":
            links: list[Any] = value["link"] if isinstance(value.get("link"), list) else []
            entries: list[Any] = value["entry"] if isinstance(value.get("entry"), list) else []
            matches = sum(1 for e in entries if not isinstance(e, dict) or not isinstance(e.get("search"), dict)
                          or e["search"].get("mode", "match") == "match")
            total = value.get("total")
            if any(isinstance(link, dict) and link.get("relation") == "next" for link in links):
                out.incomplete.append(f"{key}: incomplete: the Bundle has a 'next' link; later pages were not read")
                partial_keys.add(key)
            elif total is not None and not (isinstance(total, int) and not isinstance(total, bool) and total >= 0):
                # a total that is no count cannot say the search was read whole
                out.incomplete.append(f"{key}: incomplete: the Bundle's total {str(total)[:40]!r} is not a count of "
                                      f"matches, so it cannot say the {matches} entries held are all")
                partial_keys.add(key)
            elif isinstance(total, int) and total > matches:
                out.incomplete.append(f"{key}: incomplete: the Bundle counts {total} matches but holds {matches}")
                partial_keys.add(key)
            for entry in entries:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict) and res.get("resourceType") == "OperationOutcome":
                    out.not_used.append(f"{key}: the server's OperationOutcome says {outcome_text(res)}")
                elif isinstance(res, dict):
                    origin[id(res)] = key
                    yield res
        else:
            origin[id(value)] = key
            yield value


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def outcome_text(res: Mapping[str, Any]) -> str:
    """The issues of an OperationOutcome in words: ``severity code: diagnostics; ...``
    (``details.text`` when an issue has no ``diagnostics``)."""
    issues: list[Any] = res["issue"] if isinstance(res.get("issue"), list) else []
    said = [" ".join(str(i.get(k)) for k in ("severity", "code") if i.get(k)) + (
        f": {i['diagnostics']}" if i.get("diagnostics") else f": {_obj(i.get('details')).get('text')}"
        if _obj(i.get("details")).get("text") else "") for i in issues if isinstance(i, dict)]
    return "; ".join(s for s in said if s) or "an OperationOutcome with no issue"


def _ref(res: Mapping[str, Any]) -> str:
    return f"{res.get('resourceType', '?')}/{res.get('id', '?')}"


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    return [(str(c.get("system", "")), str(c.get("code", ""))) for c in concept.get("coding", []) or []
            if isinstance(c, dict)]


def _status(concept: Any) -> str | None:
    """The code of a Condition's clinicalStatus / verificationStatus (None: absent)."""
    codes = [code for _, code in _codings(concept)]
    return codes[0] if codes else None


def _date(value: Any) -> datetime.date | None:
    """The calendar date of a FHIR date or dateTime as written (a time zone does not move
    it: the date is the one of the place where it was recorded); None for a partial date
    (year or year-month), which cannot give an age in days."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return datetime.date.fromisoformat(value[:10])
    except ValueError:
        return None


def _age_days(q: Any) -> tuple[float | None, str]:
    """An Age quantity in days, and how it was read; None with the reason if it cannot be."""
    if not isinstance(q, dict):
        return None, "not an Age"
    value, unit = q.get("value"), q.get("code")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None, f"Age value {value!r} is not a number of at least 0"
    if q.get("system") not in (None, UCUM) or unit not in AGE_UNITS:
        return None, f"Age unit {q.get('system')}|{unit} is not a UCUM age unit (d, wk, mo, a)"
    return value * AGE_UNITS[unit], f"{value} {unit}"


def _subject_is(res: Mapping[str, Any], patient: str | None) -> str | None:
    """None if the resource is about the patient; otherwise why it is not used."""
    subject = res.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(ref, str):
        return "no subject reference, so it cannot be attributed to the patient"
    if patient is None:
        return None
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] == patient:
        return None
    return f"its subject is {ref}, not Patient/{patient}"


def _dedupe(resources: Iterable[Mapping[str, Any]], out: MappedFacts) -> list[Mapping[str, Any]]:
    """One copy of each resource (by type and id): identical copies are merged; of
    differing copies the later version (meta.versionId, then meta.lastUpdated) is kept and
    the superseded one listed; copies that cannot be ordered are both left out."""
    kept: dict[str, list[Mapping[str, Any]]] = {}
    order: list[str] = []
    anon: list[Mapping[str, Any]] = []
    for res in resources:
        if not isinstance(res.get("id"), str):
            anon.append(res)
            continue
        key = _ref(res)
        if key not in kept:
            order.append(key)
        copies = kept.setdefault(key, [])
        if res not in copies:
            copies.append(res)
    result: list[Mapping[str, Any]] = []
    for key in order:
        copies = kept[key]
        if len(copies) == 1:
            result.append(copies[0])
            continue
        order_keys = _versions(copies)
        if order_keys is None:
            out.not_used.append(f"{key}: {len(copies)} differing copies with no meta.versionId or meta.lastUpdated "
                                "to tell which is current; none is used")
            continue
        latest = max(range(len(copies)), key=lambda i: order_keys[i][0])
        for i in range(len(copies)):
            if i != latest:
                out.not_used.append(f"{key}: version {order_keys[i][1]} is superseded by version {order_keys[latest][1]}")
        result.append(copies[latest])
    return result + anon


def _versions(copies: list[Mapping[str, Any]]) -> list[tuple[Any, str]] | None:
    """Sort keys of differing copies of one resource: all numeric meta.versionId, else
    all meta.lastUpdated instants; None when they cannot be ordered (or tie)."""
    metas: list[Mapping[str, Any]] = [_obj(c.get("meta")) for c in copies]
    vids = [str(m.get("versionId")) for m in metas]
    if all(isinstance(m.get("versionId"), str) and v.isdigit() for m, v in zip(metas, vids)) \
            and len({int(v) for v in vids}) == len(vids):
        return [(int(v), v) for v in vids]
    stamps: list[tuple[Any, str]] = []
    for m in metas:
        raw = m.get("lastUpdated")
        try:
            at = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")) if isinstance(raw, str) else None
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            return None
        stamps.append((at, f"of {raw}"))
    return stamps if len({s for s, _ in stamps}) == len(stamps) else None


def _onset(dx: Mapping[str, Any], birth: datetime.date | None,
           birth_raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The age at diagnosis of a diagnosis Condition: ``{"days", "from", "element",
    "method", "fallback"}``, or None with why it is unknown.

    In order: ``onsetAge`` (UCUM d, wk, mo, a; months and years at their average length,
    rounded down to whole days); ``onsetDateTime`` or ``onsetPeriod.start`` minus
    ``Patient.birthDate`` (full dates only); ``onsetRange`` when its low and high give the
    same whole day; ``onsetString`` is free text and gives nothing.  Only when the
    Condition has no ``onset[x]`` at all is ``recordedDate`` used, as a named fallback
    (``"fallback": true``): the day the diagnosis was recorded, which may be later than
    the onset.  An ``abatement`` before the onset makes the Condition contradictory: no age.
    """
    ref = _ref(dx)

    def from_date(element: str, raw: Any, fallback: bool, method: str) -> tuple[dict[str, Any] | None, str | None]:
        day = _date(raw)
        if day is None:
            return None, f"{element} {raw!r} is not a full date, so the age at diagnosis in days is unknown"
        if birth is None:
            said = "is missing" if birth_raw is None else f"{birth_raw!r} is not a full date"
            return None, (f"{element} is given but Patient.birthDate {said}, so the age "
                          "at diagnosis in days is unknown")
        if day < birth:
            return None, f"{element} {raw} is before the birth date {birth.isoformat()}; not used"
        return {"days": (day - birth).days, "from": ref, "element": element, "method": method,
                "fallback": fallback}, None

    age: dict[str, Any] | None
    if "onsetAge" in dx:
        days, how = _age_days(dx["onsetAge"])
        if days is None:
            return None, f"onsetAge: {how}"
        age = {"days": int(days), "from": ref, "element": "onsetAge", "fallback": False,
               "method": f"onsetAge {how}" + ("" if how.endswith(" d") else f" = {int(days)} days (rounded down)")}
    elif "onsetDateTime" in dx:
        age, problem = from_date("onsetDateTime", dx["onsetDateTime"], False,
                                 "onsetDateTime minus Patient.birthDate")
    elif "onsetPeriod" in dx:
        start = dx["onsetPeriod"].get("start") if isinstance(dx["onsetPeriod"], dict) else None
        age, problem = from_date("onsetPeriod.start", start, False, "onsetPeriod.start minus Patient.birthDate")
    elif "onsetRange" in dx:
        rng = dx["onsetRange"] if isinstance(dx["onsetRange"], dict) else {}
        low, why_low = _age_days(rng.get("low"))
        high, why_high = _age_days(rng.get("high"))
        if low is None or high is None or int(low) != int(high):
            shown = f"{why_low} to {why_high}" if low is not None and high is not None else (why_low if low is None else why_high)
            return None, f"onsetRange ({shown}) does not give one age in days"
        age = {"days": int(low), "from": ref, "element": "onsetRange", "fallback": False,
               "method": f"onsetRange {why_low} to {why_high}"}
    elif "onsetString" in dx:
        return None, f"onsetString {str(dx['onsetString'])[:60]!r} is free text, so the age at diagnosis is unknown"
    elif "recordedDate" in dx:
        age, problem = from_date("recordedDate", dx["recordedDate"], True,
                                 "recordedDate minus Patient.birthDate (fallback: the Condition has no onset[x]; "
                                 "the day it was recorded may be later than the onset)")
    else:
        return None, "no onset[x] and no recordedDate, so the age at diagnosis is unknown"
    if age is None:
        return None, problem
    abated = _abatement_days(dx, birth)
    if abated is not None and abated < age["days"]:
        return None, f"its abatement is before its onset ({abated} < {age['days']} days of age); the age is not used"
    return age, None


def _abatement_days(dx: Mapping[str, Any], birth: datetime.date | None) -> int | None:
    if "abatementAge" in dx:
        days, _ = _age_days(dx["abatementAge"])
        return None if days is None else int(days)
    raw = dx.get("abatementDateTime")
    if raw is None and isinstance(dx.get("abatementPeriod"), dict):
        raw = dx["abatementPeriod"].get("start")
    day = _date(raw)
    return (day - birth).days if day is not None and birth is not None else None


class _Collector:
    def __init__(self, out: MappedFacts) -> None:
        self.out = out
        self.values: dict[str, list[tuple[Any, str]]] = {}
        #: list facts whose items come from a search not read whole: fact -> the keys
        self.partial: dict[str, set[str]] = {}

    def put(self, fact: str, value: Any, ref: str) -> None:
        self.values.setdefault(fact, []).append((value, ref))

    def finish(self, lists: set[str]) -> MappedFacts:
        for fact in sorted(self.partial):
            if fact in lists:
                keys = ", ".join(sorted(self.partial[fact]))
                self.out.partial[fact] = (f"read from {keys}, which was not read whole: a page not read may hold "
                                          "more items, so the list is unknown")
        for fact, found in self.values.items():
            refs = [r for _, r in found]
            if fact in self.out.partial:
                continue
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


def map_resources(prefetch: Mapping[str, Any], mapping: FhirMapping, patient_id: str | None = None,
                  incomplete: Iterable[str] = ()) -> MappedFacts:
    """Patient facts from the resources of a CDS Hooks prefetch (or any mapping of names
    to resources and Bundles).

    ``patient_id`` is the request's ``context.patientId``; without it, the id of the
    Patient resource.  Only resources about that patient are used; a Condition is the
    diagnosis only when its code is a diagnosis code of the mapping and its
    ``verificationStatus`` is confirmed or absent (see :data:`CONFIRMED`); Observations
    only with a status in :data:`USABLE_STATUS` and no ``dataAbsentReason``.  Every
    resource not used is listed in ``not_used`` with the reason.

    ``incomplete``: prefetch keys known to be read incompletely elsewhere (a fetch that
    stopped); with the Bundles of the prefetch that say so themselves (a ``next`` link, a
    ``total`` above the entries), a list fact (kind ``list``, e.g. metastatic sites) read
    from such a key is left unknown (:attr:`MappedFacts.partial`): an unread page could
    add an item.  Resources tagged :data:`DERIVED_TAG` (results nbrules wrote back) are
    not facts; they go to :attr:`MappedFacts.recorded`.
    """
    out = MappedFacts()
    col = _Collector(out)
    origin: dict[int, str] = {}
    partial_keys = set(incomplete)
    resources = _dedupe(_resources(prefetch, out, origin, partial_keys), out)
    if patient_id is None:
        patient_id = next((str(r["id"]) for r in resources if r.get("resourceType") == "Patient"
                           and isinstance(r.get("id"), str)), None)
    birth: datetime.date | None = None
    birth_raw: Any = None
    diagnoses: list[tuple[dict[str, Any] | None, str | None, Mapping[str, Any]]] = []
    observations: list[Mapping[str, Any]] = []
    lists = {fact for _, (fact, kind, _) in mapping.observations.items() if kind == "list"}
    for res in resources:
        kind = res.get("resourceType")
        if _derived(res, mapping, out, patient_id):
            continue
        if kind == "Patient":
            if patient_id is not None and res.get("id") != patient_id:
                out.not_used.append(f"{_ref(res)}: not the patient of the request (Patient/{patient_id})")
                continue
            birth_raw = res.get("birthDate")
            birth = _date(birth_raw)
            if birth is None:
                out.not_used.append(f"{_ref(res)}: no full birthDate, so age at diagnosis is unknown "
                                    "unless the Condition gives onsetAge")
        elif kind == "Condition":
            if not set(_codings(res.get("code"))) & mapping.diagnosis:
                out.not_used.append(f"{_ref(res)}: not a diagnosis in the mapping")
                continue
            why = _subject_is(res, patient_id)
            verification = _status(res.get("verificationStatus"))
            if why is None and verification is not None and verification not in CONFIRMED:
                why = (f"verificationStatus {verification}: "
                       + ("never used" if verification in ("entered-in-error", "refuted")
                          else "only a confirmed diagnosis is used"))
            if why is not None:
                out.not_used.append(f"{_ref(res)}: {why}")
                continue
            diagnoses.append((None, None, res))
        elif kind == "Observation":
            observations.append(res)
        else:
            out.not_used.append(f"{_ref(res)}: resource type {kind} is not used")
    diagnoses = [(*_onset(dx, birth, birth_raw), dx) for _, _, dx in diagnoses]
    if diagnoses:
        diagnoses.sort(key=lambda d: (d[0] is None, d[0]["days"] if d[0] else 0))
        age, problem, dx = diagnoses[0]
        out.diagnosis = _ref(dx)
        out.diagnosis_status = {"verificationStatus": _status(dx.get("verificationStatus")) or "not given",
                                "clinicalStatus": _status(dx.get("clinicalStatus")) or "not given"}
        for _, _, other in diagnoses[1:]:
            out.not_used.append(f"{_ref(other)}: another Condition of the diagnosis; the one with the earliest "
                                "onset is used")
        if mapping.age_fact is not None:
            if age is not None:
                out.age = age
                col.put(mapping.age_fact, age["days"], f"{_ref(dx)}.{age['element']}")
            else:
                out.not_used.append(f"{_ref(dx)}: {problem}")
        _condition_stages(dx, mapping, col, {_ref(o) for o in observations})
    for obs in observations:
        fact = _observation(obs, mapping, col, patient_id)
        if fact is not None and origin.get(id(obs)) in partial_keys:
            col.partial.setdefault(fact, set()).add(origin[id(obs)])
    return col.finish(lists)


def _derived(res: Mapping[str, Any], mapping: FhirMapping, out: MappedFacts, patient_id: str | None) -> bool:
    """Whether ``res`` is a result nbrules wrote back (tagged :data:`DERIVED_TAG` with an
    output of ``mapping.results``); if so it is kept in ``out.recorded`` and listed as not
    used (a derived result is not a finding)."""
    tags: list[Any] = _obj(res.get("meta")).get("tag") or []
    output = next((str(t.get("code")) for t in tags if isinstance(t, dict) and t.get("system") == DERIVED_TAG
                   and str(t.get("code")) in mapping.results), None)
    if output is None or _subject_is(res, patient_id) is not None:
        return False
    concept = res.get("valueCodeableConcept")
    if res.get("resourceType") == "RiskAssessment":
        preds: list[Any] = res["prediction"] if isinstance(res.get("prediction"), list) else []
        concept = _obj(preds[0] if preds else None).get("outcome")
    value: str | None = None
    table = mapping.stages.get(output)
    if table is not None:
        value = next((table[c] for c in _codings(concept) if c in table), None)
    else:
        prefix = "http://nbrules.dev/fhir/CodeSystem/" + output
        value = next((code for system, code in _codings(concept) if system == prefix), None)
    out.recorded.setdefault(output, []).append({"ref": _ref(res), "value": value,
                                                "coding": sorted(set(_codings(concept)))})
    out.not_used.append(f"{_ref(res)}: a result nbrules wrote back ({output}); derived again from the findings, "
                        "not used as a given fact")
    return True


def _condition_stages(dx: Mapping[str, Any], mapping: FhirMapping, col: _Collector, present: set[str]) -> None:
    """Condition.stage: the summary read against the stage tables; a ``type`` (the staging
    system, e.g. NCIt C133427 for INRGSS) must name the same stage fact; ``assessment``
    references must be among the prefetched Observations (which are read on their own)."""
    for stage in dx.get("stage", []) or []:
        if not isinstance(stage, dict):
            continue
        codes = _codings(stage.get("summary"))
        typed = {mapping.stage_types[c] for c in _codings(stage.get("type")) if c in mapping.stage_types}
        matched = False
        for fact, table in mapping.stages.items():
            for c in codes:
                if c in table:
                    matched = True
                    if typed and fact not in typed:
                        col.out.not_used.append(f"{_ref(dx)}: stage {c[0]}|{c[1]} is a {fact} value but the stage "
                                                f"type says {', '.join(sorted(typed))}")
                    else:
                        col.put(fact, table[c], f"{_ref(dx)}.stage")
        if codes and not matched:
            col.out.not_used.append(f"{_ref(dx)}: stage {codes[0][0]}|{codes[0][1]} is not in the mapping")
        for a in stage.get("assessment", []) or []:
            ref = a.get("reference") if isinstance(a, dict) else None
            target = "/".join(ref.split("/_history/")[0].rstrip("/").split("/")[-2:]) if isinstance(ref, str) else None
            if target is not None and target not in present:
                col.out.not_used.append(f"{_ref(dx)}: stage.assessment {ref} is not in the prefetch, so it was not read")


def _observation(obs: Mapping[str, Any], mapping: FhirMapping, col: _Collector, patient_id: str | None) -> str | None:
    """Read one Observation; the fact it gave a value to (None: not used)."""
    ref = _ref(obs)
    codes = _codings(obs.get("code"))
    stage_fact = next((mapping.stage_types[c] for c in codes if c in mapping.stage_types), None)
    target = next((mapping.observations[c] for c in codes if c in mapping.observations), None)
    if target is None and stage_fact is None:
        shown = f"{codes[0][0]}|{codes[0][1]}" if codes else "no code"
        col.out.not_used.append(f"{ref}: code {shown} is not in the mapping")
        return None
    why = _subject_is(obs, patient_id)
    if why is None and obs.get("status") not in USABLE_STATUS:
        why = f"status {obs.get('status')} (only final, amended or corrected are used)"
    if why is None and obs.get("dataAbsentReason") is not None:
        absent = obs["dataAbsentReason"]
        shown = (absent.get("text") or ", ".join(c for _, c in _codings(absent))) if isinstance(absent, dict) else absent
        why = f"dataAbsentReason {shown}: the value is absent"
    if why is not None:
        col.out.not_used.append(f"{ref}: {why}")
        return None
    if stage_fact is not None:
        table = mapping.stages.get(stage_fact, {})
        values = _codings(obs.get("valueCodeableConcept"))
        hit = next((table[c] for c in values if c in table), None)
        if hit is None:
            shown = f"{values[0][0]}|{values[0][1]}" if values else "no valueCodeableConcept"
            col.out.not_used.append(f"{ref}: {stage_fact} value {shown} is not in the mapping")
        else:
            col.put(stage_fact, hit, ref)
            return stage_fact
        return None
    assert target is not None
    fact, kind, values_map = target
    value, problem = _value(obs, kind, values_map)
    if problem:
        col.out.not_used.append(f"{ref}: {problem}")
        return None
    col.put(fact, value, ref)
    return fact


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


def evaluate_record(engine: Any, mapped: MappedFacts) -> Any:
    """Evaluate the facts read (``engine``: an :class:`nbrules.protocols.Evaluator`; returns
    its :class:`nbrules.results.Result`).  A stage nbrules wrote back
    (:attr:`MappedFacts.recorded`) is not an input while the findings derive the stage:
    only when the first evaluation leaves the stage undetermined, and the record's copies
    of it agree, is it used as given (then ``mapped.facts`` / ``sources`` name it).
    Raises :class:`nbrules.errors.PatientInputError` as ``engine.evaluate`` does."""
    result = engine.evaluate(mapped.facts)
    fallback: dict[str, Any] = {}
    for output, copies in mapped.recorded.items():
        values = {c["value"] for c in copies}
        if output in mapped.facts or output not in result.indeterminate or len(values) != 1 or None in values:
            continue
        fallback[output] = values.pop()
    if not fallback:
        return result
    for output, value in fallback.items():
        refs = [c["ref"] for c in mapped.recorded[output]]
        mapped.facts[output] = value
        mapped.sources[output] = refs
        mapped.not_used = [n for n in mapped.not_used if n.split(": ", 1)[0] not in refs]
    return engine.evaluate(mapped.facts)
