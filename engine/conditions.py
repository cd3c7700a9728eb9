"""What a condition means, independently of durable-rules.

Conditions are brought into *negation normal form* (NNF): ``and``/``or`` over
atoms, each atom a test on one fact with its negation pushed inside
(``not is`` becomes ``ne``, ``not contains_any`` becomes ``none`` …), and tests
on parameters folded to constants.  Both the durable-rules compiler and the
reference interpreter work from the NNF, so they agree by construction on the
structure and differ only in how an atom is matched; the test suite checks that
they agree on every cell of every bundled decision.

Missing facts follow Kleene's three-valued logic: an atom on a missing fact is
*unknown* (``None``) except ``known``/``unknown``; a rule fires only when its
condition is *true*.  This is exactly durable-rules' behaviour, where a test on
a missing field never matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Union

from .model import All, AnyOf, CondRef, Condition, Not, ParamRef, ParamTest, Test

__all__ = [
    "Atom",
    "And",
    "Or",
    "TRUE",
    "FALSE",
    "NNF",
    "to_nnf",
    "evaluate",
    "atom_truth",
    "atoms",
    "tests_in",
    "facts_in",
    "params_in",
    "condition_refs",
    "resolve_value",
]


@dataclass(frozen=True)
class Atom:
    """A test on one fact in NNF.  ``origin`` is the pointer of the written test."""

    fact: str
    op: str
    value: Any
    origin: str


@dataclass(frozen=True)
class And:
    items: tuple["NNF", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["NNF", ...]


@dataclass(frozen=True)
class _Const:
    value: bool

    def __repr__(self) -> str:
        return "TRUE" if self.value else "FALSE"


TRUE = _Const(True)
FALSE = _Const(False)

NNF = Union[Atom, And, Or, _Const]

# (operator, negated) -> NNF atom operator
_ATOM_OPS: dict[tuple[str, bool], str] = {
    ("is", False): "eq",
    ("is", True): "ne",
    ("in", False): "in",
    ("in", True): "nin",
    ("less_than", False): "lt",
    ("less_than", True): "ge",
    ("at_most", False): "le",
    ("at_most", True): "gt",
    ("greater_than", False): "gt",
    ("greater_than", True): "le",
    ("at_least", False): "ge",
    ("at_least", True): "lt",
    ("contains_any", False): "any",
    ("contains_any", True): "none",
    ("contains_all", False): "all",
    ("contains_all", True): "notall",
    ("subset_of", False): "subset",
    ("subset_of", True): "notsubset",
}


def resolve_value(value: Any, params: Mapping[str, Any]) -> Any:
    """Replace a :class:`ParamRef` by the parameter's value; lists become tuples."""
    if isinstance(value, ParamRef):
        value = params[value.name]
    if isinstance(value, list):
        return tuple(value)
    return value


def _and(items: list[NNF]) -> NNF:
    flat: list[NNF] = []
    for it in items:
        if it is FALSE:
            return FALSE
        if it is TRUE:
            continue
        flat.extend(it.items if isinstance(it, And) else (it,))
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def _or(items: list[NNF]) -> NNF:
    flat: list[NNF] = []
    for it in items:
        if it is TRUE:
            return TRUE
        if it is FALSE:
            continue
        flat.extend(it.items if isinstance(it, Or) else (it,))
    if not flat:
        return FALSE
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def to_nnf(
    cond: Condition,
    named: Mapping[str, Condition],
    params: Mapping[str, Any],
    negate: bool = False,
) -> NNF:
    """Negation normal form of ``cond`` with parameters bound to ``params``."""
    if isinstance(cond, All):
        parts = [to_nnf(c, named, params, negate) for c in cond.items]
        return _or(parts) if negate else _and(parts)
    if isinstance(cond, AnyOf):
        parts = [to_nnf(c, named, params, negate) for c in cond.items]
        return _and(parts) if negate else _or(parts)
    if isinstance(cond, Not):
        return to_nnf(cond.item, named, params, not negate)
    if isinstance(cond, CondRef):
        return to_nnf(named[cond.name], named, params, negate)
    if isinstance(cond, ParamTest):
        actual = params[cond.param]
        if cond.op == "is":
            truth = actual == cond.value
        else:
            truth = actual in tuple(cond.value)
        return TRUE if truth != negate else FALSE
    if isinstance(cond, Test):
        if cond.op == "empty":
            positive = bool(cond.value) != negate
            return Atom(cond.fact, "empty" if positive else "nonempty", None, cond.pointer)
        if cond.op == "known":
            positive = bool(cond.value) != negate
            return Atom(cond.fact, "known" if positive else "unknown", None, cond.pointer)
        value = resolve_value(cond.value, params)
        return Atom(cond.fact, _ATOM_OPS[(cond.op, negate)], value, cond.pointer)
    raise TypeError(f"not a condition: {cond!r}")  # pragma: no cover


