"""The input domain of a decision, cut into cells its rules cannot tell apart.

For every fact a decision reads, the values are partitioned by the tests its
rules and scope exclusions make: numbers into intervals cut at every threshold
(parameters included), value sets into their values, lists by the classes of
items the tests distinguish.  Two patients in the same cell get the same
outputs and fired rules from that decision — which is what makes exhaustive
verification, exact indeterminate answers and a per-cell cache possible.

"Unknown" (the fact is missing, or has a *pending* value) is not a cell; it is
represented by ``None`` where a cell index is expected.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterator, Mapping, Sequence

from .conditions import NNF, Atom, atoms, to_nnf
from .model import Decision
from .vocabulary import FactSpec

__all__ = ["Cell", "Partition", "NumberPartition", "DecisionDomain", "decision_domain", "decision_nnf", "joint_domain"]


@dataclass(frozen=True)
class Cell:
    index: int
    label: str
    representative: Any


#: Most values whose cell each partition remembers (:attr:`Partition.cell_of`).
CELL_MEMO = 65536
_MISSING = object()


class Partition:
    """The cells of one fact's domain for one decision."""

    #: Whether each value of the fact is a cell of its own (a value set, a boolean), so that
    #: the value can stand for its cell in a key (no lookup); pending values are no cell.
    value_is_cell = False

    def __init__(self, spec: FactSpec, cells: Sequence[Cell]) -> None:
        self.spec = spec
        self.fact = spec.name
        self.cells: tuple[Cell, ...] = tuple(cells)

    def __len__(self) -> int:
        return len(self.cells)

    def classify(self, value: Any) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    @cached_property
    def cell_of(self) -> Callable[[Any], int | None]:
        """:meth:`classify` for the per-patient path, remembered per value (a value's cell
        never changes): one dict lookup for a value seen before.  Takes the values of a
        valid patient record (a list is looked up as the tuple of its items); at most
        :data:`CELL_MEMO` values are remembered per partition."""
        memo: dict[Any, int | None] = {}
        get = memo.get
        classify = self.classify
        missing = _MISSING

        def cell_of(value: Any) -> int | None:
            key = tuple(value) if type(value) is list else value
            try:
                hit = get(key, missing)
            except TypeError:  # not hashable: not patient data, classified as it is
                return classify(value)
            if hit is missing:
                hit = classify(value)
                if len(memo) < CELL_MEMO:
                    memo[key] = hit
            return hit  # type: ignore[return-value]

        return cell_of


class _EnumPartition(Partition):
    value_is_cell = True

    def __init__(self, spec: FactSpec, pending: Sequence[str]) -> None:
        values = [v for v in spec.values if v not in pending]
        super().__init__(spec, [Cell(i, v, v) for i, v in enumerate(values)])
        self._index = {v: i for i, v in enumerate(values)}

    def classify(self, value: Any) -> int | None:
        return self._index.get(value)

    @cached_property
    def cell_of(self) -> Callable[[Any], int | None]:
        return self._index.get  # already one lookup


class _BoolPartition(Partition):
    value_is_cell = True

    def __init__(self, spec: FactSpec) -> None:
        super().__init__(spec, [Cell(0, "false", False), Cell(1, "true", True)])

    def classify(self, value: Any) -> int | None:
        return 1 if value else 0


@dataclass(frozen=True)
class _Interval:
    lo: float
    lo_closed: bool
    hi: float
    hi_closed: bool

    def contains(self, x: float) -> bool:
        above = x > self.lo or (self.lo_closed and x == self.lo)
        below = x < self.hi or (self.hi_closed and x == self.hi)
        return above and below


