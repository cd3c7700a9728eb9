"""Decisions as reviewable tables for a clinical committee (``nbrules render``).

Both emitters print the one table model of :mod:`nbrules.tables`: a row per rule,
a column per fact the rules test, named conditions by name and defined once, the
results, the citations linked to rows of the criteria reference, the parameters
with their notes and other readings, the example cases with pass or fail, and
version, status and file hash.  HTML is the workbench's decision page as a static
file (inline CSS, no scripts, nothing fetched; prints on A4 landscape); Markdown
suits code review.  :func:`condition_text` words a condition for ``diff``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .conditions import ConditionVisitor
from .model import All, AnyOf, CondRef, Condition, Decision, Not, ParamRef, ParamTest, Test
from .reference import Reference, anchor_id
from .tables import CASE_HEADINGS, PARAMETER_HEADINGS, Cell, Cite, decision_table
from .vocabulary import FactSpec

__all__ = ["render_markdown", "render_html", "condition_text"]

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
    return _Text(named, params, with_fact).visit(c)


class _Text(ConditionVisitor[str]):
    """:func:`condition_text`: named conditions written out, an ``any`` in parentheses."""

    def __init__(self, named: Mapping[str, Condition], params: Mapping[str, Any], with_fact: bool) -> None:
        self.named = named
        self.params = params
        self.with_fact = with_fact

    def test(self, c: Test) -> str:
        return _test_text(c, self.with_fact, self.params)

    def param_test(self, c: ParamTest) -> str:
        return f"parameter {c.param} {'=' if c.op == 'is' else 'one of'} {_value(c.value)}"

    def ref(self, c: CondRef) -> str:
        return self.visit(self.named[c.name]) if c.name in self.named else c.name

    def not_(self, c: Not) -> str:
        return f"not ({self.visit(c.item)})"

    def all(self, c: All) -> str:
        return " and ".join(self.items(c))

    def any(self, c: AnyOf) -> str:
        parts = [f"({text})" if _is_conjunction(x, self.named) else text for text, x in zip(self.items(c), c.items)]
        text = " or ".join(parts)
        return f"({text})" if len(parts) > 1 else text


def _is_conjunction(c: Condition, named: Mapping[str, Condition]) -> bool:
    while isinstance(c, CondRef) and c.name in named:
        c = named[c.name]
    return isinstance(c, All) and len(c.items) > 1


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def _md_head(headings: Sequence[str]) -> list[str]:
    return ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]


def _cites_md(cites: Sequence[Cite]) -> str:
    """Citations, those of reference rows as Markdown links (``docs/criteria.md#S9``)."""
    return ", ".join(f"[{c.text}]({c.reference.link(c.locator)})" if c.reference else c.text for c in cites)


def _cell_md(c: Cell | None) -> str:
    if c is None:
        return ""
    return " and ".join(list(c.texts) + [f"*{chip}*" for chip in c.chips])


def render_markdown(decisions: Sequence[Decision], overrides: Mapping[str, Any] | None = None,
                    vocabulary: Mapping[str, FactSpec] | None = None) -> str:
    """Decisions as Markdown tables, from the table model (:func:`nbrules.tables.decision_table`)."""
    out: list[str] = []
    for d in decisions:
        t = decision_table(d, overrides, vocabulary=vocabulary)
        out += [f"# {d.title}", "",
                f"`{d.id}` version **{d.version}** ({d.status}), effective {d.effective}, hit policy {d.hit_policy}  ",
                f"file `{d.source.display}`, sha256 `{d.sha256}`", ""]
        if d.description:
            out += [" ".join(d.description.split()), ""]
        out += _md_head([heading for heading, _ in t.headings])
        for r in t.rows:
            cells = [r.id + (" *(declared gap)*" if r.kind != "rule" else "")]
            cells += [_cell_md(r.cells.get(f)) for f, _ in t.columns]
            cells += [_cell_md(r.other)] if t.has_other else []
            cells += ["; ".join(r.gates) + ("" if r.in_force else " (not in force)")] if t.has_gates else []
            cells += ["; ".join(r.results), _cites_md(r.cites)]
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        out.append("")
        if t.definitions:
            out += ["## Named conditions", ""] + [f"- *{df.name}*: {df.text}" for df in t.definitions] + [""]
        if t.parameters:
            out += ["## Parameters", ""] + _md_head(PARAMETER_HEADINGS)
            for p in t.parameters:
                alts = "; ".join(f"{v}: {n}" for v, n in p.alternatives)
                out.append("| " + " | ".join(_md_cell(x) for x in [p.name, p.value, p.note, alts, _cites_md(p.cites)])
                           + " |")
            out.append("")
        if t.cases:
            out += ["## Example cases", ""] + _md_head(CASE_HEADINGS)
            for c in t.cases:
                res = "pass" if c.passed else "FAIL: " + "; ".join(c.failures)
                out.append("| " + " | ".join(_md_cell(x) for x in [c.name, c.given, c.expect, res]) + " |")
            out.append("")
        out += ["## Sources", ""] + [f"- **{k}**: {v}" for k, v, _ in t.sources] + [""]
    return "\n".join(out)


def _file_href(ref: Reference, locator: str) -> str:
    return ref.path.resolve().as_uri() + (f"#{anchor_id(locator)}" if locator else "")


def templates() -> Any:
    """The Jinja2 environment of the decision pages and the workbench (autoescaping on)."""
    global _ENV
    if _ENV is None:
        import jinja2

        _ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                                  autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
        _ENV.globals.update(parameter_headings=PARAMETER_HEADINGS, case_headings=CASE_HEADINGS)
    return _ENV


_ENV: Any = None


def render_html(decisions: Sequence[Decision], title: str = "nbrules decisions",
                cite_href: Callable[[Reference, str], str] = _file_href,
                overrides: Mapping[str, Any] | None = None, vocabulary: Mapping[str, FactSpec] | None = None) -> str:
    """Decisions as one HTML page: the workbench's decision pages, static.

    ``cite_href(reference, locator)`` makes the link of a cited reference row
    (default: the document's ``file:`` URI and the row's anchor).
    """
    tables = [decision_table(d, overrides, vocabulary=vocabulary) for d in decisions]
    return str(templates().get_template("static_tables.html").render(
        tables=tables, title=title, static=True, level=1,
        cite_href=lambda c: cite_href(c.reference, c.locator), cite_href_doc=lambda r: cite_href(r, ""),
    )) + "\n"
