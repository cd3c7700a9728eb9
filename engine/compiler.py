"""Stage 4, *compile*: a checked decision becomes a durable-rules ruleset.

Each rule's condition, in negation normal form, is translated atom by atom into
durable-rules patterns.  Things durable-rules cannot express are prepared in
Python before a fact is asserted (:func:`engine_fact`): the size of every list is
added as ``<fact>__count`` because ``$iall``/``$iany`` are false on an empty list
and there is no test for emptiness.  The compiled :class:`Program` carries the
source map from engine rule names back to rule ids and ``file:line``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, assert_never

from .conditions import FALSE, NNF, TRUE, Atom, Or, atoms, facts_in, fold_nnf, params_in
from .domain import DecisionDomain, decision_domain, decision_nnf
from .model import Decision, Rule, Scope
from .vocabulary import FactSpec

__all__ = ["CompiledRule", "Program", "compile_decision", "engine_fact", "COUNT_SUFFIX"]

COUNT_SUFFIX = "__count"

#: durable-rules 2.0.28 holds fewer than 32 expressions per rule (MAX_SEQUENCE_EXPRESSIONS in
#: its rete.h; beyond that, creating the ruleset fails with error 113).  A rule whose pattern
#: is larger than this budget and whose condition is an "any" is registered as one
#: durable-rules rule per alternative, named ``<name>~<j>``, all mapped back to the rule.
EXPRESSION_BUDGET = 24


@dataclass(frozen=True)
class CompiledRule:
    """One rule (or scope exclusion) with what the trace needs about it."""

    index: int
    engine_name: str
    rule: Rule | Scope
    nnf: NNF
    facts: tuple[str, ...]
    params: tuple[str, ...]
    unknown_tests: frozenset[str]  # facts tested with `known: false`

    @property
    def id(self) -> str:
        return self.rule.id

    @property
    def is_scope(self) -> bool:
        return isinstance(self.rule, Scope)

    @property
    def then(self) -> Mapping[str, str]:
        """Outputs the rule sets (nothing for a scope exclusion)."""
        return self.rule.then if isinstance(self.rule, Rule) else {}

    @property
    def reason(self) -> str:
        """Why a scope exclusion applies (empty for a rule)."""
        return self.rule.reason if isinstance(self.rule, Scope) else ""


@dataclass(frozen=True, eq=False)
class Program:
    """A decision compiled under one binding of its parameters."""

    decision: Decision
    params: Mapping[str, Any]
    rules: tuple[CompiledRule, ...]
    scopes: tuple[CompiledRule, ...]
    definition: Mapping[str, Mapping[str, Any]]
    domain: DecisionDomain

    @property
    def label(self) -> str:
        return f"{self.decision.key}:{self.decision.sha256[:12]}"

    def by_engine_name(self) -> dict[str, CompiledRule]:
        """Every durable-rules rule name (alternatives of a split rule included) to its rule."""
        base = {r.engine_name: r for r in self.rules + self.scopes}
        return {**base, **{name: base[name.split("~")[0]] for name in self.definition}}


def engine_fact(facts: Mapping[str, Any], specs: Mapping[str, FactSpec]) -> dict[str, Any]:
    """The fact asserted into durable-rules: known facts plus list sizes."""
    out: dict[str, Any] = {}
    for name, value in facts.items():
        out[name] = value
        spec = specs.get(name)
        if spec is not None and spec.kind == "set":
            out[name + COUNT_SUFFIX] = len(value)
    return out


def _any_item(field: str, values: Any) -> dict[str, Any]:
    # One $iany per item under an outer $or.  durable-rules 2.0.28 must not see an $or
    # inside $iany/$iall: createAlpha (rete.c) then branches on the uninitialised
    # expression of the $or's forward node (valgrind: "conditional jump depends on
    # uninitialised value"), and ruleset creation can fail at random.
    return _or([{"$iany": {field: {"$i": v}}} for v in values])


def _no_item(field: str, values: Any) -> dict[str, Any]:
    # True for an empty list, where $iall is false; $and inside $iall is safe.
    tests = [{"$neq": {"$i": v}} for v in values]
    inner = tests[0] if len(tests) == 1 else {"$and": tests}
    return {"$or": [{field + COUNT_SUFFIX: 0}, {"$iall": {field: inner}}]}


def _atom(a: Atom, specs: Mapping[str, FactSpec]) -> dict[str, Any]:
    f, v, op = a.fact, a.value, a.op
    count = f + COUNT_SUFFIX
    match op:
        case "eq":
            return {f: v}
        case "ne":
            return {"$neq": {f: v}}
        case "in":
            return {f: v[0]} if len(v) == 1 else {"$or": [{f: x} for x in v]}
        case "nin":
            return {"$neq": {f: v[0]}} if len(v) == 1 else {"$and": [{"$neq": {f: x}} for x in v]}
        case "lt":
            return {"$lt": {f: v}}
        case "le":
            return {"$lte": {f: v}}
        case "gt":
            return {"$gt": {f: v}}
        case "ge":
            return {"$gte": {f: v}}
        case "known":
            return {"$ex": {f: 1}}
        case "unknown":
            return {"$nex": {f: 1}}
        case "empty":
            return {count: 0}
        case "nonempty":
            return {"$gt": {count: 0}}
        case "any":
            return _any_item(f, v)
        case "none":
            return _no_item(f, v)
        case "all":
            return _and([{"$iany": {f: {"$i": x}}} for x in v])
        case "notall":
            return _or([_no_item(f, (x,)) for x in v])
        case "subset":  # no item outside v
            rest = tuple(x for x in specs[f].values if x not in v)
            return _no_item(f, rest) if rest else {"$ex": {f: 1}}
        case "notsubset":  # some item outside v
            rest = tuple(x for x in specs[f].values if x not in v)
            return _any_item(f, rest) if rest else {"$and": [{"$ex": {f: 1}}, {"$nex": {f: 1}}]}
        case _:
            assert_never(op)


def _and(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _or(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return parts[0] if len(parts) == 1 else {"$or": parts}


def _folded(value: bool) -> dict[str, Any]:
    raise ValueError("constants are folded before compiling")  # pragma: no cover


def _pattern(node: NNF, specs: Mapping[str, FactSpec]) -> dict[str, Any]:
    return fold_nnf(node, lambda a: _atom(a, specs), lambda items: _and(list(items)), lambda items: _or(list(items)),
                    _folded)


def _rule_json(node: NNF, specs: Mapping[str, FactSpec]) -> dict[str, Any] | None:
    """The durable-rules rule for one condition; None for a condition that is never true."""
    if node is FALSE:
        return None
    if node is TRUE:
        return {"all": [{"m": {"$and": [{"__nb": 1}]}}]}
    return {"all": [{"m": {"$and": [{"__nb": 1}, _pattern(node, specs)]}}]}


def _size(pattern: Any) -> int:
    """An upper estimate of the expressions durable-rules builds for a pattern: one per test
    and per operator."""
    if isinstance(pattern, dict):
        return sum(1 + _size(v) if k.startswith("$") or not isinstance(v, dict) else _size(v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return sum(_size(x) for x in pattern)
    return 0


def _rule_jsons(name: str, node: NNF, specs: Mapping[str, FactSpec]) -> dict[str, dict[str, Any]]:
    """The durable-rules rule(s) of one condition: split into its alternatives when too large."""
    pattern = _rule_json(node, specs)
    if pattern is None:
        return {}
    if isinstance(node, Or) and _size(pattern) > EXPRESSION_BUDGET:
        out: dict[str, dict[str, Any]] = {}
        for j, alternative in enumerate(node.items):
            part = _rule_json(alternative, specs)
            if part is not None:
                out[f"{name}~{j}"] = part
        return out
    return {name: pattern}


def _reads_order(decision: Decision) -> Any:
    order = {name: i for i, name in enumerate(decision.reads)}
    return lambda fact: order.get(fact, len(order))


def compile_decision(decision: Decision, params: Mapping[str, Any] | None = None) -> Program:
    """Compile ``decision`` with its parameters (optionally overridden)."""
    bound = decision.param_values(params)
    rule_nnf, scope_nnf = decision_nnf(decision, bound)
    compiled: list[CompiledRule] = []
    scopes: list[CompiledRule] = []
    definition: dict[str, dict[str, Any]] = {}
    items: list[tuple[str, Rule | Scope, NNF]] = [(f"r{i}", r, n) for i, (r, n) in enumerate(zip(decision.rules, rule_nnf))]
    items += [(f"s{i}", s, n) for i, (s, n) in enumerate(zip(decision.scopes, scope_nnf))]
    for index, (name, rule, node) in enumerate(items):
        cr = CompiledRule(
            index=index,
            engine_name=name,
            rule=rule,
            nnf=node,
            facts=tuple(sorted(facts_in(rule.when, decision.conditions), key=_reads_order(decision))),
            params=tuple(params_in(rule.when, decision.conditions)),
            unknown_tests=frozenset(a.fact for a in atoms(node) if a.op == "unknown"),
        )
        (scopes if isinstance(rule, Scope) else compiled).append(cr)
        definition.update(_rule_jsons(name, node, decision.facts))
    return Program(
        decision=decision,
        params=bound,
        rules=tuple(compiled),
        scopes=tuple(scopes),
        definition=definition,
        domain=decision_domain(decision, bound),
    )
