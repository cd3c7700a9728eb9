"""The verbs of the command line as library functions: each returns a report object.

``nbrules validate``, ``test``, ``verify``, ``render``, ``diff``, ``evaluate --batch`` and
``schema patient`` call these functions and only format what they return, so a host
program (a service, a notebook, a CI job) gets the same answers without the CLI:

* :func:`validate_rules` -> :class:`ValidationReport` (diagnostics of the rule files and
  of ``versions.lock``; optionally records the lock);
* :func:`run_rule_cases` -> :class:`CasesReport` (the example cases of every rule file);
* :func:`verify_rules` -> :class:`VerificationReport` (gaps, overlaps, dead rules; with
  ``all_parameters`` also under each documented alternative and each profile);
* :func:`render_rules` -> Markdown or HTML text of the decision tables;
* :func:`diff_rules` -> :class:`DiffReport` (two versions of a decision, or two rules
  directories; optionally the effect on a cohort);
* :func:`open_engine` -> a checked :class:`~nbrules.runtime.RuleEngine`;
* :func:`evaluate_batch` -> :class:`~nbrules.batch.BatchSummary` (JSON lines written);
* :func:`patient_schema_of` -> the JSON Schema of a patient record.

A *target* is a rules directory, or one rule file checked together with the rules of
``rules`` (default: the bundled rules), whose outputs it may read; ``None`` is the
bundled rules.  Diagnostics stay :class:`~nbrules.diagnostics.Diagnostic` objects; the
caller formats them (``format_diagnostic``, ``Diagnostic.to_dict``).

Errors: :class:`~nbrules.errors.UsageError` for a request the caller can correct (a
directory that does not exist, a profile not declared, an unknown decision);
:class:`RulesHaveErrors` when the rule files must be clean for the verb and are not.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from .diagnostics import Diagnostic, count_summary, sort_diagnostics
from .errors import RuleSetError, UsageError
from .model import Decision
from .pipeline import RuleSetBuild, build_bundled, build_directory, build_file

if TYPE_CHECKING:  # imported when used: the CLI's start-up stays light
    from .batch import BatchSummary
    from .cases import CaseResult
    from .diff import CohortDiff, DecisionDiff
    from .runtime import RuleEngine
    from .store import BuildStore
    from .verify import DecisionReport

__all__ = ["CasesReport", "DecisionCases", "DiffReport", "GuardedStream", "LockRecord", "RulesHaveErrors",
           "ValidationReport", "VerificationReport",
           "diff_rules", "evaluate_batch", "open_engine", "patient_schema_of", "render_rules", "run_rule_cases",
           "validate_rules", "verify_rules"]


class RulesHaveErrors(RuleSetError):
    """The rule files have errors and the verb needs clean ones.  ``message`` is
    ``LABEL: the rule files have errors (N errors, M warnings)``; ``diagnostics`` every
    diagnostic of the build, unsorted."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _checked(build: RuleSetBuild) -> RuleSetBuild:
    if not build.ok:
        raise RulesHaveErrors(f"{build.label}: the rule files have errors ({count_summary(build.diagnostics)})",
                              build.diagnostics)
    return build


def _directory(path: str | Path | None, store: BuildStore | None = None, verdicts: bool = False) -> RuleSetBuild:
    """The build of a rules directory (the bundled rules for None), through the on-disk
    cache ``store`` when given (:func:`nbrules.pipeline.build_directory`)."""
    if not path:
        return build_bundled(store, verdicts)
    if not Path(path).is_dir():
        raise UsageError(f"rules directory '{path}' does not exist")
    return build_directory(path, store=store, verdicts=verdicts)


def _target(target: str | Path | None, rules: str | Path | None,
            store: BuildStore | None = None) -> tuple[RuleSetBuild, str | None]:
    """The build a verb works on, and the display path of the one rule file it was given
    (None for a whole directory)."""
    if not target or not Path(target).is_file():
        return _directory(target or rules, store), None
    if rules is not None and not Path(rules).is_dir():
        raise UsageError(f"rules directory '{rules}' does not exist")
    return build_file(target, rules)


