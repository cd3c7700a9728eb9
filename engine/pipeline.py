"""The front half of the pipeline: load → validate → check, over a set of rule files.

Every stage collects all its findings; a file that fails to load is not
validated, and a file that fails validation is not checked, but the other
files still are, so one run reports every problem.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .checker import check_constraints, check_files, check_parameters, check_profiles, dependency_order
from .constraints import ConstraintSet
from .diagnostics import Diagnostic, has_errors, sort_diagnostics
from .loader import LoadedFile, load_source
from .model import Decision, SharedParameters
from .resources import bundled_rules_dir
from .sources import RuleSource, directory_sources
from .validator import validate_file
from .vocabulary import FactSpec, input_facts

__all__ = ["PACKAGE_FILES", "RuleSetBuild", "build_sources", "build_directory", "build_bundled"]


@dataclass(frozen=True)
class RuleSetBuild:
    """Checked decisions (in dependency order) and every diagnostic of the three stages."""

    decisions: tuple[Decision, ...]
    diagnostics: tuple[Diagnostic, ...]
    vocabulary: Mapping[str, FactSpec]
    files: tuple[LoadedFile, ...]
    label: str
    #: The package's input constraints (None without a valid constraints.yaml).
    constraints: ConstraintSet | None = None
    #: The package's shared parameters and profiles (None without a valid parameters.yaml).
    shared: SharedParameters | None = None

    def profile(self, name: str | None) -> dict[str, Any]:
        """The readings of profile ``name`` ({} for None); KeyError when it is not declared."""
        if name is None:
            return {}
        if self.shared is None or name not in self.shared.profiles:
            raise KeyError(name)
        return dict(self.shared.profiles[name].readings)

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(self.shared.profiles) if self.shared is not None else ()

    def profiled(self, decision: Decision, name: str | None) -> Decision:
        """``decision`` as profile ``name`` reads it: each parameter the profile reads holds
        the profile's value (the value it replaces becomes an alternative).  Used to render,
        diff and verify under a profile."""
        readings = {k: v for k, v in self.profile(name).items() if k in decision.parameters}
        if not readings:
            return decision
        params = dict(decision.parameters)
        for k, v in readings.items():
            p = params[k]
            if v != p.value:
                alts = tuple(a for a in p.alternatives if a[0] != v) + ((p.value, p.note),)
                note = next((n for a, n in p.alternatives if a == v), p.note)
                params[k] = replace(p, value=v, note=f"{note} (profile {name})", alternatives=alts)
        return replace(decision, parameters=params)

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)

    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def file_ok(self, display: str) -> bool:
        """True when no error concerns the file shown as ``display``."""
        return not any(d.is_error and d.path == display for d in self.diagnostics)


#: Files at the root of a rules directory recognised by name, with their JSON Schema;
#: every other ``*.yaml`` file is a decision (rule file).
PACKAGE_FILES: Mapping[str, str] = {
    "constraints.yaml": "constraints.schema.json",
    "parameters.yaml": "parameters.schema.json",
}


def build_sources(sources: Sequence[RuleSource], label: str = "rules") -> RuleSetBuild:
    """Load, validate and check ``sources``: decisions, then the package files."""
    diags: list[Diagnostic] = []
    package = {s.name: s for s in sources if s.name in PACKAGE_FILES}
    sources = [s for s in sources if s.name not in PACKAGE_FILES]
    if not sources:
        diags.append(Diagnostic(code="NB108", message=f"no rule files (*.yaml) found in {label}", path=label,
                                hint="point --rules at a directory of rule files"))
    loaded_pairs = [_load_and_validate(s) for s in sources]
    loaded = [f for f, _ in loaded_pairs]
    checkable: list[LoadedFile] = []
    ignored: dict[str, set[str]] = {}
    for f, schema_diags in loaded_pairs:
        diags.extend(f.diagnostics)
        if not f.ok:
            continue
        diags.extend(schema_diags)
        if not has_errors(schema_diags):
            checkable.append(f)
            continue
        pruned = _prune(f, [d.pointer or "" for d in schema_diags if d.is_error])
        if pruned is not None:
            checkable.append(pruned[0])
            ignored[f.source.display] = pruned[1]
    inputs = input_facts()

    def package_file(name: str) -> LoadedFile | None:
        """Load and validate the package file ``name``; None when absent or not checkable."""
        if name not in package:
            return None
        f, schema_diags = _load_and_validate(package[name], PACKAGE_FILES[name])
        loaded.append(f)
        diags.extend(f.diagnostics)
        diags.extend(schema_diags)
        return f if f.ok and not has_errors(schema_diags) else None

    shared = None
    params_file = package_file("parameters.yaml")
    if params_file is not None:
        shared, pdiags = check_parameters(params_file, inputs)
        diags.extend(pdiags)
    checked = check_files(checkable, inputs, ignored, shared)
    diags.extend(checked.diagnostics)
    decisions = tuple(dependency_order(checked.decisions))
    if shared is not None and params_file is not None:
        # a parameter of a decision file that failed to load is not reported again as unknown
        diags.extend(check_profiles(params_file, shared, decisions, names_complete=not has_errors(diags)))
    constraints = None
    constraints_file = package_file("constraints.yaml")
    if constraints_file is not None:
        constraints, cdiags = check_constraints(constraints_file, checked.vocabulary, inputs, decisions, shared)
        diags.extend(cdiags)
    return RuleSetBuild(decisions, tuple(sort_diagnostics(diags)), checked.vocabulary, tuple(loaded), label,
                        constraints, shared)


_MEMO: "OrderedDict[tuple[str, str, str], tuple[LoadedFile, tuple[Diagnostic, ...]]]" = OrderedDict()
_MEMO_LOCK = threading.Lock()
_MEMO_SIZE = 512


def _load_and_validate(source: RuleSource,
                       schema: str = "ruleset.schema.json") -> tuple[LoadedFile, tuple[Diagnostic, ...]]:
    """Load and validate one file, memoised by display path and content hash (both stages
    are pure functions of the bytes; later stages never modify what they return)."""
    if source.read_error is not None:
        return load_source(source), ()
    key = (source.display, source.sha256, schema)
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
        if hit is not None:
            _MEMO.move_to_end(key)
            return hit
    f = load_source(source)
    result = (f, tuple(validate_file(f, schema)) if f.ok else ())
    with _MEMO_LOCK:
        _MEMO[key] = result
        if len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return result


#: Top-level keys without which a file cannot be checked at all.
_STRUCTURAL = ("reads", "decides", "sources", "pending_values")
#: Placeholders for metadata with schema errors, so the rest of the file can still be checked.
_PLACEHOLDERS = {"version": "0.0.0-invalid", "status": "draft", "effective": "1970-01-01", "title": "?",
                 "description": "", "hit_policy": "unique"}
_LISTS = ("rules", "cases", "out_of_scope")
_MAPS = ("parameters", "conditions")


def _prune(f: LoadedFile, pointers: Sequence[str]) -> tuple[LoadedFile, set[str]] | None:
    """A copy of ``f`` without the parts that failed schema validation, and the names
    (rule ids, parameters, conditions) it dropped — or None when the file cannot be
    checked at all.  This lets one run report the meaning errors of the valid parts too.
    """
    data = f.data
    if not isinstance(data, dict) or not isinstance(data.get("decision"), str):
        return None
    drop: dict[str, set[Any]] = {k: set() for k in _LISTS + _MAPS}
    fixed = dict(data)
    for ptr in pointers:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in ptr.split("/")[1:]]
        if not tokens:
            return None  # a missing required top-level key
        top = tokens[0]
        if top in _STRUCTURAL or top == "decision":
            return None
        if top in _PLACEHOLDERS:
            fixed[top] = _PLACEHOLDERS[top]
        elif top in _LISTS + _MAPS and len(tokens) > 1:
            drop[top].add(int(tokens[1]) if top in _LISTS and tokens[1].isdigit() else tokens[1])
        elif top in _LISTS + _MAPS:
            fixed[top] = [] if top in _LISTS else {}
        else:
            fixed.pop(top, None)  # an unknown top-level key
    names: set[str] = set()
    for key in _LISTS:
        items = fixed.get(key, [])
        if not isinstance(items, list):
            return None
        for i in drop[key]:
            if isinstance(i, int) and i < len(items) and isinstance(items[i], dict) and isinstance(items[i].get("id"), str):
                names.add(items[i]["id"])
        fixed[key] = [x for i, x in enumerate(items) if i not in drop[key]]
    for key in _MAPS:
        table = fixed.get(key, {})
        if not isinstance(table, dict):
            return None
        names.update(str(n) for n in drop[key])
        fixed[key] = {k: v for k, v in table.items() if k not in drop[key]}
    copy = LoadedFile(source=f.source, data=fixed, values=f.values, keys=f.keys, lines=f.lines)
    return copy, names


def build_directory(path: str | Path, label: str | None = None) -> RuleSetBuild:
    """Load, validate and check every ``*.yaml`` file below ``path``."""
    root = Path(path)
    name = label if label is not None else (root.resolve().name or str(root))
    return build_sources(directory_sources(root, name), name)


def build_bundled() -> RuleSetBuild:
    """The rule files shipped with nbrules, shown as ``rules/...``."""
    return build_directory(bundled_rules_dir(), "rules")
