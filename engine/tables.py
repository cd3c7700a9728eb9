"""The table model of a decision: what a clinical reviewer reads, built once.

A :class:`DecisionTable` has a row per rule (and per declared gap), a column per
fact the rules test — directly or inside a named condition —, the result, the
citations (linked to rows of the criteria reference), the named conditions
defined once, the parameters with their readings and notes, and the example cases
with pass or fail.  Values are shown with the vocabulary's labels
(:meth:`nbrules.vocabulary.FactSpec.label`) and parameters with the values in
force for the parameters chosen.

Two emitters use it: ``render`` (Markdown, and static HTML pages) and the
workbench of ``nbrules serve`` (the same HTML template, served).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

from .cases import run_cases
from .conditions import ConditionVisitor, facts_in
from .model import All, AnyOf, CondRef, Condition, Decision, Not, ParamRef, ParamTest, Rule, Scope, Test
from .reference import Reference, split_citation
from .vocabulary import FactSpec

__all__ = ["Cite", "Cell", "RuleRow", "Definition", "ParameterRow", "CaseRow", "DecisionTable", "decision_table",
           "fact_title", "value_label", "PARAMETER_HEADINGS", "CASE_HEADINGS"]

_OPS = {
    "is": "{}",
    "in": "{}",
    "less_than": "under {}",
    "at_most": "at most {}",
    "greater_than": "over {}",
    "at_least": "at least {}",
    "contains_any": "includes {}",
    "contains_all": "includes all of {}",
    "subset_of": "only {}",
}
_JOIN = {"in": " or ", "contains_any": " or ", "contains_all": " and ", "subset_of": ", "}


def fact_title(name: str, spec: FactSpec | None) -> str:
    """The heading of a fact's column: its title, else its name in words."""
    if spec is not None and spec.title:
        return spec.title
    return name.replace("_", " ")


