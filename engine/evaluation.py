"""Evaluation orchestration: the rule set in force, the plan of decisions to run, and
one patient evaluated on it.

A :class:`RuleSetState` is one complete, checked, compiled rule set (versions chosen,
profile read, one :class:`~nbrules.runner.DecisionRunner` per decision).  :func:`evaluate_patient`
runs its decisions in dependency order on one patient: each decision sees its *view* of
the known facts, an output given in the input is not re-derived (NB521 when the rules
would derive another value), and the outcomes become the :class:`~nbrules.results.Result`.
"""

from __future__ import annotations

import datetime
from typing import Any, Iterable, Mapping, Sequence

from .diagnostics import Diagnostic, has_errors
from .errors import PatientInputError, RuleSetError, VersionError
from .governance import governance_problems
from .model import Decision
from .patient import PatientValidator, facts_sha256
from .pipeline import RuleSetBuild
from .results import APPLIES_IF_GIVEN, FiredRule, FromInput, Indeterminate, KnowledgeInfo, NotApplicable, Result, RulesetInfo, Settled
from .runner import DecisionOutcome, DecisionRunner
from .versions import choose_versions

__all__ = ["RuleSetState", "evaluate_patient", "scope_source"]

#: What evaluate_patient reads of a decision: its runner, the decision, its outputs, the
#: facts it reads, its ``applies_if_given`` and, when it has one, the gap an output is in
#: when the record gives none of them (one immutable record, shared by every result).
_Step = tuple[DecisionRunner, Decision, tuple[str, ...], tuple[str, ...], tuple[str, ...], NotApplicable | None]


class RuleSetState:
    """One complete, checked, compiled rule set.  Immutable once built; evaluations in
    flight keep the state they started with, and it is freed when the last one ends."""

    def __init__(self, build: RuleSetBuild, use: Iterable[str], cache_size: int, as_of: datetime.date,
                 profile: str | None = None) -> None:
        if not build.ok:
            raise RuleSetError(f"the rule files in {build.label} have errors", build.errors())
        refused = [p for d in build.decisions for p in governance_problems(d)]
        if refused:
            raise RuleSetError(f"the rule files in {build.label} include active files that are not clean", refused)
        choice = choose_versions(build.decisions, use, as_of)
        version_diags = choice.diagnostics
        if has_errors(version_diags):
            raise VersionError("cannot select the requested versions", [d for d in version_diags if d.is_error])
        if not choice.chosen:
            raise VersionError(
                f"no decision in {build.label} is in force on {as_of.isoformat()}",
                [Diagnostic(code="NB810", message=f"nothing would run: no decision in {build.label} has a version "
                                                  f"in force on {as_of.isoformat()}",
                            hint="each NB811 below says why and how to make that decision run")]
                + [d for d in version_diags if d.code == "NB811"])
        try:
            readings = build.profile(profile)
        except KeyError:
            shown = ", ".join(build.profiles) or "none (the package has no parameters.yaml profiles)"
            raise VersionError(f"no profile '{profile}' in {build.label}", [Diagnostic(
                code="NB545", message=f"no profile '{profile}' in {build.label}", hint=f"profiles: {shown}")]) from None
        self.profile = profile
        #: Parameter overrides of the profile, per decision (its readings of that decision's parameters).
        self.overrides = {d.id: {k: v for k, v in readings.items() if k in d.parameters} for d in choice.chosen}
        self.build = build
        self.as_of = as_of
        self._as_of_text = as_of.isoformat()
        self.version_warnings = tuple(d for d in version_diags if not d.is_error)
        self.decisions: tuple[Decision, ...] = choice.chosen
        constraints = build.constraints.rebind(self.decisions) if build.constraints is not None else None
        self.validator = PatientValidator(build.package.facts, constraints=constraints,
                                          params={d.id: d.param_values(self.overrides[d.id]) for d in self.decisions})
        runners: list[DecisionRunner] = []
        try:
            for d in self.decisions:
                runners.append(DecisionRunner(build.program(d, self.overrides[d.id]), cache_size=cache_size))
        except BaseException:
            for r in runners:
                r.close()
            raise
        self.runners: tuple[DecisionRunner, ...] = tuple(runners)
        self.rulesets = tuple(RulesetInfo(d.id, d.version, d.status, d.source.display, d.sha256, d.effective,
                                          choice.reasons[d.key]) for d in self.decisions)
        pkg = build.package
        self.knowledge = KnowledgeInfo(pkg.name, pkg.version, profile or "",
                                       pkg.sha256((d.source for d in self.decisions), profile or ""))
        self.fingerprint = tuple(sorted((f.source.display, f.source.sha256) for f in build.files))
        self.in_flight = 0
        self.retired = False
        self._plans: dict[tuple[str, ...], tuple[DecisionRunner, ...]] = {}
        self._steps: dict[tuple[DecisionRunner, ...], tuple[tuple[_Step, ...], tuple[RulesetInfo, ...]]] = {}

    def plan(self, requested: Sequence[str] | None) -> tuple[DecisionRunner, ...]:
        """The runners to run for the decisions ``requested`` (ids; None: all), with the
        decisions whose outputs they read, transitively, in dependency order.

        Raises :class:`VersionError` (NB802) for an id that is not in force.
        """
        if requested is None:
            return self.runners
        key = tuple(requested)
        hit = self._plans.get(key)
        if hit is not None:
            return hit
        by_id = {d.id: d for d in self.decisions}
        unknown = [i for i in key if i not in by_id]
        if unknown:
            raise VersionError(f"no decision {', '.join(repr(i) for i in unknown)} is in force", [Diagnostic(
                code="NB802", message=f"no decision '{i}' is in force", hint="in force: " + ", ".join(by_id))
                for i in unknown])
        owner = {out: d.id for d in self.decisions for out in d.decides}
        needed: set[str] = set()
        todo = list(key)
        while todo:
            did = todo.pop()
            if did not in needed:
                needed.add(did)
                todo.extend(owner[f] for f in by_id[did].reads if f in owner)
        plan = tuple(r for r in self.runners if r.decision.id in needed)
        if len(self._plans) < 256:  # keyed by what a caller asked for (orders, repeats): bounded
            self._plans[key] = plan
        return plan

    def steps(self, runners: Sequence[DecisionRunner]) -> tuple[tuple[_Step, ...], tuple[RulesetInfo, ...]]:
        """The :data:`_Step` of each of ``runners``, and the rule files they use: what
        :func:`evaluate_patient` reads of them, looked up once per plan."""
        key = tuple(runners)
        hit = self._steps.get(key)
        if hit is None:
            steps = tuple((r, r.decision, tuple(r.decision.decides), tuple(r.decision.reads),
                           tuple(r.decision.applies_if), _applies_gap(r.decision)) for r in key)
            rulesets = self.rulesets
            if len(key) != len(self.runners):
                ran = {r.decision.id for r in key}
                rulesets = tuple(r for r in rulesets if r.decision in ran)
            hit = (steps, rulesets)
            if len(self._steps) < 64:  # a plan per set of requested decisions: few
                self._steps[key] = hit
        return hit

    def close(self) -> None:
        for r in self.runners:
            r.close()


