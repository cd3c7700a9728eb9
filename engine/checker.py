"""Stage 3, *check*: the meaning of rule files.

Input: files that loaded and validated.  Output: frozen :class:`Decision` objects
and NB3xx diagnostics — unknown facts, values outside a value set, comparisons
that do not fit a fact's type, duplicate ids, undeclared parameters, citations
that point nowhere, example cases that do not fit the file.  The checks across files
(outputs decided twice, cycles between decisions) and the order decisions run in are
in :mod:`nbrules.crossfile`; those of ``constraints.yaml`` and ``parameters.yaml`` in
:mod:`nbrules.package_checks`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Mapping, Sequence

from .conditions import ConditionVisitor, condition_refs, params_in, tests_in
from .crossfile import cross_file, dependency_order, in_force  # the last two re-exported
from .diagnostics import Diagnostic, did_you_mean
from .loader import LoadedFile, join_pointer
from .model import (
    All,
    AnyOf,
    Case,
    CondRef,
    Condition,
    Decision,
    ExpectIndeterminate,
    Not,
    ParamRef,
    DecisionRef,
    ParamOp,
    ParamTest,
    Parameter,
    Rule,
    Scope,
    SharedParameters,
    TEST_OPERATORS,
    Test,
    TestOp,
)
from .patient import PatientValidator
from .reference import Reference, anchor_id, find_reference, split_citation
from .validator import describe_value
from .vocabulary import FactSpec

__all__ = ["CheckResult", "check_files", "dependency_order", "in_force", "output_vocabulary", "undeclared_fact_hint"]

_SCALAR_OPS: tuple[TestOp, ...] = ("is", "in")
_NUMBER_OPS: tuple[TestOp, ...] = ("less_than", "at_most", "greater_than", "at_least")
_SET_OPS: tuple[TestOp, ...] = ("contains_any", "contains_all", "subset_of", "empty")
#: Deepest all/any/not nesting of a condition once its named conditions are expanded
#: (NB123): later stages recurse over conditions, so this keeps them far from Python's
#: recursion limit.
MAX_CONDITION_DEPTH = 32
_DEPTH_HINT = "flatten the condition: all/any take many items, so nested all (or nested any) can be merged"


def undeclared_fact_hint(name: str, vocabulary: Mapping[str, FactSpec]) -> str:
    """NB301's hint: the closest declared fact, and how to declare a new one in facts.yaml."""
    close = did_you_mean(name, vocabulary)
    declare = (f"if '{name}' is a new fact, declare it in facts.yaml at the root of the rules directory, under "
               f"facts:, e.g. '{name}: {{type: one_of, title: ..., description: ..., values: [{{value: ..., "
               f"label: ...}}]}}' (see docs/knowledge-package.md, or 'nbrules docs knowledge-package')")
    return f"{close} Or, {declare}" if close else declare[0].upper() + declare[1:]


@dataclass(frozen=True)
class CheckResult:
    decisions: tuple[Decision, ...]
    diagnostics: tuple[Diagnostic, ...]
    vocabulary: Mapping[str, FactSpec]


def output_vocabulary(files: Sequence[LoadedFile], inputs: Mapping[str, FactSpec]) -> dict[str, FactSpec]:
    """Input facts plus every output any file decides (value sets united across versions)."""
    vocab = dict(inputs)
    for f in files:
        decides = f.data.get("decides", {}) if isinstance(f.data, dict) else {}
        for name, values in decides.items():
            if name in inputs:
                continue
            old = vocab.get(name)
            merged = list(old.values) if old else []
            merged += [v for v in values if v not in merged]
            vocab[name] = FactSpec(name, "enum", tuple(merged), title=name, is_input=False)
    return vocab


def check_files(files: Sequence[LoadedFile], inputs: Mapping[str, FactSpec],
                ignored: Mapping[str, set[str]] | None = None,
                shared: SharedParameters | None = None) -> CheckResult:
    """Check every (loaded, schema-valid) file and the set as a whole.

    ``ignored`` maps a file's display path to names (rule ids, parameters, named
    conditions) that were dropped because they failed validation: references to them
    are not reported again.
    """
    vocab = output_vocabulary(files, inputs)
    outputs = {name: spec for name, spec in vocab.items() if not spec.is_input}
    case_validator = PatientValidator(inputs, extra=outputs.values())
    diags: list[Diagnostic] = []
    decisions: list[Decision] = []
    for f in files:
        fc = _FileChecker(f, vocab, inputs, case_validator, (ignored or {}).get(f.source.display, set()),
                          shared.parameters if shared is not None else {})
        decision = fc.run()
        diags.extend(fc.diags)
        if decision is not None:
            decisions.append(decision)
    diags.extend(cross_file(decisions))
    return CheckResult(tuple(decisions), tuple(diags), vocab)