def value_label(value: Any, spec: FactSpec | None) -> str:
    """One value in the clinician's words (``not_amplified`` → ``not amplified``)."""
    if spec is not None:
        return spec.label(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("_", " ")


@dataclass(frozen=True)
class Cite:
    """One citation; ``reference`` and ``locator`` are set for a row of a reference document."""

    text: str
    reference: Reference | None = None
    locator: str = ""


@dataclass(frozen=True)
class Cell:
    """What one rule asks of one fact: tests in words, and named conditions by name."""

    texts: tuple[str, ...] = ()
    chips: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleRow:
    id: str
    kind: Literal["rule", "out of scope"]
    line: int
    description: str
    cells: Mapping[str, Cell]
    other: Cell
    gates: tuple[str, ...]
    in_force: bool
    outputs: tuple[tuple[str, str], ...]
    reason: str
    cites: tuple[Cite, ...]

    @property
    def results(self) -> tuple[str, ...]:
        """The result column, one line per output (``stage = M``), or why there is none."""
        if self.kind == "rule":
            return tuple(f"{out} = {v}" for out, v in self.outputs)
        return (f"no value: {self.reason}",)


@dataclass(frozen=True)
class Definition:
    name: str
    text: str
    facts: tuple[str, ...]


@dataclass(frozen=True)
class ParameterRow:
    name: str
    value: str
    default: str
    note: str
    alternatives: tuple[tuple[str, str], ...]
    cites: tuple[Cite, ...]

    @property
    def changed(self) -> bool:
        return self.value != self.default


@dataclass(frozen=True)
class CaseRow:
    name: str
    given: str
    expect: str
    parameters: str
    passed: bool
    failures: tuple[str, ...]


@dataclass(frozen=True)
class DecisionTable:
    """Everything a review page shows of one decision, under the parameters chosen."""

    decision: Decision
    columns: tuple[tuple[str, str], ...]  # (fact, title)
    rows: tuple[RuleRow, ...]
    definitions: tuple[Definition, ...]
    parameters: tuple[ParameterRow, ...]
    cases: tuple[CaseRow, ...]
    sources: tuple[tuple[str, str, Reference | None], ...]
    has_other: bool
    has_gates: bool

    @property
    def headings(self) -> tuple[tuple[str, str | None], ...]:
        """Column headings of the rule table, each with the fact of its column (else None):
        rule, one per fact, then the optional columns, result and cites."""
        return ((("rule", None),) + tuple((title, fact) for fact, title in self.columns)
                + ((("other conditions", None),) if self.has_other else ())
                + ((("applies when", None),) if self.has_gates else ()) + (("result", None), ("cites", None)))


#: Column headings of the parameter table and of the example-case table.
PARAMETER_HEADINGS = ("parameter", "value", "why", "other readings", "cites")
CASE_HEADINGS = ("case", "given", "expected", "result")


class _Words:
    """Conditions of one decision in words, with labels and the parameters in force."""

    def __init__(self, d: Decision, params: Mapping[str, Any], vocabulary: Mapping[str, FactSpec]) -> None:
        self.d = d
        self.params = params
        self.vocabulary = vocabulary

    def spec(self, fact: str) -> FactSpec | None:
        return self.vocabulary.get(fact) or self.d.facts.get(fact)

    def value(self, v: Any, fact: str, op: str) -> str:
        spec = self.spec(fact)
        if isinstance(v, ParamRef):
            return f"{self.value(self.params.get(v.name), fact, op)} ({v.name})"
        if isinstance(v, (list, tuple)):
            return _JOIN.get(op, ", ").join(value_label(x, spec) for x in v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            unit = spec.unit if spec is not None else ""
            return f"{v:g} {unit}".strip()
        return value_label(v, spec)

    def test(self, t: Test, with_fact: bool) -> str:
        if t.op == "empty":
            text = "none" if t.value else "at least one"
        elif t.op == "known":
            text = "known" if t.value else "unknown"
        elif t.op == "is" and isinstance(t.value, bool):
            text = "yes" if t.value else "no"
        else:
            text = _OPS[t.op].format(self.value(t.value, t.fact, t.op))
        return f"{fact_title(t.fact, self.spec(t.fact))}: {text}" if with_fact else text

    def gate(self, p: ParamTest) -> str:
        values = p.value if isinstance(p.value, (list, tuple)) else [p.value]
        return f"{p.param} is {' or '.join(str(v) for v in values)}"

    def gate_holds(self, p: ParamTest) -> bool:
        current = self.params.get(p.param)
        values = p.value if isinstance(p.value, (list, tuple)) else [p.value]
        return current in values

    def text(self, c: Condition, with_fact: bool = True) -> str:
        return _TableText(self, with_fact).visit(c)


class _TableText(ConditionVisitor[str]):
    """A condition in the table's words; named conditions by name."""

    def __init__(self, words: _Words, with_fact: bool) -> None:
        self.words = words
        self.with_fact = with_fact

    def test(self, c: Test) -> str:
        return self.words.test(c, self.with_fact)

    def param_test(self, c: ParamTest) -> str:
        return "when " + self.words.gate(c)

    def ref(self, c: CondRef) -> str:
        return c.name

    def not_(self, c: Not) -> str:
        return f"not ({self.visit(c.item)})"

    def _join(self, joiner: str, c: All | AnyOf) -> str:
        return joiner.join(f"({p})" if isinstance(x, (All, AnyOf)) and len(x.items) > 1 else p
                           for p, x in zip(self.items(c), c.items))

    def all(self, c: All) -> str:
        return self._join(" and ", c)

    def any(self, c: AnyOf) -> str:
        return self._join(" or ", c)


def simplify(c: Condition, holds: Callable[[ParamTest], bool]) -> Condition | bool:
    """``c`` with every parameter test decided by ``holds(test)``: what the rule asks of the
    patient under the parameters chosen (``True``/``False`` when nothing is left)."""
    return _Simplify(holds).visit(c)


class _Simplify(ConditionVisitor["Condition | bool"]):
    def __init__(self, holds: Callable[[ParamTest], bool]) -> None:
        self.holds = holds

    def test(self, c: Test) -> Condition | bool:
        return c

    def ref(self, c: CondRef) -> Condition | bool:
        return c

    def param_test(self, c: ParamTest) -> Condition | bool:
        return bool(self.holds(c))

    def not_(self, c: Not) -> Condition | bool:
        inner = self.visit(c.item)
        return (not inner) if isinstance(inner, bool) else Not(inner, c.pointer)

    def _items(self, c: All | AnyOf, stop: bool) -> Condition | bool:
        """``stop`` decides the whole: False for all, True for any."""
        kept: list[Condition] = []
        for x in self.items(c):
            if isinstance(x, bool):
                if x is stop:
                    return stop
                continue
            kept.append(x)
        if not kept:
            return not stop
        return kept[0] if len(kept) == 1 else type(c)(tuple(kept), c.pointer)

    def all(self, c: All) -> Condition | bool:
        return self._items(c, False)

    def any(self, c: AnyOf) -> Condition | bool:
        return self._items(c, True)


class _Conjuncts(ConditionVisitor[Iterator[Condition]]):
    """The items of nested ``all`` (named conditions not followed)."""

    def test(self, c: Test) -> Iterator[Condition]:
        yield c

    def param_test(self, c: ParamTest) -> Iterator[Condition]:
        yield c

    def ref(self, c: CondRef) -> Iterator[Condition]:
        yield c

    def not_(self, c: Not) -> Iterator[Condition]:
        yield c

    def any(self, c: AnyOf) -> Iterator[Condition]:
        yield c

    def all(self, c: All) -> Iterator[Condition]:
        for it in self.items(c):
            yield from it


def _conjuncts(c: Condition) -> list[Condition]:
    return list(_Conjuncts().visit(c))


def _cites(d: Decision, cites: Sequence[str]) -> tuple[Cite, ...]:
    out = []
    for c in cites:
        key, locator = split_citation(c)
        out.append(Cite(c, d.references.get(key), locator))
    return tuple(out)


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ", ".join(_show(x) for x in v)
    return str(v)


def _facts_text(d: Decision, facts: Mapping[str, Any]) -> str:
    parts = []
    for k, v in facts.items():
        spec = d.facts.get(k)
        shown = ", ".join(value_label(x, spec) for x in v) if isinstance(v, (list, tuple)) else value_label(v, spec)
        if isinstance(v, (list, tuple)) and not v:
            shown = "none"
        parts.append(f"{fact_title(k, spec)}: {shown}")
    return "; ".join(parts) or "nothing known"


def decision_table(d: Decision, overrides: Mapping[str, Any] | None = None, with_cases: bool = True,
                   vocabulary: Mapping[str, FactSpec] | None = None) -> DecisionTable:
    """The table of ``d`` under its parameters, with ``overrides`` applied.

    ``with_cases`` runs the decision's example cases (through durable-rules, as
    ``nbrules test`` does) to show pass or fail.  ``vocabulary`` (the build's: input
    facts and the words of outputs) gives outputs their titles and value labels.
    """
    params = d.param_values(overrides)
    words = _Words(d, params, vocabulary or {})
    rows: list[RuleRow] = []
    used: list[str] = []
    items: list[Rule | Scope] = [*d.rules, *d.scopes]
    for item in items:
        cells: dict[str, tuple[list[str], list[str]]] = {}
        other: tuple[list[str], list[str]] = ([], [])
        gates = [words.gate(p) for p in _conjuncts(item.when) if isinstance(p, ParamTest)]
        when = simplify(item.when, words.gate_holds)
        in_force = when is not False
        for part in _conjuncts(item.when if isinstance(when, bool) else when):
            if isinstance(part, ParamTest):
                continue
            facts = facts_in(part, d.conditions)
            for f in facts:
                if f not in used:
                    used.append(f)
            if isinstance(part, CondRef):
                # a named condition shows by name in the column of every fact it tests
                for f in facts:
                    cells.setdefault(f, ([], []))[1].append(part.name)
                continue
            target = cells.setdefault(facts[0], ([], [])) if len(facts) == 1 else other
            target[0].append(words.text(part, with_fact=len(facts) != 1))
        is_rule = isinstance(item, Rule)
        outputs = tuple((fact_title(out, words.spec(out)), value_label(v, words.spec(out)))
                        for out, v in item.then.items()) if isinstance(item, Rule) else ()
        rows.append(RuleRow(
            id=item.id, kind="rule" if is_rule else "out of scope", line=item.line,
            description=" ".join((getattr(item, "description", "") or "").split()),
            cells={f: Cell(tuple(t), tuple(c)) for f, (t, c) in cells.items()},
            other=Cell(tuple(other[0]), tuple(other[1])), gates=tuple(gates), in_force=in_force,
            outputs=outputs, reason=" ".join(item.reason.split()) if isinstance(item, Scope) else "",
            cites=_cites(d, item.cite),
        ))
    columns = tuple((f, fact_title(f, words.spec(f))) for f in list(d.reads) if f in used)
    definitions = []
    for name, cond in d.conditions.items():
        shown = simplify(cond, words.gate_holds)
        text = words.text(shown) if not isinstance(shown, bool) else ("always" if shown else "never") \
            + " under these parameters"
        definitions.append(Definition(name, text, tuple(facts_in(cond, d.conditions))))
    defaults = d.param_values()
    parameters = tuple(ParameterRow(
        name=p.name, value=_show(params[p.name]), default=_show(defaults[p.name]), note=" ".join(p.note.split()),
        alternatives=tuple((_show(v), " ".join(n.split())) for v, n in p.alternatives), cites=_cites(d, p.cite))
        for p in d.parameters.values())
    cases: list[CaseRow] = []
    if with_cases and d.cases:
        for r in run_cases([d]):
            c = r.case
            expect = "; ".join(f"{k}: {_expect(v)}" for k, v in c.expect.items())
            if c.fired is not None:
                expect += f"; rules {', '.join(c.fired) or 'none'}"
            cases.append(CaseRow(c.name, _facts_text(d, c.given), expect,
                                 ", ".join(f"{k} = {_show(v)}" for k, v in c.parameters.items()),
                                 r.passed, r.failures))
    sources = tuple((k, v, d.references.get(k)) for k, v in d.sources.items())
    return DecisionTable(d, columns, tuple(rows), tuple(definitions), parameters, tuple(cases), sources,
                         has_other=any(r.other.texts or r.other.chips for r in rows),
                         has_gates=any(r.gates for r in rows))


def _expect(v: Any) -> str:
    if v is None:
        return "not applicable"
    if isinstance(v, str):
        return v
    candidates = getattr(v, "candidates", ())
    missing = getattr(v, "missing", ())
    return f"{' or '.join(candidates)} (missing {', '.join(missing)})"
