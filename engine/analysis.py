"""What the missing facts of a partly known patient could change, from the domain model.

When no rule sets an output for the known facts, the answer depends on the facts
still unknown.  :class:`MissingFactAnalysis` answers it exactly over the cells of the
decision's domain (:class:`~nbrules.verify.DecisionSpace`, the same encoding and the
same feasibility check that ``nbrules verify`` uses), without running durable-rules:

* every completion gives one value: the output is *settled*;
* completions differ: *indeterminate*, with the candidate values and the facts whose
  value alone changes the answer;
* no completion gives a value: *not applicable* (a declared gap), with the reason.

The unknown facts are split one at a time, in the decision's ``reads`` order, into
their cells until the rules that fire settle every box.  Which rules fire on a box
(the known facts, the cells chosen so far, the other unknown facts missing) is read
from the bitsets of the sub-space the patient spans: a test on a missing fact never
matches, as in durable-rules, except ``known: false``; rules with such a test are not
trusted until the fact it tests has been filled in.  Boxes no patient can have (they
violate an input constraint of the package, judged on the known facts plus the
*context*: the other known facts the constraints test) are skipped, and a fact a
constraint forbids for the patient (a grade for a ganglioneuroma) is never asked for:
an output only it could settle is *not applicable*, naming the constraint.

The rules named by a *settled* answer are those that would set the value, not rules
that fired: every fired rule in a result still comes from running durable-rules on
the known facts (:class:`~nbrules.runner.DecisionRunner`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

from .compiler import CompiledRule, Program
from .verify import DecisionSpace

__all__ = ["Leaf", "MissingFactAnalysis", "OutputOutcome", "Status"]

#: What one decision established about one output: ``set`` by a rule that fired,
#: ``settled`` by the analysis (every completion gives the value), ``indeterminate``,
#: ``conflict`` (rules that fired disagree) or ``not_applicable``.
Status = Literal["set", "settled", "indeterminate", "conflict", "not_applicable"]


@dataclass(frozen=True)
class OutputOutcome:
    """What one decision established about one output."""

    status: Status
    value: str | None = None
    candidates: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    may_be_out_of_scope: bool = False
    reason: str | None = None
    scope: str | None = None
    rules: tuple[str, ...] = ()


@dataclass
class Leaf:
    """A box of completions on which the trusted rules settle every output (or no
    unknown fact is left to split): cell indices of the facts split so far."""

    cells: dict[str, int]
    remaining: tuple[str, ...]
    values: dict[str, frozenset[str] | None]
    rules: dict[str, frozenset[str]]
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: (fact, constraint id) of missing facts that a constraint forbids here.
    inapplicable: tuple[tuple[str, str], ...] = ()


class MissingFactAnalysis:
    """The missing-fact analysis of one compiled decision over its domain model."""

    def __init__(self, program: Program, space: DecisionSpace | None = None) -> None:
        self.program = program
        self.decision = program.decision
        self._items: tuple[CompiledRule, ...] = program.rules + program.scopes
        self.space = space or DecisionSpace(program.decision, program.params, program.domain,
                                            nnf=([r.nnf for r in program.rules], [s.nnf for s in program.scopes]))
        self._outputs = tuple(self.decision.decides)
        #: Facts outside the decision's cells that its input constraints test: the context.
        self.context_facts: tuple[str, ...] = tuple(sorted({f for b in self.space.limits for f in b.facts}
                                                           - set(self.space.facts)))

    # -- the answer ------------------------------------------------------------------------

    def outcomes(self, view: Mapping[str, Any], unknown: tuple[str, ...], restrict: Mapping[str, Sequence[str]],
                 outputs: Sequence[str], context: Mapping[str, Any]) -> dict[str, OutputOutcome]:
        """Per output of ``outputs`` (none of which a rule set on ``view``), what the
        ``unknown`` facts (read, partitioned, missing from ``view``; in ``reads`` order)
        allow.  ``restrict`` limits unknown derived facts to the values their decision
        left open; ``context`` holds known facts outside ``view`` (only those the input
        constraints test are read)."""
        leaves = self.leaves(view, unknown, restrict, context)
        return {out: self._summarise(out, leaves, unknown, restrict) for out in outputs}

    def allowed(self, fact: str, restrict: Mapping[str, Sequence[str]]) -> list[int]:
        """Cell indices ``fact`` may take: all, or those of its restricted values."""
        part = self.program.domain.partitions[fact]
        if fact in restrict:
            idx = [part.classify(v) for v in restrict[fact]]
            return sorted({i for i in idx if i is not None})
        return list(range(len(part)))

    # -- splitting the unknown facts ----------------------------------------------------

    def leaves(self, view: Mapping[str, Any], unknown: tuple[str, ...], restrict: Mapping[str, Sequence[str]],
               context: Mapping[str, Any]) -> list[Leaf]:
        """Split the unknown facts into cells until the rules settle every box."""
        given = {**{f: context[f] for f in self.context_facts if f in context}, **view}
        sub = self.space.subspace(unknown, given)
        # the rules and scope exclusions that fire somewhere in the sub-space, in order
        items, fires = [], []
        for cr, mask in zip(self._items, sub.rule_true_raw + sub.scope_true_raw):
            if mask:
                items.append(cr)
                fires.append(mask)
        violated = list(zip(sub.violated, (b.constraint.id for b in sub.limits)))
        strides = {f: (s, r - 1) for f, s, r in zip(sub.facts, sub.strides, sub.radix)}
        leaves: list[Leaf] = []

        def why(n: int) -> str | None:
            for mask, cid in violated:
                if mask >> n & 1:
                    return cid
            return None

        def visit(n: int, cells: dict[str, int], remaining: tuple[str, ...],
                  inapplicable: tuple[tuple[str, str], ...]) -> None:
            if cells and why(n) is not None:
                return  # no patient has these facts (e.g. an MKI class for a ganglioneuroma)
            pending = set(remaining)
            leaf = self.box(cells, remaining, [cr for cr, m in zip(items, fires) if m >> n & 1
                                               and not (cr.unknown_tests & pending)], inapplicable)
            if leaf is not None:
                leaves.append(leaf)
                return
            fact, rest = remaining[0], remaining[1:]
            stride, unknown_digit = strides[fact]
            base = n - unknown_digit * stride
            allowed = self.allowed(fact, restrict)
            blocked = [why(base + idx * stride) for idx in allowed]
            options = [idx for idx, b in zip(allowed, blocked) if b is None]
            if not options and allowed:
                # forbidden here by a constraint (a grade for a ganglioneuroma): the fact stays unknown
                visit(n, cells, rest, inapplicable + ((fact, str(blocked[0])),))
            for idx in options:
                visit(base + idx * stride, {**cells, fact: idx}, rest, inapplicable)

        visit(sum(d * s for d, s in strides.values()), {}, unknown, ())
        return leaves

    def box(self, cells: dict[str, int], remaining: tuple[str, ...], trusted: Sequence[CompiledRule],
            inapplicable: tuple[tuple[str, str], ...]) -> Leaf | None:
        """The leaf of a box on which the ``trusted`` rules and scope exclusions fire, or
        None when it must be split further: some output has no value, no scope exclusion
        fires and unknown facts remain."""
        rules = [r for r in trusted if not r.is_scope]
        scopes = [s for s in trusted if s.is_scope]
        values: dict[str, frozenset[str] | None] = {}
        setters: dict[str, frozenset[str]] = {}
        for out in self._outputs:
            got = frozenset(r.then[out] for r in rules if out in r.then)
            if got:
                values[out] = got
                setters[out] = frozenset(r.id for r in rules if out in r.then)
        settled = len(values) == len(self._outputs) or bool(scopes)
        if not settled and remaining:
            return None
        for out in self._outputs:
            values.setdefault(out, None)
            setters.setdefault(out, frozenset())
        return Leaf(dict(cells), remaining, values, setters, frozenset(s.rule.id for s in scopes), inapplicable)

    # -- from the boxes to the answer ---------------------------------------------------

    def _summarise(self, out: str, leaves: list[Leaf], order: tuple[str, ...],
                   restrict: Mapping[str, Sequence[str]]) -> OutputOutcome:
        values: set[str] = set()
        rules: set[str] = set()
        out_of_scope = False
        reasons: list[tuple[str, str | None]] = []
        for leaf in leaves:
            got = leaf.values[out]
            if got is None:
                out_of_scope = True
                for sid in sorted(leaf.scopes):
                    scope = next(s for s in self.program.scopes if s.id == sid)
                    reasons.append((scope.reason, sid))
            else:
                values |= got
                rules |= leaf.rules[out]
        candidates = ordered(values, self.decision.decides[out])
        if not candidates:
            if reasons:
                return OutputOutcome("not_applicable", reason=reasons[0][0], scope=reasons[0][1])
            if leaves and all(leaf.inapplicable for leaf in leaves):
                fact, cid = leaves[0].inapplicable[0]
                return OutputOutcome("not_applicable",
                                     reason=f"needs {fact}, which does not apply to this patient "
                                            f"(input constraint {cid})")
            blocked = [f for f in order if f in restrict and not self.allowed(f, restrict)]
            if blocked:
                return OutputOutcome("not_applicable",
                                     reason=f"needs {', '.join(blocked)}, which has no value for this patient")
            if not leaves:
                return OutputOutcome("not_applicable",
                                     reason="no value of the missing facts is consistent with the given facts")
            return OutputOutcome("not_applicable", reason=f"no rule of {self.decision.key} applies to these facts")
        if len(candidates) == 1 and not out_of_scope:
            ruleids = tuple(r.id for r in self.decision.rules if r.id in rules)
            return OutputOutcome("settled", candidates[0], rules=ruleids, missing=order)
        missing = self._relevant(out, leaves, order, restrict)
        return OutputOutcome("indeterminate", candidates=candidates, missing=missing, may_be_out_of_scope=out_of_scope)

    def _relevant(self, out: str, leaves: list[Leaf], order: tuple[str, ...],
                  restrict: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
        """Unknown facts whose value alone can change ``out``: those worth asking for."""
        table: dict[tuple[int, ...], frozenset[str] | None] = {}
        for leaf in leaves:
            for combo in _expand(leaf, order, lambda f: self.allowed(f, restrict)):
                table[combo] = leaf.values[out]
        relevant: list[str] = []
        for k, fact in enumerate(order):
            groups: dict[tuple[int, ...], frozenset[str] | None] = {}
            for combo, val in table.items():
                rest = combo[:k] + combo[k + 1:]
                if rest in groups and groups[rest] != val:
                    relevant.append(fact)
                    break
                groups.setdefault(rest, val)
        return tuple(relevant)


def _expand(leaf: Leaf, order: tuple[str, ...], allowed: Any) -> Iterable[tuple[int, ...]]:
    ranges = []
    for fact in order:
        if fact in leaf.cells:
            ranges.append((leaf.cells[fact],))
        else:
            ranges.append(tuple(allowed(fact)))
    return itertools.product(*ranges)


def ordered(values: Iterable[str], declared: Sequence[str]) -> tuple[str, ...]:
    """``values`` in the declared order of the output's values (undeclared ones last, sorted)."""
    vals = set(values)
    return tuple(v for v in declared if v in vals) + tuple(sorted(vals - set(declared)))
