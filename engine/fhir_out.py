"""nbrules results written back as FHIR R4 resources.

Which outputs are written, and as what, is data: the ``results`` section of the FHIR
mapping (``mappings/fhir-r4.yaml``).  ``as: stage`` gives an Observation following the
mCODE cancer-stage profile named there (its ``code`` is the staging-system code of the
mapping's ``stage_types``, its value every code the mapping's ``stages`` reads as that
value, so the Observation is read back as the same stage); ``as: risk`` gives a ``RiskAssessment`` whose ``basis``
references the resources the decision's rules read.  Each such resource comes with a
``Provenance`` listing the source resources and the rules that fired (decision, version,
rule id, file:line, citations).  Outputs taken from the record as given, and outputs
not determined, are not written back.  Each resource written carries the ``meta.tag``
:data:`nbrules.fhir.DERIVED_TAG` (code: the output), so that reading it back it is known
as a derived result, not a finding.

Resources are identified by ``urn:uuid`` full URLs derived from the input and the
knowledge (or, for CDS Hooks, by ids made of the same uuids), so the same input gives
the same resources; ``Provenance.recorded`` (an instant FHIR requires) is the latest
time the input states (:func:`input_time`), the caller's ``recorded`` only when it
states none.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from .diagnostics import Diagnostic
from .errors import PatientInputError
from .fhir import DERIVED_TAG, FhirMapping, MappedFacts, evaluate_record, map_resources
from .patient import parse_patient_json, shown
from .protocols import Evaluator
from .results import Result

__all__ = ["WrittenBack", "input_time", "write_back", "transaction_bundle", "evaluate_fhir", "evaluate_fhir_json",
           "read_section", "unread_pages"]

#: Terminology names used in facts.yaml, as FHIR code system URIs.
SYSTEM_URIS = {"NCIt": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "SNOMED CT": "http://snomed.info/sct",
               "LOINC": "http://loinc.org"}
#: The code system of output values that have no standard code: ``<base><output>``.
NBRULES_SYSTEM = "http://nbrules.dev/fhir/CodeSystem/"
#: Code systems that are standard terminologies (the rest are local to an institution).
STANDARD_SYSTEMS = frozenset(SYSTEM_URIS.values())
_NS = uuid.UUID("0d7b3a52-5e3f-4c1a-8f0e-6a2b9c4d1e73")


@dataclass(frozen=True)
class WrittenBack:
    """One output as FHIR: the resource, its Provenance, and their ``urn:uuid`` URLs."""

    output: str
    decision: str
    full_url: str
    resource: dict[str, Any]
    provenance_url: str
    provenance: dict[str, Any]


def input_time(data: Any) -> str | None:
    """The latest instant the input states of itself: a Bundle's ``timestamp`` or a
    resource's ``meta.lastUpdated``, anywhere in ``data`` (a Bundle, a resource, or a CDS
    Hooks prefetch).  Used as ``Provenance.recorded`` (required by FHIR) so that the same
    input gives the same resources; ``None`` when the input states no time (or none
    with a time zone, as a FHIR instant has)."""
    found: list[tuple[datetime.datetime, str]] = []
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            meta = node.get("meta")
            for raw in (node.get("timestamp") if node.get("resourceType") == "Bundle" else None,
                        meta.get("lastUpdated") if isinstance(meta, dict) and "resourceType" in node else None):
                if isinstance(raw, str):
                    try:
                        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
                    except ValueError:
                        continue
                    if when.tzinfo is not None:
                        found.append((when, raw))
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return max(found)[1] if found else None


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, ':'.join(parts))}"


def _ref(source: str) -> str:
    """``Condition/dx.onsetAge`` -> ``Condition/dx`` (the resource a fact came from)."""
    type_, _, rest = source.partition("/")
    return f"{type_}/{rest.split('.', 1)[0]}"


def _concept(engine: Evaluator, output: str, value: str) -> dict[str, Any]:
    spec = engine.build.vocabulary.get(output)
    label = dict(spec.labels).get(value, value) if spec is not None else value
    codings = [{"system": SYSTEM_URIS.get(c.system, c.system), "code": c.code, **({"display": c.display} if c.display else {})}
               for c in (spec.codes_of(value) if spec is not None else ())]
    if not codings:
        codings = [{"system": NBRULES_SYSTEM + output, "code": value}]
    return {"coding": codings, "text": label}


def stage_value(engine: Evaluator, mapping: FhirMapping, output: str, value: str) -> dict[str, Any]:
    """The valueCodeableConcept of a stage Observation: every code the mapping reads as
    ``value`` of ``output`` (its ``stages`` entries), codes of standard systems first, so
    that the Observation written is read back as the same stage; the vocabulary's codes
    (``facts.yaml``) only when the mapping has none for the value."""
    codes = [c for c, v in mapping.stages.get(output, {}).items() if v == value]
    if not codes:
        return _concept(engine, output, value)
    codes.sort(key=lambda c: c[0] not in STANDARD_SYSTEMS)  # stable: the mapping's order otherwise
    spec = engine.build.vocabulary.get(output)
    return {"coding": [{"system": s, "code": c} for s, c in codes],
            "text": spec.label(value) if spec is not None else value}


def write_back(engine: Evaluator, result: Result, mapping: FhirMapping, mapped: MappedFacts, patient_id: str,
               recorded: str, ids: bool = False) -> list[WrittenBack]:
    """The determined outputs named in ``mapping.results`` as FHIR resources, in the
    mapping's order.  ``patient_id`` is the Patient's id; ``recorded`` the FHIR instant
    of ``Provenance.recorded`` (e.g. ``2026-11-29T15:00:00Z``).

    References between the resources written (``Provenance.target``, a risk's ``basis``
    naming a stage written with it) are their ``urn:uuid`` full URLs, for a transaction
    Bundle (:func:`transaction_bundle`); with ``ids``, each resource instead carries an
    ``id`` (the uuid of its full URL) and is referenced as ``ResourceType/id`` (CDS Hooks
    ``create`` actions, which are not a transaction)."""
    written: list[WrittenBack] = []
    urls: dict[str, str] = {}
    decisions = {o: d for d in engine.decisions for o in d.decides}
    patient = {"reference": f"Patient/{patient_id}"}
    for output, spec in mapping.results.items():
        value = result.outputs.get(output)
        d = decisions.get(output)
        if value is None or output in result.from_input or d is None:
            continue
        fired = [f for f in result.fired if f.decision == d.id]
        basis: list[str] = []
        for f in fired:
            for fact in f.matched:
                refs = [urls[fact]] if fact in urls else [_ref(s) for s in mapped.sources.get(fact, [])]
                basis += [r for r in refs if r not in basis]
        url = _urn(result.input_sha256, result.knowledge.sha256 if result.knowledge else "", output)
        prov_url = _urn(url, "provenance")
        kind = "Observation" if spec["as"] == "stage" else "RiskAssessment"
        ref = f"{kind}/{url.removeprefix('urn:uuid:')}" if ids else url
        title = engine.build.vocabulary[output].title if output in engine.build.vocabulary else output
        resource: dict[str, Any]
        # the tag says "derived by nbrules": read back, it is not taken as a finding (fhir.DERIVED_TAG)
        tag = {"tag": [{"system": DERIVED_TAG, "code": output, "display": f"{title}, derived by nbrules"}]}
        if spec["as"] == "stage":
            type_code = next((c for c, fact in mapping.stage_types.items() if fact == output), None)
            resource = {"resourceType": "Observation", "meta": tag, "status": "final",
                        "code": {"coding": [{"system": type_code[0], "code": type_code[1]}] if type_code else [],
                                 "text": title},
                        "subject": patient, "valueCodeableConcept": stage_value(engine, mapping, output, value)}
            if spec.get("profile"):
                resource = {"resourceType": "Observation", "meta": {"profile": [spec["profile"]], **tag},
                            **{k: v for k, v in resource.items() if k not in ("resourceType", "meta")}}
            if mapped.diagnosis:
                resource["focus"] = [{"reference": mapped.diagnosis}]
            if basis:
                resource["derivedFrom"] = [{"reference": r} for r in basis]
            if not resource["code"]["coding"]:
                del resource["code"]["coding"]
        else:
            resource = {"resourceType": "RiskAssessment", "meta": tag, "status": "final", "subject": patient,
                        "method": {"text": f"{d.title} ({d.key})"}, "code": {"text": title},
                        "prediction": [{"outcome": _concept(engine, output, value)}]}
            if mapped.diagnosis:
                resource["condition"] = {"reference": mapped.diagnosis}
            if basis:
                resource["basis"] = [{"reference": r} for r in basis]
        provenance = {
            "resourceType": "Provenance", "target": [{"reference": ref}], "recorded": recorded,
            "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                            "code": "assembler"}]},
                       "who": {"display": f"nbrules ({result.engine}); knowledge "
                                          f"{result.knowledge.sha256[:12] if result.knowledge else 'unknown'}"}}],
            "entity": [{"role": "source", "what": {"reference": r}} for r in basis]
            + [{"role": "derivation", "what": {"display": f"{f.decision}@{f.version} rule {f.rule} ({f.source}); "
                                                          f"cites {'; '.join(f.cite)}"}} for f in fired],
        }
        if ids:
            resource = {"resourceType": kind, "id": url.removeprefix("urn:uuid:"),
                        **{k: v for k, v in resource.items() if k != "resourceType"}}
            provenance = {"resourceType": "Provenance", "id": prov_url.removeprefix("urn:uuid:"),
                          **{k: v for k, v in provenance.items() if k != "resourceType"}}
        urls[output] = ref
        written.append(WrittenBack(output, d.id, url, resource, prov_url, provenance))
    return written


def value_codes(resource: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The (system, code) pairs of the value of a stage Observation or RiskAssessment."""
    concept = resource.get("valueCodeableConcept")
    if concept is None and resource.get("prediction"):
        concept = resource["prediction"][0].get("outcome")
    return {(str(c.get("system", "")), str(c.get("code", ""))) for c in (concept or {}).get("coding", [])}


