"""Stage 2, *validate*: JSON Schema (2020-12) checks with located, readable messages.

One translation layer turns every :class:`jsonschema.ValidationError` into a
problem record (code, JSON pointer, message, hint).  Rule files get the record
placed at ``path:line:col`` of the offending key or value; patient records get
it as ``/pointer: expected …, found …``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .diagnostics import Diagnostic, did_you_mean
from .loader import LoadedFile, join_pointer
from .resources import read_schema

if TYPE_CHECKING:  # pragma: no cover - imported where a schema is compiled (a third of a one-shot start)
    import jsonschema
    from jsonschema import Draft202012Validator

__all__ = ["Problem", "SCHEMA_CODES", "schema_problems", "schema_validator", "rule_file_validator", "validate_rule_file", "validate_file", "describe_value"]


@dataclass(frozen=True)
class Problem:
    """A schema violation before it is placed in a file or a patient record."""

    kind: str  # type | required | unknown-key | enum | format | size | duplicate
    pointer: str
    message: str
    hint: str | None = None
    on_key: bool = False


_TYPE_WORDS = {
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def describe_value(value: Any) -> str:
    """A short description of a found value: ``text 'abc'``, ``the number 3``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {json.dumps(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text '{shown}'"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    return type(value).__name__  # pragma: no cover


def _type_words(types: Any) -> str:
    words: list[str]
    if isinstance(types, str):
        types = [types]
    words = [str(_TYPE_WORDS.get(t, t)) for t in types]
    if "a mapping" in words and len(words) > 1:
        words = [w for w in words if w != "a mapping"] + ["{param: name}"]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _pointer(path: Any) -> str:
    p = ""
    for token in path:
        p = join_pointer(p, token)
    return p


def _first_duplicate(items: list[Any]) -> int | None:
    seen: list[str] = []
    for i, item in enumerate(items):
        key = json.dumps(item, sort_keys=True)
        if key in seen:
            return i
        seen.append(key)
    return None


def schema_problems(validator: Draft202012Validator, instance: Any) -> Iterator[Problem]:
    """Every violation of ``instance``, translated; nothing is dropped."""
    for err in validator.iter_errors(instance):
        yield from _translate(err)


def _translate(err: jsonschema.ValidationError) -> Iterator[Problem]:
    pointer = _pointer(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    custom = schema.get("x-messages", {}).get(err.validator) if isinstance(schema.get("x-messages"), dict) else None
    inst = err.instance
    v = err.validator
    value: Any = err.validator_value
    if v == "type":
        yield Problem("type", pointer, f"expected {_type_words(value)}, found {describe_value(inst)}",
                      hint=_type_hint(value, inst))
    elif v == "required":
        missing = [k for k in value if isinstance(inst, dict) and k not in inst]
        message = schema.get("x-message")
        for key in missing:
            if message:
                found = ", ".join(sorted(inst)) if isinstance(inst, dict) and inst else "no keys"
                yield Problem("required", pointer, f"{message}; found {found}")
            else:
                yield Problem("required", pointer, f"missing required key '{key}'")
    elif v == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        if isinstance(inst, dict):
            for key in inst:
                if key in allowed:
                    continue
                hint = did_you_mean(key, allowed) or (f"allowed keys here: {', '.join(allowed)}" if allowed else None)
                yield Problem("unknown-key", join_pointer(pointer, key), f"unknown key '{key}'", hint=hint, on_key=True)
    elif v == "enum":
        allowed_values = [str(x) for x in value]
        hint = did_you_mean(str(inst), allowed_values) if isinstance(inst, str) else None
        yield Problem("enum", pointer, f"expected one of {', '.join(allowed_values)}; found {describe_value(inst)}", hint=hint)
    elif v == "pattern":
        yield Problem("format", pointer, f"{describe_value(inst)} does not have the required form", hint=schema.get("x-hint"))
    elif v == "propertyNames":
        sub = err.context[0] if err.context else None
        pattern = str(sub.validator_value) if sub is not None and sub.validator == "pattern" else ""
        hint = "use lower-case letters, digits and '_'" if "_" in pattern else None
        yield Problem("format", join_pointer(pointer, str(inst)), f"key '{inst}' does not have the required form", hint=hint, on_key=True)
    elif v == "uniqueItems":
        items: list[Any] = inst if isinstance(inst, list) else []
        idx = _first_duplicate(items)
        where = join_pointer(pointer, idx) if idx is not None else pointer
        shown = describe_value(items[idx]) if idx is not None else "an item"
        yield Problem("duplicate", where, f"{shown} appears more than once in this list", hint="list each item once")
    elif v in ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "minimum", "maximum",
               "exclusiveMinimum", "exclusiveMaximum"):
        yield Problem("size", pointer, custom or _size_message(v, value, inst))
    elif v is None or v == "false":  # a `false` schema
        yield Problem("unknown-key", pointer, "this value is not allowed here")
    else:  # pragma: no cover - keywords not used by our schemas
        yield Problem("format", pointer, err.message)


def _type_hint(expected: Any, inst: Any) -> str | None:
    exp = [expected] if isinstance(expected, str) else list(expected)
    if "boolean" in exp and isinstance(inst, str) and inst.lower() in ("yes", "no", "on", "off", "y", "n"):
        return "write true or false; yes/no/on/off are plain text in rule files"
    if "string" in exp and isinstance(inst, (int, float)) and not isinstance(inst, bool):
        return f"quote it to make it text: '{inst}'"
    if "number" in exp and isinstance(inst, str):
        return "write the number without quotes"
    return None


def _size_message(keyword: str, limit: Any, inst: Any) -> str:
    found = describe_value(inst)
    return {
        "minItems": f"expected a list of at least {limit} item(s), found {found}",
        "maxItems": f"expected a list of at most {limit} item(s), found {found}",
        "minLength": "expected non-empty text" if limit == 1 else f"expected text of at least {limit} characters",
        "maxLength": f"expected text of at most {limit} characters",
        "minProperties": f"expected a mapping with at least {limit} key(s), found {found}",
        "maxProperties": f"expected a mapping with at most {limit} key(s), found {found}",
        "minimum": f"expected a number >= {limit}, found {found}",
        "maximum": f"expected a number <= {limit}, found {found}",
        "exclusiveMinimum": f"expected a number > {limit}, found {found}",
        "exclusiveMaximum": f"expected a number < {limit}, found {found}",
    }[keyword]


SCHEMA_CODES = {
    "type": "NB201",
    "required": "NB202",
    "unknown-key": "NB203",
    "enum": "NB204",
    "format": "NB205",
    "size": "NB206",
    "duplicate": "NB207",
}

@lru_cache(maxsize=None)
def schema_validator(name: str) -> Draft202012Validator:
    """The compiled validator of a bundled schema, e.g. ``fhir-mapping.schema.json`` (built once).

    A schema may refer to another bundled one by file name
    (``constraints.schema.json`` uses the conditions of ``ruleset.schema.json``)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schema = read_schema(name)
    if "ruleset.schema.json#" not in json.dumps(schema):
        return Draft202012Validator(schema)
    ruleset = read_schema("ruleset.schema.json")
    registry: Registry[Any] = Registry().with_resource(ruleset["$id"], Resource.from_contents(ruleset))
    return Draft202012Validator(schema, registry=registry)


def validate_file(loaded: LoadedFile, schema: str) -> list[Diagnostic]:
    """Every violation of one loaded file (a rule file, constraints, parameters) of ``schema``, located."""
    out: list[Diagnostic] = []
    for p in schema_problems(schema_validator(schema), loaded.data):
        out.append(loaded.diag(SCHEMA_CODES[p.kind], p.message, p.pointer, key=p.on_key, hint=p.hint))
    return out


def rule_file_validator() -> Draft202012Validator:
    """The compiled validator of ``schemas/ruleset.schema.json``."""
    return schema_validator("ruleset.schema.json")


def validate_rule_file(loaded: LoadedFile) -> list[Diagnostic]:
    """Every JSON Schema violation of one loaded rule file, located."""
    return validate_file(loaded, "ruleset.schema.json")


def problems_by_pointer(problems: list[Problem]) -> Mapping[str, list[Problem]]:
    grouped: dict[str, list[Problem]] = {}
    for p in problems:
        grouped.setdefault(p.pointer, []).append(p)
    return grouped