def atom_truth(atom: Atom, facts: Mapping[str, Any]) -> bool | None:
    """Three-valued truth of one atom; ``None`` means unknown."""
    op = atom.op
    if op == "known":
        return atom.fact in facts
    if op == "unknown":
        return atom.fact not in facts
    if atom.fact not in facts:
        return None
    v = facts[atom.fact]
    x = atom.value
    if op == "eq":
        return bool(v == x)
    if op == "ne":
        return bool(v != x)
    if op == "in":
        return v in x
    if op == "nin":
        return v not in x
    if op == "lt":
        return bool(v < x)
    if op == "le":
        return bool(v <= x)
    if op == "gt":
        return bool(v > x)
    if op == "ge":
        return bool(v >= x)
    items = set(v)
    wanted = set(x) if x is not None else set()
    if op == "any":
        return bool(items & wanted)
    if op == "none":
        return not items & wanted
    if op == "all":
        return wanted <= items
    if op == "notall":
        return not wanted <= items
    if op == "subset":
        return items <= wanted
    if op == "notsubset":
        return not items <= wanted
    if op == "empty":
        return not items
    if op == "nonempty":
        return bool(items)
    raise ValueError(f"unknown atom operator {op}")  # pragma: no cover


def evaluate(node: NNF, facts: Mapping[str, Any], truth: Callable[[Atom, Mapping[str, Any]], bool | None] = atom_truth) -> bool | None:
    """Kleene evaluation of an NNF condition over (possibly incomplete) facts."""
    if isinstance(node, Atom):
        return truth(node, facts)
    if isinstance(node, And):
        result: bool | None = True
        for it in node.items:
            t = evaluate(it, facts, truth)
            if t is False:
                return False
            if t is None:
                result = None
        return result
    if isinstance(node, Or):
        result = False
        for it in node.items:
            t = evaluate(it, facts, truth)
            if t is True:
                return True
            if t is None:
                result = None
        return result
    return node.value


def atoms(node: NNF) -> Iterator[Atom]:
    if isinstance(node, Atom):
        yield node
    elif isinstance(node, (And, Or)):
        for it in node.items:
            yield from atoms(it)


# --- walkers over the written (non-normalised) conditions -------------------


def _walk(cond: Condition, named: Mapping[str, Condition], seen: frozenset[str] = frozenset()) -> Iterator[Condition]:
    yield cond
    if isinstance(cond, (All, AnyOf)):
        for c in cond.items:
            yield from _walk(c, named, seen)
    elif isinstance(cond, Not):
        yield from _walk(cond.item, named, seen)
    elif isinstance(cond, CondRef) and cond.name in named and cond.name not in seen:
        yield from _walk(named[cond.name], named, seen | {cond.name})


def tests_in(cond: Condition, named: Mapping[str, Condition]) -> Iterator[Test]:
    """Every test on a fact, following named conditions."""
    for c in _walk(cond, named):
        if isinstance(c, Test):
            yield c


def facts_in(cond: Condition, named: Mapping[str, Condition]) -> list[str]:
    """Facts a condition reads, in order of first appearance."""
    out: list[str] = []
    for t in tests_in(cond, named):
        if t.fact not in out:
            out.append(t.fact)
    return out


def params_in(cond: Condition, named: Mapping[str, Condition]) -> list[str]:
    """Parameters a condition uses (as values or in parameter tests)."""
    out: list[str] = []
    for c in _walk(cond, named):
        name = None
        if isinstance(c, ParamTest):
            name = c.param
        elif isinstance(c, Test) and isinstance(c.value, ParamRef):
            name = c.value.name
        if name is not None and name not in out:
            out.append(name)
    return out


def condition_refs(cond: Condition) -> Iterator[CondRef]:
    """Named-condition references written directly in ``cond`` (not followed)."""
    if isinstance(cond, CondRef):
        yield cond
    elif isinstance(cond, (All, AnyOf)):
        for c in cond.items:
            yield from condition_refs(c)
    elif isinstance(cond, Not):
        yield from condition_refs(cond.item)
