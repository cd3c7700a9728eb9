"""CDS Hooks (1.0/2.0) discovery and cards for the ``patient-view`` hook.

One card per decision that ran: its outputs (with their codes from the FHIR mapping),
the rules that fired with the facts they matched, and their citations as the card's
source.  Indeterminate outputs say what they could be and which facts would settle
them; a further card lists every fact the record lacked and every resource or code
that could not be used.  Card ids are derived from the input and the rules, so the
same request gets byte-identical cards (``Provenance.recorded`` in the suggestions is
the prefetch's own time when it states one, else the time of the answer).  A record without a diagnosis in the mapping
gets no cards.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import PatientInputError
from .explain import show_value
from .fhir import FhirMapping, MappedFacts, map_resources
from .fhir_out import WrittenBack, input_time, write_back
from .model import Decision
from .protocols import Evaluator
from .reference import anchor_id, split_citation
from .results import APPLIES_IF_GIVEN, Result

if TYPE_CHECKING:
    from .fhir_fetch import FetchReport

__all__ = ["SERVICE_ID", "service_id", "discovery", "cards_for"]

#: The CDS service id of a package without a name (package.yaml); otherwise the id is
#: the package's name, e.g. ``nbrules-neuroblastoma`` for the bundled package.
SERVICE_ID = "nbrules"
_NS = uuid.UUID("6b1e6a3c-2d0f-4c7e-9a51-3f0d1c2b4a77")
_SYSTEM_NAMES = {"http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl": "NCIt", "http://snomed.info/sct": "SNOMED CT"}


def service_id(engine: Evaluator) -> str:
    """The CDS Hooks service id: the name of the knowledge package in force."""
    return str(engine.build.package.name) or SERVICE_ID


def discovery(engine: Evaluator | None = None) -> dict[str, Any]:
    """The CDS Hooks discovery document; title and description are those of the
    knowledge package in force (package.yaml)."""
    package = engine.build.package if engine is not None else None
    title = (package.title if package is not None else "") or "nbrules"
    description = (package.description if package is not None else "") or "Decisions from cited rule files"
    return {"services": [{
        "hook": "patient-view",
        "id": service_id(engine) if engine is not None else SERVICE_ID,
        "title": title,
        "description": description + " With the rules that fired and what is still missing.",
        "prefetch": {
            "patient": "Patient/{{context.patientId}}",
            "conditions": "Condition?patient={{context.patientId}}",
            "observations": "Observation?patient={{context.patientId}}",
        },
    }]}


def _label(engine: Evaluator, name: str) -> str:
    """The short title of an output, from the vocabulary of the package in force."""
    spec = engine.build.vocabulary.get(name)
    return spec.title if spec is not None and spec.title and spec.title != name else name.replace("_", " ")


def _value_label(engine: Evaluator, name: str, value: Any) -> str:
    """The words for a value of an output (its label in the vocabulary), e.g. ``very low``;
    a label that only puts a name before the value (``PRETEXT II``) gives the value, which
    the card shows after the output's title (``PRETEXT group II``)."""
    spec = engine.build.vocabulary.get(name)
    words = spec.label(value) if spec is not None else str(value)
    return str(value) if words.endswith(f" {value}") else words


def _card_id(seed: str) -> str:
    return str(uuid.uuid5(_NS, seed))


