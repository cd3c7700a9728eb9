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

import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Generic, Iterator, Literal, Mapping, TypeVar, Union, assert_never, get_args

from .model import All, AnyOf, CondRef, Condition, Not, ParamRef, ParamTest, Test, TestOp

__all__ = [
    "Atom",
    "AtomOp",
    "And",
    "Or",
    "TRUE",
    "FALSE",
    "NNF",
    "ConditionVisitor",
    "fold_nnf",
    "atom_op",
    "value_test",
    "to_nnf",
    "evaluate",
    "atom_truth",
    "atoms",
    "tests_in",
    "facts_in",
    "params_in",
    "condition_refs",
    "resolve_value",
    "normal_form",
]

T = TypeVar("T")

#: Operators of an NNF atom: each operator of a written test and its negation.
AtomOp = Literal["eq", "ne", "in", "nin", "lt", "le", "gt", "ge", "any", "none", "all", "notall",
                 "subset", "notsubset", "empty", "nonempty", "known", "unknown"]


@dataclass(frozen=True)
class Atom:
    """A test on one fact in NNF.  ``origin`` is the pointer of the written test."""

    fact: str
    op: AtomOp
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


# --- the one visitor over written conditions ------------------------------------------


class ConditionVisitor(ABC, Generic[T]):
    """A visitor over written conditions (:data:`nbrules.model.Condition`), producing a ``T``.

    :meth:`visit` dispatches on the node type with an exhaustive ``match`` (``mypy --strict``
    reports a node type it does not handle); a subclass implements one method per node type
    and decides itself whether and how to visit children (:meth:`visit`, or :meth:`items`
    for the results of ``all``/``any`` items, lazily, so a visitor may stop early).
    Named conditions are not followed unless :meth:`ref` follows them.
    """

    def visit(self, c: Condition) -> T:
        match c:
            case Test():
                return self.test(c)
            case ParamTest():
                return self.param_test(c)
            case All():
                return self.all(c)
            case AnyOf():
                return self.any(c)
            case Not():
                return self.not_(c)
            case CondRef():
                return self.ref(c)
            case _:
                assert_never(c)

    def items(self, c: All | AnyOf) -> Iterator[T]:
        """The results of visiting the items of ``c``, in order, one at a time."""
        return (self.visit(x) for x in c.items)

    @abstractmethod
    def test(self, c: Test) -> T: ...

    @abstractmethod
    def param_test(self, c: ParamTest) -> T: ...

    @abstractmethod
    def all(self, c: All) -> T: ...

    @abstractmethod
    def any(self, c: AnyOf) -> T: ...

    @abstractmethod
    def not_(self, c: Not) -> T: ...

    @abstractmethod
    def ref(self, c: CondRef) -> T: ...


def fold_nnf(node: NNF, atom: Callable[[Atom], T], conj: Callable[[Iterator[T]], T],
             disj: Callable[[Iterator[T]], T], const: Callable[[bool], T]) -> T:
    """The one fold over NNF trees: ``atom`` of each atom, ``conj``/``disj`` of the (lazily
    computed) results of an ``and``/``or``'s items, ``const`` of ``TRUE``/``FALSE``."""

    def fold(n: NNF) -> T:
        match n:
            case Atom():
                return atom(n)
            case And():
                return conj(map(fold, n.items))
            case Or():
                return disj(map(fold, n.items))
            case _Const():
                return const(n.value)
            case _:
                assert_never(n)

    return fold(node)


def atom_op(op: TestOp, negated: bool) -> AtomOp:
    """The NNF operator of a written test (other than ``empty``/``known``) or of its negation."""
    match op:
        case "is":
            return "ne" if negated else "eq"
        case "in":
            return "nin" if negated else "in"
        case "less_than":
            return "ge" if negated else "lt"
        case "at_most":
            return "gt" if negated else "le"
        case "greater_than":
            return "le" if negated else "gt"
        case "at_least":
            return "lt" if negated else "ge"
        case "contains_any":
            return "none" if negated else "any"
        case "contains_all":
            return "notall" if negated else "all"
        case "subset_of":
            return "notsubset" if negated else "subset"
        case "empty":
            return "nonempty" if negated else "empty"
        case "known":
            return "unknown" if negated else "known"
        case _:
            assert_never(op)


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


class _ToNNF(ConditionVisitor[NNF]):
    def __init__(self, named: Mapping[str, Condition], params: Mapping[str, Any], negate: bool) -> None:
        self.named = named
        self.params = params
        self.negate = negate

    def test(self, c: Test) -> NNF:
        if c.op in ("empty", "known"):
            return Atom(c.fact, atom_op(c.op, bool(c.value) == self.negate), None, c.pointer)
        return Atom(c.fact, atom_op(c.op, self.negate), resolve_value(c.value, self.params), c.pointer)

    def param_test(self, c: ParamTest) -> NNF:
        actual = self.params[c.param]
        truth = actual == c.value if c.op == "is" else actual in tuple(c.value)
        return TRUE if truth != self.negate else FALSE

    def all(self, c: All) -> NNF:
        return (_or if self.negate else _and)(list(self.items(c)))

    def any(self, c: AnyOf) -> NNF:
        return (_and if self.negate else _or)(list(self.items(c)))

    def not_(self, c: Not) -> NNF:
        return _ToNNF(self.named, self.params, not self.negate).visit(c.item)

    def ref(self, c: CondRef) -> NNF:
        return self.visit(self.named[c.name])


