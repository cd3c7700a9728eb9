"""What changes between two versions of a decision (``nbrules diff``).

Three views, from the most abstract to the most concrete:

* the **text** of the change: metadata, parameters, named conditions, rules and
  scope exclusions added, removed or altered;
* its **impact over the whole input domain**: both versions are evaluated on one
  partition that refines both (:func:`nbrules.domain.joint_domain`), cell by cell,
  and the transitions are counted with an example patient
  (``intermediate -> high: 36 cells, e.g. ...``); complete cells show outputs, cells
  with unknown facts show what the rules fire;
* its impact on a **cohort** of real patients, streamed row by row through two
  engines, with the ids in each transition kept in temporary files so memory stays
  constant however long the cohort.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Literal, Mapping, Sequence

from .diagnostics import Diagnostic, format_diagnostic
from .domain import joint_domain
from .errors import PatientInputError
from .explain import show_facts, show_value
from .conditions import normal_form
from .model import Condition, Decision
from .protocols import Evaluator
from .render import condition_text
from .results import Result
from .verify import DecisionSpace

__all__ = ["Transition", "Impact", "DecisionDiff", "diff_decisions", "CohortDiff", "diff_cohort", "output_label"]

NO_VALUE = "no value"
#: The cells an impact counts: complete ones, or those with unknown facts.
Region = Literal["complete", "with unknown facts"]
UNDETERMINED = "undetermined"


@dataclass(frozen=True)
class Transition:
    output: str
    old: str
    new: str
    cells: int
    examples: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Impact:
    output: str
    region: Region
    total: int
    unchanged: int
    transitions: tuple[Transition, ...]


@dataclass
class DecisionDiff:
    old: Decision | None
    new: Decision | None
    changes: list[str] = field(default_factory=list)
    impacts: list[Impact] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def title(self) -> str:
        if self.old is None and self.new is not None:
            return f"{self.new.key} added ({self.new.source.display})"
        if self.new is None and self.old is not None:
            return f"{self.old.key} removed ({self.old.source.display})"
        assert self.old is not None and self.new is not None
        return (f"{self.old.id} {self.old.version} -> {self.new.version} "
                f"({self.old.source.display} -> {self.new.source.display})")

    def text(self) -> str:
        lines = [self.title]
        lines += [f"  {format_diagnostic(w)}" for w in self.warnings]
        lines += [f"  {c}" for c in self.changes] or ["  no change in the text of the rules"]
        for imp in self.impacts:
            label = "complete cells" if imp.region == "complete" else "cells with unknown facts (what the rules fire)"
            lines.append(f"  impact on {imp.output}, {imp.total} {label}:")
            for t in imp.transitions:
                ex = "; ".join(show_facts(e) for e in t.examples)
                lines.append(f"    {t.old} -> {t.new}: {t.cells} cell{'s' if t.cells != 1 else ''}, e.g. {ex}")
            lines.append(f"    unchanged: {imp.unchanged} cell{'s' if imp.unchanged != 1 else ''}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old.key if self.old else None,
            "new": self.new.key if self.new else None,
            "changes": list(self.changes),
            "warnings": [w.to_dict() for w in self.warnings],
            "impact": [{"output": i.output, "region": i.region, "cells": i.total, "unchanged": i.unchanged,
                        "transitions": [{"from": t.old, "to": t.new, "cells": t.cells, "examples": list(t.examples)}
                                        for t in i.transitions]} for i in self.impacts],
        }


def _text_changes(old: Decision, new: Decision) -> list[str]:
    out: list[str] = []
    for key in ("version", "status", "effective", "title", "hit_policy"):
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            out.append(f"{key}: {a} -> {b}")
    for key in ("reads",):
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            out.append(f"{key}: {', '.join(a)} -> {', '.join(b)}")
    if dict(old.decides) != dict(new.decides):
        out.append(f"decides: {dict(old.decides)} -> {dict(new.decides)}")
    if dict(old.pending) != dict(new.pending):
        out.append(f"pending values: {dict(old.pending)} -> {dict(new.pending)}")
    for name in sorted(set(old.parameters) | set(new.parameters)):
        a, b = old.parameters.get(name), new.parameters.get(name)
        if a is None and b is not None:
            out.append(f"parameter {name} added: {show_value(b.value)}")
        elif b is None and a is not None:
            out.append(f"parameter {name} removed (was {show_value(a.value)})")
        elif a is not None and b is not None:
            if a.value != b.value:
                out.append(f"parameter {name}: {show_value(a.value)} -> {show_value(b.value)}")
            elif a.note != b.note or a.alternatives != b.alternatives:
                out.append(f"parameter {name}: note or alternatives changed")
    for name in sorted(set(old.conditions) | set(new.conditions)):
        if not _same_condition(old, new, old.conditions.get(name), new.conditions.get(name)):
            out += _changed(f"named condition {name}", _text(old, old.conditions.get(name)),
                            _text(new, new.conditions.get(name)))
    out += _items(old, new, "rule", list(old.rules), list(new.rules))
    out += _items(old, new, "scope exclusion", list(old.scopes), list(new.scopes))
    return out


def _text(d: Decision, c: Condition | None) -> str | None:
    """A condition of ``d`` in words, as the diff shows it."""
    return condition_text(c, d.conditions, d.param_values()) if c is not None else None


def _same_condition(old: Decision, new: Decision, a: Condition | None, b: Condition | None) -> bool:
    """Whether two written conditions say the same: their normal forms are equal (a reordered
    ``all``, a ``not`` pushed inside, a named condition written out … is no change)."""
    if a is None or b is None:
        return a is b
    return normal_form(a, old.conditions, old.param_values()) == normal_form(b, new.conditions, new.param_values())


def _changed(label: str, a: str | None, b: str | None) -> list[str]:
    if a is None:
        return [f"{label} added", f"  + {b}"]
    if b is None:
        return [f"{label} removed", f"  - {a}"]
    return [f"{label} changed", f"  - {a}", f"  + {b}"]


def _items(old: Decision, new: Decision, kind: str, a_items: list[Any], b_items: list[Any]) -> list[str]:
    out: list[str] = []
    a_by = {x.id: x for x in a_items}
    b_by = {x.id: x for x in b_items}
    for rid in [x.id for x in a_items] + [x.id for x in b_items if x.id not in a_by]:
        a, b = a_by.get(rid), b_by.get(rid)
        if a is None or b is None:
            out += _changed(f"{kind} {rid}", _text(old, a.when if a else None), _text(new, b.when if b else None))
            continue
        if not _same_condition(old, new, a.when, b.when):
            out += _changed(f"{kind} {rid}: condition", _text(old, a.when), _text(new, b.when))
        a_then = getattr(a, "then", None) or getattr(a, "reason", None)
        b_then = getattr(b, "then", None) or getattr(b, "reason", None)
        if a_then != b_then:
            out.append(f"{kind} {rid}: result {a_then} -> {b_then}")
        if a.cite != b.cite:
            out.append(f"{kind} {rid}: citations {', '.join(a.cite)} -> {', '.join(b.cite)}")
    return out


def _labels(space: DecisionSpace, decision: Decision, output: str) -> dict[str, int]:
    """Cells per label for one output: each value, NO_VALUE (complete, nothing fires),
    UNDETERMINED (unknown facts, nothing fires)."""
    masks: dict[str, int] = {}
    fired = 0
    for rule, mask in zip(decision.rules, space.rule_true):
        if output in rule.then:
            masks[rule.then[output]] = masks.get(rule.then[output], 0) | mask
            fired |= mask
    masks[NO_VALUE] = space.complete & ~fired
    masks[UNDETERMINED] = space.feasible & ~space.complete & ~fired
    return masks


def diff_decisions(old: Decision, new: Decision, examples: int = 3) -> DecisionDiff:
    """Text changes and cell-by-cell impact between two versions of a decision."""
    result = DecisionDiff(old, new, _text_changes(old, new))
    if old.key == new.key and old.sha256 != new.sha256:
        result.warnings.append(new.positions.diag(
            "NB812", f"{new.key} differs from {old.key} in {old.source.display} (sha256 {old.sha256[:12]} -> "
                     f"{new.sha256[:12]}) but has the same version", "/version",
            hint="raise the version of the edited file: results name a decision by its version"))
    domain = joint_domain([(old, None), (new, None)])
    old_space = DecisionSpace(old, domain=domain)
    new_space = DecisionSpace(new, domain=domain)
    for output in [o for o in old.decides if o in new.decides]:
        a = _labels(old_space, old, output)
        b = _labels(new_space, new, output)
        regions: tuple[tuple[Region, int], ...] = (("complete", old_space.complete),
                                                    ("with unknown facts", old_space.feasible & ~old_space.complete))
        for region, mask in regions:
            transitions = []
            changed = 0
            for la, ma in a.items():
                for lb, mb in b.items():
                    if la == lb:
                        continue
                    m = ma & mb & mask
                    if m:
                        changed |= m
                        transitions.append(Transition(output, la, lb, m.bit_count(),
                                                      tuple(old_space.facts_of(n) for n in old_space.first(m, examples))))
            if region != "complete" and not transitions:
                continue
            transitions.sort(key=lambda t: (-t.cells, t.old, t.new))
            result.impacts.append(Impact(output, region, mask.bit_count(), (mask & ~changed).bit_count(),
                                         tuple(transitions)))
    return result


# --- cohorts --------------------------------------------------------------------------------


def output_label(result: Result, output: str) -> str:
    """How an output reads in a cohort table: its value, ``indeterminate (a or b)`` or ``not applicable``."""
    value = result.outputs.get(output)
    if value is not None:
        return value
    if output in result.indeterminate:
        return "indeterminate (" + " or ".join(result.indeterminate[output].candidates) + ")"
    if output in result.not_applicable:
        return NO_VALUE
    return "not evaluated"


@dataclass
class CohortDiff:
    """Counts and ids of a cohort run through two rule sets (ids and bad rows are spooled
    to temporary files, so memory does not grow with the cohort)."""

    outputs: Sequence[str]
    rows: int = 0
    evaluated: int = 0
    invalid: int = 0
    changed_patients: int = 0
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _ids: dict[tuple[str, str, str], IO[str]] = field(default_factory=dict)
    _bad: IO[str] = field(default_factory=lambda: tempfile.TemporaryFile("w+", encoding="utf-8"))

    def add_change(self, key: tuple[str, str, str], row_id: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        spool = self._ids.get(key)
        if spool is None:
            spool = self._ids[key] = tempfile.TemporaryFile("w+", encoding="utf-8")
        spool.write(row_id + "\n")

    def add_bad(self, number: int, row_id: str | None, problems: Sequence[Diagnostic]) -> None:
        self.invalid += 1
        for d in problems:
            self._bad.write(f"row {number} (id {row_id or 'missing'}): {d.pointer or '(record)'}: {d.code} "
                            f"[{d.name}] {d.message}\n")

    def ids(self, key: tuple[str, str, str]) -> Iterable[str]:
        spool = self._ids[key]
        spool.seek(0)
        for line in spool:
            yield line.rstrip("\n")

    def bad_rows(self) -> Iterable[str]:
        self._bad.seek(0)
        for line in self._bad:
            yield line.rstrip("\n")

    def close(self) -> None:
        for f in self._ids.values():
            f.close()
        self._bad.close()

    def text(self, source: str) -> str:
        lines = [f"cohort {source}: {self.rows} rows, {self.evaluated} evaluated, {self.invalid} invalid, "
                 f"{self.changed_patients} patient{'s' if self.changed_patients != 1 else ''} change"]
        for key in sorted(self.counts, key=lambda k: (k[0], -self.counts[k], k[1], k[2])):
            output, a, b = key
            n = self.counts[key]
            lines.append(f"  {output}  {a} -> {b}: {n} patient{'s' if n != 1 else ''}: {', '.join(self.ids(key))}")
        if self.invalid:
            lines.append("invalid rows (not evaluated):")
            lines += [f"  {line}" for line in self.bad_rows()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "evaluated": self.evaluated, "invalid": self.invalid,
                "changed_patients": self.changed_patients,
                "transitions": [{"output": k[0], "from": k[1], "to": k[2], "patients": self.counts[k],
                                 "ids": list(self.ids(k))} for k in sorted(self.counts)],
                "invalid_rows": list(self.bad_rows())}


def diff_cohort(old_engine: Evaluator, new_engine: Evaluator, rows: Iterable[Any], outputs: Sequence[str]) -> CohortDiff:
    """Run every row through both engines and count the output transitions."""
    report = CohortDiff(outputs)
    for row in rows:
        report.rows += 1
        if not row.ok:
            report.add_bad(row.number, row.id, row.problems)
            continue
        try:
            before = old_engine.evaluate(row.facts)
            after = new_engine.evaluate(row.facts)
        except PatientInputError as exc:
            report.add_bad(row.number, row.id, exc.diagnostics)
            continue
        report.evaluated += 1
        changed = False
        for output in outputs:
            a, b = output_label(before, output), output_label(after, output)
            if a != b:
                changed = True
                report.add_change((output, a, b), row.id)
        report.changed_patients += changed
    return report
