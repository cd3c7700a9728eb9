"""The checked, frozen intermediate representation of rule files.

The *check* stage turns validated YAML data into these objects; everything after
it (compile, evaluate, verify, render, diff) works on them only.  Every node keeps
the JSON pointer of its origin so later stages can point back into the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, Union, get_args

from .loader import SourceMap
from .reference import Reference, split_citation
from .sources import RuleSource
from .vocabulary import FactSpec

if TYPE_CHECKING:  # pragma: no cover
    from .constraints import ConstraintSet

__all__ = [
    "All",
    "AnyOf",
    "Case",
    "CondRef",
    "Condition",
    "Constraint",
    "HitPolicy",
    "ParamOp",
    "Status",
    "TestOp",
    "Decision",
    "DecisionRef",
    "ExpectIndeterminate",
    "Not",
    "ParamRef",
    "ParamTest",
    "Parameter",
    "Profile",
    "Rule",
    "SharedParameters",
    "Scope",
    "Test",
    "TEST_OPERATORS",
]

#: Operator of a test on one fact (the key next to ``fact`` in a rule file).
TestOp = Literal["is", "in", "less_than", "at_most", "greater_than", "at_least", "contains_any", "contains_all",
                 "subset_of", "empty", "known"]
#: Operators of a test on one fact, in the order the docs list them.
TEST_OPERATORS: tuple[TestOp, ...] = get_args(TestOp)
#: Operator of a test on a parameter.
ParamOp = Literal["is", "in"]
#: ``unique``: at most one rule may fire; ``any``: several may, if they agree.
HitPolicy = Literal["unique", "any"]
#: ``draft`` and ``retired`` run only when pinned; ``active`` runs by default.
Status = Literal["draft", "active", "retired"]


@dataclass(frozen=True)
class ParamRef:
    """``{param: name}`` used in place of a literal."""

    name: str


@dataclass(frozen=True)
class DecisionRef:
    """``{decision: id, output: name}`` used in place of a literal (input constraints only):
    the value that decision derives for that output from the same patient's facts."""

    decision: str
    output: str


@dataclass(frozen=True)
class Test:
    """A test on one fact: ``{fact: age_days, less_than: 547}``."""

    __test__ = False  # not a pytest test class

    fact: str
    op: TestOp
    value: Any  # scalar, tuple of scalars, bool (empty/known), ParamRef or DecisionRef
    pointer: str


@dataclass(frozen=True)
class ParamTest:
    """A test on a parameter, decided at compile time: ``{param: policy, is: unfavorable}``."""

    param: str
    op: ParamOp
    value: Any
    pointer: str


@dataclass(frozen=True)
class All:
    items: tuple["Condition", ...]
    pointer: str


@dataclass(frozen=True)
class AnyOf:
    items: tuple["Condition", ...]
    pointer: str


@dataclass(frozen=True)
class Not:
    item: "Condition"
    pointer: str


@dataclass(frozen=True)
class CondRef:
    """``{condition: name}``: a named condition of the same file."""

    name: str
    pointer: str


Condition = Union[Test, ParamTest, All, AnyOf, Not, CondRef]


@dataclass(frozen=True)
class Parameter:
    name: str
    value: Any
    note: str
    cite: tuple[str, ...]
    alternatives: tuple[tuple[Any, str], ...]
    pointer: str


@dataclass(frozen=True)
class Profile:
    """A named, cited set of parameter readings that belong together (``parameters.yaml``).

    ``readings`` maps a parameter name (shared, or of any decision) to the value read;
    each is the parameter's value or one of its documented alternatives."""

    name: str
    title: str
    note: str
    cite: tuple[str, ...]
    readings: Mapping[str, Any]
    pointer: str


@dataclass(frozen=True)
class SharedParameters:
    """The checked ``parameters.yaml`` of a package: shared parameters and profiles."""

    parameters: Mapping[str, Parameter]
    profiles: Mapping[str, Profile]
    sources: Mapping[str, str]
    display: str