def cards_for(engine: Evaluator, mapping: FhirMapping, request: Mapping[str, Any],
              reference_base: str | None = None, recorded: str | None = None,
              fetched: FetchReport | None = None) -> dict[str, Any]:
    """The CDS Hooks response for a ``patient-view`` request with prefetch.

    ``reference_base`` is the service's own URL (``http://host:8000``): with it, each
    card links the rows of the criteria reference its rules cite
    (``{reference_base}/reference/criteria.md#S9``).  ``recorded`` (a FHIR instant, the
    time of the answer): with it and ``context.patientId``, a card whose output the
    mapping writes back (``results``) carries a suggestion creating it as FHIR, with its
    Provenance (:mod:`nbrules.fhir_out`).  ``Provenance.recorded`` is the latest time the
    prefetch states (Bundle ``timestamp``, ``meta.lastUpdated``), so the same request
    gets byte-identical cards; ``recorded`` only when the prefetch states no time.
    ``fetched``: what :func:`nbrules.fhir_fetch.fetch_missing` fetched into the request's
    prefetch; its failures and incomplete searches are reported like those of the
    prefetch, and ``extension.nbrules.fetched`` lists each fetch.
    """
    context: Mapping[str, Any] = request["context"] if isinstance(request.get("context"), dict) else {}
    patient_id = context.get("patientId") if isinstance(context.get("patientId"), str) else None
    mapped = map_resources(request.get("prefetch") or {}, mapping, patient_id)
    if fetched is not None:
        mapped.failed += fetched.failed
        mapped.incomplete += fetched.incomplete
    title = engine.build.package.title or "Classification"
    extension = {"nbrules": _record(mapped)}
    if fetched is not None:
        extension["nbrules"]["fetched"] = fetched.fetched
    if mapped.diagnosis is None:
        if not (mapped.failed or mapped.incomplete):
            return {"cards": [], "extension": extension}  # no diagnosis in the mapping: nothing to say
        return {"cards": [_fetch_card(mapped, title)], "extension": extension}
    try:
        result = engine.evaluate(mapped.facts)
    except PatientInputError as exc:
        lines = [f"- `{d.pointer}`: {d.message}" for d in exc.diagnostics]
        return {"cards": [{
            "uuid": _card_id("invalid:" + repr(sorted(mapped.facts.items()))),
            "summary": f"{title}: not possible, the record's facts contradict each other",
            "indicator": "warning",
            "detail": "\n".join(lines) + "\n\n" + _sources(mapped),
            "source": {"label": "nbrules"},
        }], "extension": extension}
    when = (input_time(request.get("prefetch")) or recorded) if recorded is not None else None
    written = {w.output: w for w in write_back(engine, result, mapping, mapped, patient_id, when, ids=True)} \
        if when is not None and patient_id is not None else {}
    cards = []
    for d in engine.decisions:
        outs = list(d.decides)
        if not outs:
            continue
        if all(o in result.not_applicable and result.not_applicable[o].scope == APPLIES_IF_GIVEN for o in outs):
            continue  # the record is not of the kind this decision assesses (e.g. no response assessment)
        card = _decision_card(result, d, outs, mapping, {o: _label(engine, o) for o in outs}, reference_base,
                              lambda o, v: _value_label(engine, o, v))
        card["detail"] = _record_line(mapped) + "\n\n" + card["detail"]
        if mapped.age is not None:
            card.setdefault("extension", {}).setdefault("nbrules", {})["age"] = mapped.age
        suggestions = [_suggestion(engine, written[o], result) for o in outs if o in written]
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "any"
        cards.append(card)
    missing = _missing_card(result, mapped, title, lambda f: _label(engine, f))
    if missing is not None:
        cards.append(missing)
    return {"cards": cards, "extension": extension}


def _record(mapped: MappedFacts) -> dict[str, Any]:
    """What the response says machine-readably about the record (``extension.nbrules``)."""
    return {"diagnosis": mapped.diagnosis, "diagnosisStatus": mapped.diagnosis_status or None, "age": mapped.age,
            "notUsed": [{"resource": n.split(": ", 1)[0], "reason": n.split(": ", 1)[-1]} for n in mapped.not_used],
            "conflicts": mapped.conflicts, "failedFetches": mapped.failed, "incomplete": mapped.incomplete}


def _suggestion(engine: Evaluator, w: WrittenBack, result: Result) -> dict[str, Any]:
    """A CDS Hooks suggestion creating one result and its Provenance."""
    what = f"{_label(engine, w.output)} {_value_label(engine, w.output, result.outputs[w.output])}"
    return {"label": f"Record {what} in the chart", "uuid": _card_id(w.full_url),
            "actions": [{"type": "create", "description": f"{what} as a FHIR {w.resource['resourceType']}",
                         "resource": w.resource},
                        {"type": "create", "description": "the rules that gave it, as a FHIR Provenance",
                         "resource": w.provenance}]}


