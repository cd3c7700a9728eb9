"""Stage 3, *check*, of a package's own files: ``constraints.yaml`` (input constraints,
checked against the decisions and their example cases) and ``parameters.yaml`` (shared
parameters and profiles).  Conditions, parameters and citations are checked as in rule
files (the file checker of :mod:`nbrules.checker`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from .checker import _FileChecker, _freeze
from .constraints import PLACEHOLDER, ConstraintSet
from .crossfile import in_force
from .diagnostics import Diagnostic, did_you_mean
from .loader import LoadedFile, join_pointer
from .model import Constraint, Decision, DecisionRef, Parameter, Profile, SharedParameters
from .patient import PatientValidator
from .validator import describe_value
from .vocabulary import FactSpec

__all__ = ["check_constraints", "with_constraints", "check_parameters", "check_profiles"]


# -- input constraints (constraints.yaml) ------------------------------------------------


class _ConstraintChecker(_FileChecker):
    """Checks a package's ``constraints.yaml``: conditions as in rule files (any fact of the
    vocabulary may be tested), decision references, message placeholders, citations."""

    def __init__(self, f: LoadedFile, vocab: Mapping[str, FactSpec], inputs: Mapping[str, FactSpec],
                 decisions: Mapping[str, Decision], shared: Mapping[str, Parameter]) -> None:
        super().__init__(f, vocab, inputs, PatientValidator(inputs), set(), shared)
        self.reads = tuple(vocab)
        self.decisions = decisions

    def _decision_ref(self, spec: FactSpec, ref: DecisionRef, ptr: str) -> None:
        d = self.decisions.get(ref.decision)
        if d is None:
            self.err("NB351", f"decision '{ref.decision}' is not defined in this package", f"{ptr}/decision",
                     hint=did_you_mean(ref.decision, self.decisions) or f"decisions: {', '.join(sorted(self.decisions))}")
            return
        values = d.decides.get(ref.output)
        if values is None:
            self.err("NB351", f"decision '{ref.decision}' does not decide '{ref.output}'", f"{ptr}/output",
                     hint=did_you_mean(ref.output, d.decides) or f"it decides: {', '.join(d.decides)}")
            return
        if spec.kind != "enum" or any(v not in spec.values for v in values):
            self.err("NB352", f"{spec.name} is {spec.describe()}; {ref.decision} gives {ref.output} one of "
                              f"{', '.join(values)}", ptr, hint="compare a fact with an output of the same value set")

    def constraints(self) -> list[Constraint]:
        out: list[Constraint] = []
        seen: set[str] = set()
        for i, c in enumerate(self.data.get("constraints", [])):
            ptr = f"/constraints/{i}"
            if c["id"] in seen:
                self.err("NB353", f"constraint id '{c['id']}' is used twice", f"{ptr}/id",
                         hint="give each constraint its own id")
            seen.add(c["id"])
            if c["fact"] not in self.inputs:
                self.err("NB301", f"fact '{c['fact']}' is not a patient fact", f"{ptr}/fact",
                         hint=did_you_mean(c["fact"], self.inputs) or "name the patient fact the message is about")
            named = self.data.get("conditions", {})
            when = self._condition(c["when"], f"{ptr}/when", named) if "when" in c else None
            require = self._condition(c["require"], f"{ptr}/require", named)
            for name in PLACEHOLDER.findall(c["message"]):
                did, _, out_name = name.partition(".")
                known = (out_name in self.decisions[did].decides) if out_name and did in self.decisions \
                    else (not out_name and name in self.vocab)
                if not known:
                    self.err("NB354", f"'{{{name}}}' in the message names neither a fact nor a decision's output",
                             f"{ptr}/message", hint="write {fact_name} or {decision-id.output}")
            cite = self._cites(c["cite"], f"{ptr}/cite")
            span = self.pos.span(ptr)
            out.append(Constraint(c["id"], c["fact"], c["severity"], when, require, c["message"], c.get("hint", ""),
                                  cite, ptr, span.line if span else 1))
        for key in self.sources:
            if key not in self.cited:
                self.diags.append(self.pos.diag("NB331", f"source '{key}' is never cited",
                                              join_pointer("/sources", key), key=True))
        return out


def check_constraints(f: LoadedFile, vocab: Mapping[str, FactSpec], inputs: Mapping[str, FactSpec],
                      decisions: Sequence[Decision],
                      shared: SharedParameters | None = None) -> tuple[ConstraintSet | None, list[Diagnostic]]:
    """Check a (loaded, schema-valid) ``constraints.yaml`` and the decisions' example cases
    against it (NB312).  The set is None when the file has errors; :func:`with_constraints`
    gives the decisions that carry it."""
    by_id = in_force(decisions)
    cc = _ConstraintChecker(f, vocab, inputs, by_id, shared.parameters if shared is not None else {})
    named = cc._named_conditions()
    items = cc.constraints()
    diags = list(cc.diags)
    if any(d.is_error for d in diags):
        return None, diags
    cset = ConstraintSet(items, by_id, named, cc.sources, f.source.display,
                         {n: p.value for n, p in cc.params.items()})
    for d in decisions:
        for case in d.cases:
            for v in cset.check(case.given, {d.id: d.param_values(case.parameters)}):
                if not v.is_error:
                    continue  # a case may show how unlikely input is answered
                diags.append(d.positions.diag("NB312", f"case '{case.name}': {v.message}",
                                         f"{case.pointer}/given{v.pointer}" if (v.pointer or "").lstrip("/") in case.given
                                         else f"{case.pointer}/given", hint=v.hint, severity=v.severity))
    return cset, diags


def with_constraints(decisions: Sequence[Decision], constraints: ConstraintSet) -> tuple[Decision, ...]:
    """The decisions, each carrying the package's input constraints (new objects; the
    constraint set itself refers to the decisions as checked, for their rules)."""
    return tuple(dataclasses.replace(d, constraints=constraints) for d in decisions)


# -- shared parameters and profiles (parameters.yaml) ---------------------------------------


class _ParametersChecker(_FileChecker):
    """Checks a package's ``parameters.yaml``: shared parameters (as in rule files) and
    profiles (readings checked against the decisions by :func:`check_profiles`)."""

    def __init__(self, f: LoadedFile, inputs: Mapping[str, FactSpec]) -> None:
        super().__init__(f, inputs, inputs, PatientValidator(inputs), set())

    def checked(self) -> SharedParameters:
        for name, p in self.data.get("parameters", {}).items():
            self.params[name] = self._parameter(name, p)
        profiles: dict[str, Profile] = {}
        for name, prof in self.data.get("profiles", {}).items():
            ptr = join_pointer("/profiles", name)
            cite = self._cites(prof["cite"], f"{ptr}/cite")
            readings = {k: _freeze(v) for k, v in prof["readings"].items()}
            profiles[name] = Profile(name, prof["title"], prof["note"], cite, readings, ptr)
        for key in self.sources:
            if key not in self.cited:
                self.diags.append(self.pos.diag("NB331", f"source '{key}' is never cited",
                                              join_pointer("/sources", key), key=True))
        return SharedParameters(dict(self.params), profiles, self.sources, self.f.source.display)


def check_parameters(f: LoadedFile, inputs: Mapping[str, FactSpec]) -> tuple[SharedParameters, list[Diagnostic]]:
    """Check a (loaded, schema-valid) ``parameters.yaml`` on its own."""
    pc = _ParametersChecker(f, inputs)
    shared = pc.checked()
    return shared, list(pc.diags)


def check_profiles(f: LoadedFile, shared: SharedParameters, decisions: Sequence[Decision],
                   names_complete: bool = True) -> list[Diagnostic]:
    """Every profile reading names a parameter (shared, or of a decision) and reads one of its
    documented values (NB356); a shared parameter no decision uses is reported (NB330)."""
    diags: list[Diagnostic] = []
    known: dict[str, list[Parameter]] = {}
    used: set[str] = set()
    for d in decisions:
        for name, p in d.parameters.items():
            known.setdefault(name, []).append(p)
            if name in shared.parameters:
                used.add(name)
    for name, p in shared.parameters.items():
        known.setdefault(name, [p])
        if name not in used:
            diags.append(f.diag("NB330", f"shared parameter '{name}' is used by no decision",
                                join_pointer("/parameters", name), key=True,
                                hint="use it with {param: " + name + "} in a rule file, or remove it"))
    for prof in shared.profiles.values():
        for name, value in prof.readings.items():
            ptr = join_pointer(f"{prof.pointer}/readings", name)
            if name not in known:
                if not names_complete:
                    continue
                diags.append(f.diag("NB356", f"profile '{prof.name}' reads parameter '{name}', which no decision "
                                             f"or parameters.yaml declares", ptr, key=True,
                                    hint=did_you_mean(name, known) or "name a shared parameter or a decision's"))
                continue
            for p in known[name]:
                documented = [p.value] + [a for a, _ in p.alternatives]
                if value not in documented:
                    shown = ", ".join(describe_value(x) for x in documented)
                    diags.append(f.diag("NB356", f"profile '{prof.name}' reads {name} = {describe_value(value)}, "
                                                 f"which is not a documented reading ({shown})", ptr,
                                        hint="add it as an alternative with its note, or correct the reading"))
                    break
    return diags
