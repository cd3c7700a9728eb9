"""Patient facts: parse, validate against ``patient.schema.json`` and the package's input constraints.

Facts are checked strictly before they reach durable-rules, which would otherwise
compare ``"9"`` with ``18`` as text and match ``"true"`` or ``1`` with ``true``.
Every problem is a :class:`~nbrules.diagnostics.Diagnostic` carrying the JSON
pointer of the fact, what was expected and what was found.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from jsonschema import Draft202012Validator

from .diagnostics import Diagnostic, did_you_mean, has_errors
from .loader import join_pointer
from .resources import read_schema
from .validator import describe_value, schema_problems
from .vocabulary import FactSpec

if TYPE_CHECKING:  # pragma: no cover
    from .constraints import ConstraintSet

__all__ = [
    "PatientValidator",
    "parse_patient_json",
    "canonical_facts",
    "canonical_json",
    "facts_sha256",
]

_CODES = {
    "type": "NB502",
    "unknown-key": "NB503",
    "enum": "NB504",
    "size": "NB505",
    "duplicate": "NB506",
    "format": "NB502",
    "required": "NB502",
}

class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number in JSON")


def parse_patient_json(text: str | bytes) -> tuple[Any, list[Diagnostic]]:
    """Parse one JSON document strictly: no duplicate keys, no NaN/Infinity."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8-sig")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant), []
    except _DuplicateKey as exc:
        return None, [Diagnostic(code="NB506", message=f"key '{exc.key}' appears twice in one object",
                                 pointer=join_pointer("", exc.key), hint="give each fact once")]
    except UnicodeDecodeError:
        return None, [Diagnostic(code="NB501", message="input is not UTF-8 text", pointer="")]
    except json.JSONDecodeError as exc:
        return None, [Diagnostic(code="NB501", message=f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                 pointer="")]
    except ValueError as exc:
        return None, [Diagnostic(code="NB501", message=f"not valid JSON: {exc}", pointer="")]


def canonical_facts(facts: Mapping[str, Any], specs: Mapping[str, FactSpec]) -> dict[str, Any]:
    """Facts in canonical form: lists sorted by value-set order, whole numbers as int."""
    out: dict[str, Any] = {}
    for name in specs:
        if name not in facts:
            continue
        value = facts[name]
        spec = specs[name]
        if spec.kind == "set":
            order = {v: i for i, v in enumerate(spec.values)}
            value = sorted(value, key=lambda x: order.get(x, len(order)))
        elif spec.kind in ("integer", "number") and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[name] = value
    return out


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON: the form that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def facts_sha256(facts: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(facts).encode("utf-8")).hexdigest()


def _fast_check(specs: Mapping[str, FactSpec]) -> Any:
    """A compiled predicate: True exactly when a record satisfies the patient schema
    (flat object, known facts, types, value sets, ranges, distinct list items) and every
    number is finite.  It lets valid records skip jsonschema; invalid ones are then run
    through jsonschema to word the problems.  tests/test_patient_input.py checks that the
    two agree."""
    checks: dict[str, Any] = {}
    for name, spec in specs.items():
        if spec.kind == "enum":
            allowed = frozenset(spec.values)
            checks[name] = lambda v, a=allowed: type(v) is str and v in a
        elif spec.kind == "boolean":
            checks[name] = lambda v: type(v) is bool
        elif spec.kind == "set":
            allowed = frozenset(spec.values)
            checks[name] = lambda v, a=allowed: (type(v) is list and all(type(x) is str and x in a for x in v)
                                                 and len(set(v)) == len(v))
        else:
            lo = spec.minimum if spec.minimum is not None else -math.inf
            hi = spec.maximum if spec.maximum is not None else math.inf
            if spec.kind == "integer":
                checks[name] = lambda v, lo=lo, hi=hi: ((type(v) is int or (type(v) is float and v.is_integer()))
                                                        and lo <= v <= hi)
            else:
                checks[name] = lambda v, lo=lo, hi=hi: (type(v) in (int, float) and math.isfinite(v) and lo <= v <= hi)

    def valid(record: Any) -> bool:
        if type(record) is not dict:
            return False
        for k, v in record.items():
            check = checks.get(k)
            if check is None or not check(v):
                return False
        return True

    return valid


class PatientValidator:
    """Validates patient records against the patient schema (optionally extended).

    ``extra`` adds facts that are not patient input, e.g. the outputs of other
    decisions given in a rule file's example case.  ``constraints`` (the package's
    input constraints) adds NB510 errors and NB511 warnings for facts that cannot or
    should not occur together; ``params`` overrides the parameters of the decisions
    they refer to, by decision id.
    """

    def __init__(self, specs: Mapping[str, FactSpec], extra: Iterable[FactSpec] = (),
                 constraints: "ConstraintSet | None" = None,
                 params: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.constraints = constraints
        self.params = dict(params or {})
        self._bound = constraints.bound(self.params) if constraints is not None else ()
        # (facts without which it cannot be violated, compiled test): most records skip most constraints
        self._quick = tuple((tuple(b.needs), b.test) for b in self._bound)
        schema = copy.deepcopy(read_schema("patient.schema.json"))
        self.specs: dict[str, FactSpec] = dict(specs)
        for spec in extra:
            if spec.name not in schema["properties"]:
                schema["properties"][spec.name] = {"type": "string", "enum": list(spec.values)}
                self.specs[spec.name] = spec
        self._validator = Draft202012Validator(schema)
        self._valid = _fast_check(self.specs)

    def check(self, record: Any) -> list[Diagnostic]:
        """Every schema problem and constraint violation of one record."""
        if self._valid(record):
            return self._constraints(record)
        if not isinstance(record, dict):
            return [Diagnostic(code="NB507", pointer="",
                               message=f"expected a JSON object of patient facts, found {describe_value(record)}")]
        diags = []
        for p in schema_problems(self._validator, record):
            message = p.message
            hint = p.hint
            if p.kind == "unknown-key":
                name = p.pointer.rsplit("/", 1)[-1]
                message = f"expected a patient fact, found unknown fact '{name}'"
                hint = did_you_mean(name, self.specs) or "the patient facts are listed in schemas/patient.schema.json"
            diags.append(Diagnostic(code=_CODES[p.kind], pointer=p.pointer, message=message, hint=hint))
        for name, value in record.items():
            spec = self.specs.get(name)
            if spec is not None and spec.is_numeric and isinstance(value, float) and not math.isfinite(value):
                diags.append(Diagnostic(code="NB505", pointer=join_pointer("", name),
                                        message=f"expected a finite number, found {value}"))
        if not has_errors(diags):
            diags.extend(self._constraints(record))
        return diags

    def _constraints(self, record: Mapping[str, Any]) -> list[Diagnostic]:
        if self.constraints is None:
            return []
        for needs, test in self._quick:
            for f in needs:
                if f not in record:
                    break
            else:
                if test is None or test(record) is True:
                    return self.constraints.check(record, bound=self._bound)
        return []

    def canonical(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return canonical_facts(record, self.specs)
