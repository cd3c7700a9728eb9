"""A readable explanation of a result, for a clinician following the reasoning.

``explain(result, engine)`` lists every output with its value or why it has none,
then the rules that fired in order, each with its description, the facts it
matched, the parameters in force, what it set and its citations spelled out.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .model import Decision
from .results import Result

__all__ = ["explain", "show_value", "show_facts"]


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


def explain(result: Result, decisions: Mapping[str, Decision]) -> str:
    """Plain-text explanation; ``decisions`` maps decision id to the decision that ran."""
    out: list[str] = []
    rules = ", ".join(f"{r.decision} {r.version}" for r in result.rulesets)
    out.append(f"{result.engine} | rules: {rules}")
    out.append(f"input sha256 {result.input_sha256[:16]}")
    out.append("")
    out.append("Patient facts")
    if result.input:
        width = max(len(k) for k in result.input)
        for k, v in result.input.items():
            out.append(f"  {k:<{width}}  {show_value(v)}")
    else:
        out.append("  (none given)")
    out.append("")
    out.append("Outputs")
    width = max((len(k) for k in result.outputs), default=0)
    for name, value in result.outputs.items():
        if name in result.from_input:
            line = f"{show_value(value)}  (given in the input; {result.from_input[name].decision} not applied)"
        elif name in result.indeterminate:
            ind = result.indeterminate[name]
            cands = " or ".join(ind.candidates)
            extra = " or not applicable" if ind.may_be_out_of_scope else ""
            if ind.conflict:
                line = f"UNRESOLVED: rules {', '.join(ind.conflict)} disagree ({cands})"
            else:
                line = f"INDETERMINATE: {cands}{extra}; would be settled by {', '.join(ind.missing)}"
                roots = [f"{k} needs {', '.join(v)}" for k, v in ind.via.items()]
                if roots:
                    line += f" ({'; '.join(roots)})"
        elif name in result.not_applicable:
            na = result.not_applicable[name]
            line = f"NOT APPLICABLE: {na.reason}"
        elif name in result.settled:
            st = result.settled[name]
            line = (f"{show_value(value)}  (no single rule fired, but every value of {', '.join(st.unknown)} "
                    f"gives {st.value}: rules {', '.join(st.rules)})")
        else:
            line = show_value(value)
        out.append(f"  {name:<{width}}  {line}")
    if result.warnings:
        out.append("")
        out.append("Warnings")
        for w in result.warnings:
            out.append(f"  {w.get('pointer', '')}: {w['code']} [{w['name']}] {w['message']}")
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
        matched = "; ".join(f"{k} = {show_value(v)}" for k, v in f.matched.items())
        out.append(f"     matched: {matched}")
        if f.parameters:
            params = "; ".join(f"{k} = {json.dumps(v)}" for k, v in f.parameters.items())
            out.append(f"     parameters: {params}")
        out.append("     set: " + "; ".join(f"{k} = {v}" for k, v in f.set.items()))
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