def to_nnf(
    cond: Condition,
    named: Mapping[str, Condition],
    params: Mapping[str, Any],
    negate: bool = False,
) -> NNF:
    """Negation normal form of ``cond`` with parameters bound to ``params``."""
    return _ToNNF(named, params, negate).visit(cond)


def _set(x: Any) -> frozenset[Any]:
    return x if type(x) is frozenset else frozenset(x)


def _value_test(op: AtomOp) -> Callable[[Any, Any], bool]:
    """``test(x, v)``: what an atom with operator ``op`` and value ``x`` says of a present
    value ``v`` (a list for the list operators).  The atom's value comes first so that
    ``partial(test, x)`` is the test of one value (C functions of :mod:`operator` where
    they fit: ``lt`` is ``v < x``, so ``x > v``)."""
    match op:
        case "eq":
            return operator.eq
        case "ne":
            return operator.ne
        case "in":
            return operator.contains
        case "nin":
            return lambda x, v: v not in x
        case "lt":
            return operator.gt
        case "le":
            return operator.ge
        case "gt":
            return operator.lt
        case "ge":
            return operator.le
        case "empty":
            return lambda x, v: not v
        case "nonempty":
            return lambda x, v: bool(v)
        case "any":
            return lambda x, v: not _set(x).isdisjoint(v)
        case "none":
            return lambda x, v: _set(x).isdisjoint(v)
        case "all":
            return lambda x, v: _set(x).issubset(v)
        case "notall":
            return lambda x, v: not _set(x).issubset(v)
        case "subset":
            return lambda x, v: _set(x).issuperset(v)
        case "notsubset":
            return lambda x, v: not _set(x).issuperset(v)
        case "known" | "unknown":
            raise ValueError(f"'{op}' tests whether a fact is given, not its value")
        case _:
            assert_never(op)


#: Every operator's test of a present value (``known``/``unknown`` test presence instead).
_VALUE_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    op: _value_test(op) for op in get_args(AtomOp) if op not in ("known", "unknown")}
_LIST_OPS = frozenset({"any", "none", "all", "notall", "subset", "notsubset"})


def value_test(op: AtomOp, x: Any) -> Callable[[Any], bool]:
    """The test an atom with operator ``op`` and value ``x`` makes of a fact's (present)
    value; ``known``/``unknown`` test presence, not a value (a ``ValueError``)."""
    return partial(_value_test(op), frozenset(x) if op in _LIST_OPS else x)


def atom_truth(atom: Atom, facts: Mapping[str, Any]) -> bool | None:
    """Three-valued truth of one atom; ``None`` means unknown."""
    op = atom.op
    if op == "known":
        return atom.fact in facts
    if op == "unknown":
        return atom.fact not in facts
    if atom.fact not in facts:
        return None
    return bool(_VALUE_TESTS[op](atom.value, facts[atom.fact]))


def _kleene(stop: bool) -> Callable[[Iterator[bool | None]], bool | None]:
    """Kleene ``and`` (``stop`` False) or ``or`` (``stop`` True) of lazily computed truths."""

    def combine(truths: Iterator[bool | None]) -> bool | None:
        result: bool | None = not stop
        for t in truths:
            if t is stop:
                return stop
            if t is None:
                result = None
        return result

    return combine


_KLEENE_AND = _kleene(False)
_KLEENE_OR = _kleene(True)


def evaluate(node: NNF, facts: Mapping[str, Any], truth: Callable[[Atom, Mapping[str, Any]], bool | None] = atom_truth) -> bool | None:
    """Kleene evaluation of an NNF condition over (possibly incomplete) facts."""
    return fold_nnf(node, lambda a: truth(a, facts), _KLEENE_AND, _KLEENE_OR, lambda v: v)


def _chain(parts: Iterator[Iterator[T]]) -> Iterator[T]:
    for p in parts:
        yield from p


def atoms(node: NNF) -> Iterator[Atom]:
    """Every atom of ``node``, in order."""
    return fold_nnf(node, lambda a: iter((a,)), _chain, _chain, lambda _: iter(()))


# --- a normal form for comparing conditions (diff) ---------------------------------------

#: A condition in normal form: ``("and"|"or", items)``, ``("fact", fact, op, value)``,
#: ``("param", name, "in"|"nin", values)``, ``("true",)`` or ``("false",)``; nested tuples,
#: so two normal forms compare with ``==``.
Normal = tuple[Any, ...]