class _FileChecker:
    def __init__(self, f: LoadedFile, vocab: Mapping[str, FactSpec], inputs: Mapping[str, FactSpec],
                 case_validator: PatientValidator, ignored: set[str],
                 shared: Mapping[str, Parameter] | None = None) -> None:
        self.f = f
        self.pos = f.positions
        self.shared = dict(shared or {})
        self.ignored = ignored
        self.data: dict[str, Any] = f.data
        self.vocab = vocab
        self.inputs = inputs
        self.case_validator = case_validator
        self.diags: list[Diagnostic] = []
        self.reads: tuple[str, ...] = tuple(self.data.get("reads", ()))
        self.sources: dict[str, str] = {}
        self.references: dict[str, Reference] = {}
        for key, src in self.data.get("sources", {}).items():
            if isinstance(src, Mapping):
                self.sources[key] = str(src["title"])
                self._reference(key, str(src["document"]))
            else:
                self.sources[key] = str(src)
        self.decides: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in self.data.get("decides", {}).items()}
        self.params: dict[str, Parameter] = {}
        self._depth: dict[str, int] = {}  # all/any/not depth of each named condition, expanded
        self.cited: set[str] = set()

    def _param(self, name: str) -> Parameter | None:
        """A parameter of this file, else a shared one (which then joins the decision's)."""
        p = self.params.get(name)
        if p is None and name in self.shared:
            p = self.params[name] = self.shared[name]
        return p

    def err(self, code: str, message: str, pointer: str, *, key: bool = False, hint: str | None = None,
            name: str | None = None) -> None:
        if name is not None and name in self.ignored:
            return  # refers to a part dropped after a schema error, already reported
        self.diags.append(self.pos.diag(code, message, pointer, key=key, hint=hint))

    # -- the file --------------------------------------------------------------------

    def run(self) -> Decision | None:
        d = self.data
        try:
            effective = datetime.date.fromisoformat(d["effective"])
        except ValueError:
            self.err("NB315", f"'{d['effective']}' is not a calendar date", "/effective", hint="write YYYY-MM-DD, e.g. 2021-10-01")
        else:
            if d["status"] == "active" and effective > datetime.date.today():
                self.err("NB804", f"this active version takes effect on {effective}, after today", "/effective",
                         hint="keep it as draft until it is in force, or correct the date")
        self._check_reads()
        self._check_decides()
        for name, p in d.get("parameters", {}).items():
            self.params[name] = self._parameter(name, p)
            if name in self.shared:
                self.err("NB355", f"parameter '{name}' is declared in parameters.yaml; a shared parameter is "
                                  f"declared once", join_pointer("/parameters", name), key=True,
                         hint="remove this declaration: {param: " + name + "} uses the shared one")
        conditions = self._named_conditions()
        rules = tuple(self._rule(i, r, conditions) for i, r in enumerate(d["rules"]))
        scopes = tuple(self._scope(i, s, conditions) for i, s in enumerate(d.get("out_of_scope", [])))
        self._check_ids(rules, scopes)
        if any(d.code == "NB123" for d in self.diags):
            return None  # the later checks walk conditions recursively
        pending = self._pending()
        applies_if = self._applies_if()
        facts = {r: self.vocab[r] for r in self.reads if r in self.vocab}
        cases = tuple(self._case(i, c, rules) for i, c in enumerate(d["cases"]))
        decision = Decision(
            id=d["decision"], title=d["title"], description=d.get("description", ""), version=d["version"],
            status=d["status"], effective=d["effective"], sources=self.sources, references=self.references,
            hit_policy=d.get("hit_policy", "unique"), parameters=self.params, conditions=conditions,
            reads=self.reads, facts=facts, pending=pending, decides=self.decides, scopes=scopes, rules=rules,
            cases=cases, source=self.f.source, positions=self.pos, applies_if=applies_if,
            applies_reason=d.get("applies_if_given", {}).get("reason", ""),
        )
        self._unused(decision)
        return decision

    def _check_reads(self) -> None:
        for i, name in enumerate(self.reads):
            ptr = f"/reads/{i}"
            if name not in self.vocab:
                self.err("NB301", f"fact '{name}' is neither a patient fact nor an output of a decision", ptr,
                         hint=undeclared_fact_hint(name, self.vocab))
            elif name in self.decides:
                self.err("NB319", f"decision reads '{name}', which it decides itself", ptr,
                         hint="remove it from reads; a decision cannot depend on its own output")

    def _check_decides(self) -> None:
        for name, values in self.decides.items():
            spec = self.inputs.get(name)
            if spec is None:
                continue
            ptr = join_pointer("/decides", name)
            if spec.kind != "enum":
                self.err("NB316", f"output '{name}' is a patient fact of type {spec.describe()}; outputs are value sets",
                         ptr, key=True)
            elif set(values) != set(spec.values):
                self.err("NB316", f"output '{name}' lists {', '.join(values)} but facts.yaml declares "
                                  f"{', '.join(spec.values)}", ptr,
                         hint="an output that can also be given as input must have the same values in both places")

    def _applies_if(self) -> tuple[str, ...]:
        """The facts of ``applies_if_given``: each must be a patient fact (an output is never given)."""
        names = self.data.get("applies_if_given", {}).get("facts", [])
        for i, name in enumerate(names):
            if name not in self.inputs:
                self.err("NB380", f"applies_if_given names '{name}', which is not a patient fact",
                         f"/applies_if_given/facts/{i}",
                         hint=did_you_mean(name, self.inputs) or "list facts of schemas/patient.schema.json")
        return tuple(n for n in names if n in self.inputs)

    def _pending(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for fact, values in self.data.get("pending_values", {}).items():
            ptr = join_pointer("/pending_values", fact)
            if fact not in self.reads:
                self.err("NB309", f"pending values are given for '{fact}', which is not in reads", ptr, key=True)
                continue
            spec = self.vocab.get(fact)
            if spec is None or spec.kind != "enum":
                self.err("NB317", f"pending values need a fact with a value set; '{fact}' is "
                                  f"{spec.describe() if spec else 'unknown'}", ptr, key=True)
                continue
            for i, v in enumerate(values):
                if v not in spec.values:
                    self.err("NB317", f"'{v}' is not a value of {fact} ({spec.describe()})", f"{ptr}/{i}",
                             hint=did_you_mean(v, spec.values))
            out[fact] = tuple(values)
        return out

    # -- citations, parameters ---------------------------------------------------------

    def _reference(self, key: str, document: str) -> None:
        src = self.f.source
        root = None
        if src.path is not None:
            root = src.path.parents[len(PurePosixPath(src.name).parts) - 1]
        ref = find_reference(document, root)
        if ref is None:
            self.err("NB360", f"source '{key}' names the document '{document}', which is not in the rules directory "
                     "nor among the documents bundled with nbrules", join_pointer(f"/sources/{key}", "document"),
                     hint="put the document at the root of the rules directory, or correct its name")
        else:
            self.references[key] = ref

    def _cites(self, cites: Sequence[str], ptr: str) -> tuple[str, ...]:
        for i, c in enumerate(cites):
            key, locator = split_citation(c)
            if key not in self.sources:
                self.err("NB306", f"citation '{c}' names no entry of sources", f"{ptr}/{i}",
                         hint=did_you_mean(key, self.sources) or f"declared sources: {', '.join(self.sources)}")
                continue
            self.cited.add(key)
            ref = self.references.get(key)
            if ref is not None and locator and not ref.has(locator):
                self.err("NB361", f"citation '{c}' names no row of {ref.display}: expected one of its anchors, "
                         f"found '{anchor_id(locator)}'", f"{ptr}/{i}",
                         hint=did_you_mean(anchor_id(locator), sorted(ref.anchors))
                         or f"rows are marked <a id=\"...\"></a> in {ref.display}")
        return tuple(cites)

    def _parameter(self, name: str, p: Mapping[str, Any]) -> Parameter:
        ptr = join_pointer("/parameters", name)
        alts = []
        for i, a in enumerate(p.get("alternatives", [])):
            if _kind(a["value"]) != _kind(p["value"]):
                self.err("NB334", f"alternative {describe_value(a['value'])} of parameter '{name}' is not of the "
                                  f"same type as its value {describe_value(p['value'])}", f"{ptr}/alternatives/{i}/value")
            alts.append((_freeze(a["value"]), a["note"]))
        cite = self._cites(p.get("cite", []), f"{ptr}/cite")
        return Parameter(name, _freeze(p["value"]), p["note"], cite, tuple(alts), ptr)

    # -- conditions --------------------------------------------------------------------

    def _named_conditions(self) -> dict[str, Condition]:
        raw = self.data.get("conditions", {})
        named: dict[str, Condition] = {}
        for name, c in raw.items():
            named[name] = self._condition(c, join_pointer("/conditions", name), raw)
        # cycles among named conditions (iterative: a chain of thousands cannot exhaust the stack)
        state: dict[str, int] = {}
        for root in named:
            if root in state:
                continue
            state[root] = 1
            stack = [(root, condition_refs(named[root]))]
            while stack:
                n, refs = stack[-1]
                for ref in refs:
                    if ref.name not in named:
                        continue
                    if state.get(ref.name) == 1:
                        trail = [x for x, _ in stack]
                        cyc = trail[trail.index(ref.name):] + [ref.name] if ref.name in trail else [n, ref.name]
                        self.err("NB314", f"named conditions refer to each other in a cycle: {' -> '.join(cyc)}",
                                 ref.pointer, hint="a named condition cannot use itself, directly or through others")
                    elif ref.name not in state:
                        state[ref.name] = 1
                        stack.append((ref.name, condition_refs(named[ref.name])))
                        break
                else:
                    state[n] = 2
                    stack.pop()
                    self._depth[n] = self._nesting(named[n])
                    if self._depth[n] > MAX_CONDITION_DEPTH and not self._too_deep_refs(named[n]):
                        self.err("NB123", f"named condition '{n}' nests all/any/not {self._depth[n]} deep, counting "
                                              f"the named conditions it uses; expected at most {MAX_CONDITION_DEPTH}",
                                 join_pointer("/conditions", n), hint=_DEPTH_HINT)
        return named

    def _nesting(self, c: Condition) -> int:
        """How deep ``c`` nests all/any/not, a named condition counting as its own depth + 1.
        (Recursion is bounded by the loader's nesting limit; named depths are known already.)"""
        return _Nesting(self._depth).visit(c)

    def _too_deep_refs(self, c: Condition) -> bool:
        return any(self._depth.get(r.name, 0) > MAX_CONDITION_DEPTH for r in condition_refs(c))

    def _check_nesting(self, when: Condition, ptr: str) -> None:
        """NB123 when a rule's or scope's condition is too deep (unless a named condition it
        uses is already reported as too deep)."""
        depth = self._nesting(when)
        if depth > MAX_CONDITION_DEPTH and not self._too_deep_refs(when):
            self.err("NB123", f"condition nests all/any/not {depth} deep, counting the named conditions it uses; "
                              f"expected at most {MAX_CONDITION_DEPTH}", ptr, hint=_DEPTH_HINT)

    def _condition(self, c: Mapping[str, Any], ptr: str, named_raw: Mapping[str, Any]) -> Condition:
        if "all" in c:
            return All(tuple(self._condition(x, f"{ptr}/all/{i}", named_raw) for i, x in enumerate(c["all"])), ptr)
        if "any" in c:
            return AnyOf(tuple(self._condition(x, f"{ptr}/any/{i}", named_raw) for i, x in enumerate(c["any"])), ptr)
        if "not" in c:
            return Not(self._condition(c["not"], f"{ptr}/not", named_raw), ptr)
        if "condition" in c:
            name = c["condition"]
            if name not in named_raw:
                self.err("NB313", f"named condition '{name}' is not declared", f"{ptr}/condition",
                         hint=did_you_mean(name, named_raw) or "declare it under 'conditions'", name=name)
            return CondRef(name, ptr)
        if "param" in c:
            return self._param_test(c, ptr)
        return self._test(c, ptr)

    def _param_test(self, c: Mapping[str, Any], ptr: str) -> ParamTest:
        name = c["param"]
        op: ParamOp = "is" if "is" in c else "in"
        value = _freeze(c[op])
        p = self._param(name)
        if p is None:
            self.err("NB305", f"parameter '{name}' is not declared", f"{ptr}/param",
                     hint=did_you_mean(name, self.params) or "declare it under 'parameters'", name=name)
            return ParamTest(name, op, value, ptr)
        possible = [p.value] + [a for a, _ in p.alternatives]
        wanted = list(value) if op == "in" else [value]
        for i, w in enumerate(wanted):
            vptr = f"{ptr}/in/{i}" if op == "in" else f"{ptr}/is"
            if _kind(w) != _kind(p.value):
                self.err("NB303", f"parameter '{name}' holds {describe_value(p.value)}; cannot compare with "
                                  f"{describe_value(w)}", vptr)
            elif w not in possible:
                shown = ", ".join(str(x) for x in possible)
                self.err("NB302", f"parameter '{name}' is never {describe_value(w)} (value and alternatives: {shown})",
                         vptr, hint=did_you_mean(str(w), [str(x) for x in possible]))
        return ParamTest(name, op, value, ptr)

    def _test(self, c: Mapping[str, Any], ptr: str) -> Test:
        fact = c["fact"]
        op = next(k for k in TEST_OPERATORS if k in c)  # the schema allows exactly one
        raw = c[op]
        value: Any = _freeze(raw)
        if isinstance(raw, dict):
            value = DecisionRef(raw["decision"], raw["output"]) if "decision" in raw else ParamRef(raw["param"])
        test = Test(fact, op, value, ptr)
        spec = self.vocab.get(fact)
        if spec is None:
            self.err("NB301", f"fact '{fact}' is not declared", f"{ptr}/fact",
                     hint=undeclared_fact_hint(fact, self.vocab))
            return test
        if fact not in self.reads:
            self.err("NB309", f"fact '{fact}' is tested but missing from reads", f"{ptr}/fact",
                     hint=f"add '{fact}' to the reads list at the top of the file")
        if not self._op_fits(spec, op, ptr):
            return test
        vptr = f"{ptr}/{op}"
        if isinstance(value, DecisionRef):
            self._decision_ref(spec, value, vptr)
        elif isinstance(value, ParamRef):
            p = self._param(value.name)
            if p is None:
                self.err("NB305", f"parameter '{value.name}' is not declared", f"{vptr}/param",
                         hint=did_you_mean(value.name, self.params) or "declare it under 'parameters'", name=value.name)
                return test
            same_kind = [(a, "alternative") for a, _ in p.alternatives if _kind(a) == _kind(p.value)]  # else NB334
            for v, label in [(p.value, "value")] + same_kind:
                self._value_fits(spec, op, v, vptr, f"parameter '{p.name}' ({label} {describe_value(v)}): ")
        else:
            self._value_fits(spec, op, value, vptr, "")
        return test

    def _decision_ref(self, spec: FactSpec, ref: DecisionRef, ptr: str) -> None:
        self.err("NB350", f"{{decision: {ref.decision}, output: {ref.output}}} may only be used in input "
                          f"constraints (constraints.yaml)", ptr,
                 hint="a rule reads another decision's output as a fact: add the output to reads and test it")

    def _op_fits(self, spec: FactSpec, op: TestOp, ptr: str) -> bool:
        kind = spec.kind
        if op in _SCALAR_OPS and kind == "set":
            self.err("NB303", f"'{op}' compares one value, but {spec.name} is a list", f"{ptr}/{op}", key=True,
                     hint="use contains_any, contains_all, subset_of or empty for lists")
            return False
        if op in _NUMBER_OPS and not spec.is_numeric:
            self.err("NB303", f"'{op}' compares numbers, but {spec.name} is {spec.describe()}", f"{ptr}/{op}", key=True,
                     hint="use is or in" if kind != "set" else "use contains_any, contains_all, subset_of or empty")
            return False
        if op in _SET_OPS and kind != "set":
            self.err("NB303", f"'{op}' tests a list, but {spec.name} is {spec.describe()}", f"{ptr}/{op}", key=True,
                     hint="use is or in")
            return False
        return True

    def _value_fits(self, spec: FactSpec, op: TestOp, value: Any, ptr: str, prefix: str) -> None:
        if op in ("empty", "known"):
            return
        if op in ("in", "contains_any", "contains_all", "subset_of"):
            if not isinstance(value, tuple):
                self.err("NB303", f"{prefix}'{op}' needs a list, found {describe_value(value)}", ptr)
                return
            for i, item in enumerate(value):
                self._scalar_fits(spec, item, ptr if prefix else f"{ptr}/{i}", prefix)
            return
        if isinstance(value, tuple):
            self.err("NB303", f"{prefix}'{op}' needs a single value, found a list", ptr,
                     hint="use 'in' to test against several values")
            return
        self._scalar_fits(spec, value, ptr, prefix)

    def _scalar_fits(self, spec: FactSpec, value: Any, ptr: str, prefix: str) -> None:
        if spec.kind in ("enum", "set"):
            if not isinstance(value, str):
                self.err("NB303", f"{prefix}{spec.name} holds text values, found {describe_value(value)}", ptr,
                         hint=f"quote it: '{value}'" if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
            elif value not in spec.values:
                self.err("NB302", f"{prefix}'{value}' is not a value of {spec.name} ({spec.describe()})", ptr,
                         hint=did_you_mean(value, spec.values))
        elif spec.kind == "boolean":
            if not isinstance(value, bool):
                self.err("NB303", f"{prefix}{spec.name} is true or false, found {describe_value(value)}", ptr)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.err("NB303", f"{prefix}{spec.name} is {spec.describe()}, found {describe_value(value)}", ptr,
                         hint="write the number without quotes" if isinstance(value, str) else None)
            elif (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
                self.err("NB302", f"{prefix}{value:g} is outside the range of {spec.name} ({spec.describe()})", ptr)

    # -- rules, scopes, cases ----------------------------------------------------------

    def _rule(self, i: int, r: Mapping[str, Any], named: Mapping[str, Condition]) -> Rule:
        ptr = f"/rules/{i}"
        cite = self._cites(r["cite"], f"{ptr}/cite")
        when = self._condition(r["when"], f"{ptr}/when", self.data.get("conditions", {}))
        self._check_nesting(when, f"{ptr}/when")
        then: dict[str, str] = {}
        for out, value in r["then"].items():
            optr = join_pointer(f"{ptr}/then", out)
            if out not in self.decides:
                self.err("NB310", f"rule sets '{out}', which this decision does not decide", optr, key=True,
                         hint=did_you_mean(out, self.decides) or f"decided outputs: {', '.join(self.decides)}")
            elif value not in self.decides[out]:
                self.err("NB302", f"'{value}' is not a value of {out} (one of {', '.join(self.decides[out])})", optr,
                         hint=did_you_mean(value, self.decides[out]))
            then[out] = value
        span = self.pos.span(ptr)
        return Rule(r["id"], cite, when, then, ptr, span.line if span else 1, r.get("description", ""))

    def _scope(self, i: int, s: Mapping[str, Any], named: Mapping[str, Condition]) -> Scope:
        ptr = f"/out_of_scope/{i}"
        cite = self._cites(s.get("cite", []), f"{ptr}/cite")
        when = self._condition(s["when"], f"{ptr}/when", self.data.get("conditions", {}))
        self._check_nesting(when, f"{ptr}/when")
        span = self.pos.span(ptr)
        return Scope(s["id"], when, s["reason"], cite, ptr, span.line if span else 1)

    def _check_ids(self, rules: Sequence[Rule], scopes: Sequence[Scope]) -> None:
        seen: dict[str, int] = {}
        for item in list(rules) + list(scopes):
            if item.id in seen:
                self.err("NB304", f"id '{item.id}' is already used at line {seen[item.id]}", f"{item.pointer}/id",
                         hint="give every rule and scope exclusion its own id")
            else:
                seen[item.id] = item.line

    def _case(self, i: int, c: Mapping[str, Any], rules: Sequence[Rule]) -> Case:
        ptr = f"/cases/{i}"
        given = dict(c["given"])
        for fact in given:
            if fact not in self.reads:
                self.err("NB312", f"case gives '{fact}', which this decision does not read", join_pointer(f"{ptr}/given", fact),
                         key=True, hint=did_you_mean(fact, self.reads) or "give only facts listed in reads")
        for d in self.case_validator.check(given):
            if d.code == "NB503":
                continue  # reported above as a fact the decision does not read
            target = f"{ptr}/given{d.pointer}"
            self.diags.append(self.pos.diag("NB312", f"case '{c['name']}': {d.message}", target, hint=d.hint,
                                          severity=d.severity))
        params: dict[str, Any] = {}
        for name, value in c.get("parameters", {}).items():
            pptr = join_pointer(f"{ptr}/parameters", name)
            p = self._param(name)
            if p is None:
                self.err("NB305", f"parameter '{name}' is not declared", pptr, key=True,
                         hint=did_you_mean(name, self.params), name=name)
            elif _kind(value) != _kind(p.value):
                self.err("NB303", f"parameter '{name}' holds {describe_value(p.value)}; the case gives "
                                  f"{describe_value(value)}", pptr)
            params[name] = _freeze(value)
        expect: dict[str, str | None | ExpectIndeterminate] = {}
        fired: tuple[str, ...] | None = None
        rule_ids = {r.id for r in rules}
        for key, value in c["expect"].items():
            eptr = join_pointer(f"{ptr}/expect", key)
            if key == "fired":
                for j, rid in enumerate(value):
                    if rid not in rule_ids:
                        self.err("NB318", f"case expects rule '{rid}', which this file does not define", f"{eptr}/{j}",
                                 hint=did_you_mean(rid, rule_ids), name=rid)
                fired = tuple(value)
                continue
            if key not in self.decides:
                self.err("NB310", f"case expects '{key}', which this decision does not decide", eptr, key=True,
                         hint=did_you_mean(key, self.decides))
                continue
            allowed = self.decides[key]
            if isinstance(value, dict):
                for j, v in enumerate(value["candidates"]):
                    if v not in allowed:
                        self.err("NB302", f"'{v}' is not a value of {key}", f"{eptr}/candidates/{j}",
                                 hint=did_you_mean(v, allowed))
                for j, m in enumerate(value["missing"]):
                    if m not in self.reads:
                        self.err("NB312", f"'{m}' is not a fact this decision reads", f"{eptr}/missing/{j}",
                                 hint=did_you_mean(m, self.reads))
                expect[key] = ExpectIndeterminate(tuple(value["candidates"]), tuple(value["missing"]))
            else:
                if value is not None and value not in allowed:
                    self.err("NB302", f"'{value}' is not a value of {key} (one of {', '.join(allowed)})", eptr,
                             hint=did_you_mean(value, allowed))
                expect[key] = value
        span = self.pos.span(ptr)
        return Case(c["name"], given, expect, fired, params, ptr, span.line if span else 1, c.get("note", ""))

    # -- things declared but not used ----------------------------------------------------

    def _unused(self, d: Decision) -> None:
        conds: list[Condition] = [r.when for r in d.rules] + [s.when for s in d.scopes]
        used_params: set[str] = set()
        used_facts: set[str] = set()
        used_named: set[str] = set()
        for cond in conds:
            used_params.update(params_in(cond, d.conditions))
            used_facts.update(t.fact for t in tests_in(cond, d.conditions))
            stack = [cond]
            while stack:
                c = stack.pop()
                for ref in condition_refs(c):
                    if ref.name not in used_named and ref.name in d.conditions:
                        used_named.add(ref.name)
                        stack.append(d.conditions[ref.name])
        for name in d.parameters:
            if name not in used_params and name not in self.shared:
                self.diags.append(self.pos.diag("NB330", f"parameter '{name}' is declared but never used",
                                              join_pointer("/parameters", name), key=True,
                                              hint="use it with {param: " + name + "} or remove it"))
        for key in d.sources:
            if key not in self.cited:
                self.diags.append(self.pos.diag("NB331", f"source '{key}' is never cited",
                                              join_pointer("/sources", key), key=True))
        for i, fact in enumerate(d.reads):
            if fact not in used_facts and fact in self.vocab:
                self.diags.append(self.pos.diag("NB332", f"fact '{fact}' is in reads but no rule tests it", f"/reads/{i}"))
        for name in d.conditions:
            if name not in used_named:
                self.diags.append(self.pos.diag("NB333", f"named condition '{name}' is never used",
                                              join_pointer("/conditions", name), key=True))


class _Nesting(ConditionVisitor[int]):
    """All/any/not depth of a condition; ``depth`` gives that of each named condition."""

    def __init__(self, depth: Mapping[str, int]) -> None:
        self.depth = depth

    def test(self, c: Test) -> int:
        return 0

    def param_test(self, c: ParamTest) -> int:
        return 0

    def all(self, c: All) -> int:
        return 1 + max(self.items(c), default=0)

    def any(self, c: AnyOf) -> int:
        return 1 + max(self.items(c), default=0)

    def not_(self, c: Not) -> int:
        return 1 + self.visit(c.item)

    def ref(self, c: CondRef) -> int:
        return 1 + self.depth.get(c.name, 0)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    return "text"
