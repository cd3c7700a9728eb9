"""Patient facts: parse, validate against the patient schema generated from the
vocabulary of the package in force, and against the package's input constraints.

Facts are checked strictly before they reach durable-rules, which would otherwise
compare ``"9"`` with ``18`` as text and match ``"true"`` or ``1`` with ``true``.
Every problem is a :class:`~nbrules.diagnostics.Diagnostic` carrying the JSON
pointer of the fact, what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import orjson

from .diagnostics import Diagnostic, did_you_mean, has_errors
from .encoding import canonical, canonical_utf8
from .loader import join_pointer
from .validator import describe_value, schema_problems
from .vocabulary import FactSpec, patient_schema

if TYPE_CHECKING:  # pragma: no cover
    from jsonschema import Draft202012Validator

    from .constraints import ConstraintSet

__all__ = [
    "PatientValidator",
    "parse_patient_json",
    "canonical_facts",
    "canonical_json",
    "facts_sha256",
    "MAX_DEPTH",
    "DEFAULT_MAX_INPUT",
    "inspect_json",
    "MAX_PROBLEMS",
    "MAX_SUGGEST",
    "shown",
    "escape_controls",
    "not_text",
    "too_large",
]

#: Largest patient input in bytes: an HTTP body, a patient file, a batch row.
DEFAULT_MAX_INPUT = 1_048_576
#: Deepest nesting of JSON arrays and objects accepted (a patient record needs 2;
#: FHIR resources in a CDS Hooks request about 10).
MAX_DEPTH = 64
#: Problems listed per record; the rest are counted in one NB550 entry.
MAX_PROBLEMS = 50
#: Longest unknown name that gets a "did you mean" suggestion.
MAX_SUGGEST = 64
#: Longest unknown fact name repeated in its problem's pointer; a longer one is located by the record.
MAX_POINTED_NAME = 1024
#: Orders of a record's keys whose recipe :meth:`PatientValidator.accept` remembers.
_RECIPES = 1024
#: Longest key or value quoted in a message (the pointer stays exact, but for an unknown
#: fact name over MAX_POINTED_NAME).
_SHOWN = 80

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
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    for k, _ in pairs:  # the first key given twice
        if k in seen:
            raise _DuplicateKey(k)
        seen.add(k)
    raise AssertionError("unreachable: fewer keys than pairs means a key given twice")  # pragma: no cover


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number in JSON")


def shown(text: str) -> str:
    """``text`` for a message: cut after 80 characters, control characters escaped
    (a message never carries terminal escape codes from the input)."""
    return escape_controls(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def escape_controls(text: str) -> str:
    """``text`` with control and other unprintable characters written as escapes
    (``\\x1b``), so that no terminal escape code from the input reaches a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


def too_large(message: str, pointer: str = "") -> Diagnostic:
    """An NB509 diagnostic: the input exceeds a limit."""
    return Diagnostic(code="NB509", pointer=pointer, message=message,
                      hint="send one patient's facts; see docs/diagnostics.md#nb509")


def _pointer(path: Any) -> str:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    out = ""
    for key in reversed(keys):
        out = join_pointer(out, key)
    return out


