"""The fact vocabulary: what each patient fact is, read from ``patient.schema.json``.

The patient schema is the single source of truth for fact names, types, value
sets and ranges; rule files are checked against it and outputs of decisions are
added to it as enumerations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from .resources import read_schema

__all__ = ["FactKind", "FactSpec", "input_facts", "spec_from_schema"]

FactKind = Literal["enum", "boolean", "integer", "number", "set"]


@dataclass(frozen=True)
class FactSpec:
    """Type of one fact.

    ``values`` holds the value set of an ``enum`` or the possible items of a ``set``
    (a list of distinct items).  ``minimum``/``maximum`` bound numbers.
    """

    name: str
    kind: FactKind
    values: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    title: str = ""
    is_input: bool = True
    #: Plain-words description of the fact, for editors and forms.
    description: str = ""
    #: Unit of a number (``days``, ``%``, ``per 5,000 cells``); empty when none.
    unit: str = ""
    #: ``(value, label)`` pairs: the words a clinician reads for each value of an
    #: ``enum`` or item of a ``set`` (values without a label read as themselves).
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, value: object) -> str:
        """The clinician's words for one value: its label, else the value with spaces.

        >>> FactSpec("x", "enum", ("not_amplified",)).label("not_amplified")
        'not amplified'
        """
        for v, text in self.labels:
            if v == value:
                return text
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value).replace("_", " ")

    def describe(self) -> str:
        """Plain-words type, as used in messages: ``one of L1, L2, M, MS``."""
        if self.kind == "enum":
            return "one of " + ", ".join(self.values)
        if self.kind == "set":
            return "a list of distinct items from " + ", ".join(self.values)
        if self.kind == "boolean":
            return "true or false"
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        noun = "a whole number" if self.kind == "integer" else "a number"
        return noun + (" " + " and ".join(bounds) if bounds else "")

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("integer", "number")


def spec_from_schema(name: str, prop: Mapping[str, Any]) -> FactSpec:
    """Build a :class:`FactSpec` from one property of the patient schema."""
    t = prop.get("type")
    title = str(prop.get("title", ""))
    extra: dict[str, Any] = {"description": str(prop.get("description", ""))}
    if t == "string":
        return FactSpec(name, "enum", tuple(prop["enum"]), title=title, **extra)
    if t == "boolean":
        return FactSpec(name, "boolean", title=title, **extra)
    if t in ("integer", "number"):
        return FactSpec(name, t, minimum=prop.get("minimum"), maximum=prop.get("maximum"), title=title, **extra)
    if t == "array":
        return FactSpec(name, "set", tuple(prop["items"]["enum"]), title=title, **extra)
    raise ValueError(f"patient schema property {name!r} has an unsupported shape")


def input_facts() -> dict[str, FactSpec]:
    """Every patient fact, in the schema's order."""
    schema = read_schema("patient.schema.json")
    return {name: spec_from_schema(name, prop) for name, prop in schema["properties"].items()}