def _record_line(mapped: MappedFacts) -> str:
    """The diagnosis used, its statuses, and the age at diagnosis with where it came from."""
    status = mapped.diagnosis_status
    line = (f"Diagnosis: {mapped.diagnosis} (verificationStatus {status.get('verificationStatus')}, "
            f"clinicalStatus {status.get('clinicalStatus')}). ")
    age = mapped.age
    if age is None:
        return line + "Age at diagnosis: unknown (see the card of what is missing)."
    line += f"Age at diagnosis: **{age['days']} days**, from {age['from']} ({age['method']})."
    return line + (" This is a fallback: check the onset." if age["fallback"] else "")


def _summary(text: str, limit: int = 140) -> str:
    """A card summary shorter than ``limit`` characters (CDS Hooks), cut at a word."""
    if len(text) < limit:
        return text
    cut = text[:limit - 2].rsplit(" ", 1)[0].rstrip(" ;,:")
    return cut + "…"


def _fetch_card(mapped: MappedFacts, title: str) -> dict[str, Any]:
    """The record could not be read whole and no diagnosis was found in what was read."""
    lines = [f"- {f} (a failed fetch)" for f in mapped.failed]
    lines += [f"- {i}" for i in mapped.incomplete]
    return {
        "uuid": _card_id("fetch:" + "|".join(mapped.failed + mapped.incomplete)),
        "summary": _summary(f"{title}: the record could not be read whole; no diagnosis found in what was read"),
        "indicator": "warning",
        "detail": "The data this service needs was not all delivered, so it cannot say whether the patient has a "
                  "diagnosis it classifies:\n\n" + "\n".join(lines),
        "source": {"label": "nbrules FHIR mapping"},
    }


def _cite_links(d: Decision, cites: list[str], base: str) -> list[dict[str, str]]:
    """CDS Hooks ``links`` to the reference rows a decision's fired rules cite."""
    links: list[dict[str, str]] = []
    for c in cites:
        key, locator = split_citation(c)
        ref = d.references.get(key)
        if ref is None:
            continue
        url = f"{base.rstrip('/')}/reference/{ref.name}" + (f"#{anchor_id(locator)}" if locator else "")
        link = {"label": c, "url": url, "type": "absolute"}
        if link not in links:
            links.append(link)
    return links


