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
from .fhir import FhirMapping, MappedFacts, evaluate_record, map_resources
from .fhir_out import WrittenBack, input_time, recorded_section, value_codes, write_back
from .model import Decision
from .protocols import Evaluator
from .reference import anchor_id, split_citation
from .results import APPLIES_IF_GIVEN, Result

if TYPE_CHECKING:
    from .fhir_fetch import FetchReport

__all__ = ["OPTIONAL_KEYS", "NOT_GIVEN", "SERVICE_ID", "service_id", "discovery", "cards_for"]

#: Prefetch keys the service reads when given but does not need: the RiskAssessments
#: of the record, to find results nbrules wrote back (``meta.tag``
#: :data:`nbrules.fhir.DERIVED_TAG`), so that a card does not offer to record again what
#: the record already holds.  Their absence, failure or incompleteness leaves every
#: result as it is (only the check for copies already recorded is then not made).
OPTIONAL_KEYS = ("riskAssessments",)
#: How a needed prefetch key that is absent (or null), with nothing fetched for it, is
#: listed under ``incomplete``: the record was not given whole, so nothing is concluded
#: from its absence (no conditions: no "no neuroblastoma").
NOT_GIVEN = "not given: the prefetch lacks it and nothing was fetched for it"

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
            "riskAssessments": "RiskAssessment?patient={{context.patientId}}",
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

    Not definite, not offered: when part of the record could not be fetched, was not
    given (a key absent from the prefetch with nothing fetched for it: :data:`NOT_GIVEN`)
    or was read incompletely (keys other than :data:`OPTIONAL_KEYS`), a card saying so
    comes first (without a diagnosis found, that card alone: no "no neuroblastoma"),
    every decision card is a ``warning`` and nothing is offered for the chart (list facts
    of an incomplete search are unknown: :func:`nbrules.fhir.map_resources`).  An NB521
    warning (a value given in the record that the findings contradict) makes the card of
    that output, and of every decision whose rules matched it, a ``warning`` offering
    nothing.  Results nbrules wrote back (:data:`nbrules.fhir.DERIVED_TAG`) are derived
    again (:func:`nbrules.fhir.evaluate_record`); one the record holds with the same value
    is not offered again, one it holds with another value is named as out of date and
    makes the card a ``warning``.  Prefetch keys the discovery document does not name are
    not read and are listed in ``notUsed``.
    """
    context: Mapping[str, Any] = request["context"] if isinstance(request.get("context"), dict) else {}
    patient_id = context.get("patientId") if isinstance(context.get("patientId"), str) else None
    prefetch: Mapping[str, Any] = request.get("prefetch") or {}
    keys = discovery(engine)["services"][0]["prefetch"]
    partial = [line.split(": ", 1)[0] for line in fetched.incomplete] if fetched is not None else []
    mapped = map_resources({k: v for k, v in prefetch.items() if k in keys}, mapping, patient_id, partial)
    mapped.not_used += [f"prefetch '{k}': not a prefetch key of this service ({', '.join(keys)}); not read"
                        for k in prefetch if k not in keys]
    if fetched is not None:
        mapped.failed += fetched.failed
        mapped.incomplete += fetched.incomplete
    said = {line.split(": ", 1)[0] for line in mapped.failed + mapped.incomplete}
    mapped.incomplete += [f"{k}: {NOT_GIVEN}" for k in keys  # a needed key neither prefetched nor fetched
                          if k not in OPTIONAL_KEYS and prefetch.get(k) is None and k not in said]
    title = engine.build.package.title or "Classification"
    extension = {"nbrules": _record(mapped)}
    if fetched is not None and fetched.fetched:
        extension["nbrules"]["fetched"] = fetched.fetched
    if mapped.diagnosis is None:
        if not (mapped.failed or mapped.incomplete):
            return {"cards": [], "extension": extension}  # no diagnosis in the mapping: nothing to say
        return {"cards": [_fetch_card(mapped, title)], "extension": extension}
    try:
        result = evaluate_record(engine, mapped)
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
    unread = any(line.split(": ", 1)[0] not in OPTIONAL_KEYS for line in mapped.failed + mapped.incomplete)
    disputed = {str(w.get("pointer", ""))[1:]: str(w.get("message", "")) for w in result.warnings
                if w.get("code") == "NB521"}
    extension["nbrules"]["warnings"] = [dict(w) for w in result.warnings]
    if mapped.recorded:
        extension["nbrules"]["recorded"] = recorded_section(mapped)
    cards = [_fetch_card(mapped, title, found=True)] if unread else []
    for d in engine.decisions:
        outs = list(d.decides)
        if not outs:
            continue
        if all(o in result.not_applicable and result.not_applicable[o].scope == APPLIES_IF_GIVEN for o in outs):
            continue  # the record is not of the kind this decision assesses (e.g. no response assessment)
        card = _decision_card(result, d, outs, mapping, {o: _label(engine, o) for o in outs}, reference_base,
                              lambda o, v: _value_label(engine, o, v), lambda f: _label(engine, f))
        notes: list[str] = []
        offer = [o for o in outs if o in written]
        used = {k for f in result.fired if f.decision == d.id for k in f.matched} | set(outs)
        disputes = [disputed[f] for f in sorted(used) if f in disputed]
        doubtful = bool(disputes) or unread
        if disputes:
            notes += [f"Warning (NB521): {m}. The rules' own result differs from the value given in the record; "
                      "check which is right." for m in disputes]
            offer = []  # nothing built on a disputed value is offered for the chart
        if unread:
            notes.append("Not definite: the record was not read whole (see the first card); data not read could "
                         "change this result, so nothing is offered for the chart.")
            offer = []
        for o in list(offer):
            copies = mapped.recorded.get(o, [])
            new = value_codes(written[o].resource)
            same = [c["ref"] for c in copies if set(map(tuple, c["coding"])) == new]
            other = [c for c in copies if set(map(tuple, c["coding"])) != new]
            if same:
                offer.remove(o)
                notes.append(f"{_label(engine, o)} {_value_label(engine, o, result.outputs[o])} is already in the "
                             f"record ({', '.join(same)}, written by nbrules).")
            if other:
                was = ", ".join(f"{_value_label(engine, o, c['value']) if c['value'] else 'another value'} "
                                f"({c['ref']})" for c in other)
                notes.append(f"Out of date: the record holds {_label(engine, o)} {was}, written by nbrules earlier; "
                             f"the findings now give {_value_label(engine, o, result.outputs[o])}.")
                doubtful = True
        if doubtful:
            card["indicator"] = "warning"
        if notes:
            card["detail"] = "\n\n".join(notes) + "\n\n" + card["detail"]
        card["detail"] = _record_line(mapped) + "\n\n" + card["detail"]
        if mapped.age is not None:
            card.setdefault("extension", {}).setdefault("nbrules", {})["age"] = mapped.age
        suggestions = [_suggestion(engine, written[o], result) for o in offer]
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
            "conflicts": mapped.conflicts, "failedFetches": mapped.failed, "incomplete": mapped.incomplete,
            "partial": mapped.partial}


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


def _how_unread(mapped: MappedFacts) -> str:
    """"could not be fetched" (a fetch failed), "was not given" (a needed prefetch key absent
    and no fhirServer), "incomplete" (a search not read whole), or several of them."""
    absent = [i for i in mapped.incomplete if ": not fetched: " in i]  # a key neither prefetched nor fetched
    not_given = [i for i in mapped.incomplete if i.endswith(f": {NOT_GIVEN}")]  # ...nor fetched
    said = (["could not be fetched"] if mapped.failed or absent else []) + (["was not given"] if not_given else []) \
        + (["was read incompletely"] if len(absent) + len(not_given) < len(mapped.incomplete) else [])
    return " and part ".join(said)


def _fetch_card(mapped: MappedFacts, title: str, found: bool = False) -> dict[str, Any]:
    """Part of the record could not be fetched or was read incompletely.  ``found``: a
    diagnosis was found (the card comes first, before the decisions it makes uncertain);
    otherwise no diagnosis was found in what was read."""
    lines = [f"- {f} (could not be fetched)" for f in mapped.failed]
    lines += [f"- {i}" for i in mapped.incomplete]
    lines += [f"- {fact}: {why}" for fact, why in mapped.partial.items()]
    if found:
        summary = f"{title}: part of the record {_how_unread(mapped)}; no result below is definite"
        detail = ("Data this service needs was not all read, so every result below could change once it is; "
                  "none is offered for the chart:\n\n")
    else:
        summary = f"{title}: part of the record {_how_unread(mapped)}; no diagnosis found in what was read"
        detail = ("The data this service needs was not all delivered, so it cannot say whether the patient has a "
                  "diagnosis it classifies:\n\n")
    return {
        "uuid": _card_id("fetch:" + "|".join(mapped.failed + mapped.incomplete)),
        "summary": _summary(summary),
        "indicator": "warning",
        "detail": detail + "\n".join(lines),
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
                   show: Callable[[str, Any], str] = lambda o, v: str(v),
                   name: Callable[[str], str] = str) -> dict[str, Any]:
    """One decision's card; ``show(output, value)`` gives the words for a value, ``name(fact)``
    a fact's title (the vocabulary's, as on the card of what is missing).  A stage
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
            needed = [name(m) for m in ind.missing]
            for via, roots in ind.via.items():
                needed += [f"{name(r)} (for {name(via)})" for r in roots]
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
        matched = "; ".join(f"{name(k)} = {show_value(v)}" for k, v in f.matched.items())
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
                if root not in needed and root not in mapped.facts and root not in mapped.conflicts:
                    needed.append(root)
    if not needed and not mapped.not_used and not mapped.conflicts and not mapped.failed and not mapped.incomplete:
        return None
    detail = []
    if mapped.failed:
        detail.append("Failed fetches (the facts they hold are unknown, not absent): " + "; ".join(mapped.failed))
    if mapped.incomplete:
        detail.append("Incomplete data (searches not read whole, or not given): " + "; ".join(mapped.incomplete))
    if mapped.partial:
        detail.append("Left unknown because their search was read incompletely: "
                      + "; ".join(f"{name(f)} (`{f}`): {why}" for f, why in mapped.partial.items()))
    if needed:
        said = ("Facts not found in the data delivered (a fetch failed, or data is incomplete or was not given, so "
                "the record may hold them)"
                if mapped.failed or mapped.incomplete else "Facts the record does not give")
        detail.append(f"{said}, which would settle the classification: "
                      + ", ".join(f"{name(f)} (`{f}`)" if name(f) != f else f for f in needed) + ". They are left unknown, never assumed.")
    extra = _sources(mapped)
    if extra:
        detail.append(extra)
    return {
        "uuid": _card_id(f"{result.input_sha256}:missing:{','.join(needed)}:{'|'.join(mapped.not_used + mapped.failed)}"),
        "summary": _summary(f"{title}: {len(needed)} fact(s) not found in what was read, and part of the record "
                            f"{_how_unread(mapped)}" if mapped.failed or mapped.incomplete
                            else f"{title}: {len(needed)} fact(s) missing from the record"),
        "indicator": "warning",
        "detail": "\n\n".join(detail),
        "source": {"label": "nbrules FHIR mapping (mappings/fhir-r4.yaml)"},
        **({"extension": {"nbrules": {"missing": needed}}} if needed else {}),
    }