_SET_VALUED: frozenset[AtomOp] = frozenset({"in", "nin", "any", "none", "all", "notall", "subset", "notsubset"})
#: A list of one value: ``in [x]`` is ``is x``, ``contains_all [x]`` is ``contains_any [x]``.
_ONE_VALUE: dict[AtomOp, AtomOp] = {"in": "eq", "nin": "ne", "all": "any", "notall": "none"}


def _sorted(values: Any) -> tuple[Any, ...]:
    return tuple(sorted(set(values), key=repr))


class _Normal(ConditionVisitor[Normal]):
    """:func:`normal_form`: negation pushed to the tests, ``all``/``any`` flattened, their items
    sorted and without repeats, named conditions expanded, parameter tests kept (not folded)."""

    def __init__(self, named: Mapping[str, Condition], params: Mapping[str, Any], negate: bool = False) -> None:
        self.named = named
        self.params = params
        self.negate = negate

    def test(self, c: Test) -> Normal:
        if c.op in ("empty", "known"):
            return ("fact", c.fact, atom_op(c.op, bool(c.value) == self.negate), None)
        op = atom_op(c.op, self.negate)
        value = c.value
        if isinstance(value, ParamRef):  # the parameter and the value it reads
            return ("fact", c.fact, op, ("param", value.name, resolve_value(value, self.params)))
        if op in _SET_VALUED and isinstance(value, (tuple, list)):
            value = _sorted(value)
            if len(value) == 1 and op in _ONE_VALUE:
                op, value = _ONE_VALUE[op], (value[0] if op in ("in", "nin") else value)
        return ("fact", c.fact, op, value)

    def param_test(self, c: ParamTest) -> Normal:
        values = _sorted(c.value if c.op == "in" else (c.value,))
        return ("param", c.param, "nin" if self.negate else "in", values)

    def _junction(self, kind: str, c: All | AnyOf) -> Normal:
        items: set[Normal] = set()
        for x in self.items(c):
            items.update(x[1] if x[0] == kind else (x,))
        absorbing, neutral = (("false",), ("true",)) if kind == "and" else (("true",), ("false",))
        if absorbing in items:
            return absorbing
        items.discard(neutral)
        if not items:
            return neutral
        return next(iter(items)) if len(items) == 1 else (kind, tuple(sorted(items, key=repr)))

    def all(self, c: All) -> Normal:
        return self._junction("or" if self.negate else "and", c)

    def any(self, c: AnyOf) -> Normal:
        return self._junction("and" if self.negate else "or", c)

    def not_(self, c: Not) -> Normal:
        return _Normal(self.named, self.params, not self.negate).visit(c.item)

    def ref(self, c: CondRef) -> Normal:
        return self.visit(self.named[c.name]) if c.name in self.named else ("condition", c.name, self.negate)


def normal_form(cond: Condition, named: Mapping[str, Condition], params: Mapping[str, Any]) -> Normal:
    """``cond`` in a normal form in which equivalent ways of writing it are equal: the order of
    ``all``/``any`` items, repeated items, nesting of ``all`` in ``all`` (``any`` in ``any``),
    ``not`` written outside or pushed in (``not is`` = ``is`` negated, ``not all`` = ``any`` of
    the negations), named conditions or their definitions written out, a list of one value
    (``in [x]`` = ``is x``) or the order of a list's values.  Parameter tests are kept, so a
    change under parameters not in force still shows; a parameter used as a value is compared
    by name and by the value ``params`` gives it."""
    return _Normal(named, params).visit(cond)


# --- walkers over the written (non-normalised) conditions -------------------


class _Nodes(ConditionVisitor[Iterator[Condition]]):
    """Every node, pre-order; named conditions followed (once per path) when ``named`` is given."""

    def __init__(self, named: Mapping[str, Condition] | None, seen: frozenset[str] = frozenset()) -> None:
        self.named = named
        self.seen = seen

    def test(self, c: Test) -> Iterator[Condition]:
        yield c

    def param_test(self, c: ParamTest) -> Iterator[Condition]:
        yield c

    def all(self, c: All) -> Iterator[Condition]:
        yield c
        for it in self.items(c):
            yield from it

    def any(self, c: AnyOf) -> Iterator[Condition]:
        yield c
        for it in self.items(c):
            yield from it

    def not_(self, c: Not) -> Iterator[Condition]:
        yield c
        yield from self.visit(c.item)

    def ref(self, c: CondRef) -> Iterator[Condition]:
        yield c
        if self.named is not None and c.name in self.named and c.name not in self.seen:
            yield from _Nodes(self.named, self.seen | {c.name}).visit(self.named[c.name])


def _walk(cond: Condition, named: Mapping[str, Condition]) -> Iterator[Condition]:
    return _Nodes(named).visit(cond)


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
    for c in _Nodes(None).visit(cond):
        if isinstance(c, CondRef):
            yield c
