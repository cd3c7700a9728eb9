"""Stage 6, *verify*: every decision checked over its whole input domain, exactly.

Each fact a decision reads is partitioned into the cells its rules distinguish
(:mod:`nbrules.domain`), plus *unknown*.  Every combination is a cell of the
decision's domain; cells are numbered in mixed radix and sets of cells are Python
integers used as bitsets, so "the cells where this rule fires" is computed for all
cells at once with three-valued logic:

* for a test on fact *f*, the cells where it is true (false) are the union of the
  slices ``f = v`` for which it is true (false);
* ``and``/``or`` combine the true and false sets (Kleene);
* cells that no patient can have (they violate an input constraint of the package,
  ``constraints.yaml``) are left out.

From these sets follow: gaps (NB601), overlaps (NB602), rules that never fire
(NB603), tests that change nothing where they stand (NB604), declared gaps (NB605)
and rules firing inside them (NB606).  The same sets answer "which values could
this output still take" for a partly known patient (:func:`candidates`).

This module is the *reference interpreter* of rule-file conditions: plain Python,
used for verification and in the tests that prove durable-rules agrees with it.
"""

from __future__ import annotations

import bisect
import itertools
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

from .conditions import FALSE, NNF, TRUE, And, Atom, Or, atom_truth, atoms, to_nnf
from .constraints import BoundConstraint
from .diagnostics import Diagnostic, Severity
from .domain import DecisionDomain, NumberPartition, decision_domain
from .explain import show_facts, show_value
from .loader import join_pointer
from .model import Decision, Rule, Scope

__all__ = ["DecisionSpace", "DecisionReport", "verify_decision", "candidates", "MAX_EXAMPLES"]

#: Example patients kept per finding.
MAX_EXAMPLES = 3


def _repeat(unit: int, period: int, reps: int) -> int:
    """``unit`` (a pattern of ``period`` bits) repeated ``reps`` times."""
    # By doubling: shifts and ors are linear in the width, where the closed form
    # unit * (2**(period*reps) - 1) // (2**period - 1) needs a quadratic division.
    out, shift, block, width = 0, 0, unit, period
    while reps:
        if reps & 1:
            out |= block << shift
            shift += width
        reps >>= 1
        if reps:
            block |= block << width
            width *= 2
    return out


