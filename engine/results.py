"""The result of one evaluation: outputs, what is undetermined and why, and the trace.

A :class:`Result` is plain, ordered, immutable data.  ``to_json()`` gives
byte-identical text for the same input and rules: there are no clocks, timings or
random identifiers in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

import orjson

from .encoding import Fragment, compact, float_safe, string

__all__ = [
    "FiredRule",
    "Indeterminate",
    "NotApplicable",
    "Settled",
    "FromInput",
    "RulesetInfo",
    "Result",
]

#: The encoder of compact JSON: the text of ``json.dumps(..., ensure_ascii=False,
#: separators=(",", ":"))``, written by orjson (:mod:`nbrules.encoding`).
_encode = compact


@dataclass(frozen=True, slots=True)
class FiredRule:
    """One rule that fired: where it is written, why it fired and what it set."""

    order: int
    decision: str
    version: str
    rule: str
    source: str
    cite: tuple[str, ...]
    matched: Mapping[str, Any]
    set: Mapping[str, str]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: The rule's constant parts, pre-encoded by the runner (``static_json`` of the same
    #: values); ``None`` encodes them on demand.  Not part of the value.
    encoded: tuple[str, str] | None = field(default=None, compare=False, repr=False)

    def at(self, order: int, matched: Mapping[str, Any]) -> "FiredRule":
        """This rule's entry at ``order`` of a trace, with ``matched``: equal to
        ``dataclasses.replace(self, order=order, matched=matched)``, made faster (an entry
        is made for every rule that fires for every patient).  ``set``, ``parameters``
        and the pre-encoded parts are shared with this one, not copied."""
        entry = _new_fired(FiredRule)
        _set_order(entry, order)
        _set_decision(entry, self.decision)
        _set_version(entry, self.version)
        _set_rule(entry, self.rule)
        _set_source(entry, self.source)
        _set_cite(entry, self.cite)
        _set_matched(entry, matched)
        _set_set(entry, self.set)
        _set_parameters(entry, self.parameters)
        _set_encoded(entry, self.encoded)
        return entry

    def static_json(self) -> tuple[str, str]:
        """Compact JSON of the keys before ``matched`` and of those after it, without braces."""
        head = _encode({"decision": self.decision, "version": self.version, "rule": self.rule, "source": self.source,
                        "cite": list(self.cite)})[1:-1]
        tail = {"set": dict(self.set)}
        if self.parameters:
            tail["parameters"] = dict(self.parameters)
        return head, _encode(tail)[1:-1]

    def to_compact_json(self) -> str:
        head, tail = self.encoded or self.static_json()
        return f'{{"order":{self.order},{head},"matched":{_encode(self.matched)},{tail}}}'

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "order": self.order,
            "decision": self.decision,
            "version": self.version,
            "rule": self.rule,
            "source": self.source,
            "cite": list(self.cite),
            "matched": dict(self.matched),
            "set": dict(self.set),
        }
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        return out


#: What :meth:`FiredRule.at` makes an entry with: a bare instance, and each field's slot
#: filled directly (a frozen dataclass's ``__init__`` goes through ``object.__setattr__``).
_new_fired = object.__new__
(_set_order, _set_decision, _set_version, _set_rule, _set_source, _set_cite, _set_matched, _set_set, _set_parameters,
 _set_encoded) = (getattr(FiredRule, name).__set__ for name in FiredRule.__slots__)
assert FiredRule.__slots__ == ("order", "decision", "version", "rule", "source", "cite", "matched", "set",
                               "parameters", "encoded"), "FiredRule.at fills every field"


@dataclass(frozen=True)
class Indeterminate:
    """An output missing facts would settle: the values it could take and which facts."""

    decision: str
    candidates: tuple[str, ...]
    missing: tuple[str, ...]
    via: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    may_be_out_of_scope: bool = False
    conflict: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": self.decision, "candidates": list(self.candidates),
                               "missing": list(self.missing)}
        if self.via:
            out["via"] = {k: list(v) for k, v in self.via.items()}
        if self.may_be_out_of_scope:
            out["may_be_out_of_scope"] = True
        if self.conflict:
            out["conflicting_rules"] = list(self.conflict)
        return out


#: The ``scope`` of an output not applicable because the record gives none of the facts
#: its decision's ``applies_if_given`` lists (e.g. no response assessment).
APPLIES_IF_GIVEN = "applies_if_given"


@dataclass(frozen=True)
class NotApplicable:
    """An output the system does not assign for these facts (a declared gap)."""

    decision: str
    reason: str
    scope: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": self.decision, "reason": self.reason}
        if self.scope:
            out["scope"] = self.scope
        if self.source:
            out["source"] = self.source
        return out


@dataclass(frozen=True)
class Settled:
    """An output no rule fired for, but every completion of the missing facts gives the same value."""

    decision: str
    value: str
    rules: tuple[str, ...]
    unknown: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "value": self.value, "rules": list(self.rules),
                "irrelevant_unknown_facts": list(self.unknown)}


@dataclass(frozen=True)
class FromInput:
    """An output given in the input; the decision that could derive it did not override it."""

    decision: str
    value: str

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "value": self.value}


@dataclass(frozen=True)
class RulesetInfo:
    decision: str
    version: str
    status: str
    file: str
    sha256: str
    effective: str = ""
    selected: str = ""  # why this version is the one in force (runtime.choose_versions)

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "version": self.version, "status": self.status,
                "effective": self.effective, "file": self.file, "sha256": self.sha256, "selected": self.selected}


@dataclass(frozen=True)
class KnowledgeInfo:
    """The knowledge an evaluation used: the package's name and version (empty for a
    directory without package.yaml), the profile chosen (empty when none) and
    :func:`nbrules.package.knowledge_sha256` over every knowledge file and decision
    file in force plus the profile."""

    package: str
    version: str
    profile: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"package": self.package, "version": self.version, "profile": self.profile, "sha256": self.sha256}


@dataclass(frozen=True)
class Result:
    """Everything one evaluation established.

    * ``outputs``: every output of every decision that ran, ``None`` when not determined;
    * ``indeterminate``: outputs that missing facts would settle, with candidates;
    * ``not_applicable``: outputs outside the system's scope for these facts;
    * ``settled``: outputs no rule fired for although every completion agrees;
    * ``from_input``: outputs taken from the input instead of derived;
    * ``fired``: the ordered trace of rules that fired;
    * ``warnings``: diagnostics that did not stop the evaluation;
    * ``rulesets``: version, effective date, sha256 of every rule file used, and why
      that version was the one in force (``selected``);
    * ``knowledge``: the package, version, profile and one sha256 over all of its
      knowledge in force (:class:`KnowledgeInfo`);
    * ``input_sha256``: hash of the canonical input;
    * ``as_of``: the date the versions in force were chosen for (ISO 8601);
    * ``profile``: the profile of parameter readings chosen (``parameters.yaml``), if any;
      the key is left out of the JSON when none was chosen.
    """

    outputs: Mapping[str, str | None]
    indeterminate: Mapping[str, Indeterminate]
    not_applicable: Mapping[str, NotApplicable]
    settled: Mapping[str, Settled]
    from_input: Mapping[str, FromInput]
    fired: tuple[FiredRule, ...]
    warnings: tuple[Mapping[str, Any], ...]
    rulesets: tuple[RulesetInfo, ...]
    input: Mapping[str, Any]
    input_sha256: str
    engine: str
    as_of: str
    knowledge: KnowledgeInfo | None = None
    profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, in a fixed key order."""
        out = {
            "type": "nbrules.result",
            "outputs": dict(self.outputs),
            "indeterminate": {k: v.to_dict() for k, v in self.indeterminate.items()},
            "not_applicable": {k: v.to_dict() for k, v in self.not_applicable.items()},
            "settled": {k: v.to_dict() for k, v in self.settled.items()},
            "from_input": {k: v.to_dict() for k, v in self.from_input.items()},
            "fired": [f.to_dict() for f in self.fired],
            "warnings": [dict(w) for w in self.warnings],
            "rulesets": [r.to_dict() for r in self.rulesets],
            **({"knowledge": self.knowledge.to_dict()} if self.knowledge is not None else {}),
            "input": dict(self.input),
            "input_sha256": self.input_sha256,
            "as_of": self.as_of,
            "engine": self.engine,
        }
        if self.profile is not None:
            out["profile"] = self.profile
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text; identical bytes for identical input and rules."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    def to_compact_json(self) -> str:
        """``json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))``, faster.

        The constant parts (each fired rule's identity, citations, settings and
        parameters; the rule files used) are encoded once, not per result, and the
        document is written by one orjson call around them.  Every number of a result
        comes from its input (``matched`` holds input values), so when orjson writes the
        input (and warnings) as the standard library does (:func:`~nbrules.encoding.float_safe`)
        it writes the whole document so; otherwise each part falls back on its own.  The
        tests check the bytes are the same as the plain encoding.
        """
        given = float_safe(self.input)
        noted = float_safe([dict(w) for w in self.warnings]) if self.warnings else b"[]"
        if given is not None and noted is not None:
            doc = {
                "type": "nbrules.result",
                "outputs": self.outputs,
                "indeterminate": {k: v.to_dict() for k, v in self.indeterminate.items()} if self.indeterminate else {},
                "not_applicable": {k: v.to_dict() for k, v in self.not_applicable.items()}
                if self.not_applicable else {},
                "settled": {k: v.to_dict() for k, v in self.settled.items()} if self.settled else {},
                "from_input": {k: v.to_dict() for k, v in self.from_input.items()} if self.from_input else {},
                "fired": None,  # below, in its place
                "warnings": Fragment(noted),
                "rulesets": _constant_fragment(self.rulesets, _rulesets_json),
            }
            if self.knowledge is not None:
                doc["knowledge"] = _constant_fragment(self.knowledge, _knowledge_json)
            doc["input"] = Fragment(given)
            doc["input_sha256"] = self.input_sha256
            doc["as_of"] = self.as_of
            doc["engine"] = self.engine
            if self.profile is not None:
                doc["profile"] = self.profile
            try:
                # each trace entry: its rule's pre-encoded parts around ``matched``
                doc["fired"] = Fragment("[" + ",".join([
                    f'{{"order":{f.order},{head},"matched":{orjson.dumps(f.matched).decode("utf-8")},{tail}}}'
                    for f in self.fired for head, tail in (f.encoded or f.static_json(),)]) + "]")
                return orjson.dumps(doc).decode("utf-8")
            except TypeError:  # a value that is not plain JSON data: the part-by-part encoding says the same
                pass
        return self._parts_json()

    def _parts_json(self) -> str:
        """:meth:`to_compact_json` part by part, each part falling back on its own."""
        def mapping(m: Mapping[str, Any]) -> str:
            return _encode({k: v.to_dict() for k, v in m.items()}) if m else "{}"

        return "".join((
            '{"type":"nbrules.result","outputs":', _encode(self.outputs),
            ',"indeterminate":', mapping(self.indeterminate),
            ',"not_applicable":', mapping(self.not_applicable),
            ',"settled":', mapping(self.settled),
            ',"from_input":', mapping(self.from_input),
            ',"fired":[', ",".join([f.to_compact_json() for f in self.fired]),
            '],"warnings":', _encode([dict(w) for w in self.warnings]) if self.warnings else "[]",
            ',"rulesets":', _rulesets_json(self.rulesets),
            ',"knowledge":' + _knowledge_json(self.knowledge) if self.knowledge is not None else "",
            ',"input":', _encode(self.input),
            ',"input_sha256":', string(self.input_sha256),
            ',"as_of":', string(self.as_of),
            ',"engine":', string(self.engine),
            *((',"profile":', string(self.profile)) if self.profile is not None else ()), "}"))

    @property
    def complete(self) -> bool:
        """True when every output has a value."""
        return all(v is not None for v in self.outputs.values())


#: The encoded text of constant parts of results (the rule files used, the knowledge), by
#: the identity of the object encoded: a rule set's results share one (hashing it would
#: cost more than encoding it).  Each entry keeps its object, so that no other object
#: can take its id.
_CONSTANT_TEXT: dict[int, tuple[Any, Any]] = {}


def _constant_fragment(value: Any, encode: Callable[[Any], str]) -> Any:
    """A :data:`~nbrules.encoding.Fragment` of ``encode(value)``, remembered for ``value``."""
    hit = _CONSTANT_TEXT.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    fragment = Fragment(encode(value))
    if len(_CONSTANT_TEXT) >= 256:  # bounded: rule sets reloaded many times
        _CONSTANT_TEXT.clear()
    _CONSTANT_TEXT[id(value)] = (value, fragment)
    return fragment


@lru_cache(maxsize=64)
def _rulesets_json(rulesets: tuple[RulesetInfo, ...]) -> str:
    return _encode([r.to_dict() for r in rulesets])


@lru_cache(maxsize=64)
def _knowledge_json(knowledge: KnowledgeInfo) -> str:
    return _encode(knowledge.to_dict())
