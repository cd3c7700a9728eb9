"""Running one compiled decision on durable-rules, with a per-cell cache.

A :class:`DecisionRunner` owns one compiled decision loaded into durable-rules.  Every
rule that fired in a result comes from running the engine on the patient's known facts
(pending values left out).  When no rule sets an output and facts are missing, what
they could change is answered by :class:`~nbrules.analysis.MissingFactAnalysis` from
the decision's domain model (the cells ``nbrules verify`` enumerates), without further
engine runs: settled, indeterminate (candidates and the facts worth asking for) or not
applicable (with the reason).

Outcomes are remembered per cell (``cache_size`` > 0).  The key holds only what the
rules in force can tell apart: the cell of every fact a rule or scope exclusion tests,
and for the other facts only whether they are known.  When the missing-fact analysis
ran, the key also holds the cells of untested facts the input constraints test and the
truth of those constraints' tests on the *context* (the other known facts they test).
``cache_size=0`` keeps nothing.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, Callable, Mapping, Sequence

from .analysis import MissingFactAnalysis, OutputOutcome, Status, ordered
from .backend import EngineRuleset, engine_json
from .compiler import CompiledRule, Program, engine_fact
from .conditions import atom_truth, atoms
from .diagnostics import Diagnostic
from .errors import EngineError
from .results import FiredRule

__all__ = ["DecisionRunner", "DecisionOutcome", "Lesson", "OutputOutcome", "Status"]


@dataclass(frozen=True)
class DecisionOutcome:
    fired: tuple[CompiledRule, ...]
    scopes: tuple[CompiledRule, ...]
    outputs: Mapping[str, OutputOutcome]
    #: Per rule in ``fired``: its trace entry's prototype (:meth:`FiredRule.at`), the facts
    #: its ``matched`` holds and whether they must be read from the view (a fact it matches
    #: has pending values, or is not read) rather than from all known facts, which give the
    #: same values otherwise.  Filled by the runner; not part of the value.
    traces: tuple[tuple[FiredRule, tuple[str, ...], bool], ...] = field(default=(), compare=False, repr=False)


#: An outcome as :meth:`DecisionRunner.learn` takes it (picklable): its cache key (a long
#: key when the missing-fact analysis ran), the indexes of the rules and scope exclusions
#: that fired, and the outcome of each output.
Lesson = tuple[Any, tuple[int, ...], tuple[int, ...], dict[str, OutputOutcome]]

#: A fact not in a view (``None`` may be a value).
_UNSEEN = object()
#: In a key's recipe: the fact's value stands for its cell.
_SAME = object()


def _values_of(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The tuple of the values of ``names`` in a mapping (KeyError when one is missing)."""
    if len(names) > 1:
        return itemgetter(*names)
    if names:
        name = names[0]
        return lambda facts: (facts[name],)
    return lambda facts: ()


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
        #: Cache keys whose outcome came from the missing-fact analysis, which also reads the
        #: cells of untested facts the constraints test and the context: their entries are
        #: stored under a longer key.
        self._analysed: set[Any] = set()
        self._cache_lock = threading.Lock()
        #: When a list, every outcome :meth:`decide` computes is noted here too, as a
        #: :data:`Lesson`, for :meth:`learn` in another process (batch workers share cells);
        #: see :meth:`keep_journal` and :meth:`take_journal`.
        self.journal: list[Lesson] | None = None
        self.engine_runs = 0
        self._reads = tuple(self.decision.reads)
        self._pending = {f: frozenset(v) for f, v in self.decision.pending.items()}
        #: The domain model's answer to what missing facts could change.
        self.analysis = MissingFactAnalysis(program)
        #: Error constraints that test a fact this decision reads (the one feasibility check).
        self._limits = self.analysis.space.limits
        #: Facts outside ``reads`` those constraints test: the context of :meth:`decide`.
        self.context_facts: tuple[str, ...] = self.analysis.context_facts
        #: The tests those constraints make on the context: two contexts on which they agree
        #: leave every constraint as it is, so the cache keys on their truth, not on the values.
        self._context_atoms = tuple(dict.fromkeys(a for b in self._limits for a in atoms(b.violation)
                                                  if a.fact in self.context_facts))
        domain = program.domain
        tested = {a.fact for cr in program.rules + program.scopes for a in atoms(cr.nnf)
                  if a.op not in ("known", "unknown")}
        limited = {f for b in self._limits for f in b.facts}
        #: Per partitioned fact, its classifier when a rule or scope exclusion tests its value
        #: (None: the rules in force cannot tell its values apart, only known from unknown).
        self._key_classifiers = tuple((name, part.cell_of if name in tested else None)
                                      for name, part in domain.partitions.items())
        #: The recipe of the key (:meth:`cache_key`): the tested facts each value of which is
        #: its own cell (value sets, booleans), whose values stand for their cells and are read
        #: in one call; the other tested facts, with their classifier; the untested facts, of
        #: which only whether they are known counts.
        parts = domain.partitions
        self._same_names = tuple(n for n, c in self._key_classifiers if c is not None and parts[n].value_is_cell)
        self._same = _values_of(self._same_names)
        self._classified = tuple((n, c) for n, c in self._key_classifiers if c is not None and not parts[n].value_is_cell)
        self._untested = tuple(n for n, c in self._key_classifiers if c is None)
        #: Facts with pending values (the view leaves those out) and whether every
        #: partitioned fact is one the decision reads (the view holds no other): when both
        #: hold for a patient, :meth:`cached` keys on all its known facts as on its view.
        self._pending_items = tuple(self._pending.items())
        self._reads_partitioned = all(name in self._reads for name, _ in self._key_classifiers)
        #: Untested facts the input constraints test: the analysis reads their cells.
        self._limit_classifiers = tuple((name, part.cell_of) for name, part in domain.partitions.items()
                                        if name not in tested and name in limited)
        self._by_index = {cr.index: cr for cr in program.rules + program.scopes}
        # what every trace entry of a rule repeats, computed once
        d = self.decision
        self._static: dict[int, tuple[FiredRule, tuple[str, ...]]] = {}
        for cr in program.rules:
            params = {k: list(v) if isinstance(v, tuple) else v for k, v in ((p, program.params[p]) for p in cr.params)}
            proto = FiredRule(0, d.id, d.version, cr.id, f"{d.source.display}:{cr.rule.line}", cr.rule.cite, {},
                              dict(cr.then), params)
            self._static[cr.index] = (replace(proto, encoded=proto.static_json()), cr.facts)
        #: Rules whose matched facts are all read, none with pending values: their trace's
        #: ``matched`` can be read from all known facts as from the view.
        self._plain_match = frozenset(cr.index for cr in program.rules
                                      if all(f in self._reads and f not in self._pending for f in cr.facts))

    def close(self) -> None:
        self.engine.close()

    @functools.cached_property
    def signature(self) -> str:
        """What another runner of the same checked build must have for :meth:`learn` to
        take its lessons: the decision (its file's hash) and its compiled rules,
        parameters applied."""
        return f"{self.program.label}:{hashlib.sha256(engine_json(self.program.definition).encode()).hexdigest()}"

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

    def view(self, known: Mapping[str, Any]) -> dict[str, Any]:
        """The facts this decision sees: what it reads, minus pending values."""
        pending = self._pending
        return {name: known[name] for name in self._reads
                if name in known and (name not in pending or known[name] not in pending[name])}

    def cached(self, known: Mapping[str, Any], restrict: Mapping[str, Sequence[str]]) -> DecisionOutcome | None:
        """The outcome :meth:`decide` remembers for the view of ``known`` (all known facts)
        and ``restrict``, mostly without making the view; None when it has none to give this
        way (cache off, cell not met yet, or an outcome of the missing-fact analysis, whose
        key is longer: :meth:`decide` finds those)."""
        if not self._cache_size:
            return None
        facts = known
        if not self._reads_partitioned:
            facts = self.view(known)
        else:
            for name, pending in self._pending_items:
                if known.get(name, _UNSEEN) in pending:
                    facts = self.view(known)
                    break
        key = self.cache_key(facts, restrict)
        if self._analysed and key in self._analysed:
            return None
        return self._cache.get(key)  # one call: atomic under the GIL

    def cache_key(self, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]]) -> tuple[Any, ...]:
        """What the rules in force can tell apart of ``view`` and ``restrict``: the cell of
        each fact a rule tests (the value itself where each value is its own cell; None when
        unknown), and for a fact no rule tests only whether it is known."""
        try:
            cells = (self._same(view), tuple([c(view[name]) for name, c in self._classified]),
                     tuple([name in view for name in self._untested]))
        except KeyError:  # a fact is unknown
            get, missing = view.get, _UNSEEN
            cells = (tuple([get(name) for name in self._same_names]),
                     tuple([None if (v := get(name, missing)) is missing else c(v) for name, c in self._classified]),
                     tuple([name in view for name in self._untested]))
        return cells, tuple(sorted((k, tuple(v)) for k, v in restrict.items())) if restrict else ()

    def _analysis_key(self, view: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[Any, ...]:
        """What the missing-fact analysis reads beyond :meth:`cache_key`."""
        return (tuple([c(view[name]) if name in view else None for name, c in self._limit_classifiers]),
                self._context_key(context))

    def decide(self, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]] | None = None,
               context: Mapping[str, Any] | None = None) -> DecisionOutcome:
        """Run the decision on ``view`` (known facts only); ``restrict`` limits unknown
        derived facts to the values their own decision left open; ``context`` holds the
        other known facts its input constraints test, or all known facts (only those are
        read, and only when the missing-fact analysis needs them).  One engine run, none
        when the outcome of the cell is cached."""
        restrict = restrict or {}
        context = context or {}
        key: tuple[Any, ...] | None = None
        if self._cache_size:
            # whether the analysis runs is a function of the short key; when it does, the
            # outcome is stored under the long one
            key = self.cache_key(view, restrict)
            with self._cache_lock:
                if self._analysed and key in self._analysed:
                    key = key + self._analysis_key(view, context)
                hit = self._cache.get(key)
                if hit is not None:
                    return hit
        outcome, analysed = self._decide(view, restrict, context)
        if key is not None:
            with self._cache_lock:
                if analysed and len(key) == 2:
                    key = key + self._analysis_key(view, context)
                self._remember(key, outcome)
                journal = self.journal  # read once: another thread may take or stop it
                if journal is not None:
                    journal.append((key, tuple(r.index for r in outcome.fired),
                                    tuple(r.index for r in outcome.scopes), dict(outcome.outputs)))
        return outcome

    def _remember(self, key: tuple[Any, ...], outcome: DecisionOutcome) -> None:
        """Store ``outcome`` under ``key`` (a long key: the missing-fact analysis ran, and its
        short key is marked so); the oldest entry goes when full.  Under the cache lock."""
        if len(key) > 2:
            if len(self._analysed) > 2 * self._cache_size:
                self._analysed.clear()  # bounded; a key forgotten is found again
            self._analysed.add(key[:2])
        self._cache[key] = outcome
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)  # the oldest out

    def keep_journal(self, on: bool) -> None:
        """Start (an empty :attr:`journal`) or stop noting the outcomes computed."""
        with self._cache_lock:
            self.journal = [] if on else None

    def take_journal(self) -> list[Lesson]:
        """What :attr:`journal` noted since last taken (none when it is off)."""
        with self._cache_lock:
            taken = self.journal
            if taken:
                self.journal = []
        return taken or []

    def learn(self, lessons: Sequence[Lesson]) -> None:
        """Remember outcomes another runner computed (its :attr:`journal`), as if
        :meth:`decide` had computed them here: an outcome is a function of its key.  Only
        for runners of one checked build and one configuration (batch workers forked from
        one engine): :attr:`signature` tells decisions and parameters apart, not the
        facts' partitions or the input constraints, which the build fixes."""
        if not self._cache_size:
            return
        by_index = self._by_index
        with self._cache_lock:
            for key, fired, scopes, outputs in lessons:
                if key not in self._cache:
                    self._remember(key, self._outcome([by_index[i] for i in fired], [by_index[i] for i in scopes],
                                                      outputs))

    def _decide(self, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]],
                context: Mapping[str, Any]) -> tuple[DecisionOutcome, bool]:
        """The outcome, and whether the missing-fact analysis (which reads the context) ran."""
        analysed = False
        fired, scopes = self._fire(view)
        results: dict[str, OutputOutcome] = {}
        open_outputs: list[str] = []
        for out in self._outputs:
            values = ordered({r.then[out] for r in fired if out in r.then}, self.decision.decides[out])
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
                results.update(self.analysis.outcomes(view, unknown, restrict, open_outputs, context))
        return self._outcome(fired, scopes, {out: results[out] for out in self._outputs}), analysed

    def _outcome(self, fired: Sequence[CompiledRule], scopes: Sequence[CompiledRule],
                 outputs: Mapping[str, OutputOutcome]) -> DecisionOutcome:
        traces = tuple((*self._static[r.index], r.index not in self._plain_match) for r in fired)
        return DecisionOutcome(tuple(fired), tuple(scopes), outputs, traces)

    def _no_rule(self, scopes: Sequence[CompiledRule]) -> OutputOutcome:
        if scopes:
            return OutputOutcome("not_applicable", reason=scopes[0].reason, scope=scopes[0].id)
        return OutputOutcome("not_applicable", reason=f"no rule of {self.decision.key} applies to these facts")
