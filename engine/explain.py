"""A readable explanation of a result, for a clinician following the reasoning.

``explain(result, decisions, vocabulary)`` lists every output with its value or why
it has none, then the rules that fired in order, each with its description, the
facts it tested, the parameters in force, what it set and its citations spelled out.
Facts and values are named in words from the vocabulary (:attr:`FactSpec.title`,
:meth:`FactSpec.label`); ages in days are also given in years and months.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .conditions import tests_in
from .model import Decision
from .results import APPLIES_IF_GIVEN, FiredRule, Result
from .vocabulary import FactSpec, input_facts

__all__ = ["explain", "show_value", "show_facts", "show_age", "fact_title", "fact_value", "pending_given"]

#: Days in an average month (365.25 / 12), for ages stated in months.
_MONTH_DAYS = 365.25 / 12


def show_value(value: Any) -> str:
    """A fact value as people read it: ``true``, ``[bone, liver]``, ``547``, ``unknown``."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def show_facts(facts: Mapping[str, Any]) -> str:
    """An example patient on one line: ``{age_days: 547, metastatic_sites: [liver]}``."""
    return "{" + ", ".join(f"{k}: {show_value(v)}" for k, v in facts.items()) + "}"


def show_age(days: int | float) -> str:
    """An age in days with the completed years and months: ``577 days (1 year 6 months)``.

    Months are completed months, as ages are stated (a child of 360 days is 11 months
    old, not 1 year), each 365.25 / 12 days, counted to the nearest day (365 days is
    1 year); under one month only the days are shown.

    >>> show_age(183), show_age(547), show_age(548), show_age(730), show_age(20)
    ('183 days (6 months)', '547 days (1 year 5 months)', '548 days (1 year 6 months)', '730 days (2 years)', '20 days')
    """
    months = int((days + 0.5) // _MONTH_DAYS)
    text = f"{show_value(days)} days"
    if months < 1:
        return text
    years, months = divmod(months, 12)
    parts = ([f"{years} year{'s' if years != 1 else ''}"] if years else []) + (
        [f"{months} month{'s' if months != 1 else ''}"] if months else [])
    return f"{text} ({' '.join(parts)})"


def fact_title(name: str, vocabulary: Mapping[str, FactSpec]) -> str:
    """The words for a fact: its title in the vocabulary, else its name with spaces."""
    spec = vocabulary.get(name)
    if spec is not None and spec.title and spec.title != name:
        return spec.title
    return name.replace("_", " ")


def fact_value(name: str, value: Any, vocabulary: Mapping[str, FactSpec]) -> str:
    """The words for a value of a fact: labels from the vocabulary, ``yes``/``no``, lists
    as ``liver, skin`` (``none`` when empty), ages in days with years and months."""
    spec = vocabulary.get(name)
    if value is None:
        return "unknown"
    if spec is None:
        return show_value(value)
    if spec.is_numeric and (spec.unit == "days" or name.endswith("_days")):
        return show_age(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(spec.label(v) for v in value) if value else "none"
    if spec.is_numeric:
        unit = spec.unit
        return show_value(value) + ("" if not unit else unit if unit == "%" else f" {unit}")
    return spec.label(value)


def pending_given(result: Result, decisions: Mapping[str, Decision]) -> dict[str, Any]:
    """Facts the record gives with a *pending* value (fact -> the value given).

    A rule file's ``pending_values`` name values that mean "not known yet" (INSS:
    ``resection_extent: not_done``, surgery not yet done); the engine treats such a fact
    as missing, so an indeterminate output lists it among the facts that would settle it
    although the user filled it in.  ``decisions`` maps decision id to the decisions that ran.
    """
    out: dict[str, Any] = {}
    for d in decisions.values():
        for fact, values in d.pending.items():
            given = result.input.get(fact)
            if isinstance(given, str) and given in values:
                out[fact] = given
    return out


def _tested(f: FiredRule, d: Decision | None) -> dict[str, Any]:
    """The facts a fired rule tested: those known, and those whose being unknown it tests."""
    if d is None:
        return {k: v for k, v in f.matched.items() if v is not None}
    about_unknown = {t.fact for t in tests_in(d.rule(f.rule).when, d.conditions) if t.op == "known"}
    return {k: v for k, v in f.matched.items() if v is not None or k in about_unknown}


def _wrap(text: str, indent: str, width: int = 96) -> list[str]:
    words = " ".join(text.split()).split(" ")
    lines: list[str] = []
    cur = indent
    for w in words:
        if len(cur) + len(w) + 1 > width and cur.strip():
            lines.append(cur.rstrip())
            cur = indent
        cur += w + " "
    if cur.strip():
        lines.append(cur.rstrip())
    return lines


def _cite_text(cite: str, decision: Decision | None) -> str:
    """``criteria.md S9 (docs/criteria.md#S9)``: a citation with the row it links to."""
    link = decision.cite_link(cite) if decision is not None else None
    return f"{cite} ({link})" if link else cite


def explain(result: Result, decisions: Mapping[str, Decision],
            vocabulary: Mapping[str, FactSpec] | None = None) -> str:
    """Plain-text explanation; ``decisions`` maps decision id to the decision that ran,
    ``vocabulary`` names facts and values (default: the patient facts of the schema;
    pass ``engine.build.vocabulary`` to name the outputs of decisions too)."""
    vocab = vocabulary if vocabulary is not None else input_facts()

    def title(name: str) -> str:
        return fact_title(name, vocab)

    def value(name: str, v: Any) -> str:
        return fact_value(name, v, vocab)

    out: list[str] = []
    rules = ", ".join(f"{r.decision} {r.version}" for r in result.rulesets)
    profile = f" | profile: {result.profile}" if result.profile else ""  # the readings the answer depends on
    out.append(f"{result.engine} | rules: {rules}{profile}")
    out.append(f"input sha256 {result.input_sha256[:16]}")
    out.append("")
    out.append("Patient facts")
    if result.input:
        width = max(len(title(k)) for k in result.input)
        for k, v in result.input.items():
            out.append(f"  {title(k):<{width}}  {value(k, v)}")
    else:
        out.append("  (none given)")
    out.append("")
    out.append("Outputs")
    pending = pending_given(result, decisions)
    # outputs of decisions the record does not open (applies_if_given) are listed together at the end
    closed: dict[str, list[str]] = {}
    for name, na in result.not_applicable.items():
        if na.scope == APPLIES_IF_GIVEN:
            closed.setdefault(na.reason, []).append(name)
    skip = {n for names in closed.values() for n in names}
    width = max((len(title(k)) for k in result.outputs if k not in skip), default=0)
    for name, output in result.outputs.items():
        if name in skip:
            continue
        if name in result.from_input:
            line = f"{value(name, output)}  (given in the input; {result.from_input[name].decision} not applied)"
        elif name in result.indeterminate:
            ind = result.indeterminate[name]
            cands = " or ".join(value(name, c) for c in ind.candidates)
            extra = " or not applicable" if ind.may_be_out_of_scope else ""
            if ind.conflict:
                line = f"UNRESOLVED: rules {', '.join(ind.conflict)} disagree ({cands})"
            else:
                absent = [title(m) for m in ind.missing if m not in pending]
                parts = [f"would be settled by {', '.join(absent)}"] if absent else []
                parts += [f"{title(m)} is {value(m, pending[m])}, a pending value; the answer waits for it"
                          for m in ind.missing if m in pending]
                line = f"INDETERMINATE: {cands}{extra}; {'; '.join(parts)}"
                roots = [f"{title(k)} {'waits for' if all(x in pending for x in v) else 'needs'} "
                         f"{', '.join(title(x) + (' (pending)' if x in pending else '') for x in v)}"
                         for k, v in ind.via.items()]
                if roots:
                    line += f" ({'; '.join(roots)})"
        elif name in result.not_applicable:
            na = result.not_applicable[name]
            line = f"NOT APPLICABLE: {na.reason}"
        elif name in result.settled:
            st = result.settled[name]
            line = (f"{value(name, output)}  (no single rule fired, but every value of "
                    f"{', '.join(title(u) for u in st.unknown)} gives {value(name, st.value)}: rules "
                    f"{', '.join(st.rules)})")
        else:
            line = value(name, output)
        out.append(f"  {title(name):<{width}}  {line}")
    for reason, names in closed.items():
        out.extend(_wrap(f"not applicable: {', '.join(title(n) for n in names)} - {reason}", "  "))
    if result.warnings:
        out.append("")
        out.append("Warnings")
        for w in result.warnings:
            where = f"{w['pointer']}: " if w.get("pointer") else ""
            out.append(f"  {where}{w['code']} [{w['name']}] {w['message']}")
    out.append("")
    out.append("Why: the rules that fired, in order")
    cited: dict[str, dict[str, str]] = {}
    if not result.fired:
        out.append("  (no rule fired)")
    for f in result.fired:
        d = decisions.get(f.decision)
        out.append(f"  {f.order}. {f.decision} {f.version}, rule {f.rule}  ({f.source})")
        if d is not None:
            desc = d.rule(f.rule).description
            if desc:
                out.extend(_wrap(desc, "     "))
        matched = "; ".join(f"{title(k)} = {value(k, v)}" for k, v in _tested(f, d).items())
        out.extend(_wrap(f"matched: {matched or '(no fact: the rule always applies)'}", "     "))
        if f.parameters:
            params = "; ".join(f"{k} = {json.dumps(v)}" for k, v in f.parameters.items())
            out.append(f"     parameters: {params}")
        out.append("     set: " + "; ".join(f"{title(k)} = {value(k, v)}" for k, v in f.set.items()))
        out.extend(_wrap("cites: " + "; ".join(_cite_text(c, d) for c in f.cite), "     "))
        for c in f.cite:
            key = c.split()[0]
            if d is not None and key in d.sources:
                cited.setdefault(f"{d.id} {d.version}", {}).setdefault(key, d.sources[key])
    if cited:
        out.append("")
        out.append("Sources cited (keys are local to each rule file)")
        for label, sources in cited.items():
            out.append(f"  {label}")
            for key, text in sources.items():
                out.extend(_wrap(f"{key}: {text}", "    "))
    out.append("")
    out.append("Rule files")
    for r in result.rulesets:
        out.append(f"  {r.decision} {r.version} ({r.status})  {r.file}  sha256 {r.sha256}")
    return "\n".join(out) + "\n"