class DecisionSpace:
    """The cells of one decision (with unknowns) and the bitset algebra over them."""

    def __init__(self, decision: Decision, params: Mapping[str, Any] | None = None,
                 domain: DecisionDomain | None = None, *, given: Mapping[str, Any] | None = None,
                 nnf: tuple[Sequence[NNF], Sequence[NNF]] | None = None,
                 limits: Sequence[BoundConstraint] | None = None) -> None:
        """``given``: facts outside the cells whose values are known (a patient's known
        facts seen from a sub-space, :meth:`subspace`); a test on a fact neither in the
        cells nor given is unknown.  ``nnf`` (rules, scopes) and ``limits`` (the error
        constraints judged for feasibility) are shared by sub-spaces, computed once."""
        self.decision = decision
        self.params = decision.param_values(params)
        self.domain: DecisionDomain = domain or decision_domain(decision, self.params)
        self.facts: tuple[str, ...] = self.domain.facts
        self.given = given
        # radix per fact: its cells plus one "unknown" digit (the last)
        self.radix: tuple[int, ...] = tuple(len(self.domain.partitions[f]) + 1 for f in self.facts)
        self.size = 1
        for r in self.radix:
            self.size *= r
        self.all = (1 << self.size) - 1
        self.strides: list[int] = []
        stride = self.size
        for r in self.radix:
            stride //= r
            self.strides.append(stride)
        self._slices: dict[tuple[int, int], int] = {}
        if nnf is None:
            nnf = ([to_nnf(r.when, decision.conditions, self.params) for r in decision.rules],
                   [to_nnf(s.when, decision.conditions, self.params) for s in decision.scopes])
        self.rule_nnf: list[NNF] = list(nnf[0])
        self.scope_nnf: list[NNF] = list(nnf[1])
        if limits is None:
            cset = decision.constraints
            reads = set(self.facts)
            limits = [b for b in cset.bound({decision.id: self.params}) if b.is_error and b.facts & reads] \
                if cset is not None else []
        #: The error constraints of the package that test a fact of this decision: the one
        #: feasibility check (verify, the missing-fact analysis and the cache judge cells by it).
        self.limits: tuple[BoundConstraint, ...] = tuple(limits)

    def subspace(self, facts: Sequence[str], given: Mapping[str, Any]) -> DecisionSpace:
        """The cells of ``facts`` (a subset of :attr:`facts`, in any order) for a patient
        whose other facts are ``given`` (known facts and constraint context): the same
        encoding, rules and feasibility, over the few cells a partly known patient spans."""
        domain = DecisionDomain(self.decision, {f: self.domain.partitions[f] for f in facts})
        return DecisionSpace(self.decision, self.params, domain, given=given,
                             nnf=(self.rule_nnf, self.scope_nnf), limits=self.limits)

    # -- cells -------------------------------------------------------------------------

    def slice(self, k: int, v: int) -> int:
        """Cells whose fact number ``k`` is in cell ``v`` (``v == radix-1``: unknown)."""
        key = (k, v)
        hit = self._slices.get(key)
        if hit is None:
            hit = self.span(k, v, v + 1)
            self._slices[key] = hit
        return hit

    def span(self, k: int, a: int, b: int) -> int:
        """Cells whose fact number ``k`` is in one of the cells ``a`` … ``b - 1`` (one pass,
        where or-ing ``b - a`` slices would cost ``b - a`` passes over the whole bitset)."""
        if a >= b:
            return 0
        s, r = self.strides[k], self.radix[k]
        unit = ((1 << ((b - a) * s)) - 1) << (a * s)
        return _repeat(unit, s * r, self.size // (s * r))

    def digits(self, n: int) -> tuple[int, ...]:
        return tuple((n // s) % r for s, r in zip(self.strides, self.radix))

    def facts_of(self, n: int) -> dict[str, Any]:
        """A representative patient of cell ``n`` (unknown facts left out)."""
        out: dict[str, Any] = {}
        for f, d, r in zip(self.facts, self.digits(n), self.radix):
            if d != r - 1:
                out[f] = self.domain.partitions[f].cells[d].representative
        return out

    @cached_property
    def known(self) -> int:
        """Cells where every fact is known."""
        mask = self.all
        for k, r in enumerate(self.radix):
            mask &= ~self.slice(k, r - 1)
        return mask & self.all

    @cached_property
    def infeasible(self) -> int:
        """Cells no patient can have: those where an error constraint of the package is
        violated whatever the facts this decision does not read (they count as unknown)."""
        mask = 0
        for m in self.violated:
            mask |= m
        return mask & self.all

    @cached_property
    def violated(self) -> list[int]:
        """Per constraint of :attr:`limits`, the cells where it is surely violated."""
        return [self.sets(b.violation)[0] for b in self.limits]

    @cached_property
    def feasible(self) -> int:
        return self.all & ~self.infeasible

    @cached_property
    def complete(self) -> int:
        """Feasible cells where every fact is known or inapplicable.

        A fact is inapplicable in a cell when each of its values would contradict the
        other known facts (a grade for a ganglioneuroma): such a patient is fully
        described with the fact missing.  Gaps and overlaps are judged on these cells.
        """
        mask = self.feasible
        for k, r in enumerate(self.radix):
            unknown = self.slice(k, r - 1)
            inapplicable = unknown if self.infeasible or r == 1 else 0  # the loop below, when nothing is infeasible
            for v in range(r - 1 if self.infeasible else 0):
                shift = (r - 1 - v) * self.strides[k]
                inapplicable &= (self.infeasible & self.slice(k, v)) << shift
            mask &= ~unknown | inapplicable
        return mask & self.all

    def iter_cells(self, mask: int) -> Iterable[int]:
        n = 0
        while mask:
            low = mask & -mask
            n = low.bit_length() - 1
            yield n
            mask ^= low

    def first(self, mask: int, count: int = MAX_EXAMPLES) -> list[int]:
        return list(itertools.islice(self.iter_cells(mask), count))

    # -- three-valued truth over all cells ---------------------------------------------

    def atom_sets(self, atom: Atom) -> tuple[int, int]:
        """(cells where ``atom`` is true, cells where it is false).

        The truth of the atom is taken on each cell's representative, and on "unknown".
        On numbers, a comparison is monotone over the cells (their representatives
        increase) and an equality holds on at most one cell per value, so the cells are
        grouped into runs of equal truth with a few evaluations (binary search): the
        cost grows with the log of the cells, not with the cells.
        A test on a fact outside the cells is unknown everywhere, or, in a sub-space,
        takes its truth on the given facts.
        """
        if atom.fact not in self.facts:
            if self.given is None:
                return 0, 0
            known = atom_truth(atom, self.given)
            return (self.all, 0) if known is True else (0, self.all) if known is False else (0, 0)
        k = self.facts.index(atom.fact)
        part = self.domain.partitions[atom.fact]
        n = len(part)
        t = f = 0
        for a, b, truth in self._runs(atom, part, self._representatives(atom.fact)):
            if truth is True:
                t |= self.span(k, a, b)
            elif truth is False:
                f |= self.span(k, a, b)
        truth = atom_truth(atom, {})
        if truth is True:
            t |= self.slice(k, n)
        elif truth is False:
            f |= self.slice(k, n)
        return t, f

    def _representatives(self, fact: str) -> list[Any]:
        cache: dict[str, list[Any]] = self.__dict__.setdefault("_reps", {})
        hit = cache.get(fact)
        if hit is None:
            hit = cache[fact] = [c.representative for c in self.domain.partitions[fact].cells]
        return hit

    @staticmethod
    def _runs(atom: Atom, part: Any, reps: Sequence[Any]) -> list[tuple[int, int, bool | None]]:
        """(first cell, end, truth): the known cells of ``part`` in runs of equal truth of ``atom``."""
        n = len(part)

        def truth(v: int) -> bool | None:
            return atom_truth(atom, {atom.fact: reps[v]})

        numeric = isinstance(part, NumberPartition) and n > 2
        if numeric and atom.op in ("lt", "le", "gt", "ge"):
            first = truth(0)
            lo, hi = 0, n  # the first cell whose truth differs from cell 0 is in (lo, hi]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if truth(mid) == first:
                    lo = mid
                else:
                    hi = mid
            return [(0, hi, first), (hi, n, truth(hi))] if hi < n else [(0, n, first)]
        if numeric and atom.op in ("eq", "ne", "in", "nin"):
            values = atom.value if isinstance(atom.value, tuple) else (atom.value,)
            hits = sorted({i for x in values if isinstance(x, (int, float)) and not isinstance(x, bool)
                           for i in (bisect.bisect_left(reps, x),) if i < n and reps[i] == x})
            if len(hits) < n and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
                other = next(i for i in range(n) if i not in hits)
                default = truth(other)
                runs: list[tuple[int, int, bool | None]] = []
                start = 0
                for i in hits:
                    runs += [(start, i, default), (i, i + 1, truth(i))]
                    start = i + 1
                return runs + [(start, n, default)]
        return [(v, v + 1, truth(v)) for v in range(n)]

    def sets(self, node: NNF, forced: Mapping[int, tuple[int, int]] | None = None) -> tuple[int, int]:
        """(true, false) cell sets of an NNF condition; ``forced`` replaces atoms by id()."""
        if isinstance(node, Atom):
            if forced and id(node) in forced:
                return forced[id(node)]
            return self._atom_cache(node)
        if isinstance(node, And):
            t, f = self.all, 0
            for it in node.items:
                ti, fi = self.sets(it, forced)
                t &= ti
                f |= fi
                if f == self.all:
                    break  # false everywhere: the other items change nothing
            return t, f
        if isinstance(node, Or):
            t, f = 0, self.all
            for it in node.items:
                ti, fi = self.sets(it, forced)
                t |= ti
                f &= fi
                if t == self.all:
                    break  # true everywhere
            return t, f
        return (self.all, 0) if node is TRUE else (0, self.all)

    def _atom_cache(self, atom: Atom) -> tuple[int, int]:
        # by identity first (the NNFs hold their atoms), then by value (equal atoms of
        # different rules are computed once)
        ids: dict[int, tuple[int, int]] = self.__dict__.setdefault("_atom_ids", {})
        hit = ids.get(id(atom))
        if hit is None:
            cache: dict[Atom, tuple[int, int]] = self.__dict__.setdefault("_atoms", {})
            hit = cache.get(atom)
            if hit is None:
                hit = self.atom_sets(atom)
                cache[atom] = hit
            ids[id(atom)] = hit
        return hit

    @cached_property
    def rule_true_raw(self) -> list[int]:
        """Per rule, the cells (feasible or not, any knowledge) where it surely fires: a test
        on an unknown fact is unknown, so the rule fires where durable-rules would."""
        return [self.sets(n)[0] for n in self.rule_nnf]

    @cached_property
    def scope_true_raw(self) -> list[int]:
        return [self.sets(n)[0] for n in self.scope_nnf]

    @cached_property
    def rule_true(self) -> list[int]:
        """Per rule, the cells (feasible, any knowledge) where it fires."""
        return [m & self.feasible for m in self.rule_true_raw]

    @cached_property
    def scope_true(self) -> list[int]:
        return [m & self.feasible for m in self.scope_true_raw]

    def cell_of(self, facts: Mapping[str, Any]) -> int:
        """The cell number of a patient (facts the decision does not read are ignored)."""
        n = 0
        key = self.domain.classify(facts)
        for idx, s, r in zip(key, self.strides, self.radix):
            n += (r - 1 if idx is None else idx) * s
        return n

    def compatible(self, facts: Mapping[str, Any], restrict: Mapping[str, Sequence[str]] | None = None) -> int:
        """Complete cells agreeing with the known facts (and restrictions)."""
        mask = self.complete
        key = self.domain.classify(facts)
        for k, (f, idx) in enumerate(zip(self.facts, key)):
            if idx is not None:
                mask &= self.slice(k, idx)
            elif restrict and f in restrict:
                part = self.domain.partitions[f]
                allowed = 0
                for value in restrict[f]:
                    c = part.classify(value)
                    if c is not None:
                        allowed |= self.slice(k, c)
                mask &= allowed
        return mask


def candidates(space: DecisionSpace, output: str, facts: Mapping[str, Any],
               restrict: Mapping[str, Sequence[str]] | None = None) -> tuple[tuple[str, ...], bool]:
    """The values ``output`` takes over the cells compatible with ``facts``, and whether
    some of those cells give it no value (out of scope)."""
    pending = space.decision.pending
    mask = space.compatible({f: v for f, v in facts.items() if v not in pending.get(f, ())}, restrict)
    values: set[str] = set()
    covered = 0
    for rule, fires in zip(space.decision.rules, space.rule_true):
        if output in rule.then and fires & mask:
            values.add(rule.then[output])
            covered |= fires & mask
    declared = space.decision.decides[output]
    ordered = tuple(v for v in declared if v in values)
    return ordered, bool(mask & ~covered)


@dataclass
class DecisionReport:
    """What verify found in one decision."""

    decision: Decision
    cells: int
    known_cells: int
    infeasible_cells: int
    seconds: float
    diagnostics: list[Diagnostic] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    def summary(self) -> str:
        d = self.decision
        errors = sum(1 for x in self.diagnostics if x.is_error)
        warnings = sum(1 for x in self.diagnostics if x.severity is Severity.WARNING)
        infos = sum(1 for x in self.diagnostics if x.severity is Severity.INFO)
        status = "clean" if not errors and not warnings else f"{errors} errors, {warnings} warnings"
        extra = f", {infos} declared gaps/notes" if infos else ""
        return (f"{d.key}: {self.known_cells} complete cells ({self.cells} with unknowns, "
                f"{self.infeasible_cells} contradictory left out), {len(d.rules)} rules, "
                f"{self.seconds * 1000:.0f} ms: {status}{extra}")


def _show(space: DecisionSpace, n: int) -> str:
    facts = space.facts_of(n)
    return show_facts({f: facts[f] for f in space.facts if f in facts})


def _examples(space: DecisionSpace, mask: int) -> str:
    return "; ".join(_show(space, n) for n in space.first(mask))


def _count(n: int) -> str:
    return f"{n} cell{'s' if n != 1 else ''}"


def verify_decision(decision: Decision, params: Mapping[str, Any] | None = None,
                    dead_conditions: bool = True) -> DecisionReport:
    """Check one decision over its whole domain; never raises for rule content.

    ``dead_conditions=False`` skips the search for tests that change nothing (NB604,
    warnings only), the costliest part; governance checks need errors only.
    """
    start = time.perf_counter()
    space = DecisionSpace(decision, params)
    diags: list[Diagnostic] = []
    findings: list[dict[str, Any]] = []
    f = decision.file

    def note(d: Diagnostic, ids: Sequence[str], mask: int = 0) -> None:
        diags.append(d)
        findings.append({"code": d.code, "name": d.name, "severity": d.severity.value if d.severity else "error",
                         "rules": list(ids), "cells": mask.bit_count(),
                         "examples": [space.facts_of(n) for n in space.first(mask)], "message": d.message,
                         "location": d.location()})

    known = space.complete
    rules = space.rule_true
    scopes = space.scope_true
    any_rule = 0
    for m in rules:
        any_rule |= m
    any_scope = 0
    for m in scopes:
        any_scope |= m

    # gaps and declared gaps
    gap = known & ~any_rule & ~any_scope
    if gap:
        note(f.diag("NB601", f"no rule fires for {_count(gap.bit_count())} of complete facts, "
                                     f"e.g. {_examples(space, gap)}", "/rules", key=True,
                            hint="add the missing row, or declare the combination under out_of_scope with its reason"),
             [], gap)
    for scope, mask in zip(decision.scopes, scopes):
        inside = mask & known & ~any_rule
        if inside:
            note(f.diag("NB605", f"scope exclusion '{scope.id}' covers {_count(inside.bit_count())}, "
                                 f"e.g. {_examples(space, inside)}", f"{scope.pointer}/id"), [scope.id], inside)

    # overlaps
    for i, j in _overlapping_pairs(rules):
        ri, rj = decision.rules[i], decision.rules[j]
        both = rules[i] & rules[j]
        conflict = [o for o in ri.then if o in rj.then and ri.then[o] != rj.then[o]]
        if decision.hit_policy == "any" and not conflict:
            continue
        what = (f"set different values for {', '.join(conflict)}" if conflict else "both fire")
        note(f.diag("NB602", f"rules '{ri.id}' and '{rj.id}' {what} in {_count(both.bit_count())}, "
                             f"e.g. {_examples(space, both)}", f"{rj.pointer}/id",
                    hint="make the rules exclusive" + ("" if conflict else
                                                        ", or declare hit_policy: any if they always agree")),
             [ri.id, rj.id], both)
    for scope, smask in zip(decision.scopes, scopes):
        for rule, rmask in zip(decision.rules, rules):
            both = smask & rmask
            if both:
                note(f.diag("NB606", f"rule '{rule.id}' fires inside scope exclusion '{scope.id}' in "
                                     f"{_count(both.bit_count())}, e.g. {_examples(space, both)}",
                            f"{rule.pointer}/id", hint="narrow the rule or the exclusion"), [rule.id, scope.id], both)

    # rules and scopes that never apply
    for item, mask, nnf in list(zip(decision.rules, rules, space.rule_nnf)) + \
            list(zip(decision.scopes, scopes, space.scope_nnf)):
        if mask:
            continue
        gated = _gating_alternative(decision, item, space.params)
        is_scope = isinstance(item, Scope)
        if gated is not None:
            note(f.diag("NB608", f"{'scope exclusion' if is_scope else 'rule'} '{item.id}' applies only "
                                 f"with {gated}", f"{item.pointer}/id"), [item.id])
        elif is_scope:
            note(f.diag("NB607", f"scope exclusion '{item.id}' covers no patient", f"{item.pointer}/id",
                        hint="remove it or correct its condition"), [item.id])
        else:
            why = "its condition is always false" if nnf is FALSE else "no combination of facts satisfies it"
            note(f.diag("NB603", f"rule '{item.id}' fires for no patient: {why}", f"{item.pointer}/id",
                        hint="correct the rule's thresholds or values, or remove it"), [item.id])

    # tests that change nothing where they stand
    for item, mask, nnf in list(zip(decision.rules, rules, space.rule_nnf)) + \
            list(zip(decision.scopes, scopes, space.scope_nnf)):
        if not mask or not dead_conditions:
            continue
        reported: set[str] = set()
        for atom in atoms(nnf):
            if atom.origin in reported:
                continue
            # over every feasible cell, partly unknown ones included: rules fire on partial facts
            for forced_value, label in (((space.all, 0), "always true"), ((0, space.all), "always false")):
                alt = space.sets(nnf, {id(atom): forced_value})[0] & space.feasible
                if alt == mask:
                    reported.add(atom.origin)
                    note(f.diag("NB604", f"in '{item.id}', this test on {atom.fact} is {label} where it stands: "
                                         f"removing it changes no patient's result", atom.origin,
                                hint="remove the test, or correct its threshold or values"), [item.id])
                    break
    # the chain: what this decision derives must itself satisfy the package's constraints.
    # Under an alternative reading of this decision's parameters alone (``params``), a break
    # is a warning: a coherent change moves the readings of every system that shares them.
    alone = " under this reading alone" if params else ""
    for rule, mask, out, value, bound, readers in _chain_violations(space):
        c = bound.constraint
        assert decision.constraints is not None
        example = {**space.facts_of(space.first(mask, 1)[0]), out: value}
        after = f"; {', '.join(readers)} read{'s' if len(readers) == 1 else ''} {out}" if readers else ""
        note(f.diag("NB610", f"rule '{rule.id}' derives {out} = {value} for {_count(mask.bit_count())} that "
                             f"input constraint '{c.id}' refuses ({c.severity}), e.g. {_examples(space, mask)}: "
                             f"{decision.constraints.message(bound, example)}{after}{alone}",
                    join_pointer(f"{rule.pointer}/then", out),
                    hint="make this decision agree with the constraint and with the decisions that read its output "
                         "(a shared threshold), or correct the constraint",
                    severity=Severity.WARNING if params else None),
             [rule.id, c.id], mask)
    return DecisionReport(decision, space.size, known.bit_count(), space.infeasible.bit_count(),
                          time.perf_counter() - start, diags, findings)


def _overlapping_pairs(masks: Sequence[int]) -> list[tuple[int, int]]:
    """Every pair ``i < j`` of intersecting masks, in lexicographic order.

    One sweep finds the masks that meet any earlier one (the union so far); only those
    are compared with the earlier masks one by one.  A table of exclusive rows costs
    one pass per rule instead of one per pair.
    """
    pairs: list[tuple[int, int]] = []
    union = 0
    for j, m in enumerate(masks):
        if m & union:
            pairs += [(i, j) for i in range(j) if masks[i] & m]
        union |= m
    pairs.sort()
    return pairs


def _chain_violations(space: DecisionSpace) -> list[tuple[Rule, int, str, str, BoundConstraint, list[str]]]:
    """Per rule and output: the complete cells where the rule fires and the value it sets,
    added to the cell's facts, violates an input constraint (of either severity).

    Every downstream decision is verified over the cells the constraints allow; a value
    derived outside them would reach a downstream decision where no rule is required to
    fire.  With this check, every complete patient who satisfies the constraints gets,
    from every decision in turn, facts that satisfy them too: the chain has no hole."""
    cset = space.decision.constraints
    if cset is None:
        return []
    d = space.decision
    bound = [b for b in cset.bound({d.id: space.params}) if b.facts & set(d.decides)]
    out: list[tuple[Rule, int, str, str, BoundConstraint, list[str]]] = []
    for rule, fires in zip(d.rules, space.rule_true):
        mask = fires & space.complete
        for o, value in rule.then.items():
            for b in bound:
                if o not in b.facts:
                    continue
                bad = 0
                for n in space.iter_cells(mask):
                    if b.holds({**space.facts_of(n), o: value}):
                        bad |= 1 << n
                if bad:
                    readers = sorted({x.id for x in cset.decisions.values() if o in x.reads})
                    out.append((rule, bad, o, value, b, readers))
    return out


def _gating_alternative(decision: Decision, item: Rule | Scope, params: Mapping[str, Any]) -> str | None:
    """``name = value, ...``: other documented parameter values under which ``item`` can fire.

    Tries every combination of the documented values of the parameters the item uses
    (a rule may need two readings at once, e.g. the INSS-era 12-18-month stage 4 rows).
    """
    from .conditions import params_in

    names = params_in(item.when, decision.conditions)
    choices = [[decision.parameters[n].value] + [v for v, _ in decision.parameters[n].alternatives] for n in names]
    combos = sorted(itertools.product(*choices),
                    key=lambda c: sum(1 for n, v in zip(names, c) if v != params.get(n)))
    for combo in combos:
        trial = dict(params)
        changed = {n: v for n, v in zip(names, combo) if v != params.get(n)}
        if not changed:
            continue
        trial.update(changed)
        space = DecisionSpace(decision, trial)
        index = (list(decision.rules) + list(decision.scopes)).index(item)
        nnf = (space.rule_nnf + space.scope_nnf)[index]
        if nnf is not FALSE and space.sets(nnf)[0] & space.feasible:
            return ", ".join(f"{n} = {show_value(v)}" for n, v in changed.items())
    return None
