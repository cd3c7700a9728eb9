"""Stage 5, *evaluate*: run the compiled decisions on one patient.

Decisions run in dependency order; each one's outputs become facts for the next.
A value given in the input is not re-derived.  When no rule sets an output, the
runner asks what the missing facts could change: it splits the unknown facts into
the cells of the decision's domain (:mod:`nbrules.domain`) and runs the engine on
each box until every box is settled.  The answer is exact:

* every completion gives one value → the output is *settled* (shown as such);
* completions differ → *indeterminate*, with the candidate values and the facts
  whose value changes the answer;
* no completion gives a value → *not applicable* (a declared gap), with the reason.

A rule that fired with facts still missing holds for every completion, because a
test on a missing fact never matches — except a ``known: false`` test, so rules
with one are not trusted until the fact it tests has been filled in.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ._version import __version__
from .backend import EngineRuleset
from .compiler import CompiledRule, Program, compile_decision, engine_fact
from .diagnostics import Diagnostic, has_errors
from .errors import EngineError, PatientInputError, RuleSetError, VersionError
from .model import Decision
from .patient import PatientValidator, facts_sha256, is_contradictory, parse_patient_json
from .pipeline import RuleSetBuild, build_bundled, build_directory, build_sources
from .results import FiredRule, FromInput, Indeterminate, NotApplicable, Result, RulesetInfo, Settled
from .sources import RuleSource
from .vocabulary import input_facts

__all__ = ["RuleEngine", "DecisionRunner", "OutputOutcome", "DecisionOutcome", "select_versions"]

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
        self._analysis: OrderedDict[Any, dict[str, OutputOutcome]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.engine_runs = 0

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
        hits = sorted((self._by_name[n] for n in names), key=lambda r: r.index)
        return [r for r in hits if not r.is_scope], [r for r in hits if r.is_scope]

    def view(self, known: Mapping[str, Any]) -> dict[str, Any]:
        """The facts this decision sees: what it reads, minus pending values."""
        out: dict[str, Any] = {}
        for name in self.decision.reads:
            if name in known and known[name] not in self.decision.pending.get(name, ()):
                out[name] = known[name]
        return out

    def decide(self, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]] | None = None) -> DecisionOutcome:
        """Run the decision on ``view`` (known facts only); ``restrict`` limits unknown
        derived facts to the values their own decision left open."""
        restrict = restrict or {}
        key = None
        if self._cache_size:
            key = (self.program.domain.classify(view), tuple(sorted((k, tuple(v)) for k, v in restrict.items())))
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
        outcome = self._decide(view, restrict)
        if key is not None:
            with self._cache_lock:
                self._cache[key] = outcome
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return outcome

    def _decide(self, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]]) -> DecisionOutcome:
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
                results.update(self._open_outputs(view, unknown, restrict, tuple(open_outputs)))
        ordered = {out: results[out] for out in self._outputs}
        return DecisionOutcome(tuple(fired), tuple(scopes), ordered)

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
                      outputs: tuple[str, ...]) -> dict[str, OutputOutcome]:
        """What the missing facts allow for ``outputs``.  A pure function of the cell of
        ``view``, so it is memoised (bounded)."""
        key = (self.program.domain.classify(view), unknown,
               tuple(sorted((k, tuple(v)) for k, v in restrict.items())), outputs)
        with self._cache_lock:
            hit = self._analysis.get(key)
        if hit is not None:
            return hit
        leaves = self._analyse(view, unknown, restrict)
        result = {out: self._summarise(out, leaves, unknown, restrict) for out in outputs}
        with self._cache_lock:
            self._analysis[key] = result
            if len(self._analysis) > max(self._cache_size, _ANALYSIS_MEMO):
                self._analysis.popitem(last=False)
        return result

    def _analyse(self, view: Mapping[str, Any], unknown: tuple[str, ...],
                 restrict: Mapping[str, Sequence[str]]) -> list[_Leaf]:
        """Split the unknown facts into cells until the engine settles every box."""
        domain = self.program.domain
        leaves: list[_Leaf] = []

        def visit(cells: dict[str, int], remaining: tuple[str, ...]) -> None:
            facts = dict(view)
            for fact, idx in cells.items():
                facts[fact] = domain.partitions[fact].cells[idx].representative
            if cells and is_contradictory(facts):
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
                                    frozenset(s.rule.id for s in trusted_scopes)))
                return
            fact, rest = remaining[0], remaining[1:]
            part = domain.partitions[fact]
            options = [idx for idx in self._allowed(fact, restrict)
                       if not is_contradictory({**facts, fact: part.cells[idx].representative})]
            if not options and self._allowed(fact, restrict):
                visit(cells, rest)  # inapplicable here (a grade for a ganglioneuroma): the fact stays unknown
            for idx in options:
                visit({**cells, fact: idx}, rest)

        visit({}, unknown)
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


def select_versions(decisions: Sequence[Decision], use: Iterable[str] = ()) -> tuple[list[Decision], list[Diagnostic]]:
    """One version per decision: the newest ``active`` one unless ``use`` pins another.

    ``use`` entries are ``decision@version``.  A draft or retired version runs only
    when pinned; a pinned retired version runs with a warning (NB803).
    """
    pins: dict[str, str] = {}
    diags: list[Diagnostic] = []
    for item in use:
        if "@" not in item:
            diags.append(Diagnostic(code="NB802", message=f"'{item}' is not of the form decision@version",
                                    hint="for example --use cog-risk@2.0.0"))
            continue
        did, ver = item.split("@", 1)
        pins[did] = ver
    by_id: dict[str, list[Decision]] = {}
    for d in decisions:
        by_id.setdefault(d.id, []).append(d)
    chosen: list[Decision] = []
    for did, versions in by_id.items():
        if did in pins:
            match = [d for d in versions if d.version == pins[did]]
            if not match:
                diags.append(Diagnostic(code="NB802", message=f"{did}@{pins[did]} is not installed",
                                        hint="installed: " + ", ".join(sorted(d.key for d in versions))))
                continue
            pick = match[0]
            if pick.status == "retired":
                diags.append(Diagnostic(code="NB803", message=f"{pick.key} is retired and runs only because it was pinned"))
            chosen.append(pick)
            continue
        active = [d for d in versions if d.status == "active"]
        if active:
            chosen.append(max(active, key=lambda d: _semver_key(d.version)))
    for did in pins:
        if did not in by_id:
            diags.append(Diagnostic(code="NB802", message=f"no decision '{did}' is installed",
                                    hint="installed: " + ", ".join(sorted(by_id))))
    order = {d.key: i for i, d in enumerate(decisions)}
    chosen.sort(key=lambda d: order[d.key])
    return chosen, diags


def _semver_key(version: str) -> tuple[Any, ...]:
    core, _, pre = version.partition("-")
    nums = tuple(int(x) for x in core.split("."))
    return nums + ((1,) if not pre else (0, pre))


class RuleEngine:
    """Evaluates patients with a checked, compiled set of rule files.

    Create one with :meth:`default` (the bundled rules) or :meth:`from_directory`,
    then call :meth:`evaluate`.  An engine is safe to share between threads; calls
    into durable-rules are serialised by the adapter's lock.
    """

    def __init__(self, build: RuleSetBuild, *, use: Iterable[str] = (), cache_size: int = 0) -> None:
        if not build.ok:
            raise RuleSetError(f"the rule files in {build.label} have errors", build.errors())
        chosen, version_diags = select_versions(build.decisions, use)
        if has_errors(version_diags):
            raise VersionError("cannot select the requested versions", [d for d in version_diags if d.is_error])
        self.build = build
        self.version_warnings = tuple(d for d in version_diags if not d.is_error)
        self.decisions: tuple[Decision, ...] = tuple(chosen)
        self.cache_size = cache_size
        self.runners: tuple[DecisionRunner, ...] = tuple(
            DecisionRunner(compile_decision(d), cache_size=cache_size) for d in self.decisions
        )
        inputs = input_facts()
        self._inputs = inputs
        self._validator = PatientValidator(inputs)
        self._owner = {out: r for r in self.runners for out in r.decision.decides}
        self._engine_label = f"nbrules {__version__}"

    # -- construction ------------------------------------------------------------------

    @classmethod
    def default(cls, *, use: Iterable[str] = (), cache_size: int = 0) -> "RuleEngine":
        """An engine over the rule files bundled with nbrules."""
        return cls(build_bundled(), use=use, cache_size=cache_size)

    @classmethod
    def from_directory(cls, path: str | Path, *, use: Iterable[str] = (), cache_size: int = 0) -> "RuleEngine":
        """An engine over every ``*.yaml`` rule file below ``path``.

        Raises :class:`RuleSetError` with every diagnostic when a file is invalid.
        """
        return cls(build_directory(path), use=use, cache_size=cache_size)

    @classmethod
    def from_sources(cls, sources: Sequence[RuleSource], label: str = "rules", *, use: Iterable[str] = (),
                     cache_size: int = 0) -> "RuleEngine":
        """An engine over rule files held in memory."""
        return cls(build_sources(sources, label), use=use, cache_size=cache_size)

    def close(self) -> None:
        """Free the compiled rulesets in durable-rules."""
        for r in self.runners:
            r.close()

    def __enter__(self) -> "RuleEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- evaluation --------------------------------------------------------------------

    def check_patient(self, facts: Any) -> list[Diagnostic]:
        """Every problem of a patient record (errors and warnings), without evaluating."""
        return self._validator.check(facts)

    def evaluate_json(self, text: str | bytes) -> Result:
        """Parse JSON text strictly, then :meth:`evaluate` it."""
        data, diags = parse_patient_json(text)
        if diags:
            raise PatientInputError("the patient record is not valid JSON", diags)
        return self.evaluate(data)

    def evaluate(self, facts: Mapping[str, Any]) -> Result:
        """Stage, classify and explain one patient.

        Raises :class:`PatientInputError` (with one diagnostic per problem, each with
        its JSON pointer) when the record is invalid.
        """
        diags = self._validator.check(facts)
        if has_errors(diags):
            raise PatientInputError("the patient record is invalid", [d for d in diags if d.is_error])
        warnings: list[Diagnostic] = [d for d in diags if not d.is_error] + list(self.version_warnings)
        given = self._validator.canonical(facts)
        known: dict[str, Any] = dict(given)
        open_values: dict[str, tuple[str, ...]] = {}
        missing_of: dict[str, tuple[str, ...]] = {}
        outputs: dict[str, str | None] = {}
        indeterminate: dict[str, Indeterminate] = {}
        not_applicable: dict[str, NotApplicable] = {}
        settled: dict[str, Settled] = {}
        from_input: dict[str, FromInput] = {}
        fired: list[FiredRule] = []
        for runner in self.runners:
            d = runner.decision
            view = runner.view(known)
            restrict = {f: open_values[f] for f in d.reads if f in open_values}
            if all(out in given for out in d.decides):
                for out in d.decides:
                    outputs[out] = given[out]
                    from_input[out] = FromInput(d.id, given[out])
                warnings.extend(self._compare_given(runner, view, restrict, given))
                continue
            outcome = runner.decide(view, restrict)
            for cr in outcome.fired:
                fired.append(self._trace(len(fired) + 1, runner, cr, view))
            for out, oc in outcome.outputs.items():
                if out in given:
                    outputs[out] = given[out]
                    from_input[out] = FromInput(d.id, given[out])
                    continue
                outputs[out] = oc.value if oc.status in ("set", "settled") else None
                if oc.status == "set":
                    known[out] = oc.value
                elif oc.status == "settled":
                    known[out] = oc.value
                    settled[out] = Settled(d.id, oc.value or "", oc.rules, oc.missing)
                elif oc.status in ("indeterminate", "conflict"):
                    via = {f: missing_of[f] for f in oc.missing if f in missing_of}
                    indeterminate[out] = Indeterminate(d.id, oc.candidates, oc.missing, via, oc.may_be_out_of_scope,
                                                       oc.rules if oc.status == "conflict" else ())
                    open_values[out] = oc.candidates
                    roots: list[str] = []
                    for f in oc.missing:
                        for root in missing_of.get(f, (f,)):
                            if root not in roots:
                                roots.append(root)
                    missing_of[out] = tuple(roots)
                    if oc.status == "conflict":
                        warnings.append(Diagnostic(
                            code="NB520", pointer=f"/{out}",
                            message=f"rules {', '.join(oc.rules)} of {d.key} set different values for {out}: "
                                    f"{', '.join(oc.candidates)}",
                            hint="run 'nbrules verify' on the rule files; this is an overlap"))
                else:
                    open_values[out] = ()
                    not_applicable[out] = NotApplicable(d.id, oc.reason or "", oc.scope,
                                                        self._scope_source(runner, oc.scope))
        rulesets = tuple(RulesetInfo(r.decision.id, r.decision.version, r.decision.status, r.decision.source.display,
                                     r.decision.sha256) for r in self.runners)
        return Result(
            outputs=outputs,
            indeterminate=indeterminate,
            not_applicable=not_applicable,
            settled=settled,
            from_input=from_input,
            fired=tuple(fired),
            warnings=tuple(w.to_dict() for w in warnings),
            rulesets=rulesets,
            input=given,
            input_sha256=facts_sha256(given),
            engine=self._engine_label,
        )

    def _compare_given(self, runner: DecisionRunner, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]],
                       given: Mapping[str, Any]) -> list[Diagnostic]:
        """Warn (NB521) when the rules would derive another value than the one given."""
        d = runner.decision
        if not any(f in given for f in d.reads):
            return []
        outcome = runner.decide(view, restrict)
        out_diags = []
        for out, oc in outcome.outputs.items():
            if oc.status in ("set", "settled") and oc.value != given[out]:
                rules = ", ".join(r.id for r in outcome.fired if out in r.then) or "analysis"
                out_diags.append(Diagnostic(
                    code="NB521", pointer=f"/{out}",
                    message=f"{out} is given as {given[out]}, but {d.key} derives {oc.value} from the given facts "
                            f"(rule {rules}); the given value is used"))
        return out_diags

    def _trace(self, order: int, runner: DecisionRunner, cr: CompiledRule, view: Mapping[str, Any]) -> FiredRule:
        d = runner.decision
        rule = cr.rule
        params = {p: runner.program.params[p] for p in cr.params}
        return FiredRule(
            order=order,
            decision=d.id,
            version=d.version,
            rule=rule.id,
            source=f"{d.source.display}:{rule.line}",
            cite=rule.cite,
            matched={f: view.get(f) for f in cr.facts},
            set=dict(cr.then),
            parameters={k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        )

    @staticmethod
    def _scope_source(runner: DecisionRunner, scope: str | None) -> str | None:
        if scope is None:
            return None
        s = next(x for x in runner.decision.scopes if x.id == scope)
        return f"{runner.decision.source.display}:{s.line}"
