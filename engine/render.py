"""Decisions as reviewable tables for a clinical committee (``nbrules render``).

One row per rule, one column per fact the decision reads, conditions in words,
the outputs set, citations; then the parameters with their notes and other
readings, the declared gaps, and version, status and file hash.  HTML output is a
single self-contained page (inline CSS, no scripts, nothing fetched), readable
offline and printable; Markdown suits code review.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .conditions import facts_in
from .model import All, AnyOf, CondRef, Condition, Decision, Not, ParamRef, ParamTest, Test
from .reference import Reference, anchor_id, split_citation

__all__ = ["render_markdown", "render_html", "condition_text", "rule_rows"]

_OPS = {
    "is": "= {}",
    "in": "one of {}",
    "less_than": "< {}",
    "at_most": "≤ {}",
    "greater_than": "> {}",
    "at_least": "≥ {}",
    "contains_any": "includes any of {}",
    "contains_all": "includes all of {}",
    "subset_of": "only {}",
}


def _value(v: Any) -> str:
    if isinstance(v, ParamRef):
        return f"{{{v.name}}}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return str(v)


def _test_text(t: Test, with_fact: bool, params: Mapping[str, Any]) -> str:
    if t.op == "empty":
        text = "none" if t.value else "at least one"
    elif t.op == "known":
        text = "known" if t.value else "unknown"
    else:
        shown = _value(t.value)
        if isinstance(t.value, ParamRef):
            shown = f"{_value(params.get(t.value.name))} ({t.value.name})"
        text = _OPS[t.op].format(shown)
    return f"{t.fact} {text}" if with_fact else text


def condition_text(c: Condition, named: Mapping[str, Condition], params: Mapping[str, Any], with_fact: bool = True) -> str:
    """A condition in words, e.g. ``age_days < 547 (ms_age_limit_days) and mycn_status = amplified``."""
    if isinstance(c, Test):
        return _test_text(c, with_fact, params)
    if isinstance(c, ParamTest):
        return f"parameter {c.param} {'=' if c.op == 'is' else 'one of'} {_value(c.value)}"
    if isinstance(c, CondRef):
        return condition_text(named[c.name], named, params, with_fact) if c.name in named else c.name
    if isinstance(c, Not):
        return f"not ({condition_text(c.item, named, params, with_fact)})"
    joiner = " and " if isinstance(c, All) else " or "
    parts = []
    for x in c.items:
        text = condition_text(x, named, params, with_fact)
        if isinstance(c, AnyOf) and _is_conjunction(x, named):
            text = f"({text})"
        parts.append(text)
    text = joiner.join(parts)
    return f"({text})" if isinstance(c, AnyOf) and len(parts) > 1 else text


def _is_conjunction(c: Condition, named: Mapping[str, Condition]) -> bool:
    while isinstance(c, CondRef) and c.name in named:
        c = named[c.name]
    return isinstance(c, All) and len(c.items) > 1


def _conjuncts(c: Condition, named: Mapping[str, Condition]) -> list[Condition]:
    if isinstance(c, All):
        return [x for item in c.items for x in _conjuncts(item, named)]
    if isinstance(c, CondRef) and c.name in named:
        return _conjuncts(named[c.name], named)
    return [c]


@dataclass(frozen=True)
class RuleRow:
    id: str
    kind: str  # rule | out of scope
    line: int
    by_fact: Mapping[str, str]
    applies_when: str
    other: str
    outputs: str
    cite: str
    description: str
    cites: tuple[str, ...] = ()


def rule_rows(d: Decision) -> list[RuleRow]:
    """The rows of the table: each rule's conjuncts placed in their fact's column."""
    params = d.param_values()
    rows = []
    items: Sequence[Any] = list(d.rules) + list(d.scopes)
    for item in items:
        by_fact: dict[str, list[str]] = {}
        gates: list[str] = []
        other: list[str] = []
        for part in _conjuncts(item.when, d.conditions):
            if isinstance(part, ParamTest):
                gates.append(condition_text(part, d.conditions, params))
                continue
            facts = facts_in(part, d.conditions)
            if len(facts) == 1 and not _has_param_test(part, d.conditions):
                by_fact.setdefault(facts[0], []).append(condition_text(part, d.conditions, params, with_fact=False))
            else:
                other.append(condition_text(part, d.conditions, params))
        is_rule = hasattr(item, "then")
        outputs = ", ".join(f"{k} = {v}" for k, v in item.then.items()) if is_rule else f"no value: {item.reason}"
        rows.append(RuleRow(
            id=item.id, kind="rule" if is_rule else "out of scope", line=item.line,
            by_fact={f: " and ".join(v) for f, v in by_fact.items()},
            applies_when="; ".join(gates), other="; ".join(other), outputs=outputs,
            cite=", ".join(item.cite), description=getattr(item, "description", "") or "", cites=tuple(item.cite),
        ))
    return rows


def _has_param_test(c: Condition, named: Mapping[str, Condition]) -> bool:
    if isinstance(c, ParamTest):
        return True
    if isinstance(c, (All, AnyOf)):
        return any(_has_param_test(x, named) for x in c.items)
    if isinstance(c, Not):
        return _has_param_test(c.item, named)
    if isinstance(c, CondRef) and c.name in named:
        return _has_param_test(named[c.name], named)
    return False


def _columns(d: Decision, rows: Sequence[RuleRow]) -> list[str]:
    return [f for f in d.reads if any(f in r.by_fact for r in rows)]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def _cites_md(d: Decision, cites: Sequence[str]) -> str:
    """Citations, those of reference rows as Markdown links (``docs/criteria.md#S9``)."""
    out = []
    for c in cites:
        link = d.cite_link(c)
        out.append(f"[{c}]({link})" if link else c)
    return ", ".join(out)


def render_markdown(decisions: Sequence[Decision]) -> str:
    out: list[str] = []
    for d in decisions:
        rows = rule_rows(d)
        cols = _columns(d, rows)
        extra = any(r.other for r in rows)
        gated = any(r.applies_when for r in rows)
        out += [f"# {d.title}", "",
                f"`{d.id}` version **{d.version}** ({d.status}), effective {d.effective}, hit policy {d.hit_policy}  ",
                f"file `{d.source.display}`, sha256 `{d.sha256}`", ""]
        if d.description:
            out += [" ".join(d.description.split()), ""]
        head = ["rule"] + cols + (["other conditions"] if extra else []) + (["applies when"] if gated else []) + \
            ["result", "cites"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [f"{r.id}" + (" *(out of scope)*" if r.kind != "rule" else "")]
            cells += [r.by_fact.get(c, "") for c in cols]
            cells += [r.other] if extra else []
            cells += [r.applies_when] if gated else []
            cells += [r.outputs, _cites_md(d, r.cites)]
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        out.append("")
        if d.parameters:
            out += ["## Parameters", "", "| parameter | value | why | other readings | cites |", "|---|---|---|---|---|"]
            for p in d.parameters.values():
                alts = "; ".join(f"{_value(v)}: {n}" for v, n in p.alternatives)
                out.append("| " + " | ".join(_md_cell(x) for x in
                                            [p.name, _value(p.value), " ".join(p.note.split()), " ".join(alts.split()),
                                             _cites_md(d, p.cite)]) + " |")
            out.append("")
        out += ["## Sources", ""] + [f"- **{k}**: {v}" for k, v in d.sources.items()] + [""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1b1b1b;line-height:1.4}
h1{font-size:1.4rem;margin-top:2.5rem;border-bottom:2px solid #345;padding-bottom:.3rem}
h2{font-size:1.1rem;margin-top:1.5rem}
.meta{color:#444;font-size:.9rem}.meta code{background:#f1f3f5;padding:0 .25rem;word-break:break-all}
table{border-collapse:collapse;margin:.8rem 0;font-size:.85rem;width:100%}
th,td{border:1px solid #c7ccd1;padding:.3rem .45rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#e9eef3;position:sticky;top:0}
tr.scope td{background:#fff6e0}
td.id{font-weight:600;min-width:9rem;max-width:16rem}
td.result{font-weight:600;color:#0b4f2f;min-width:10rem;overflow-wrap:normal}
td.val{min-width:4rem;overflow-wrap:normal}
th{overflow-wrap:normal}
tr.scope td.result{color:#7a4b00;font-weight:400}
.desc{color:#555;font-weight:400;font-size:.8rem}
@media print{th{position:static}}
"""


def _breakable(name: str) -> str:
    """Escape, and let long snake_case names break after underscores only."""
    return html.escape(name).replace("_", "_<wbr>")


def _file_href(ref: Reference, locator: str) -> str:
    return ref.path.resolve().as_uri() + (f"#{anchor_id(locator)}" if locator else "")


def _cites_html(d: Decision, cites: Sequence[str], href: Callable[[Reference, str], str]) -> str:
    """Citations, those of reference rows as links to the row."""
    parts = []
    for c in cites:
        key, locator = split_citation(c)
        ref = d.references.get(key)
        parts.append(f'<a href="{html.escape(href(ref, locator))}">{html.escape(c)}</a>' if ref is not None
                     else html.escape(c))
    return ", ".join(parts)


def render_html(decisions: Sequence[Decision], title: str = "nbrules decisions",
                cite_href: Callable[[Reference, str], str] = _file_href) -> str:
    """Decisions as one HTML page; ``cite_href(reference, locator)`` makes the link of a
    cited reference row (default: the document's ``file:`` URI and the row's anchor)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title>", f"<style>{_CSS}</style></head><body>", f"<p class=meta>{e(title)}: "
           + ", ".join(f'<a href="#{e(d.id)}">{e(d.key)}</a>' for d in decisions) + "</p>"]
    for d in decisions:
        rows = rule_rows(d)
        cols = _columns(d, rows)
        extra = any(r.other for r in rows)
        gated = any(r.applies_when for r in rows)
        out.append(f'<h1 id="{e(d.id)}">{e(d.title)}</h1>')
        out.append(f"<p class=meta><code>{e(d.id)}</code> version <b>{e(d.version)}</b> ({e(d.status)}), "
                   f"effective {e(d.effective)}, hit policy {e(d.hit_policy)}<br>file <code>{e(d.source.display)}</code>, "
                   f"sha256 <code>{e(d.sha256)}</code></p>")
        if d.description:
            out.append(f"<p>{e(' '.join(d.description.split()))}</p>")
        head = ["rule"] + cols + (["other conditions"] if extra else []) + (["applies when"] if gated else []) + \
            ["result", "cites"]
        out.append("<table class=rules><thead><tr>" + "".join(f"<th>{_breakable(h)}</th>" for h in head)
                   + "</tr></thead><tbody>")
        for r in rows:
            cls = ' class="scope"' if r.kind != "rule" else ""
            desc = f'<div class="desc">{e(" ".join(r.description.split()))}</div>' if r.description else ""
            cells = [f'<td class="id">{e(r.id)}{" (out of scope)" if r.kind != "rule" else ""}'
                     f'<div class="desc">line {r.line}</div>{desc}</td>']
            cells += [f"<td>{e(r.by_fact.get(c, ''))}</td>" for c in cols]
            cells += [f"<td>{e(r.other)}</td>"] if extra else []
            cells += [f"<td>{e(r.applies_when)}</td>"] if gated else []
            cells += [f'<td class="result">{e(r.outputs)}</td>', f"<td>{_cites_html(d, r.cites, cite_href)}</td>"]
            out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        if d.parameters:
            out.append("<h2>Parameters</h2><table class=params><thead><tr><th>parameter</th><th>value</th><th>why</th>"
                       "<th>other readings</th><th>cites</th></tr></thead><tbody>")
            for p in d.parameters.values():
                alts = "<br>".join(f"<b>{e(_value(v))}</b>: {e(' '.join(n.split()))}" for v, n in p.alternatives)
                shown = json.dumps(p.value) if isinstance(p.value, bool) else _value(p.value)
                out.append(f"<tr><td class=id>{_breakable(p.name)}</td><td class=val>{e(shown)}</td>"
                           f"<td>{e(' '.join(p.note.split()))}</td><td>{alts}</td>"
                           f"<td>{_cites_html(d, p.cite, cite_href)}</td></tr>")
            out.append("</tbody></table>")
        out.append("<h2>Sources</h2><ul>" + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in d.sources.items())
                   + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
