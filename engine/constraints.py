"""Input constraints: combinations of patient facts that cannot (or should not) occur.

A knowledge package states them in ``constraints.yaml`` with the condition syntax of
rule files (:mod:`nbrules.conditions`).  Each constraint reads *when* ``when`` holds,
``require`` must hold; a record violates it when ``when`` is true and ``require`` is
false under three-valued logic, so a constraint on a missing fact is never violated.
A test may compare a fact with what a decision derives, ``{fact: f, is: {decision: d,
output: o}}``, instead of repeating that decision's thresholds.

A :class:`ConstraintSet` turns every constraint into one NNF *violation* condition
over plain fact tests (decision references expanded into the referenced decision's
rules under the parameters in force).  That one form serves every use:

* patient input checking (:meth:`ConstraintSet.check`: NB510 errors, NB511 warnings,
  each with the JSON pointer of the fact and the constraint's message and hint);
* the cuts of decision domains (:mod:`nbrules.domain`) and the cells verify leaves out
  (:mod:`nbrules.verify`), for any number of facts per constraint;
* the missing-fact analysis (:mod:`nbrules.analysis`), which never proposes a fact a
  constraint forbids for the patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .cache import SizedCache
from .conditions import FALSE, NNF, TRUE, Atom, _and, _or, atoms, evaluate, fold_nnf, tests_in, to_nnf, value_test
from .diagnostics import Diagnostic
from .model import All, Condition, Constraint, Decision, DecisionRef, Not

__all__ = ["ConstraintSet", "BoundConstraint", "PLACEHOLDER", "ERROR_CODE", "WARNING_CODE"]

#: Diagnostic codes of a violated constraint, by severity.
ERROR_CODE = "NB510"
WARNING_CODE = "NB511"

#: ``{fact}`` or ``{decision.output}`` in a constraint's message.
PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_]*)?)\}")


@dataclass(frozen=True)
class BoundConstraint:
    """A constraint with its violation condition under one binding of parameters."""

    constraint: Constraint
    violation: NNF
    #: Facts the violation condition tests (decision references expanded).
    facts: frozenset[str]
    #: Per decision reference ``d.o``: NNF "d derives value v" for each value v.
    derived: Mapping[str, Mapping[str, NNF]]
    #: Facts without which the violation cannot be true (a quick filter).
    needs: frozenset[str] = frozenset()

    #: The violation condition as a compiled three-valued predicate (same truth as
    #: :func:`~nbrules.conditions.evaluate`, checked in tests/test_constraints.py).
    test: Callable[[Mapping[str, Any]], bool | None] | None = None

    def holds(self, facts: Mapping[str, Any]) -> bool:
        """True when ``facts`` violate this constraint."""
        for f in self.needs:
            if f not in facts:
                return False
        if self.test is not None:
            return self.test(facts) is True
        return evaluate(self.violation, facts) is True

    @property
    def is_error(self) -> bool:
        return self.constraint.severity == "error"


#: Bound of the memo of bindings of one constraint set: the bundled constraints bound under
#: one set of parameters take ~40 KB (estimated), so some 25 bindings (profiles, the
#: workbench's parameter overrides) stay.
_BOUND_BYTES = 1024 * 1024


def _params_key(params: Mapping[str, Mapping[str, Any]]) -> tuple[Any, ...]:
    return tuple(sorted((d, tuple(sorted((k, repr(v)) for k, v in p.items()))) for d, p in params.items()))


class ConstraintSet:
    """The checked constraints of a package, and the decisions they refer to.

    ``decisions`` maps a decision id to the version a reference means (the version in
    force); ``shared`` holds the values of the shared parameters (``parameters.yaml``) the
    constraints use, overridden by the same names in the parameters given per decision.  :meth:`bound` gives the violation conditions under parameter overrides per
    decision id (memoised); the other methods use the parameters in force.
    """

    def __init__(self, constraints: Sequence[Constraint], decisions: Mapping[str, Decision],
                 conditions: Mapping[str, Condition] | None = None,
                 sources: Mapping[str, str] | None = None, display: str = "",
                 shared: Mapping[str, Any] | None = None) -> None:
        self.constraints: tuple[Constraint, ...] = tuple(constraints)
        #: Shared parameters the constraints use, with their values in force.
        self.shared = dict(shared or {})
        self.decisions = dict(decisions)
        self.conditions = dict(conditions or {})
        self.sources = dict(sources or {})
        self.display = display
        #: Bindings by parameters (one policy: :mod:`nbrules.cache`); owned by this set, so
        #: by the engine state it was rebound for, and freed with it.
        self._memo: SizedCache[tuple[Any, ...], tuple[BoundConstraint, ...]] = SizedCache("constraints.bound",
                                                                                          _BOUND_BYTES)
        self._referred_ids: frozenset[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its memo (:mod:`nbrules.store` keeps checked packages on disk)."""
        return {k: v for k, v in self.__dict__.items() if k != "_memo"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._memo = SizedCache("constraints.bound", _BOUND_BYTES)

    def rebind(self, decisions: Iterable[Decision]) -> "ConstraintSet":
        """The same constraints referring to other versions of the decisions (pins)."""
        chosen = dict(self.decisions)
        chosen.update({d.id: d for d in decisions})
        return ConstraintSet(self.constraints, chosen, self.conditions, self.sources, self.display, self.shared)

    def __len__(self) -> int:
        return len(self.constraints)

    # -- violation conditions ------------------------------------------------------------

    def bound(self, params: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[BoundConstraint, ...]:
        """Every constraint as a violation condition; ``params`` overrides the parameters
        of referenced decisions, by decision id."""
        params = params or {}
        return self._memo.get_or_build(self._binding_key(params),
                                       lambda: tuple(self._bind(c, params) for c in self.constraints))

    def _binding_key(self, params: Mapping[str, Mapping[str, Any]]) -> tuple[Any, ...]:
        """What of ``params`` a binding reads, left out what leaves it as without them: the
        values they give the shared parameters (as :meth:`_bind` reads them, a later
        decision's over an earlier's) other than those in force, and the parameters of the
        decisions the constraints refer to other than their own.  So the decisions of a
        package, each run with its own parameters, share one binding (measured: one instead
        of 12 bound and size-estimated in a one-shot evaluation of the bundled rules)."""
        given = {k: v for values in params.values() for k, v in values.items() if k in self.shared}
        shared = tuple(sorted((k, repr(v)) for k, v in given.items() if repr(v) != repr(self.shared[k])))
        referred = self._referred()
        moved = {}
        for d, p in params.items():
            if d in referred:
                decision = self.decisions[d]
                values = decision.param_values(p)
                if repr(values) != repr(decision.param_values()):
                    moved[d] = values
        return shared, _params_key(moved)

    def _referred(self) -> frozenset[str]:
        """The ids of the decisions whose outputs the constraints test (named conditions followed)."""
        if self._referred_ids is None:
            self._referred_ids = frozenset(
                t.value.decision for c in self.constraints for cond in (c.when, c.require) if cond is not None
                for t in tests_in(cond, self.conditions) if isinstance(t.value, DecisionRef))
        return self._referred_ids

    def for_decision(self, decision: Decision, params: Mapping[str, Any] | None = None) -> tuple[BoundConstraint, ...]:
        """The violation conditions as seen while ``decision`` runs with ``params``."""
        return self.bound({decision.id: decision.param_values(params)} if params else None)

    def _bind(self, c: Constraint, params: Mapping[str, Mapping[str, Any]]) -> BoundConstraint:
        cond = All((c.when, Not(c.require, c.pointer)), c.pointer) if c.when is not None else Not(c.require, c.pointer)
        # a shared parameter reads as the decisions being run read it (a profile moves them together)
        shared = dict(self.shared)
        for values in params.values():
            shared.update({k: v for k, v in values.items() if k in shared})
        raw = to_nnf(cond, self.conditions, shared)
        derived: dict[str, dict[str, NNF]] = {}
        node = self._expand(raw, params, derived)
        return BoundConstraint(c, node, frozenset(a.fact for a in atoms(node)), derived, _needs(node), _compile(node))

    def _fires(self, ref: DecisionRef, params: Mapping[str, Mapping[str, Any]],
               derived: dict[str, dict[str, NNF]]) -> dict[str, tuple[NNF, NNF]]:
        d = self.decisions[ref.decision]
        bound = d.param_values(params.get(d.id))
        out: dict[str, tuple[NNF, NNF]] = {}
        for v in d.decides[ref.output]:
            setters = [r for r in d.rules if r.then.get(ref.output) == v]
            pos = _or([to_nnf(r.when, d.conditions, bound) for r in setters])
            neg = _and([to_nnf(r.when, d.conditions, bound, negate=True) for r in setters])
            out[v] = (pos, neg)
        derived[f"{ref.decision}.{ref.output}"] = {v: p for v, (p, _) in out.items()}
        return out

    def _expand(self, node: NNF, params: Mapping[str, Mapping[str, Any]], derived: dict[str, dict[str, NNF]]) -> NNF:
        def atom(a: Atom) -> NNF:
            if not isinstance(a.value, DecisionRef):
                return a
            fires = self._fires(a.value, params, derived)
            if a.op == "eq":  # f = v and d derives v, for some v
                return _or([_and([Atom(a.fact, "eq", v, a.origin), pos]) for v, (pos, _) in fires.items()])
            # f != derived: for every v, f is not v or d does not derive v
            return _and([_or([Atom(a.fact, "ne", v, a.origin), neg]) for v, (_, neg) in fires.items()])

        return fold_nnf(node, atom, lambda items: _and(list(items)), lambda items: _or(list(items)),
                        lambda v: TRUE if v else FALSE)

    # -- patient records -----------------------------------------------------------------

    def violations(self, facts: Mapping[str, Any], errors_only: bool = False,
                   params: Mapping[str, Mapping[str, Any]] | None = None) -> list[BoundConstraint]:
        """The constraints ``facts`` violate, in file order."""
        out = []
        for b in self.bound(params):
            if errors_only and not b.is_error:
                continue
            if b.holds(facts):
                out.append(b)
        return out

    def violated(self, facts: Mapping[str, Any], params: Mapping[str, Mapping[str, Any]] | None = None) -> bool:
        """True when ``facts`` cannot all hold for one patient (an error constraint is violated)."""
        for b in self.bound(params):
            if b.is_error and b.holds(facts):
                return True
        return False

    def check(self, facts: Mapping[str, Any], params: Mapping[str, Mapping[str, Any]] | None = None,
              bound: Sequence[BoundConstraint] | None = None) -> list[Diagnostic]:
        """One diagnostic per violated constraint: NB510 (error) or NB511 (warning), at the
        JSON pointer of the constraint's fact, with its message, hint and citation.
        ``bound`` (from :meth:`bound`) saves binding the constraints again on every call."""
        out = []
        for b in (bound if bound is not None else self.bound(params)):
            if not b.holds(facts):
                continue
            c = b.constraint
            cite = f" ({'; '.join(c.cite)})" if c.cite else ""
            out.append(Diagnostic(code=ERROR_CODE if b.is_error else WARNING_CODE, pointer=f"/{c.fact}",
                                  message=self.message(b, facts), hint=(c.hint + cite) if c.hint else None))
        return out

    def message(self, b: BoundConstraint, facts: Mapping[str, Any]) -> str:
        """The constraint's message with ``{fact}`` and ``{decision.output}`` filled in."""

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            if "." in name:
                got = [v for v, node in b.derived.get(name, {}).items() if evaluate(node, facts) is True]
                return got[0] if len(got) == 1 else "unknown"
            if name not in facts:
                return "unknown"
            return _show(facts[name])

        return PLACEHOLDER.sub(fill, b.constraint.message)


def _compile(node: NNF) -> Callable[[Mapping[str, Any]], bool | None]:
    """A closure computing the Kleene truth of ``node`` (constraints run on every record)."""
    return fold_nnf(node, _compile_atom, _combine(False), _combine(True), lambda value: lambda f: value)


def _compile_atom(node: Atom) -> Callable[[Mapping[str, Any]], bool | None]:
    fact = node.fact
    if node.op == "known":
        return lambda f: fact in f
    if node.op == "unknown":
        return lambda f: fact not in f
    test = value_test(node.op, node.value)
    return lambda f: test(f[fact]) if fact in f else None


def _combine(stop: bool) -> Callable[[Iterator[Callable[[Mapping[str, Any]], bool | None]]],
                                     Callable[[Mapping[str, Any]], bool | None]]:
    """Kleene ``and`` (``stop`` False) or ``or`` (``stop`` True) of compiled items."""

    def build(items: Iterator[Callable[[Mapping[str, Any]], bool | None]]) -> Callable[[Mapping[str, Any]], bool | None]:
        parts = list(items)

        def combine(f: Mapping[str, Any]) -> bool | None:
            result: bool | None = not stop
            for part in parts:
                t = part(f)
                if t is stop:
                    return stop
                if t is None:
                    result = None
            return result

        return combine

    return build


def _needs(node: NNF) -> frozenset[str]:
    """Facts that must be present for ``node`` to be true (Kleene: a test on a missing
    fact is unknown, except ``known``/``unknown``)."""
    return fold_nnf(node, lambda a: frozenset((a.fact,)) if a.op != "unknown" else frozenset(),
                    lambda items: frozenset().union(*items),
                    lambda items: frozenset.intersection(*parts) if (parts := list(items)) else frozenset(),
                    lambda _: frozenset())


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "nothing"
    return str(value)