class NumberPartition(Partition):
    """Numbers cut into ordered intervals; cell representatives increase with the index."""

    def __init__(self, spec: FactSpec, cuts: set[tuple[float, int]]) -> None:
        integer = spec.kind == "integer"
        lo = spec.minimum if spec.minimum is not None else -math.inf
        hi = spec.maximum if spec.maximum is not None else math.inf
        intervals: list[_Interval] = []
        cur_lo, cur_closed = lo, not math.isinf(lo)
        # cut (t, 0): t starts the next cell; cut (t, 1): t ends the current cell
        for t, side in sorted(cuts):
            if t < lo or t > hi:
                continue
            if side == 0:
                intervals.append(_Interval(cur_lo, cur_closed, t, False))
                cur_lo, cur_closed = t, True
            else:
                intervals.append(_Interval(cur_lo, cur_closed, t, True))
                cur_lo, cur_closed = t, False
        intervals.append(_Interval(cur_lo, cur_closed, hi, not math.isinf(hi)))
        kept = [iv for iv in intervals if _representative(iv, integer) is not None]
        self._intervals = kept
        self._los = [iv.lo for iv in kept]
        cells = [Cell(i, _label(spec.name, iv, integer), _representative(iv, integer)) for i, iv in enumerate(kept)]
        super().__init__(spec, cells)

    def classify(self, value: Any) -> int | None:
        # The intervals are disjoint and ordered: only the last ones starting at or below
        # ``value`` can hold it (an earlier one only if it ends exactly at ``value``).
        last = bisect.bisect_right(self._los, value) - 1
        for i in range(max(0, last - 2), last + 1):
            if self._intervals[i].contains(value):
                return i
        return None  # outside the schema's range: rejected before evaluation


def _representative(iv: _Interval, integer: bool) -> float | int | None:
    if integer:
        first = math.ceil(iv.lo) if not math.isinf(iv.lo) else -(10**9)
        if first == iv.lo and not iv.lo_closed:
            first += 1
        if first < iv.hi or (iv.hi_closed and first == iv.hi):
            return int(first)
        return None
    if iv.lo_closed:
        return iv.lo if iv.contains(iv.lo) else None
    if math.isinf(iv.hi):
        return iv.lo + 1 if not math.isinf(iv.lo) else 0.0
    if math.isinf(iv.lo):  # a number without a minimum, below its lowest cut
        return iv.hi - 1
    if iv.lo < iv.hi:
        x = iv.lo + min(1.0, (iv.hi - iv.lo) / 2)
        x = round(x, 6)
        return x if iv.contains(x) else (iv.lo + iv.hi) / 2
    return None


def _num(x: float) -> str:
    return f"{x:g}"


def _label(name: str, iv: _Interval, integer: bool) -> str:
    if iv.lo == iv.hi:
        return f"{name} = {_num(iv.lo)}"
    left = "" if math.isinf(iv.lo) else f"{_num(iv.lo)} {'<=' if iv.lo_closed else '<'} "
    right = "" if math.isinf(iv.hi) else f" {'<=' if iv.hi_closed else '<'} {_num(iv.hi)}"
    if integer and iv.hi_closed and not math.isinf(iv.hi) and not left:
        return f"{name} <= {_num(iv.hi)}"
    if not right and left:
        return f"{name} {'>=' if iv.lo_closed else '>'} {_num(iv.lo)}"
    return f"{left}{name}{right}"


class _SetPartition(Partition):
    """Lists: items the tests cannot tell apart form a class; a cell says, per class,
    whether none, some (not all) or all of its items are present."""

    def __init__(self, spec: FactSpec, sets: Sequence[tuple[frozenset[str], bool]]) -> None:
        groups: dict[tuple[bool, ...], list[str]] = {}
        for item in spec.values:
            sig = tuple(item in s for s, _ in sets)
            groups.setdefault(sig, []).append(item)
        self._classes: list[tuple[str, ...]] = [tuple(g) for g in groups.values()]
        self._states: list[int] = []
        for cls in self._classes:
            needs_all = any(all_test and s & set(cls) for s, all_test in sets)
            self._states.append(3 if needs_all and len(cls) > 1 else 2)
        cells = []
        for i, combo in enumerate(itertools.product(*[range(n) for n in self._states])):
            rep: list[str] = []
            for cls, state in zip(self._classes, combo):
                if state == 1:
                    rep.append(cls[0])
                elif state == 2:
                    rep.extend(cls)
            order = {v: k for k, v in enumerate(spec.values)}
            rep.sort(key=order.__getitem__)
            cells.append(Cell(i, "[" + ", ".join(rep) + "]", rep))
        super().__init__(spec, cells)

    def classify(self, value: Any) -> int | None:
        present = set(value)
        index = 0
        for cls, n in zip(self._classes, self._states):
            count = sum(1 for x in cls if x in present)
            state = 0 if count == 0 else (2 if n == 3 and count == len(cls) else 1)
            index = index * n + state
        return index


