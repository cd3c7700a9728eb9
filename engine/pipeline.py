"""The front half of the pipeline: load → validate → check, over a set of rule files.

Every stage collects all its findings; a file that fails to load is not
validated, and a file that fails validation is not checked, but the other
files still are, so one run reports every problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .cache import SHARED, SizedCache
from .constraints import ConstraintSet
from .diagnostics import Diagnostic, has_errors, sort_diagnostics
from .loader import LoadedFile, join_pointer, load_source
from .model import Decision, SharedParameters
from .package import KnowledgePackage, build_package, is_package_file, misplaced_package_file, with_output_words
from .resources import bundled_rules_dir
from .sources import RuleSource, directory_sources, file_source
from .vocabulary import FactSpec

if TYPE_CHECKING:  # pragma: no cover
    from .compiler import Program
    from .store import BuildStore

__all__ = ["RuleSetBuild", "build_sources", "build_directory", "build_bundled", "build_file"]


@dataclass(frozen=True)
class RuleSetBuild:
    """Checked decisions (in dependency order) and every diagnostic of the three stages.

    ``package`` is the knowledge package (name, version, input facts, its files);
    ``vocabulary`` its input facts plus every output of a decision; ``files`` every
    loaded file, package files included.
    """

    decisions: tuple[Decision, ...]
    diagnostics: tuple[Diagnostic, ...]
    vocabulary: Mapping[str, FactSpec]
    files: tuple[LoadedFile, ...]
    label: str
    package: KnowledgePackage
    #: The package's input constraints (None without a valid constraints.yaml).
    constraints: ConstraintSet | None = None
    #: The package's shared parameters and profiles (None without a valid parameters.yaml).
    shared: SharedParameters | None = None
    #: Decisions compiled so far (see :meth:`program`), by decision and parameter values:
    #: at most one per decision and profile, freed with the build, and kept with it in
    #: the on-disk cache, so a one-shot process does not compile again.
    compiled: dict[tuple[Any, ...], Program] = field(default_factory=dict, compare=False, repr=False)

    def program(self, decision: Decision, params: Mapping[str, Any] | None = None) -> Program:
        """``decision``, one of :attr:`decisions`, compiled with ``params`` (overrides of
        its parameters, by name), once per set of parameter values in force.  Compiling
        also reads what the build fixes (the package's facts, constraints and the other
        decisions' rules), so the memo is the build's; a decision not of this build (a
        profiled copy, :meth:`profiled`) is compiled each time."""
        from .compiler import compile_decision

        if not any(d is decision for d in self.decisions):
            return compile_decision(decision, params)
        key = (decision.key, tuple(sorted((k, repr(v)) for k, v in decision.param_values(params).items())))
        hit = self.compiled.get(key)
        if hit is None:
            hit = self.compiled.setdefault(key, compile_decision(decision, params))
        return hit

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

def build_sources(sources: Sequence[RuleSource], label: str = "rules") -> RuleSetBuild:
    """Load, validate and check ``sources``: the knowledge-package files among them
    (:data:`nbrules.package.PACKAGE_FILES`), then the decision files against its vocabulary,
    then the profiles and input constraints against the decisions."""
    from .checker import check_files  # imported here: a build read from the on-disk cache needs none of them
    from .crossfile import dependency_order
    from .package_checks import check_constraints, check_parameters, check_profiles, with_constraints

    diags: list[Diagnostic] = []
    pkg = build_package(sources)
    diags.extend(pkg.diagnostics)
    for s in sources:
        if misplaced_package_file(s):
            diags.append(Diagnostic(
                code="NB113", path=s.display, line=1, column=1,
                message=f"'{s.name}' has the name of a knowledge-package file but is not at the root of {label}",
                hint=f"move it to the root of the rules directory, or rename it if it is a decision file"))
    sources = [s for s in sources if not is_package_file(s) and not misplaced_package_file(s)]
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
    if pkg.vocabulary_broken:  # its own diagnostics say why; every fact would be reported unknown
        checkable = []
    inputs = pkg.package.facts

    def package_file(name: str) -> LoadedFile | None:
        """The loaded package file ``name``; None when absent or not checkable (its
        load and schema diagnostics are among the package's)."""
        f = next((x for x in pkg.files if x.source.name == name), None)
        if f is None or not f.ok:
            return None
        bad = any(d.is_error and d.path == f.source.display for d in pkg.diagnostics)
        return None if bad else f

    shared = None
    params_file = package_file("parameters.yaml")
    if params_file is not None:
        shared, pdiags = check_parameters(params_file, inputs)
        diags.extend(pdiags)
    checked = check_files(checkable, inputs, ignored, shared)
    diags.extend(checked.diagnostics)
    diags.extend(_output_words_problems(pkg.package, checked.vocabulary, pkg.files))
    decisions = tuple(dependency_order(checked.decisions))
    vocabulary = with_output_words(checked.vocabulary, pkg.package)
    if shared is not None and params_file is not None:
        # a parameter of a decision file that failed to load is not reported again as unknown
        diags.extend(check_profiles(params_file, shared, decisions, names_complete=not has_errors(diags)))
    constraints = None
    constraints_file = package_file("constraints.yaml")
    if constraints_file is not None:
        constraints, cdiags = check_constraints(constraints_file, checked.vocabulary, inputs, decisions, shared)
        diags.extend(cdiags)
        if constraints is not None:
            decisions = with_constraints(decisions, constraints)
    return RuleSetBuild(decisions, tuple(sort_diagnostics(diags)), vocabulary, pkg.files + tuple(loaded), label,
                        pkg.package, constraints, shared)


def _output_words_problems(package: KnowledgePackage, vocabulary: Mapping[str, FactSpec],
                           files: Sequence[LoadedFile]) -> list[Diagnostic]:
    """NB112: words in facts.yaml for an output no decision sets, or for a value it never takes."""
    facts_file = next((f for f in files if f.source.name == "facts.yaml"), None)
    if facts_file is None:
        return []
    out: list[Diagnostic] = []
    for name, words in package.outputs.items():
        ptr = join_pointer("/outputs", name)
        spec = vocabulary.get(name)
        if spec is None or spec.is_input:
            out.append(facts_file.diag("NB112", f"'{name}' is not an output of any decision", ptr, key=True,
                                       hint="describe input facts under facts:, outputs of decisions under outputs:"))
            continue
        for i, value in enumerate(words.values):
            if value not in spec.values:
                out.append(facts_file.diag("NB112", f"'{value}' is not a value of output {name} "
                                           f"(its decisions set {', '.join(spec.values)})", f"{ptr}/values/{i}/value"))
    return out


def loaded_size(value: tuple[LoadedFile, tuple[Diagnostic, ...]]) -> int:
    """A cheap estimate of the bytes held by a loaded file and its schema diagnostics: its
    bytes, its lines (49 bytes of overhead each), ~400 bytes per entry of the position index
    (pointer, span, the node it locates) and 16 KiB of fixed cost — within 0.8-1.4× of
    :func:`nbrules.cache.approx_size` on the bundled files (tests/test_cache.py), at a
    fraction of its cost (walking every object took a quarter of the time of loading)."""
    f = value[0]
    return (len(f.source.data) + sum(len(line) + 49 for line in f.lines) + 400 * (len(f.values) + len(f.keys))
            + 16 * 1024)


#: Rule files loaded and validated, by display path, path, content hash and schema (one
#: policy: :mod:`nbrules.cache`).  Bounded by the estimated bytes of the loaded files (a
#: file with its position index takes 20-40 times its size on disk), not by a count: every
#: edit under ``--watch`` adds a version.  16 MiB keeps the bundled package (~0.3 MB of
#: YAML, ~6 MB loaded) and a few edited versions; the live engines hold it and the last
#: one to close clears it.
_LOADED: "SizedCache[tuple[str, str, str, str], tuple[LoadedFile, tuple[Diagnostic, ...]]]" = \
    SHARED.cache("pipeline.loaded", 16 * 1024 * 1024, size=loaded_size)


def _load_and_validate(source: RuleSource,
                       schema: str = "ruleset.schema.json") -> tuple[LoadedFile, tuple[Diagnostic, ...]]:
    """Load and validate one file against ``schema``, memoised by display path, path, content
    hash and schema (both stages are pure functions of the bytes; later stages never modify
    what they return)."""
    from .validator import validate_file

    if source.read_error is not None:
        return load_source(source), ()
    key = (source.display, str(source.path), source.sha256, schema)  # the path too: results name the file read

    def load() -> tuple[LoadedFile, tuple[Diagnostic, ...]]:
        f = load_source(source)
        return f, tuple(validate_file(f, schema)) if f.ok else ()

    return _LOADED.get_or_build(key, load)


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
    kept: dict[str, tuple[int, ...]] = {}
    for key in _LISTS:
        items = fixed.get(key, [])
        if not isinstance(items, list):
            return None
        for i in drop[key]:
            if isinstance(i, int) and i < len(items) and isinstance(items[i], dict) and isinstance(items[i].get("id"), str):
                names.add(items[i]["id"])
        fixed[key] = [x for i, x in enumerate(items) if i not in drop[key]]
        if drop[key]:  # later items move up: remember where each came from
            kept[key] = tuple(i for i in range(len(items)) if i not in drop[key])
    for key in _MAPS:
        table = fixed.get(key, {})
        if not isinstance(table, dict):
            return None
        names.update(str(n) for n in drop[key])
        fixed[key] = {k: v for k, v in table.items() if k not in drop[key]}
    copy = LoadedFile(source=f.source, data=fixed, values=f.values, keys=f.keys, lines=f.lines, kept=kept)
    return copy, names


def build_directory(path: str | Path, label: str | None = None, store: "BuildStore | None" = None,
                    verdicts: bool = False) -> RuleSetBuild:
    """Load, validate and check every ``*.yaml`` file below ``path``.

    With ``store`` (:func:`nbrules.store.open_store`), the checked build is read from that
    on-disk cache when every file is unchanged, and written to it otherwise; the build
    is the same either way.  ``verdicts`` (for a build an engine will run) also keeps the
    governance verdict of each decision there (verify and example cases,
    :func:`~nbrules.governance.governance_problems`), computed when the entry lacks them.
    """
    root = Path(path)
    name = label if label is not None else (root.resolve().name or str(root))
    sources = directory_sources(root, name)
    if store is None:
        return build_sources(sources, name)
    return _stored_build(store, sources, name, root, verdicts)


def build_bundled(store: "BuildStore | None" = None, verdicts: bool = False) -> RuleSetBuild:
    """The rule files shipped with nbrules, shown as ``rules/...`` (``store`` and
    ``verdicts``: as for :func:`build_directory`)."""
    return build_directory(bundled_rules_dir(), "rules", store, verdicts)


def _stored_build(store: "BuildStore", sources: Sequence[RuleSource], label: str, root: Path,
                  verdicts: bool) -> RuleSetBuild:
    """The build of ``sources`` from ``store``, or built and stored there.  Verdicts read
    back are taken as computed (same bytes, same nbrules), so a decision whose cases fail
    is still refused; ``verdicts`` adds them to an entry without (a build with errors has
    none: no engine runs it)."""
    from .governance import governance_problems, remember
    from .store import StoredBuild

    key = store.key(sources, label, root)
    hit = store.get(key)
    if hit is not None and hit.verdicts is not None and len(hit.verdicts) != len(hit.build.decisions):
        hit = None  # pragma: no cover - not written by this code
    if hit is not None:
        build = hit.build
        if hit.verdicts is not None:
            for decision, verdict in zip(build.decisions, hit.verdicts):
                remember(decision, verdict)
            return build
        if not verdicts or not build.ok:
            return build
    else:
        build = build_sources(sources, label)
    known = tuple(governance_problems(d) for d in build.decisions) if verdicts and build.ok else None
    if known is not None:  # an engine will run it: kept compiled (default parameters) too
        for decision in build.decisions:
            build.program(decision)
    if hit is None or known is not None:
        store.put(key, StoredBuild(build, known))
    return build


def build_file(path: str | Path, rules: str | Path | None = None) -> tuple[RuleSetBuild, str]:
    """One rule file checked in the context of a rules directory (default: the bundled
    rules), so that the outputs of other decisions it reads are known.

    Returns the build and the file's display path (its diagnostics are those whose
    ``path`` is that).  A file inside the directory is shown as it is there; a file
    elsewhere is shown as given and replaces the file of the directory that defines the
    same ``decision@version`` (a copy being edited), if any.
    """
    file = Path(path)
    root = Path(rules) if rules is not None else bundled_rules_dir()
    label = "rules" if rules is None else (root.resolve().name or str(root))
    context = directory_sources(root, label)
    target = file.resolve()
    for s in context:
        if s.path is not None and s.path.resolve() == target:
            return build_sources(context, label), s.display
    mine = file_source(file, file.name, str(path))
    key = _decision_key(mine)
    kept = [s for s in context if key is None or _decision_key(s) != key]
    return build_sources(kept + [mine], label), mine.display


def _decision_key(source: RuleSource) -> tuple[str, str] | None:
    """(decision, version) as written in a rule file, or None when it cannot be read."""
    data = _load_and_validate(source)[0].data
    if isinstance(data, dict) and isinstance(data.get("decision"), str):
        return data["decision"], str(data.get("version"))
    return None