@dataclass(frozen=True)
class Rule:
    id: str
    cite: tuple[str, ...]
    when: Condition
    then: Mapping[str, str]
    pointer: str
    line: int
    description: str = ""


@dataclass(frozen=True)
class Scope:
    """A declared gap: a combination the source system does not classify."""

    id: str
    when: Condition
    reason: str
    cite: tuple[str, ...]
    pointer: str
    line: int


@dataclass(frozen=True)
class Constraint:
    """One input constraint of a package's ``constraints.yaml``.

    A patient record *violates* it when ``when`` is true and ``require`` is false
    (three-valued: a constraint on a missing fact is never violated).  ``fact`` is the
    fact the message is about (its JSON pointer is ``/fact``); ``severity`` is
    ``error`` (NB510, the record is refused) or ``warning`` (NB511).
    """

    id: str
    fact: str
    severity: str
    when: "Condition | None"
    require: "Condition"
    message: str
    hint: str
    cite: tuple[str, ...]
    pointer: str
    line: int


@dataclass(frozen=True)
class ExpectIndeterminate:
    candidates: tuple[str, ...]
    missing: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    name: str
    given: Mapping[str, Any]
    expect: Mapping[str, Union[str, None, ExpectIndeterminate]]
    fired: tuple[str, ...] | None
    parameters: Mapping[str, Any]
    pointer: str
    line: int
    note: str = ""


@dataclass(frozen=True, eq=False)
class Decision:
    """One checked rule file."""

    id: str
    title: str
    description: str
    version: str
    status: Status
    effective: str
    sources: Mapping[str, str]
    hit_policy: HitPolicy
    parameters: Mapping[str, Parameter]
    conditions: Mapping[str, Condition]
    reads: tuple[str, ...]
    facts: Mapping[str, FactSpec]
    pending: Mapping[str, tuple[str, ...]]
    decides: Mapping[str, tuple[str, ...]]
    scopes: tuple[Scope, ...]
    rules: tuple[Rule, ...]
    cases: tuple[Case, ...]
    source: RuleSource
    #: Where each node is in the file (the checked model keeps positions, not the loaded data).
    positions: SourceMap = field(repr=False)
    #: patient facts of which a record must give one for the decision to apply (``applies_if_given``)
    applies_if: tuple[str, ...] = ()
    #: why the outputs are not applicable when the record gives none of them
    applies_reason: str = ""
    #: Sources that are reference documents of the package, by source key.
    references: Mapping[str, Reference] = field(default_factory=dict, repr=False)

    #: The package's input constraints (given by :func:`nbrules.package_checks.with_constraints`).
    constraints: "ConstraintSet | None" = field(default=None, repr=False)

    def cite_link(self, cite: str) -> str | None:
        """Where a citation points: ``docs/criteria.md#S9``; ``None`` for a publication."""
        key, locator = split_citation(cite)
        ref = self.references.get(key)
        return ref.link(locator) if ref is not None else None

    @property
    def file(self) -> SourceMap:
        """The same as :attr:`positions` (the name used before the model kept positions only)."""
        return self.positions

    @property
    def key(self) -> str:
        """``decision@version``, the name used to pin a version."""
        return f"{self.id}@{self.version}"

    @property
    def sha256(self) -> str:
        return self.source.sha256

    @property
    def version_key(self) -> tuple[Any, ...]:
        """Sort key of the semantic version (a pre-release sorts before its release)."""
        core, _, pre = self.version.partition("-")
        nums = tuple(int(x) if x.isdigit() else 0 for x in core.split("."))
        return nums + ((1, "") if not pre else (0, pre))

    def param_values(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Parameter values in force, with optional overrides (cases, what-if)."""
        values = {name: p.value for name, p in self.parameters.items()}
        if overrides:
            values.update(overrides)
        return values

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def location(self, pointer: str) -> str:
        """``display-path:line`` of a node."""
        return f"{self.source.display}:{self.positions.line(pointer)}"
