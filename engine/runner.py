"""Running one compiled decision on durable-rules, and what missing facts could change.

A :class:`DecisionRunner` owns one compiled decision loaded into durable-rules.
When no rule sets an output, it splits the unknown facts into the cells of the
decision's domain (:mod:`nbrules.domain`) and runs the engine on each box until
every box is settled.  The answer is exact:

* every completion gives one value: the output is *settled* (shown as such);
* completions differ: *indeterminate*, with the candidate values and the facts
  whose value changes the answer;
* no completion gives a value: *not applicable* (a declared gap), with the reason.

A rule that fired with facts still missing holds for every completion, because a
test on a missing fact never matches; the exception is a ``known: false`` test, so
rules with one are not trusted until the fact it tests has been filled in.
Completions no patient can have (they violate an input constraint of the package)
are skipped, and a fact that a constraint forbids for the patient (a grade for a
ganglioneuroma) is never asked for: an output that only it could settle is *not
applicable*, naming the constraint.  Constraints are judged on the decision's view
plus the *context*: the other known facts its constraints test.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

from .backend import EngineRuleset
from .compiler import CompiledRule, Program, engine_fact
from .conditions import atom_truth, atoms
from .diagnostics import Diagnostic
from .errors import EngineError
from .results import FiredRule

__all__ = ["DecisionRunner", "DecisionOutcome", "OutputOutcome"]

#: How many missing-fact analyses each decision remembers (they are pure functions of the cell).
_ANALYSIS_MEMO = 4096


@dataclass(frozen=True)
class OutputOutcome:
    """What one decision established about one output."""

    status: str  # set | settled | indeterminate | conflict | not_applicable
    value: str | None = None
    candidates: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    may_be_out_of_scope: bool = False
    reason: str | None = None
    scope: str | None = None
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecisionOutcome:
    fired: tuple[CompiledRule, ...]
    scopes: tuple[CompiledRule, ...]
    outputs: Mapping[str, OutputOutcome]


@dataclass
class _Leaf:
    cells: dict[str, int]
    remaining: tuple[str, ...]
    values: dict[str, frozenset[str] | None]
    rules: dict[str, frozenset[str]]
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: (fact, constraint id) of missing facts that a constraint forbids here.
    inapplicable: tuple[tuple[str, str], ...] = ()


class DecisionRunner:
    """A compiled decision loaded into durable-rules, with its missing-fact analysis."""

    def __init__(self, program: Program, cache_size: int = 0) -> None:
        self.program = program
        self.decision = program.decision
        try:
            self.engine = EngineRuleset(program.label, program.definition)
        except EngineError as exc:
            d = program.decision
            raise EngineError(str(exc), [Diagnostic(code="NB401", message=str(exc), path=d.source.display, line=1,
                                                    column=1)]) from exc
        self._by_name = program.by_engine_name()
        self._outputs = tuple(self.decision.decides)
        self._cache_size = cache_size
        self._cache: OrderedDict[Any, DecisionOutcome] = OrderedDict()
        #: Cache keys (cell, restrictions) whose outcome also depends on the context.
        self._needs_context: set[Any] = set()
        self._analysis: OrderedDict[Any, dict[str, OutputOutcome]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.engine_runs = 0
        self._reads = tuple(self.decision.reads)
        self._pending = {f: frozenset(v) for f, v in self.decision.pending.items()}
        cset = self.decision.constraints
        bound = cset.bound({self.decision.id: program.params}) if cset is not None else ()
        reads = set(self._reads)
        #: Error constraints that test a fact this decision reads.
        self._limits = tuple(b for b in bound if b.is_error and b.facts & reads)
        #: Facts outside ``reads`` those constraints test: the context of :meth:`decide`.
        self.context_facts: tuple[str, ...] = tuple(sorted({f for b in self._limits for f in b.facts} - reads))
        #: The tests those constraints make on the context: two contexts on which they agree
        #: leave every constraint as it is, so the memo keys on their truth, not on the values.
        self._context_atoms = tuple(dict.fromkeys(a for b in self._limits for a in atoms(b.violation)
                                                  if a.fact in self.context_facts))
        # what every trace entry of a rule repeats, computed once
        d = self.decision
        self._static: dict[int, tuple[FiredRule, tuple[str, ...]]] = {}
        for cr in program.rules:
            params = {k: list(v) if isinstance(v, tuple) else v for k, v in ((p, program.params[p]) for p in cr.params)}
            proto = FiredRule(0, d.id, d.version, cr.id, f"{d.source.display}:{cr.rule.line}", cr.rule.cite, {},
                              dict(cr.then), params)
            self._static[cr.index] = (replace(proto, encoded=proto.static_json()), cr.facts)

    def close(self) -> None:
        self.engine.close()

    # -- running the engine ----------------------------------------------------------

    def _fire(self, facts: Mapping[str, Any]) -> tuple[list[CompiledRule], list[CompiledRule]]:
        self.engine_runs += 1
        try:
            names = self.engine.run(engine_fact(facts, self.decision.facts))
        except EngineError as exc:
            raise EngineError(f"{self.decision.key}: {exc}",
                              [Diagnostic(code="NB530", message=f"{self.decision.key}: {exc}")]) from exc
        # a rule split into alternatives (compiler.EXPRESSION_BUDGET) may fire more than once
        hits = sorted({r.index: r for r in (self._by_name[n] for n in names)}.values(), key=lambda r: r.index)
        return [r for r in hits if not r.is_scope], [r for r in hits if r.is_scope]

    def context(self, known: Mapping[str, Any]) -> dict[str, Any]:
        """The known facts outside ``reads`` that this decision's constraints test."""
        return {name: known[name] for name in self.context_facts if name in known}

    def _context_key(self, context: Mapping[str, Any]) -> tuple[bool | None, ...]:
        """What the context is to the constraints: the truth of their tests on it."""
        return tuple([atom_truth(a, context) for a in self._context_atoms])

    def _violated(self, facts: Mapping[str, Any]) -> str | None:
        """Id of the first error constraint ``facts`` violate, or None."""
        for b in self._limits:
            if b.holds(facts):
                return b.constraint.id
        return None

    def view(self, known: Mapping[str, Any]) -> dict[str, Any]:
        """The facts this decision sees: what it reads, minus pending values."""
        pending = self._pending
        return {name: known[name] for name in self._reads
                if name in known and (name not in pending or known[name] not in pending[name])}

    def trace(self, order: int, cr: CompiledRule, view: Mapping[str, Any]) -> FiredRule:
        """The trace entry of a rule that fired for the patient seen as ``view``."""
        p, facts = self._static[cr.index]
        return FiredRule(order, p.decision, p.version, p.rule, p.source, p.cite, {f: view.get(f) for f in facts},
                         dict(p.set), dict(p.parameters), p.encoded)

    def decide(self, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]] | None = None,
               context: Mapping[str, Any] | None = None) -> DecisionOutcome:
        """Run the decision on ``view`` (known facts only); ``restrict`` limits unknown
        derived facts to the values their own decision left open; ``context`` holds the
        other known facts its input constraints test, or all known facts (only those are
        read, and only when the missing-fact analysis needs them)."""
        restrict = restrict or {}
        context = context or {}
        key: tuple[Any, ...] | None = None
        if self._cache_size:
            # the context matters only to the missing-fact analysis, which a cell either
            # always or never needs: such cells are remembered per context too
            key = (self.program.domain.classify(view),
                   tuple(sorted((k, tuple(v)) for k, v in restrict.items())) if restrict else ())
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is None and key in self._needs_context:
                    key = key + (self._context_key(context),)
                    hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
        outcome, analysed = self._decide(view, restrict, context)
        if key is not None:
            if analysed and len(key) == 2:
                with self._cache_lock:
                    if len(self._needs_context) > max(2 * self._cache_size, _ANALYSIS_MEMO):
                        self._needs_context.clear()  # bounded; a key forgotten is found again
                    self._needs_context.add(key)
                key = key + (self._context_key(context),)
            with self._cache_lock:
                self._cache[key] = outcome
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return outcome

    def _decide(self, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]],
                context: Mapping[str, Any]) -> tuple[DecisionOutcome, bool]:
        """The outcome, and whether the missing-fact analysis (which reads the context) ran."""
        analysed = False
        fired, scopes = self._fire(view)
        results: dict[str, OutputOutcome] = {}
        open_outputs: list[str] = []
        for out in self._outputs:
            values = _ordered({r.then[out] for r in fired if out in r.then}, self.decision.decides[out])
            if len(values) == 1:
                results[out] = OutputOutcome("set", values[0])
            elif len(values) > 1:
                setters = tuple(r.id for r in fired if out in r.then)
                results[out] = OutputOutcome("conflict", None, candidates=values, rules=setters)
            else:
                open_outputs.append(out)
        if open_outputs:
            unknown = tuple(f for f in self.decision.reads if f not in view and f in self.program.domain.partitions)
            if not unknown:
                for out in open_outputs:
                    results[out] = self._no_rule(scopes)
            else:
                analysed = True
                results.update(self._open_outputs(view, unknown, restrict, tuple(open_outputs), context))
        ordered = {out: results[out] for out in self._outputs}
        return DecisionOutcome(tuple(fired), tuple(scopes), ordered), analysed

    def _no_rule(self, scopes: Sequence[CompiledRule]) -> OutputOutcome:
        if scopes:
            return OutputOutcome("not_applicable", reason=scopes[0].reason, scope=scopes[0].id)
        return OutputOutcome("not_applicable", reason=f"no rule of {self.decision.key} applies to these facts")

    # -- what the missing facts could change -------------------------------------------

    def _allowed(self, fact: str, restrict: Mapping[str, Sequence[str]]) -> list[int]:
        part = self.program.domain.partitions[fact]
        if fact in restrict:
            idx = [part.classify(v) for v in restrict[fact]]
            return sorted({i for i in idx if i is not None})
        return list(range(len(part)))

    def _open_outputs(self, view: Mapping[str, Any], unknown: tuple[str, ...], restrict: Mapping[str, Sequence[str]],
                      outputs: tuple[str, ...], context: Mapping[str, Any]) -> dict[str, OutputOutcome]:
        """What the missing facts allow for ``outputs``.  A pure function of the cell of
        ``view`` and the context, so it is memoised (bounded)."""
        key = (self.program.domain.classify(view), unknown,
               tuple(sorted((k, tuple(v)) for k, v in restrict.items())), outputs, self._context_key(context))
        with self._cache_lock:
            hit = self._analysis.get(key)
        if hit is not None:
            return hit
        leaves = self._analyse(view, unknown, restrict, context)
        result = {out: self._summarise(out, leaves, unknown, restrict) for out in outputs}
        with self._cache_lock:
            self._analysis[key] = result
            if len(self._analysis) > max(self._cache_size, _ANALYSIS_MEMO):
                self._analysis.popitem(last=False)
        return result

    def _analyse(self, view: Mapping[str, Any], unknown: tuple[str, ...],
                 restrict: Mapping[str, Sequence[str]], context: Mapping[str, Any]) -> list[_Leaf]:
        """Split the unknown facts into cells until the engine settles every box."""
        domain = self.program.domain
        leaves: list[_Leaf] = []

        def visit(cells: dict[str, int], remaining: tuple[str, ...], inapplicable: tuple[tuple[str, str], ...]) -> None:
            facts = dict(view)
            for fact, idx in cells.items():
                facts[fact] = domain.partitions[fact].cells[idx].representative
            if cells and self._violated({**context, **facts}):
                return  # no patient has these facts (e.g. an MKI class for a ganglioneuroma)
            rules, scopes = self._fire(facts)
            pending = set(remaining)
            trusted = [r for r in rules if not (r.unknown_tests & pending)]
            trusted_scopes = [s for s in scopes if not (s.unknown_tests & pending)]
            values: dict[str, frozenset[str] | None] = {}
            setters: dict[str, frozenset[str]] = {}
            for out in self._outputs:
                got = frozenset(r.then[out] for r in trusted if out in r.then)
                if got:
                    values[out] = got
                    setters[out] = frozenset(r.id for r in trusted if out in r.then)
            settled = len(values) == len(self._outputs) or bool(trusted_scopes)
            if settled or not remaining:
                for out in self._outputs:
                    values.setdefault(out, None)
                    setters.setdefault(out, frozenset())
                leaves.append(_Leaf(dict(cells), remaining, values, setters,
                                    frozenset(s.rule.id for s in trusted_scopes), inapplicable))
                return
            fact, rest = remaining[0], remaining[1:]
            part = domain.partitions[fact]
            allowed = self._allowed(fact, restrict)
            blocked = [self._violated({**context, **facts, fact: part.cells[idx].representative}) for idx in allowed]
            options = [idx for idx, why in zip(allowed, blocked) if why is None]
            if not options and allowed:
                # forbidden here by a constraint (a grade for a ganglioneuroma): the fact stays unknown
                visit(cells, rest, inapplicable + ((fact, str(blocked[0])),))
            for idx in options:
                visit({**cells, fact: idx}, rest, inapplicable)

        visit({}, unknown, ())
        return leaves

    def _summarise(self, out: str, leaves: list[_Leaf], order: tuple[str, ...],
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
        candidates = _ordered(values, self.decision.decides[out])
        if not candidates:
            if reasons:
                return OutputOutcome("not_applicable", reason=reasons[0][0], scope=reasons[0][1])
            if leaves and all(leaf.inapplicable for leaf in leaves):
                fact, cid = leaves[0].inapplicable[0]
                return OutputOutcome("not_applicable",
                                     reason=f"needs {fact}, which does not apply to this patient "
                                            f"(input constraint {cid})")
            blocked = [f for f in order if f in restrict and not self._allowed(f, restrict)]
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

    def _relevant(self, out: str, leaves: list[_Leaf], order: tuple[str, ...],
                  restrict: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
        """Unknown facts whose value alone can change ``out``: those worth asking for."""
        table: dict[tuple[int, ...], frozenset[str] | None] = {}
        for leaf in leaves:
            for combo in _expand(leaf, order, lambda f: self._allowed(f, restrict)):
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


def _expand(leaf: _Leaf, order: tuple[str, ...], allowed: Any) -> Iterable[tuple[int, ...]]:
    ranges = []
    for fact in order:
        if fact in leaf.cells:
            ranges.append((leaf.cells[fact],))
        else:
            ranges.append(tuple(allowed(fact)))
    return itertools.product(*ranges)


def _ordered(values: Iterable[str], declared: Sequence[str]) -> tuple[str, ...]:
    vals = set(values)
    return tuple(v for v in declared if v in vals) + tuple(sorted(vals - set(declared)))
