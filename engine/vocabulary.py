"""The fact vocabulary: what each patient fact is.

The vocabulary is data of the knowledge package in force: its ``facts.yaml``
(read by :mod:`nbrules.package`) gives every fact's name, type, value set or range,
unit, title, description, a label per value and optional terminology codes.  Rule
files are checked against it, outputs of decisions are added to it as value sets,
and the patient JSON Schema is generated from it (:func:`patient_schema`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

__all__ = ["FactKind", "FactSpec", "TermCode", "input_facts", "spec_from_schema", "patient_schema"]

FactKind = Literal["enum", "boolean", "integer", "number", "set"]


@dataclass(frozen=True)
class TermCode:
    """A code in a standard terminology: ``system`` (``NCIt``, ``SNOMED CT``, ``LOINC``
    or a URI), ``code`` and, optionally, the terminology's own ``display`` text."""

    system: str
    code: str
    display: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


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
    #: Codes of the fact itself in standard terminologies (NCIt, SNOMED CT, LOINC).
    codes: tuple[TermCode, ...] = ()
    #: ``(value, codes)`` pairs: codes of single values of an ``enum`` or ``set``.
    value_codes: tuple[tuple[str, tuple[TermCode, ...]], ...] = ()

    def codes_of(self, value: object) -> tuple[TermCode, ...]:
        """The terminology codes of one value (empty when none are declared)."""
        for v, codes in self.value_codes:
            if v == value:
                return codes
        return ()

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
    """Every patient fact of the bundled knowledge package, in the order of its ``facts.yaml``.

    A rules directory carries its own vocabulary (``RuleSetBuild.package.facts``); this
    is the bundled one, also used by a directory without ``facts.yaml``.
    """
    from .package import bundled_facts  # late import: package imports this module

    return dict(bundled_facts())


def _property(spec: FactSpec) -> dict[str, Any]:
    prop: dict[str, Any] = {}
    if spec.title:
        prop["title"] = spec.title
    if spec.description:
        prop["description"] = spec.description
    if spec.kind == "enum":
        prop.update(type="string", enum=list(spec.values))
    elif spec.kind == "boolean":
        prop["type"] = "boolean"
    elif spec.kind == "set":
        prop.update(type="array", items={"type": "string", "enum": list(spec.values)}, uniqueItems=True)
    else:
        prop["type"] = spec.kind
        if spec.minimum is not None:
            prop["minimum"] = spec.minimum
        if spec.maximum is not None:
            prop["maximum"] = spec.maximum
    if spec.unit:
        prop["x-unit"] = spec.unit
    if spec.labels:
        prop["x-value-labels"] = dict(spec.labels)
    if spec.codes:
        prop["x-codes"] = [c.to_dict() for c in spec.codes]
    if spec.value_codes:
        prop["x-value-codes"] = {v: [c.to_dict() for c in codes] for v, codes in spec.value_codes}
    return prop


def patient_schema(facts: Mapping[str, FactSpec], *, title: str = "nbrules patient facts",
                   package: str = "") -> dict[str, Any]:
    """The patient JSON Schema (2020-12) generated from a vocabulary.

    One optional property per input fact, in vocabulary order: ``enum`` facts are
    strings with an ``enum``, ``set`` facts arrays of distinct enumerated strings,
    numbers carry ``minimum``/``maximum``; units, value labels and terminology codes go
    into ``x-unit``, ``x-value-labels``, ``x-codes`` and ``x-value-codes``.  Unknown
    keys are refused (``additionalProperties: false``).  ``package`` names the knowledge
    package in the description.
    """
    source = f" of the knowledge package {package}" if package else ""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": (f"The facts about one patient that the rule files{source} read, generated from its "
                        "facts.yaml. Every fact is optional: a fact that is absent is unknown, never guessed. "
                        "Lists are sets: [] means assessed and none found."),
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _property(spec) for name, spec in facts.items() if spec.is_input},
    }
