"""The knowledge package: the files at the root of a rules directory that are not decisions.

A rules directory is a knowledge package.  Beside its decision files (any
``**/*.yaml``), files with a reserved name at its root describe the package as a
whole; :data:`PACKAGE_FILES` is the one place these names are recognised, each with
the JSON Schema that validates it:

* ``package.yaml``: name, version, title and description of the package;
* ``facts.yaml``: the facts vocabulary (type, range or value set, unit, title,
  description, a label per value, optional terminology codes) and optional words for
  the outputs of decisions.

Each goes through the same loader → validator path as a rule file (NB1xx, NB2xx,
located), then the meaning checks of this module (NB110-NB113).  A directory without
``facts.yaml`` reads the facts of the bundled package (a documented fallback, so that
a directory holding only decision files keeps working); one without ``package.yaml``
is an unnamed package (name and version empty in results).

:func:`knowledge_sha256` is the hash results carry: one sha256 over every knowledge
file of the package and every decision file in force, plus the profile chosen.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from .diagnostics import Diagnostic
from .loader import LoadedFile, join_pointer, load_source
from .resources import bundled_rules_dir
from .sources import RuleSource
from .validator import SCHEMA_CODES, schema_problems, schema_validator
from .vocabulary import FactKind, FactSpec, TermCode

__all__ = [
    "PACKAGE_FILES",
    "KnowledgePackage",
    "PackageBuild",
    "is_package_file",
    "misplaced_package_file",
    "build_package",
    "bundled_facts",
    "knowledge_sha256",
    "with_output_words",
]

#: The knowledge-package files, by the name they have at the root of a rules directory,
#: with the bundled JSON Schema of each.  Every other ``*.yaml`` file is a decision file.
PACKAGE_FILES: Mapping[str, str] = {
    "package.yaml": "package.schema.json",
    "facts.yaml": "facts.schema.json",
    "constraints.yaml": "constraints.schema.json",
    "parameters.yaml": "parameters.schema.json",
}

#: facts.yaml ``type`` words and the kind of fact each one is.
_KINDS: Mapping[str, FactKind] = {
    "boolean": "boolean",
    "whole_number": "integer",
    "number": "number",
    "one_of": "enum",
    "list_of": "set",
}


def is_package_file(source: RuleSource) -> bool:
    """True when ``source`` is a knowledge-package file (a reserved name at the root)."""
    return source.name in PACKAGE_FILES


def misplaced_package_file(source: RuleSource) -> bool:
    """True for a reserved name below the root (``staging/facts.yaml``): it is neither
    a package file nor a decision file (NB113)."""
    return source.name not in PACKAGE_FILES and PurePosixPath(source.name).name in PACKAGE_FILES


@dataclass(frozen=True)
class KnowledgePackage:
    """The package as a whole.

    ``facts`` is the input vocabulary in ``facts.yaml`` order; ``outputs`` the words
    (title, labels, codes) given for outputs of decisions, as output :class:`FactSpec`
    objects; ``files`` the knowledge files hashed into results (the bundled
    ``facts.yaml`` when the directory has none: ``bundled_vocabulary`` is then True).
    """

    name: str
    version: str
    title: str
    description: str
    facts: Mapping[str, FactSpec]
    outputs: Mapping[str, FactSpec] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    files: tuple[RuleSource, ...] = ()
    bundled_vocabulary: bool = False

    def sha256(self, decisions: Iterable[RuleSource], profile: str = "") -> str:
        """:func:`knowledge_sha256` of this package with the decision files in force."""
        return knowledge_sha256(self.files, decisions, profile)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def knowledge_sha256(package_files: Iterable[RuleSource], decisions: Iterable[RuleSource], profile: str = "") -> str:
    """One sha256 over everything that can change an answer.

    The hashed text is one line ``<relative path>\\t<sha256 of the file's bytes>`` per
    knowledge file of the package and per decision file in force, sorted by path, then
    ``profile\\t<profile>`` (empty when no profile is chosen).  Relative paths make it
    independent of where the directory is; a changed byte, an added or removed file, a
    pinned version or another profile change it.
    """
    lines = sorted(f"{s.name}\t{s.sha256}\n" for s in [*package_files, *decisions])
    lines.append(f"profile\t{profile}\n")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PackageBuild:
    """The package, its loaded files and every diagnostic about them."""

    package: KnowledgePackage
    files: tuple[LoadedFile, ...]
    diagnostics: tuple[Diagnostic, ...]
    #: True when facts.yaml exists but cannot be read as a vocabulary at all (bad YAML, not
    #: a mapping, no valid ``facts`` table): decision files are then not checked against it.
    vocabulary_broken: bool = False


def _load(source: RuleSource) -> tuple[LoadedFile, list[Diagnostic]]:
    f = load_source(source)
    diags = list(f.diagnostics)
    if f.ok:
        validator = schema_validator(PACKAGE_FILES[source.name])
        diags += [f.diag(SCHEMA_CODES[p.kind], p.message, p.pointer, key=p.on_key, hint=p.hint)
                  for p in schema_problems(validator, f.data)]
    return f, diags


def _codes(items: Any) -> tuple[TermCode, ...]:
    return tuple(TermCode(str(c["system"]), str(c["code"]), str(c.get("display", ""))) for c in items or ())


def _broken(diags: Sequence[Diagnostic], pointer: str) -> bool:
    return any(d.is_error and d.pointer is not None and (d.pointer == pointer or d.pointer.startswith(pointer + "/"))
               for d in diags)


def _words(f: LoadedFile, ptr: str, name: str, entry: Mapping[str, Any], diags: list[Diagnostic]) -> dict[str, Any]:
    """Labels and codes of the ``values`` of one fact or output (NB110 for a value twice)."""
    labels: list[tuple[str, str]] = []
    value_codes: list[tuple[str, tuple[TermCode, ...]]] = []
    for i, item in enumerate(entry.get("values", ())):
        value = item["value"]
        if any(v == value for v, _ in labels):
            diags.append(f.diag("NB110", f"value '{value}' of {name} is listed twice", f"{ptr}/values/{i}/value",
                                hint="list each value once"))
            continue
        labels.append((value, item["label"]))
        if item.get("codes"):
            value_codes.append((value, _codes(item["codes"])))
    return {"labels": tuple(labels), "value_codes": tuple(value_codes), "codes": _codes(entry.get("codes")),
            "title": str(entry.get("title", "")), "description": " ".join(str(entry.get("description", "")).split())}


def _facts(f: LoadedFile, schema_diags: Sequence[Diagnostic]) -> tuple[dict[str, FactSpec], dict[str, FactSpec],
                                                                        list[Diagnostic]]:
    """The facts and output words of a loaded ``facts.yaml``; entries with schema errors are skipped."""
    diags: list[Diagnostic] = []
    facts: dict[str, FactSpec] = {}
    outputs: dict[str, FactSpec] = {}
    data = f.data if isinstance(f.data, dict) else {}
    table = data.get("facts")
    for name, entry in (table.items() if isinstance(table, dict) else ()):
        ptr = join_pointer("/facts", name)
        if _broken(schema_diags, ptr):
            continue
        kind = _KINDS[entry["type"]]
        words = _words(f, ptr, name, entry, diags)
        has_values = "values" in entry
        if kind in ("enum", "set") and not has_values:
            diags.append(f.diag("NB111", f"fact '{name}' is {entry['type']} but lists no values", ptr + "/type",
                                hint="add values: - {value: ..., label: ...}, one line per value"))
            continue
        misplaced = [k for k in ("values",) if has_values and kind not in ("enum", "set")]
        misplaced += [k for k in ("unit", "minimum", "maximum") if k in entry and kind not in ("integer", "number")]
        for k in misplaced:
            diags.append(f.diag("NB111", f"'{k}' does not apply to fact '{name}', which is {entry['type']}",
                                join_pointer(ptr, k), key=True,
                                hint="values belong to one_of and list_of facts; unit, minimum and maximum to numbers"))
        lo, hi = entry.get("minimum"), entry.get("maximum")
        if lo is not None and hi is not None and lo > hi:
            diags.append(f.diag("NB111", f"minimum {lo:g} of fact '{name}' is above its maximum {hi:g}",
                                ptr + "/minimum", hint="swap them"))
        values = tuple(v for v, _ in words["labels"]) if kind in ("enum", "set") else ()
        if kind not in ("integer", "number"):
            lo = hi = None
        unit = str(entry.get("unit", "")) if kind in ("integer", "number") else ""
        if kind not in ("enum", "set"):
            words.update(labels=(), value_codes=())
        facts[name] = FactSpec(name, kind, values, minimum=lo, maximum=hi, unit=unit, **words)
    table = data.get("outputs")
    for name, entry in (table.items() if isinstance(table, dict) else ()):
        ptr = join_pointer("/outputs", name)
        if _broken(schema_diags, ptr):
            continue
        words = _words(f, ptr, name, entry, diags)
        outputs[name] = FactSpec(name, "enum", tuple(v for v, _ in words["labels"]), is_input=False, **words)
    return facts, outputs, diags


def build_package(sources: Sequence[RuleSource]) -> PackageBuild:
    """Load, validate and read the package files among ``sources`` (those :func:`is_package_file`)."""
    diags: list[Diagnostic] = []
    loaded: list[LoadedFile] = []
    by_name: dict[str, tuple[LoadedFile, list[Diagnostic]]] = {}
    for s in sources:
        if is_package_file(s):
            f, d = _load(s)
            loaded.append(f)
            diags += d
            by_name[s.name] = (f, d)
    files = tuple(f.source for f in loaded)
    bundled = "facts.yaml" not in by_name
    broken = False
    if bundled:
        facts: Mapping[str, FactSpec] = bundled_facts()
        outputs: Mapping[str, FactSpec] = _bundled_outputs()
        files += (_bundled_facts_source(),)
    else:
        f, schema_diags = by_name["facts.yaml"]
        facts, outputs, meaning = _facts(f, schema_diags) if f.ok else ({}, {}, [])
        diags += meaning
        broken = not f.ok or any(d.is_error and d.pointer in ("", "/facts") for d in schema_diags)
    meta: Mapping[str, Any] = {}
    if "package.yaml" in by_name:
        f, d = by_name["package.yaml"]
        if f.ok and isinstance(f.data, dict):
            meta = {k: v for k, v in f.data.items() if not _broken(d, "/" + k)}
    package = KnowledgePackage(
        name=str(meta.get("package", "")), version=str(meta.get("version", "")), title=str(meta.get("title", "")),
        description=" ".join(str(meta.get("description", "")).split()), facts=facts, outputs=outputs,
        sources=dict(meta.get("sources", {})), files=files, bundled_vocabulary=bundled)
    return PackageBuild(package, tuple(loaded), tuple(diags), broken)


def with_output_words(vocabulary: Mapping[str, FactSpec], package: KnowledgePackage) -> dict[str, FactSpec]:
    """``vocabulary`` with the package's words (title, description, labels, codes) on its outputs."""
    out = dict(vocabulary)
    for name, words in package.outputs.items():
        spec = out.get(name)
        if spec is not None and not spec.is_input:
            out[name] = replace(spec, title=words.title or spec.title, description=words.description,
                                labels=words.labels, codes=words.codes, value_codes=words.value_codes)
    return out


def _bundled_facts_source() -> RuleSource:
    path = bundled_rules_dir() / "facts.yaml"
    return RuleSource(name="facts.yaml", display="rules/facts.yaml", path=path, data=path.read_bytes())


@lru_cache(maxsize=1)
def _bundled() -> tuple[Mapping[str, FactSpec], Mapping[str, FactSpec]]:
    f, schema_diags = _load(_bundled_facts_source())
    facts, outputs, meaning = _facts(f, schema_diags)
    problems = [d for d in [*schema_diags, *meaning] if d.is_error]
    if problems:  # pragma: no cover - the bundled package is tested
        raise ValueError(f"the bundled facts.yaml has errors: {problems[0]}")
    return facts, outputs


def bundled_facts() -> Mapping[str, FactSpec]:
    """The facts vocabulary of the bundled package (cached; read-only)."""
    return _bundled()[0]


def _bundled_outputs() -> Mapping[str, FactSpec]:
    return _bundled()[1]