def not_recorded(written: list[WrittenBack], mapped: MappedFacts) -> list[WrittenBack]:
    """``written`` less the results the record already holds with the same value (written
    back by nbrules earlier: ``mapped.recorded``, same codes as :func:`value_codes`), so
    that they are not created again.  A reference of a result kept to one left out (a
    risk's ``basis``, a Provenance entity) names the copy in the record instead."""
    kept: list[WrittenBack] = []
    moved: dict[str, str] = {}
    for w in written:
        new = value_codes(w.resource)
        same = [c["ref"] for c in mapped.recorded.get(w.output, []) if set(map(tuple, c["coding"])) == new]
        if same:
            moved[w.full_url] = same[0]
        else:
            kept.append(w)
    if not moved:
        return written
    return [WrittenBack(w.output, w.decision, w.full_url, _moved(w.resource, moved), w.provenance_url,
                        _moved(w.provenance, moved)) for w in kept]


def _moved(value: Any, moved: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: moved.get(v, v) if k == "reference" and isinstance(v, str) else _moved(v, moved)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, moved) for v in value]
    return value


def transaction_bundle(written: list[WrittenBack]) -> dict[str, Any]:
    """A FHIR transaction Bundle that creates the resources and their Provenance."""
    entries = []
    for w in written:
        for url, res in ((w.full_url, w.resource), (w.provenance_url, w.provenance)):
            entries.append({"fullUrl": url, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def evaluate_fhir(engine: Evaluator, bundle: Mapping[str, Any], mapping: FhirMapping, recorded: str,
                  patient_id: str | None = None,
                  mapped: MappedFacts | None = None) -> tuple[Result, MappedFacts, dict[str, Any]]:
    """Evaluate a patient given as a FHIR Bundle (or any resource the mapping reads).

    Returns the result, what was read (:class:`MappedFacts`: facts, sources, resources
    not used) and a transaction Bundle creating the results as FHIR (empty when the
    Bundle has no Patient id or no diagnosis; a result the record already holds with the
    same value, written back earlier, is not created again: :func:`not_recorded`).  ``mapped``: what
    ``map_resources({"bundle": bundle}, mapping, patient_id)`` gave, when already read.
    Raises :class:`~nbrules.errors.PatientInputError` when the facts read contradict each
    other.
    """
    if mapped is None:
        mapped = map_resources({"bundle": bundle}, mapping, patient_id)
    result = evaluate_record(engine, mapped)  # a stage nbrules wrote back is not an input while findings derive it
    if patient_id is None:
        patient_id = next((str(e["resource"]["id"]) for e in bundle.get("entry", []) or []
                           if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                           and e["resource"].get("resourceType") == "Patient" and isinstance(e["resource"].get("id"), str)),
                          None)
    written = not_recorded(write_back(engine, result, mapping, mapped, patient_id, recorded), mapped) \
        if patient_id is not None and mapped.diagnosis is not None else []
    return result, mapped, transaction_bundle(written)


def read_section(mapped: MappedFacts) -> dict[str, Any]:
    """What was read from the resources, as ``evaluate --fhir`` and Bulk batch rows give
    it: ``diagnosis`` (the Condition used, or None), ``diagnosisStatus``, ``age`` (how the
    age at diagnosis was obtained), ``sources`` (fact -> resources), ``notUsed`` (each
    resource set aside, with the reason), ``conflicts`` (fact -> the disagreeing values
    and where each came from), ``incomplete``, ``failedFetches`` and ``recorded``
    (output -> ``[{"ref", "value"}]``: results nbrules wrote back earlier found in the
    record, :attr:`MappedFacts.recorded`)."""
    return {"diagnosis": mapped.diagnosis, "diagnosisStatus": mapped.diagnosis_status or None, "age": mapped.age,
            "sources": mapped.sources, "notUsed": mapped.not_used, "conflicts": mapped.conflicts,
            "incomplete": mapped.incomplete, "failedFetches": mapped.failed,
            "recorded": recorded_section(mapped)}


def recorded_section(mapped: MappedFacts) -> dict[str, list[dict[str, Any]]]:
    """The results nbrules wrote back earlier found in the record: output ->
    ``[{"ref", "value"}]`` (:attr:`MappedFacts.recorded` without the codings)."""
    return {o: [{"ref": c["ref"], "value": c["value"]} for c in copies] for o, copies in sorted(mapped.recorded.items())}


def _entries(bundle: Mapping[str, Any]) -> list[Any]:
    entries = bundle.get("entry")
    return entries if isinstance(entries, list) else []


def unread_pages(bundle: Mapping[str, Any]) -> str | None:
    """Why a Bundle given whole to ``evaluate --fhir`` is only part of a record (None when
    nothing says so): a ``next`` link (later pages of a search not read), or a searchset
    whose ``total`` counts more matches than the entries it holds (FHIR R4 Bundle.total:
    the number of matches; entries of ``search.mode`` ``include`` or ``outcome`` are not
    matches)."""
    links = bundle.get("link")
    nxt = next((link for link in (links if isinstance(links, list) else [])
                if isinstance(link, dict) and link.get("relation") == "next"), None)
    if nxt is not None:
        url = f" ({nxt['url']})" if isinstance(nxt.get("url"), str) else ""
        return f"the Bundle has a 'next' link{url}: later pages of the search were not read"
    total = bundle.get("total")
    if total is not None and not (isinstance(total, int) and not isinstance(total, bool) and total >= 0):
        return f"the Bundle's total {str(total)[:40]!r} is not a count of matches: it cannot say the record is whole"
    if bundle.get("type") == "searchset" and isinstance(total, int) and not isinstance(total, bool):
        matches = sum(1 for e in _entries(bundle) if not (isinstance(e, dict) and isinstance(e.get("search"), dict)
                                                          and e["search"].get("mode") in ("include", "outcome")))
        if total > matches:
            return f"the searchset's total is {total} but it holds {matches} matching entries: the rest were not read"
    return None


def resource_problems(data: Any) -> list[Diagnostic]:
    """The elements of a FHIR resource or Bundle that nbrules reads and that do not have
    their FHIR type, each with its JSON pointer: the typing of ``$defs/resource`` in
    ``schemas/cds-request.schema.json`` (the one a CDS request's prefetch is checked
    with), e.g. a Bundle ``total`` that is not a non-negative integer.  NB502 for a wrong
    type, NB505 for a value out of range; empty when all is well."""
    from .validator import schema_problems

    return [Diagnostic("NB505" if p.kind == "size" else "NB502", p.message, pointer=p.pointer)
            for p in schema_problems(_resource_validator(), data)]


@lru_cache(maxsize=1)
def _resource_validator() -> Any:
    from jsonschema import Draft202012Validator

    from .resources import read_schema

    defs = read_schema("cds-request.schema.json")["$defs"]
    return Draft202012Validator({"$ref": "#/$defs/resource", "$defs": defs})


def _patient_ids(bundle: Mapping[str, Any]) -> list[str]:
    ids: list[str] = []
    for e in _entries(bundle):
        res = e.get("resource") if isinstance(e, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "Patient" and isinstance(res.get("id"), str) \
                and res["id"] not in ids:
            ids.append(res["id"])
    return ids


def evaluate_fhir_json(engine: Evaluator, text: str | bytes, mapping: FhirMapping, recorded: str,
                       max_bytes: int | None = None, patient: str | None = None) -> dict[str, Any]:
    """``nbrules evaluate --fhir``: a FHIR Bundle (or resource) as JSON text in;
    ``{"result", "read", "fhir"}`` out: the nbrules result, what was read from the
    resources (:func:`read_section`), and the transaction Bundle creating the results.
    ``Provenance.recorded`` is the input's own time (:func:`input_time`); ``recorded``
    only when it states none.  ``patient``: the id of the Patient to evaluate, needed
    when the Bundle holds several.

    A Bundle that is one page of a search (:func:`unread_pages`) gives ``"fhir": null``
    (nothing written back: a page not read could change any output) and ``"problems"``
    with an NB747 record; the caller reports it (the CLI exits 2).  A record with no
    neuroblastoma diagnosis the mapping reads is not evaluated: ``{"status":
    "no-neuroblastoma-diagnosis", "read", "fhir": null, "problems": [NB744 record]}`` (no
    ``result``; as a FHIR Bulk row, :data:`nbrules.batch.NO_DIAGNOSIS`).  Raises
    :class:`PatientInputError` (NB501/NB509/NB551 for the JSON, NB570 when it is not a
    FHIR resource, NB748 several Patients and no ``patient``, NB749 ``patient`` not among
    them, NB502/NB505 an element read of the wrong type, e.g. a ``total`` that is not a
    non-negative integer: :func:`resource_problems`, or the patient diagnostics).
    """
    data, diags = parse_patient_json(text, max_bytes)
    if diags:
        raise PatientInputError("the FHIR input is not valid JSON", diags)
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        found = type(data).__name__ if not isinstance(data, dict) else "an object without resourceType"
        raise PatientInputError("the FHIR input is not a FHIR resource", [Diagnostic(
            code="NB570", pointer="" if not isinstance(data, dict) else "/resourceType",
            message=f"expected a FHIR resource or Bundle, found {found}")])
    problems = resource_problems(data)
    if problems:
        raise PatientInputError("the FHIR input has elements of the wrong type", problems)
    when = input_time(data) or recorded
    bundle = data if data["resourceType"] == "Bundle" else {"resourceType": "Bundle", "entry": [{"resource": data}]}
    ids = _patient_ids(bundle)
    if patient is None and len(ids) > 1:
        raise PatientInputError("the FHIR Bundle holds several patients", [Diagnostic(
            code="NB748", pointer="/entry",
            message=f"expected the resources of one patient, found {len(ids)} Patients: {', '.join(ids)}",
            hint="name one with --patient ID")])
    if patient is not None and ids and patient not in ids:
        raise PatientInputError("the patient asked for is not in the FHIR Bundle", [Diagnostic(
            code="NB749", pointer="/entry",
            message=f"expected a Patient with id '{patient}', found {'only ' if len(ids) == 1 else ''}"
                    f"{', '.join(ids)}", hint="give the id of one of these Patients")])
    mapped = map_resources({"bundle": bundle}, mapping, patient)
    unread = unread_pages(bundle)
    answer: dict[str, Any]
    if mapped.diagnosis is None:  # not a neuroblastoma record: not evaluated, as a Bulk row (batch.NO_DIAGNOSIS)
        from .batch import NO_DIAGNOSIS

        why = "; ".join(n for n in mapped.not_used if n.startswith("Condition/")) or "it holds no Condition"
        answer = {"status": NO_DIAGNOSIS, "read": read_section(mapped), "fhir": None, "problems": [Diagnostic(
            code="NB744", pointer="/entry",
            message=f"expected a Condition the FHIR mapping reads as a confirmed neuroblastoma diagnosis, found none "
                    f"({shown(why)}); the patient is not evaluated and nothing is written back",
            hint="give the record's neuroblastoma Condition; the codes read are under diagnosis in "
                 "mappings/fhir-r4.yaml").to_record()]}
        if unread is not None:  # the diagnosis may be on a page not read
            answer["problems"].append(Diagnostic(code="NB747", pointer="/link" if "'next' link" in unread else "/total",
                                                 message=unread).to_record())
        return answer
    result, mapped, out = evaluate_fhir(engine, bundle, mapping, when, patient, mapped)
    answer = {"result": result.to_dict(), "read": read_section(mapped), "fhir": out}
    if unread is not None:
        answer["fhir"] = None
        answer["problems"] = [Diagnostic(
            code="NB747", pointer="/link" if "'next' link" in unread else "/total",
            message=f"{unread}; nothing is written back, since a page not read could change any output",
            hint="give the whole record in one Bundle: follow every next link and join the entries").to_record()]
    return answer