def evaluate_patient(state: RuleSetState, facts: Mapping[str, Any], runners: Sequence[DecisionRunner] | None,
                     engine_label: str) -> Result:
    """Evaluate ``facts`` on ``state`` with ``runners`` (None: every decision of the state).

    See :meth:`RuleEngine.evaluate <nbrules.runtime.RuleEngine.evaluate>` for the
    errors raised; ``engine_label`` is the result's ``engine``.
    """
    if runners is None:
        runners = state.runners
    diags, given = state.validator.accept(facts)
    if given is None:
        raise PatientInputError("the patient record is invalid", [d for d in diags if d.is_error])
    warnings: list[Diagnostic] = [d for d in diags if not d.is_error] + list(state.version_warnings) \
        if diags or state.version_warnings else []
    known: dict[str, Any] = dict(given)
    open_values: dict[str, tuple[str, ...]] = {}
    missing_of: dict[str, tuple[str, ...]] = {}
    outputs: dict[str, str | None] = {}
    indeterminate: dict[str, Indeterminate] = {}
    not_applicable: dict[str, NotApplicable] = {}
    settled: dict[str, Settled] = {}
    from_input: dict[str, FromInput] = {}
    fired: list[FiredRule] = []
    steps, rulesets = state.steps(runners)
    for runner, d, decides, reads, applies_if, gap in steps:
        restrict = {f: open_values[f] for f in reads if f in open_values} \
            if open_values and not open_values.keys().isdisjoint(reads) else {}
        if gap is not None and given.keys().isdisjoint(applies_if):
            # the record gives none of the facts that open this decision (applies_if_given)
            for out in decides:
                if out in given:
                    outputs[out] = given[out]
                    from_input[out] = FromInput(d.id, given[out])
                    continue
                outputs[out] = None
                open_values[out] = ()
                not_applicable[out] = gap
            continue
        for out in decides:
            if out not in given:
                break
        else:
            for out in decides:
                outputs[out] = given[out]
                from_input[out] = FromInput(d.id, given[out])
            if not given.keys().isdisjoint(reads):
                warnings.extend(_given_differs(runner, _outcome(runner, known, restrict), given))
            continue
        outcome = _outcome(runner, known, restrict)
        view: Mapping[str, Any] | None = None  # made once, for the first rule that needs it
        for proto, names, from_view in outcome.traces:
            seen: Mapping[str, Any] = known
            if from_view:
                if view is None:
                    view = runner.view(known)
                seen = view
            fired.append(proto.at(len(fired) + 1, {f: seen.get(f) for f in names}))
        for out, oc in outcome.outputs.items():
            if out in given:
                outputs[out] = given[out]
                from_input[out] = FromInput(d.id, given[out])
                continue
            status = oc.status
            if status == "set":
                outputs[out] = known[out] = oc.value
            elif status == "settled":
                outputs[out] = known[out] = oc.value
                settled[out] = Settled(d.id, oc.value or "", oc.rules, oc.missing)
            elif status in ("indeterminate", "conflict"):
                outputs[out] = None
                via = {f: missing_of[f] for f in oc.missing if f in missing_of}
                indeterminate[out] = Indeterminate(d.id, oc.candidates, oc.missing, via, oc.may_be_out_of_scope,
                                                   oc.rules if status == "conflict" else ())
                open_values[out] = oc.candidates
                roots: list[str] = []
                for f in oc.missing:
                    for root in missing_of.get(f, (f,)):
                        if root not in roots:
                            roots.append(root)
                missing_of[out] = tuple(roots)
                if status == "conflict":
                    warnings.append(Diagnostic(
                        code="NB520", pointer=f"/{out}",
                        message=f"rules {', '.join(oc.rules)} of {d.key} set different values for {out}: "
                                f"{', '.join(oc.candidates)}",
                        hint="run 'nbrules verify' on the rule files; this is an overlap"))
            else:
                outputs[out] = None
                open_values[out] = ()
                not_applicable[out] = NotApplicable(d.id, oc.reason or "", oc.scope,
                                                    scope_source(runner, oc.scope))
    return Result(
        outputs=outputs,
        indeterminate=indeterminate,
        not_applicable=not_applicable,
        settled=settled,
        from_input=from_input,
        fired=tuple(fired),
        warnings=tuple([w.to_dict() for w in warnings]) if warnings else (),
        rulesets=rulesets,
        input=given,
        input_sha256=facts_sha256(given),
        engine=engine_label,
        knowledge=state.knowledge,
        as_of=state._as_of_text,
        profile=state.profile,
    )