def not_text(s: str) -> bool:
    """Whether ``s`` cannot be written as UTF-8 (it holds a lone surrogate)."""
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def inspect_json(data: Any, max_depth: int = MAX_DEPTH) -> Diagnostic | None:
    """The first place where parsed JSON nests deeper than ``max_depth`` (NB509) or
    holds a lone surrogate in a string or key (NB551); None when there is none.
    Iterative, linear in the size of ``data``."""
    if type(data) is str and not_text(data):
        return Diagnostic(code="NB551", pointer="", message=f"expected text, found a lone surrogate in {shown(ascii(data))}")
    if type(data) is not dict and type(data) is not list:
        return None
    stack: list[tuple[Any, Any, int]] = [(data, None, 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth >= max_depth:
            return too_large(f"expected JSON nested at most {max_depth} levels deep, found deeper", _pointer(path))
        items = value.items() if type(value) is dict else enumerate(value)
        for k, v in items:
            if type(k) is str and not_text(k):
                return Diagnostic(code="NB551", pointer=_pointer(path),
                                  message=f"expected text, found a lone surrogate in the key {shown(ascii(k))}")
            t = type(v)
            if t is str:
                if not_text(v):
                    return Diagnostic(code="NB551", pointer=_pointer((path, k)),
                                      message=f"expected text, found a lone surrogate in {shown(ascii(v))}")
            elif t is dict or t is list:
                stack.append((v, (path, k), depth + 1))
    return None


def parse_patient_json(text: str | bytes, max_bytes: int | None = None,
                       max_depth: int = MAX_DEPTH) -> tuple[Any, list[Diagnostic]]:
    """Parse one JSON document strictly: no duplicate keys, no NaN/Infinity, text that
    is Unicode (NB551), at most ``max_bytes`` long and ``max_depth`` deep and integers
    of at most 4,300 digits (NB509).  Returns (data, []) or (None, [diagnostic])."""
    if max_bytes is not None and len(text) > max_bytes:
        return None, [too_large(f"expected at most {max_bytes} bytes of JSON, found {len(text)}")]
    data = _plain_record(text, max_depth)
    if data is not None:
        return data, []
    return _strict_parse(text, max_depth)


def _strict_parse(text: str | bytes, max_depth: int = MAX_DEPTH) -> tuple[Any, list[Diagnostic]]:
    """:func:`parse_patient_json` by the standard library's parser, which words every problem."""
    raw = isinstance(text, bytes)
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8-sig")
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        return None, [Diagnostic(code="NB506", message=f"key '{shown(exc.key)}' appears twice in one object",
                                 pointer=join_pointer("", exc.key), hint="give each fact once")]
    except UnicodeDecodeError:
        return None, [Diagnostic(code="NB501", message="input is not UTF-8 text", pointer="")]
    except json.JSONDecodeError as exc:
        return None, [Diagnostic(code="NB501", message=f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                 pointer="")]
    except RecursionError:
        return None, [too_large(f"expected JSON nested at most {max_depth} levels deep, found deeper")]
    except ValueError as exc:
        if "digits" in str(exc):  # int_max_str_digits: Python refuses to read longer integers
            return None, [too_large("expected a number of at most 4,300 digits, found a longer one")]
        return None, [Diagnostic(code="NB501", message=f"not valid JSON: {exc}", pointer="")]
    # Only a \\u escape can put a lone surrogate in text decoded from UTF-8 (or in text
    # that has none), and JSON with at most max_depth brackets cannot nest deeper: most
    # records need no walk.
    if ("\\u" in text or (not raw and not_text(text))
            or text.count("[") + text.count("{") > max_depth):
        problem = inspect_json(data, max_depth)
        if problem is not None:
            return None, [problem]
    return data, []


#: A run of 19 digits: maybe an integer beyond 64 bits, which orjson reads as a float.
#: Bytes are searched with every digit made 0 (several times faster than the expression).
_LONG_NUMBER = re.compile(r"\d{19}")
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_ZEROS = b"0" * 19


def _plain_record(text: str | bytes, max_depth: int) -> dict[str, Any] | None:
    """The object ``text`` holds when it is a plain record that orjson reads exactly as
    the strict parse of :func:`parse_patient_json` would (several times faster); None
    when it may not be, and the strict parse decides.

    orjson refuses NaN and Infinity, text that is not UTF-8 and lone surrogates as the
    strict parse does, and a byte order mark and a number too large for a float (which
    the strict parse reads), leaving them to the strict parse; it reads every other
    number alike but an integer beyond 64 bits (a float for orjson): a text with a run
    of 19 digits is left to the strict parse.  It keeps the last of a key
    given twice, so the text must show no more members than the object has keys: one
    ``{`` (no object inside), as many ``:`` as keys (a colon inside a string, or a key
    given twice, sends the text to the strict parse).  A ``\\u`` escape, or more
    brackets than ``max_depth``, leaves the text to the strict parse, which checks them.
    """
    try:
        data = orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError
        return None
    if type(data) is not dict:
        return None
    if isinstance(text, bytes):
        if (text.count(b":") != len(data) or text.count(b"{") != 1 or b"\\u" in text
                or text.count(b"[") >= max_depth or _ZEROS in text.translate(_DIGITS_AS_ZERO)):
            return None
    elif (text.count(":") != len(data) or text.count("{") != 1 or "\\u" in text
          or text.count("[") >= max_depth or _LONG_NUMBER.search(text)):
        return None
    return data


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
    """Compact, key-sorted JSON: the form that is hashed (``json.dumps(value,
    sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, written by orjson)."""
    return canonical(value)


def facts_sha256(facts: Mapping[str, Any]) -> str:
    """sha256 (hex) of the UTF-8 bytes of :func:`canonical_json` of ``facts``."""
    return hashlib.sha256(canonical_utf8(facts)).hexdigest()


def _fast_check(specs: Mapping[str, FactSpec]) -> Any:
    """A compiled predicate: True exactly when a record satisfies the patient schema
    (flat object, known facts, types, value sets, ranges, distinct list items) and every
    number is finite.  It lets valid records skip jsonschema; invalid ones are then run
    through jsonschema to word the problems.  tests/test_patient_input.py checks that the
    two agree."""
    checks = _fact_checks(specs)

    def valid(record: Any) -> bool:
        if type(record) is not dict:
            return False
        for k, v in record.items():
            check = checks.get(k)
            if check is None or not check(v):
                return False
        return True

    return valid


def _fact_checks(specs: Mapping[str, FactSpec]) -> dict[str, Callable[[Any], bool]]:
    """Per fact, a predicate true exactly when a value satisfies its schema (and, for a
    number, is finite): the tests of :func:`_fast_check`."""
    checks: dict[str, Any] = {}  # lambdas with defaults: mypy cannot infer their type
    for name, spec in specs.items():
        if spec.kind == "enum":
            allowed = frozenset(spec.values)
            checks[name] = lambda v, a=allowed: type(v) is str and v in a
        elif spec.kind == "boolean":
            checks[name] = lambda v: type(v) is bool
        elif spec.kind == "set":
            checks[name] = _set_check(frozenset(spec.values))
        else:
            lo = spec.minimum if spec.minimum is not None else -math.inf
            hi = spec.maximum if spec.maximum is not None else math.inf
            if spec.kind == "integer":
                checks[name] = lambda v, lo=lo, hi=hi: ((type(v) is int or (type(v) is float and v.is_integer()))
                                                        and lo <= v <= hi)
            else:
                checks[name] = lambda v, lo=lo, hi=hi: (type(v) in (int, float) and math.isfinite(v) and lo <= v <= hi)
    return checks


#: What :meth:`PatientValidator.accept` does with each fact of a record (see ``_recipe``).
_Recipe = tuple[tuple[str, Callable[[Any], bool], dict[str, int] | None, bool], ...]


def _never(value: Any) -> bool:
    return False


def _set_check(allowed: frozenset[str]) -> Callable[[Any], bool]:
    """A list of distinct strings, each one of ``allowed``."""
    def check(v: Any) -> bool:
        if type(v) is not list:
            return False
        for x in v:
            if type(x) is not str or x not in allowed:
                return False
        return len(set(v)) == len(v)

    return check


class PatientValidator:
    """Validates patient records against the patient schema generated from ``specs``
    (:func:`nbrules.vocabulary.patient_schema`), optionally extended.

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
        schema = patient_schema(specs)
        self.specs: dict[str, FactSpec] = dict(specs)
        for spec in extra:
            if spec.name not in schema["properties"]:
                schema["properties"][spec.name] = {"type": "string", "enum": list(spec.values)}
                self.specs[spec.name] = spec
        self._schema = schema
        self._jsonschema: "Draft202012Validator | None" = None
        self._checks = _fact_checks(self.specs)
        self._valid = _fast_check(self.specs)
        #: :meth:`accept`'s recipe per order of a record's keys (records of one source give
        #: their facts in few orders); bounded (:data:`_RECIPES`).
        self._recipes: dict[tuple[str, ...], _Recipe] = {}
        #: Position of each fact in ``specs`` (the order of canonical facts) and, for a list
        #: fact, the position of each value in its value set (the order of its items).
        self._position = {name: i for i, name in enumerate(self.specs)}
        self._item_order = {name: {v: i for i, v in enumerate(spec.values)}
                            for name, spec in self.specs.items() if spec.kind == "set"}
        self._numeric = frozenset(name for name, spec in self.specs.items() if spec.kind in ("integer", "number"))

    @property
    def _validator(self) -> "Draft202012Validator":
        """The JSON Schema validator, made when a record first needs its problems worded
        (valid records never do: importing jsonschema is a third of a one-shot start)."""
        if self._jsonschema is None:
            from jsonschema import Draft202012Validator

            self._jsonschema = Draft202012Validator(self._schema)
        return self._jsonschema

    def known(self, record: Any) -> Any:
        """``record`` without the facts given as ``null``: JSON ``null`` means *unknown*,
        exactly like leaving the fact out (or an empty CSV cell).  Unknown fact names
        stay, to be reported."""
        if type(record) is dict and None in record.values():
            return {k: v for k, v in record.items() if not (v is None and k in self.specs)}
        return record

    def check(self, record: Any) -> list[Diagnostic]:
        """Every schema problem and constraint violation of one record (facts given as
        ``null`` are unknown, see :meth:`known`)."""
        record = self.known(record)
        if self._valid(record):
            return self._constraints(record)
        if not isinstance(record, dict):
            return [Diagnostic(code="NB507", pointer="",
                               message=f"expected a JSON object of patient facts, found {describe_value(record)}")]
        diags: list[Diagnostic] = []
        more = 0
        # Unknown facts first, without jsonschema: one entry each up to MAX_PROBLEMS, a
        # suggestion only for short names, the rest counted (a 1 MiB body of unknown keys
        # costs milliseconds, not seconds).
        known: dict[str, Any] = {}
        for name, value in record.items():
            if name in self.specs:
                known[name] = value
            elif len(diags) < MAX_PROBLEMS:
                hint = (did_you_mean(name, self.specs) if len(name) <= MAX_SUGGEST else None) \
                    or "the patient facts are declared in facts.yaml of the rules directory"
                # a name too long to repeat whole is located by its record (the output of a
                # row would otherwise be as large as the row)
                long = len(name) > MAX_POINTED_NAME
                diags.append(Diagnostic(code="NB503", pointer="" if long else join_pointer("", name), hint=hint,
                                        message=f"expected a patient fact, found unknown fact '{shown(name)}'"
                                                + (f" (a name of {len(name):,} characters)" if long else "")))
            else:
                more += 1
        # A list longer than its value set cannot be valid: one entry, not one per item.
        for name, value in list(known.items()):
            kind, size = self.specs[name].kind, len(self.specs[name].values)
            if kind == "set" and isinstance(value, list) and len(value) > size:
                del known[name]
                diags.append(Diagnostic(
                    code="NB505", pointer=join_pointer("", name),
                    message=f"expected a list of at most {size} distinct items, found {describe_value(value)}"))
        for p in schema_problems(self._validator, known):
            if len(diags) >= MAX_PROBLEMS:
                more += 1
                continue
            diags.append(Diagnostic(code=_CODES[p.kind], pointer=p.pointer, message=p.message, hint=p.hint))
        for name, value in known.items():
            spec = self.specs.get(name)
            if spec is not None and spec.is_numeric and isinstance(value, float) and not math.isfinite(value):
                diags.append(Diagnostic(code="NB505", pointer=join_pointer("", name),
                                        message=f"expected a finite number, found {value}"))
        if more:
            diags.append(Diagnostic(code="NB550", pointer="",
                                    message=f"{more} more problem{'s' if more != 1 else ''} of this record not listed"))
        elif not has_errors(diags):
            diags.extend(self._constraints(record))
        return diags

    def accept(self, record: Any) -> tuple[list[Diagnostic], dict[str, Any] | None]:
        """``(check(record), canonical(record))`` in one pass over the record: every
        problem (errors and warnings), and its known facts in canonical form when no
        problem is an error (None otherwise)."""
        record = self.known(record)
        if type(record) is dict:
            keys = tuple(record)
            recipe = self._recipes.get(keys)
            if recipe is None:
                recipe = self._recipe(keys)
            out: dict[str, Any] = {}
            for name, check, order, numeric in recipe:
                value = record[name]
                if not check(value):
                    break  # a problem: worded below
                if order is not None:
                    value = sorted(value, key=order.__getitem__)  # every item is in its value set
                elif numeric and type(value) is float and value.is_integer():
                    value = int(value)
                out[name] = value
            else:
                diags = self._constraints(record)
                return diags, None if has_errors(diags) else out
        diags = self.check(record)
        return diags, None if has_errors(diags) else self.canonical(record)

    def _recipe(self, keys: tuple[str, ...]) -> _Recipe:
        """What :meth:`accept` does with each fact of records whose keys come in this
        order: the facts in canonical order, each with its check, the order of its list
        items (None: not a list) and whether it is a number; a key that is no fact comes
        first, with a check no value passes."""
        position = self._position
        recipe = tuple((name, self._checks.get(name, _never), self._item_order.get(name), name in self._numeric)
                       for name in sorted(keys, key=lambda k: position.get(k, -1)))
        if len(self._recipes) < _RECIPES:
            self._recipes[keys] = recipe
        return recipe

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
        """The known facts of a valid record in canonical form (``null`` facts left out)."""
        record = self.known(record)
        position = self._position
        names = [k for k in record if k in position]
        names.sort(key=position.__getitem__)
        out: dict[str, Any] = {}
        item_order, numeric = self._item_order, self._numeric
        for name in names:  # canonical_facts, with the orders computed once
            value = record[name]
            order = item_order.get(name)
            if order is not None:
                value = sorted(value, key=lambda x, o=order, n=len(order): o.get(x, n))  # type: ignore[misc]
            elif name in numeric and isinstance(value, float) and value.is_integer():
                value = int(value)
            out[name] = value
        return out