def _profile(build: RuleSetBuild, name: str | None) -> dict[str, object]:
    """The readings of profile ``name`` ({} for None); UsageError (NB545) when not declared."""
    try:
        return build.profile(name)
    except KeyError:
        raise UsageError(f"NB545 [unknown-profile] no profile '{name}' in {build.label}; profiles: "
                         + (", ".join(build.profiles) or "none")) from None


def _of(diags: Sequence[Diagnostic], display: str | None) -> list[Diagnostic]:
    return list(diags) if display is None else [d for d in diags if d.path == display]


def _decisions_of(build: RuleSetBuild, display: str | None) -> list[Decision]:
    return [d for d in build.decisions if display is None or d.source.display == display]


# -- validate ------------------------------------------------------------------------------


class LockRecord(NamedTuple):
    """What ``validate_rules(record=True)`` wrote: the versions of this build, the
    entries of the lock in all (older versions recorded before stay), and its path."""

    versions: int
    total: int
    path: Path


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate_rules` found.

    ``label`` names what was validated (the file's display path, or the build's label);
    ``files`` how many files; ``valid_decisions`` the decisions whose file has no error;
    ``diagnostics`` every finding, sorted (rule files and ``versions.lock``);
    ``recorded`` a :class:`LockRecord` when the lock was written;
    ``record_refused`` when recording was asked for and the rule files have errors.
    """

    label: str
    files: int
    valid_decisions: int
    diagnostics: tuple[Diagnostic, ...]
    recorded: LockRecord | None = None
    record_refused: bool = False

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not any(d.is_error for d in self.diagnostics)

    def failing(self, strict: bool = False) -> bool:
        """An error; with ``strict``, any finding at all."""
        return not self.ok or (strict and bool(self.diagnostics))

    def summary(self) -> str:
        """``LABEL: N files, N valid decisions, N errors, N warnings``."""
        return (f"{self.label}: {_plural(self.files, 'file')}, {_plural(self.valid_decisions, 'valid decision')}, "
                f"{count_summary(self.diagnostics)}")


def validate_rules(target: str | Path | None = None, rules: str | Path | None = None,
                   record: bool = False, store: BuildStore | None = None) -> ValidationReport:
    """Load, validate and check the rule files of ``target`` (see the module docstring),
    and compare each decision@version with its sha256 recorded in ``versions.lock``
    (NB812).  ``record`` writes the lock of the directory ``target`` (or ``rules``) when
    no file has an error.  UsageError: a missing directory, ``record`` without a
    directory, an unreadable lock file."""
    from .governance import LOCK_FILE, LockFileError, lock_problems, read_lock, write_lock
    from .resources import bundled_rules_dir

    path = target or rules
    if record and (path is None or Path(path).is_file()):
        raise UsageError("nbrules validate --record: name the rules directory to record (DIR or --rules)")
    build, display = _target(target, rules, store)
    root = Path(path) if path is not None and not Path(path).is_file() else bundled_rules_dir()
    try:
        recorded = read_lock(root)
    except LockFileError as exc:
        raise UsageError(str(exc)) from exc
    diags = _of(sort_diagnostics([*build.diagnostics, *lock_problems(build.decisions, recorded)]), display)
    clean = [d for d in _decisions_of(build, display) if build.file_ok(d.source.display)]
    wrote: LockRecord | None = None
    refused = False
    if record:
        if build.errors():
            refused = True
        else:
            n = write_lock(root, build.decisions, recorded)
            wrote = LockRecord(len(build.decisions), n, root / LOCK_FILE)
    return ValidationReport(display or build.label, len(build.files) if display is None else 1, len(clean),
                            tuple(diags), wrote, refused)


# -- test ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionCases:
    """The example cases of one decision, run: ``results`` in file order."""

    decision: Decision
    results: tuple[CaseResult, ...]

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)


@dataclass(frozen=True)
class CasesReport:
    """What :func:`run_rule_cases` ran.  ``runnable`` is False when the rule files have
    errors (then no case ran and ``diagnostics`` says why: those of the target file, or
    every diagnostic when the file has none)."""

    label: str
    runnable: bool
    decisions: tuple[DecisionCases, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    #: every diagnostic of the build (what the error count of a refused run counts)
    build_diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def total(self) -> int:
        return sum(len(d.results) for d in self.decisions)

    @property
    def failed(self) -> int:
        return sum(len(d.failed) for d in self.decisions)

    @property
    def ok(self) -> bool:
        return self.runnable and not self.failed


def run_rule_cases(target: str | Path | None = None, rules: str | Path | None = None,
                   profile: str | None = None, store: BuildStore | None = None) -> CasesReport:
    """Run the example cases of every rule file of ``target`` under ``profile`` (the
    parameters as that profile of parameters.yaml reads them).  UsageError: a missing
    directory, an unknown profile."""
    from .cases import run_cases

    build, display = _target(target, rules, store)
    label = display or build.label
    if not build.ok:
        return CasesReport(label, False, diagnostics=tuple(_of(build.diagnostics, display) or build.diagnostics),
                           build_diagnostics=build.diagnostics)
    readings = _profile(build, profile)
    ran = tuple(DecisionCases(d, tuple(run_cases([d], readings))) for d in _decisions_of(build, display))
    return CasesReport(label, True, ran, build_diagnostics=build.diagnostics)


# -- verify --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationReport:
    """What :func:`verify_rules` found.

    ``runs``: (label, report) per verification, the label saying under which parameters
    (``""`` for the defaults, `` with profile P``, `` with name = value``);
    ``skipped``: decisions not verified because their file has errors (other than in
    its example cases); ``diagnostics``: the rule files' own diagnostics (of the target
    file, or all of them when it has none) when the build has errors, else empty;
    ``rule_errors``: the target's rule files have errors; ``seconds``: the time taken.
    """

    runs: tuple[tuple[str, DecisionReport], ...]
    skipped: tuple[Decision, ...]
    diagnostics: tuple[Diagnostic, ...]
    rule_errors: bool
    built_ok: bool
    seconds: float

    @property
    def failed(self) -> bool:
        """A verification found an error (gap, overlap, dead rule ...)."""
        return any(not r.ok for _, r in self.runs)

    @property
    def complete_cells(self) -> int:
        return sum(r.known_cells for _, r in self.runs)

    def to_dict(self) -> list[dict[str, Any]]:
        """The JSON form: one object per verification (decision, version, parameters,
        complete_cells, cells, ok, findings)."""
        return [{"decision": r.decision.id, "version": r.decision.version, "parameters": label.strip(),
                 "complete_cells": r.known_cells, "cells": r.cells, "ok": r.ok, "findings": r.findings}
                for label, r in self.runs]


def verify_rules(target: str | Path | None = None, rules: str | Path | None = None, profile: str | None = None,
                 all_parameters: bool = False, store: BuildStore | None = None) -> VerificationReport:
    """Verify every decision of ``target`` over its whole input domain, under
    ``profile``; with ``all_parameters`` also under each documented alternative value of
    each parameter, and each other profile that reads one of its parameters.  Errors in
    example cases do not stop the analysis of the rules.  UsageError: a missing
    directory, an unknown profile."""
    from .verify import verify_decision

    build, display = _target(target, rules, store)
    readings = _profile(build, profile)
    shown = tuple(_of(build.diagnostics, display) or build.diagnostics) if not build.ok else ()
    broken = {d.path for d in build.errors() if not (d.pointer or "").startswith("/cases")}
    start = time.perf_counter()
    targets = _decisions_of(build, display)
    skipped = tuple(d for d in targets if d.source.display in broken)
    runs: list[tuple[str, DecisionReport]] = []
    for d in targets:
        if d in skipped:
            continue
        base = {k: v for k, v in readings.items() if k in d.parameters}
        plan: list[tuple[str, dict[str, object] | None]] = [
            (f" with profile {profile}" if base else "", dict(readings) if base else None)]
        if all_parameters:
            plan += [(f" with {name} = {json.dumps(v)}", {**readings, name: v})
                     for name, p in d.parameters.items() for v, _ in p.alternatives if v != base.get(name)]
            plan += [(f" with profile {prof}", build.profile(prof)) for prof in build.profiles
                     if prof != profile and any(k in d.parameters for k in build.profile(prof))]
        runs += [(label, verify_decision(d, params)) for label, params in plan]
    return VerificationReport(tuple(runs), skipped, shown, any(d.is_error for d in _of(build.diagnostics, display)),
                              build.ok, time.perf_counter() - start)


# -- render --------------------------------------------------------------------------------


def render_rules(rules: str | Path | None = None, decision: str | None = None, format: str = "md",
                 profile: str | None = None) -> str:
    """The decisions of ``rules`` (or only ``decision``, an id or id@version) as tables
    for clinical review: ``format`` ``"md"`` (Markdown) or ``"html"`` (a whole page), with
    the parameters as ``profile`` reads them.  RulesHaveErrors; UsageError: a missing
    directory, an unknown profile or decision."""
    from .render import render_html, render_markdown

    build = _checked(_directory(rules))
    _profile(build, profile)
    chosen = [build.profiled(d, profile) for d in build.decisions]
    if decision:
        chosen = [d for d in chosen if decision in (d.id, d.key)]
        if not chosen:
            raise UsageError(f"no decision '{decision}'; installed: " + ", ".join(d.key for d in build.decisions))
    if format == "html":
        return render_html(chosen, vocabulary=build.vocabulary)
    return render_markdown(chosen, vocabulary=build.vocabulary)


# -- diff ----------------------------------------------------------------------------------


#: outcomes each engine of a cohort diff remembers
COHORT_CACHE = 65536


@dataclass
class DiffReport:
    """What :func:`diff_rules` found: one :class:`~nbrules.diff.DecisionDiff` per
    decision (``None`` on the side where it does not exist), and the cohort's changes
    when a cohort was given.  :meth:`close` releases the cohort's spill files."""

    decisions: list[DecisionDiff]
    cohort: CohortDiff | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON form: ``{"decisions": [...], "cohort": {...}}`` (cohort only when run)."""
        payload: dict[str, object] = {"decisions": [d.to_dict() for d in self.decisions]}
        if self.cohort is not None:
            payload["cohort"] = self.cohort.to_dict()
        return payload

    def close(self) -> None:
        if self.cohort is not None:
            self.cohort.close()


def _side(ref: str, rules: str | Path | None) -> tuple[RuleSetBuild, Decision]:
    """One side of a diff: a rule file anywhere (checked with the rules of ``rules``), or
    decision@version installed in ``rules``."""
    if Path(ref).is_file():
        build, display = build_file(ref, rules)
        found = _decisions_of(_checked(build), display)
        if not found:
            raise UsageError(f"'{ref}' defines no decision")
        return build, found[0]
    if "@" in ref:
        build = _checked(_directory(rules))
        match = [d for d in build.decisions if d.key == ref]
        if not match:
            raise UsageError(f"'{ref}' is not installed; installed: " + ", ".join(d.key for d in build.decisions))
        return build, match[0]
    raise UsageError(f"'{ref}' is neither decision@version, a rule file nor a rules directory")


def _cohort_format(path: str) -> str:
    from .cohort import CohortFormatError, detect_format

    try:
        return detect_format(path)
    except CohortFormatError as exc:
        raise UsageError(str(exc)) from exc


def _open_input(path: str) -> IO[bytes]:
    """A cohort, opened in binary (``-``: standard input): rows are decoded one by one."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read '{path}': {exc.strerror or exc}") from exc


def diff_rules(old: str, new: str, rules: str | Path | None = None, profile: str | None = None,
               cohort: str | None = None, cohort_format: str | None = None, id_column: str = "id") -> DiffReport:
    """What changes between two versions of one decision (each ``decision@version``
    installed in ``rules``, or a rule file anywhere), or between two rules directories
    (the versions in force today), with the parameters as ``profile`` reads them.

    ``cohort`` (a JSONL or CSV file with an id column, ``-`` for standard input; format
    from its name unless ``cohort_format``) is also run through both sides, every output
    compared.  RulesHaveErrors; UsageError: a reference that is neither, two different
    decisions, an unknown profile, an unreadable cohort."""
    from .cohort import CohortFormatError, read_rows
    from .diff import DecisionDiff, diff_cohort, diff_decisions
    from .runtime import RuleEngine, select_versions

    old_dir, new_dir = Path(old), Path(new)
    engines: tuple[Callable[[], RuleEngine], Callable[[], RuleEngine]]
    if old_dir.is_dir() != new_dir.is_dir():
        raise UsageError("nbrules diff: compare two rules directories, or two versions of one decision "
                         f"(found '{old}' and '{new}')")
    if old_dir.is_dir() and new_dir.is_dir():
        old_build, new_build = _checked(build_directory(old_dir)), _checked(build_directory(new_dir))
        for one in (old_build, new_build):
            _profile(one, profile)
        old_by = {d.id: old_build.profiled(d, profile) for d in select_versions(old_build.decisions)[0]}
        new_by = {d.id: new_build.profiled(d, profile) for d in select_versions(new_build.decisions)[0]}
        ids = list(old_by) + [i for i in new_by if i not in old_by]
        pairs = [(old_by.get(i), new_by.get(i)) for i in ids]
        engines = (lambda: RuleEngine(old_build, cache_size=COHORT_CACHE, profile=profile),
                   lambda: RuleEngine(new_build, cache_size=COHORT_CACHE, profile=profile))
    else:
        (ob, a), (nb, b) = _side(old, rules), _side(new, rules)
        if a.id != b.id:
            raise UsageError(f"nbrules diff: '{old}' is decision {a.id} and '{new}' is decision "
                             f"{b.id}; diff compares two versions of one decision")
        _profile(ob, profile)
        _profile(nb, profile)
        pairs = [(ob.profiled(a, profile), nb.profiled(b, profile))]
        engines = (lambda: RuleEngine(ob, use=[a.key], cache_size=COHORT_CACHE, profile=profile),
                   lambda: RuleEngine(nb, use=[b.key], cache_size=COHORT_CACHE, profile=profile))
    report = DiffReport([diff_decisions(x, y) if x is not None and y is not None else DecisionDiff(x, y)
                         for x, y in pairs])
    if cohort:
        fmt = cohort_format or ("jsonl" if cohort == "-" else _cohort_format(cohort))
        old_engine, new_engine = engines[0](), engines[1]()
        # every output, downstream decisions included: a new stage can change the risk groups
        outputs = list(dict.fromkeys(o for e in (old_engine, new_engine) for d in e.decisions for o in d.decides))
        try:
            with _open_input(cohort) as stream:
                report.cohort = diff_cohort(old_engine, new_engine,
                                            read_rows(stream, fmt, id_column, new_engine.build.package.facts),
                                            outputs)
        except CohortFormatError as exc:
            raise UsageError(str(exc)) from exc
        finally:
            old_engine.close()
            new_engine.close()
    return report


# -- evaluate ------------------------------------------------------------------------------


def open_engine(rules: str | Path | None = None, use: Sequence[str] = (), cache_size: int | None = None,
                decisions: Sequence[str] | None = None, as_of: datetime.date | None = None,
                profile: str | None = None, store: BuildStore | None = None) -> RuleEngine:
    """A :class:`~nbrules.runtime.RuleEngine` over ``rules`` (a directory, remembered for
    reload/watch; the bundled rules for None), after checking what the engine would
    otherwise refuse later or less clearly: RulesHaveErrors; UsageError for a missing
    directory, ``decisions`` naming a decision not in force, an unknown profile.
    ``cache_size`` None is the engine's default.  ``store``: the on-disk cache the build
    and the governance verdicts are read from and kept in (also on reload)."""
    from .resources import bundled_rules_dir
    from .runtime import DEFAULT_CACHE_SIZE, RuleEngine, select_versions

    build = _checked(_directory(rules, store, verdicts=True))
    cache = DEFAULT_CACHE_SIZE if cache_size is None else cache_size
    chosen = tuple(decisions) if decisions is not None else None
    if chosen is not None:
        in_force = [d.id for d in select_versions(build.decisions, use)[0]]
        unknown = [i for i in chosen if i not in in_force]
        if unknown:
            raise UsageError(f"--decisions: no decision {', '.join(repr(i) for i in unknown)} in force; "
                             f"in force: {', '.join(in_force)}")
    _profile(build, profile)
    # the engine starts from the build checked above (not building it again), and
    # remembers where it came from for reload/watch
    root = Path(rules) if rules else bundled_rules_dir()
    origin = ((lambda: build_bundled(store, True)) if not rules
              else (lambda: build_directory(root, store=store, verdicts=True)))
    return RuleEngine(build, use=use, cache_size=cache, origin=origin, directory=root, decisions=chosen,
                      as_of=as_of, profile=profile)


class GuardedStream:
    """A text stream whose write errors become :class:`~nbrules.errors.UsageError`
    naming the output (``nbrules: cannot write NAME: why``, exit 4 in the CLI); a closed
    pipe stays a ``BrokenPipeError``.  Other attributes are the stream's."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self._stream = stream
        self._name = name

    def _failed(self, exc: OSError) -> UsageError:
        return UsageError(f"nbrules: cannot write {self._name}: {exc.strerror or exc}")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from exc

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError as exc:
            raise self._failed(exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _writes_over_input(source: str, bulk: bool, out: str) -> bool:
    """Whether writing ``out`` (or ``out.partial``) would replace the input: the cohort
    file itself, or, for a FHIR Bulk Data export, an .ndjson file inside its directory
    (existing or not: the next read of the export would take the results for resources)."""
    if source == "-":
        return False
    for path in (out, f"{out}.partial"):
        if bulk:
            if Path(path).name.lower().endswith(".ndjson") and Path(path).resolve().parent == Path(source).resolve():
                return True
        elif os.path.exists(path) and os.path.samefile(source, path):
            return True
    return False


def evaluate_batch(source: str, out: str | IO[str], input_format: str | None = None, *,
                   rules: str | None = None, use: Sequence[str] = (), decisions: Sequence[str] | None = None,
                   as_of: datetime.date | None = None, profile: str | None = None, cache_size: int | None = None,
                   workers: int = 1, id_column: str = "id", max_row: int | None = None,
                   progress: IO[str] | None = None, store: BuildStore | None = None) -> BatchSummary:
    """Evaluate every row of ``source`` and write one JSON line per row, in input order.

    ``source``: a JSONL or CSV file (format from its name unless ``input_format``), ``-``
    for standard input (JSONL unless ``input_format`` is ``csv``), or a FHIR Bulk Data
    export directory (``fhir-ndjson``).  ``out``: a stream, or a path written as
    ``OUT.partial`` and renamed to ``OUT`` only when every row is written (a run that
    fails leaves ``OUT.partial``, never a truncated ``OUT``).  One evaluation date (today
    unless ``as_of``) for the whole run, in every worker.  ``max_row``: the largest row
    in bytes (default 1 MiB).  Returns the counts by status.  RulesHaveErrors;
    UsageError: an unreadable source or format, an output that cannot be written.
    """
    from .batch import EngineSpec, run_batch
    from .cohort import CohortFormatError
    from .patient import DEFAULT_MAX_INPUT
    from .runtime import DEFAULT_CACHE_SIZE

    bulk = source != "-" and Path(source).is_dir()  # a FHIR Bulk Data export (NDJSON per resource type)
    fmt = input_format or ("fhir-ndjson" if bulk else "jsonl" if source == "-" else _cohort_format(source))
    if (fmt == "fhir-ndjson") != bulk:
        raise UsageError(f"nbrules evaluate: --batch {source}: a FHIR Bulk Data export is a directory of "
                         ".ndjson files; a cohort is a JSONL or CSV file")
    if source != "-" and not bulk and not Path(source).is_file():
        raise UsageError(f"nbrules evaluate: --batch {source}: cannot read it: no such file")
    if bulk:
        from .fhir_bulk import bulk_files

        try:
            found = bulk_files(Path(source))
        except OSError as exc:
            raise UsageError(f"nbrules evaluate: --batch {source}: cannot read the directory: "
                             f"{exc.strerror or exc}") from exc
        if not found:
            raise UsageError(f"nbrules evaluate: --batch {source}: a FHIR Bulk Data export holds .ndjson files; "
                             "this directory holds none")
    chosen = tuple(decisions) if decisions is not None else None
    cache = DEFAULT_CACHE_SIZE if cache_size is None else cache_size
    # the rules are checked here, once, before any worker starts
    engine = open_engine(rules, use, cache, chosen, as_of or datetime.date.today(), profile, store)
    spec = EngineSpec(rules=rules, use=tuple(use), cache_size=cache, decisions=chosen, as_of=engine.as_of,
                      profile=profile)
    partial = f"{out}.partial" if isinstance(out, str) else None
    if isinstance(out, str) and (os.path.islink(out) or (os.path.lexists(out) and not os.path.isfile(out))):
        engine.close()  # the rename would replace a device, FIFO or symlink with a regular file
        raise UsageError(f"nbrules evaluate: --out {out}: it exists and is not a regular file; "
                         "give the path of a regular file (or - for standard output)")
    if isinstance(out, str) and _writes_over_input(source, bulk, out):
        engine.close()  # writing would replace the cohort (or a file of the export) with results
        raise UsageError(f"nbrules evaluate: --out {out}: it is the input (--batch {source}); "
                         "give another path for the results")
    stream: Any = out
    done = False
    try:
        if partial is not None:
            try:
                stream = GuardedStream(open(partial, "w", encoding="utf-8"), f"'{partial}'")
            except OSError as exc:
                raise UsageError(f"cannot write '{partial}': {exc.strerror or exc}") from exc
        summary = run_batch(source, stream, fmt, spec, workers=workers, id_column=id_column, progress=progress,
                            engine=engine, max_row=DEFAULT_MAX_INPUT if max_row is None else max_row)
        done = True
    except CohortFormatError as exc:  # found before any row: no OUT.partial is left
        if partial is not None and stream is not out:
            stream.close()
            os.remove(partial)
            stream = out
        raise UsageError(f"nbrules evaluate: --batch {source}: {exc}") from exc
    finally:
        engine.close()
        if partial is not None and stream is not out:
            try:
                stream.close()
            except UsageError:  # the last buffered rows could not be written: OUT.partial stays
                if done:
                    raise
            if done:
                os.replace(partial, str(out))
    return summary


# -- schema --------------------------------------------------------------------------------


def patient_schema_of(rules: str | Path | None = None) -> dict[str, Any]:
    """The JSON Schema of a patient record of ``rules`` (generated from its facts.yaml).
    RulesHaveErrors; UsageError: a missing directory."""
    from .vocabulary import patient_schema

    pkg = _checked(_directory(rules)).package
    return patient_schema(pkg.facts, package=f"{pkg.name} {pkg.version}" if pkg.name else "")