def _applies_gap(d: Decision) -> NotApplicable | None:
    """The gap of an output of ``d`` when the record gives none of its ``applies_if_given``
    facts (None when it has none)."""
    if not d.applies_if:
        return None
    return NotApplicable(d.id, d.applies_reason, APPLIES_IF_GIVEN, d.location("/applies_if_given"))


def _outcome(runner: DecisionRunner, known: Mapping[str, Any], restrict: Mapping[str, Sequence[str]]) -> DecisionOutcome:
    """``runner``'s outcome for the patient whose known facts are ``known`` (its view of
    them, and ``known`` as the context): remembered, else decided."""
    hit = runner.cached(known, restrict)
    return hit if hit is not None else runner.decide(runner.view(known), restrict, known)


def _given_differs(runner: DecisionRunner, outcome: DecisionOutcome, given: Mapping[str, Any]) -> list[Diagnostic]:
    """NB521 for each output given in ``given`` that ``outcome`` derives otherwise."""
    out_diags = []
    for out, oc in outcome.outputs.items():
        if oc.status in ("set", "settled") and oc.value != given[out]:
            rules = ", ".join(r.id for r in outcome.fired if out in r.then) or "analysis"
            out_diags.append(Diagnostic(
                code="NB521", pointer=f"/{out}",
                message=f"{out} is given as {given[out]}, but {runner.decision.key} derives {oc.value} from the "
                        f"given facts (rule {rules}); the given value is used"))
    return out_diags


def scope_source(runner: DecisionRunner, scope: str | None) -> str | None:
    """``file:line`` of the scope ``scope`` of the runner's decision (None for None)."""
    if scope is None:
        return None
    s = next(x for x in runner.decision.scopes if x.id == scope)
    return f"{runner.decision.source.display}:{s.line}"