def _decision_card(result: Result, d: Decision, outs: list[str], mapping: FhirMapping,
                   labels: Mapping[str, str], reference_base: str | None = None,
                   show: Callable[[str, Any], str] = lambda o, v: str(v)) -> dict[str, Any]:
    """One decision's card; ``show(output, value)`` gives the words for a value.  A stage
    value's code is named in the summary only when it is of a standard terminology (NCIt,
    SNOMED CT); every code of the mapping is in ``extension.nbrules.codes``."""
    parts: list[str] = []
    detail: list[str] = []
    undetermined = False
    codes: dict[str, Any] = {}
    for out in outs:
        value = result.outputs.get(out)
        label = labels[out]
        if value is not None:
            code = mapping.stage_code(out, value)
            notes = ["from the record"] if out in result.from_input else []
            if code is not None:
                codes[out] = {"system": code[0], "code": code[1], "display": value}
                if code[0] in _SYSTEM_NAMES:
                    notes.append(f"{_SYSTEM_NAMES[code[0]]} {code[1]}")
            parts.append(f"{label} {show(out, value)}" + (f" ({', '.join(notes)})" if notes else ""))
            if out in result.from_input:
                detail.append(f"**{label}** {show(out, value)} is taken from the record as given; the rules of {d.key} did not "
                              f"re-derive it.")
        elif out in result.indeterminate:
            undetermined = True
            ind = result.indeterminate[out]
            parts.append(f"{label} {' or '.join(show(out, c) for c in ind.candidates)}")
            needed = list(ind.missing)
            for via, roots in ind.via.items():
                needed += [f"{r} (for {via})" for r in roots]
            detail.append(f"**{label}** could be {' or '.join(show(out, c) for c in ind.candidates)}"
                          + (" or not applicable" if ind.may_be_out_of_scope else "")
                          + f"; it would be settled by: {', '.join(needed)}.")
        elif out in result.not_applicable:
            undetermined = True
            parts.append(f"{label}: not applicable")
            detail.append(f"**{label}**: {result.not_applicable[out].reason}")
    fired = [f for f in result.fired if f.decision == d.id]
    cite_texts: list[str] = []
    for f in fired:
        rule = d.rule(f.rule)
        matched = "; ".join(f"{k} = {show_value(v)}" for k, v in f.matched.items())
        detail.append(f"Rule **{f.rule}** ({f.source}) set {', '.join(f'{k} = {v}' for k, v in f.set.items())}. "
                      + (f"{' '.join(rule.description.split())} " if rule.description else "")
                      + f"Matched: {matched}. Cites: {'; '.join(f.cite)}.")
        for c in f.cite:
            text = d.sources.get(c.split()[0])
            if text and text not in cite_texts:
                cite_texts.append(text)
    if cite_texts:
        detail.append("Sources: " + "; ".join(cite_texts))
    source_label = _summary(f"nbrules: {', '.join(labels[o] for o in outs)} v{d.version}", 80)
    card: dict[str, Any] = {
        "uuid": _card_id(f"{result.input_sha256}:{d.key}:{d.sha256}"),
        "summary": _summary(f"{d.title.split(' (')[0]}: " + "; ".join(parts)),
        "indicator": "warning" if undetermined else "info",
        "detail": "\n\n".join(detail) or "No rule applied.",
        "source": {"label": source_label},
    }
    if reference_base is not None:
        links = _cite_links(d, [c for f in fired for c in f.cite], reference_base)
        if links:
            card["links"] = links
    if codes:
        card["extension"] = {"nbrules": {"codes": codes}}
    return card


def _sources(mapped: MappedFacts) -> str:
    lines = []
    if mapped.conflicts:
        lines.append("Conflicting values (not used): " + "; ".join(
            f"{fact} from {', '.join(refs)}" for fact, refs in mapped.conflicts.items()))
    if mapped.not_used:
        lines.append("Not used: " + "; ".join(mapped.not_used))
    return "\n\n".join(lines)


def _missing_card(result: Result, mapped: MappedFacts, title: str,
                  name: Callable[[str], str] = str) -> dict[str, Any] | None:
    """The card of what the record lacks; ``name(fact)`` gives a fact's title."""
    needed: list[str] = []
    for ind in result.indeterminate.values():
        for fact in ind.missing:
            for root in ind.via.get(fact, (fact,)):
                if root not in needed and root not in mapped.facts:
                    needed.append(root)
    if not needed and not mapped.not_used and not mapped.conflicts and not mapped.failed and not mapped.incomplete:
        return None
    detail = []
    if mapped.failed:
        detail.append("Failed fetches (the facts they hold are unknown, not absent): " + "; ".join(mapped.failed))
    if mapped.incomplete:
        detail.append("Incomplete data: " + "; ".join(mapped.incomplete))
    if needed:
        said = ("Facts not found in the data delivered (a fetch failed or is incomplete, so the record may hold them)"
                if mapped.failed or mapped.incomplete else "Facts the record does not give")
        detail.append(f"{said}, which would settle the classification: "
                      + ", ".join(f"{name(f)} (`{f}`)" if name(f) != f else f for f in needed) + ". They are left unknown, never assumed.")
    extra = _sources(mapped)
    if extra:
        detail.append(extra)
    return {
        "uuid": _card_id(f"{result.input_sha256}:missing:{','.join(needed)}:{'|'.join(mapped.not_used + mapped.failed)}"),
        "summary": _summary(f"{title}: {len(needed)} fact(s) missing from the record"
                            + (", and data could not be fetched" if mapped.failed or mapped.incomplete else "")),
        "indicator": "warning",
        "detail": "\n\n".join(detail),
        "source": {"label": "nbrules FHIR mapping (mappings/fhir-r4.yaml)"},
        **({"extension": {"nbrules": {"missing": needed}}} if needed else {}),
    }