class DecisionDomain:
    """All partitions of one decision under one binding of its parameters."""

    def __init__(self, decision: Decision, partitions: Mapping[str, Partition]) -> None:
        self.decision = decision
        self.partitions = dict(partitions)
        self.facts: tuple[str, ...] = tuple(partitions)
        self._classifiers = [(name, p.classify) for name, p in self.partitions.items()]

    @cached_property
    def size(self) -> int:
        """Number of cells where every fact is known."""
        return math.prod(len(p) for p in self.partitions.values())

    def classify(self, facts: Mapping[str, Any]) -> tuple[int | None, ...]:
        """The cell of a patient: one index per read fact, ``None`` for unknown."""
        return tuple([classify(facts[name]) if name in facts else None for name, classify in self._classifiers])

    def representative(self, key: Sequence[int | None]) -> dict[str, Any]:
        """A patient in the cell ``key`` (unknown facts left out)."""
        out: dict[str, Any] = {}
        for name, idx in zip(self.facts, key):
            if idx is not None:
                out[name] = self.partitions[name].cells[idx].representative
        return out

    def cells(self, fixed: Mapping[str, int] | None = None,
              restrict: Mapping[str, Sequence[int]] | None = None) -> Iterator[tuple[int, ...]]:
        """Every fully known cell, optionally with some facts fixed or restricted."""
        ranges: list[tuple[int, ...]] = []
        for name in self.facts:
            if fixed and name in fixed:
                ranges.append((fixed[name],))
            elif restrict and name in restrict:
                ranges.append(tuple(restrict[name]))
            else:
                ranges.append(tuple(range(len(self.partitions[name]))))
        return itertools.product(*ranges)


def decision_nnf(decision: Decision, params: Mapping[str, Any]) -> tuple[list[NNF], list[NNF]]:
    """NNF of every rule and every scope exclusion under ``params``."""
    rules = [to_nnf(r.when, decision.conditions, params) for r in decision.rules]
    scopes = [to_nnf(s.when, decision.conditions, params) for s in decision.scopes]
    return rules, scopes


def decision_domain(decision: Decision, params: Mapping[str, Any] | None = None) -> DecisionDomain:
    """Partition every fact ``decision`` reads, given parameter values."""
    return joint_domain([(decision, params)])


def joint_domain(parts: Sequence[tuple[Decision, Mapping[str, Any] | None]]) -> DecisionDomain:
    """One partition refining those of several decisions (e.g. two versions being diffed):
    the facts any of them reads, cut at every test any of them makes.  A value pending in
    any of them is treated as unknown."""
    by_fact: dict[str, list[Atom]] = {}
    reads: list[str] = []
    specs: dict[str, FactSpec] = {}
    pending: dict[str, set[str]] = {}
    for decision, params in parts:
        bound = decision.param_values(params)
        rules, scopes = decision_nnf(decision, bound)
        # input constraints cut too, so that a cell is wholly consistent or wholly contradictory:
        # every error constraint, and any constraint on what this decision derives (the chain check)
        limits = [b.violation for b in decision.constraints.bound({decision.id: bound})
                  if b.is_error or b.facts & set(decision.decides)] if decision.constraints else []
        for node in rules + scopes + limits:
            for a in atoms(node):
                by_fact.setdefault(a.fact, []).append(a)
        for name in decision.reads:
            if name not in reads and name in decision.facts:
                reads.append(name)
                specs[name] = decision.facts[name]
        for name, values in decision.pending.items():
            pending.setdefault(name, set()).update(values)
    partitions: dict[str, Partition] = {}
    for name in reads:
        spec = specs[name]
        found = by_fact.get(name, [])
        if spec.kind == "enum":
            partitions[name] = _EnumPartition(spec, tuple(pending.get(name, ())))
        elif spec.kind == "boolean":
            partitions[name] = _BoolPartition(spec)
        elif spec.kind in ("integer", "number"):
            partitions[name] = NumberPartition(spec, _cuts(found))
        else:
            sets = [(frozenset(a.value), a.op in ("all", "notall")) for a in found if a.value is not None]
            partitions[name] = _SetPartition(spec, sets)
    return DecisionDomain(parts[0][0], partitions)


def _cuts(found: Sequence[Atom]) -> set[tuple[float, int]]:
    cuts: set[tuple[float, int]] = set()
    for a in found:
        values = a.value if isinstance(a.value, tuple) else (a.value,)
        for t in values:
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                continue
            if a.op in ("lt", "ge"):
                cuts.add((t, 0))
            elif a.op in ("le", "gt"):
                cuts.add((t, 1))
            elif a.op in ("eq", "ne", "in", "nin"):
                cuts.add((t, 0))
                cuts.add((t, 1))
    return cuts
