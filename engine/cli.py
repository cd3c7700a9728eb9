"""The ``nbrules`` command line.  Thin: every verb calls the Python API.

Exit codes are named in :mod:`nbrules.errors` (``EXIT_CODES``, the README's table).
"""

from __future__ import annotations

import argparse
import datetime
import errno
import io
import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, NoReturn, Sequence, TextIO, cast

from ._version import __version__
from .diagnostics import Diagnostic, format_diagnostic, has_errors, sort_diagnostics
from .errors import (EXIT_FINDINGS, EXIT_INTERNAL, EXIT_LISTEN, EXIT_OK, EXIT_PATIENT, EXIT_RULES, EXIT_USAGE,
                     NbrulesError, PatientInputError)
from .pipeline import RuleSetBuild, build_bundled, build_directory, build_file
from .model import Decision
from .patient import DEFAULT_MAX_INPUT, escape_controls
from .resources import bundled_rules_dir
from .runtime import DEFAULT_CACHE_SIZE, RuleEngine, select_versions
from .store import open_store

if TYPE_CHECKING:  # pragma: no cover - imported by serve only (a one-shot evaluate does not need it)
    import socket

__all__ = ["main", "EXIT_OK", "EXIT_FINDINGS", "EXIT_PATIENT", "EXIT_RULES", "EXIT_USAGE", "EXIT_LISTEN",
           "EXIT_INTERNAL"]


class _UsageError(Exception):
    pass


class _ListenError(Exception):
    """``serve`` cannot listen on the address it was given (exit 5)."""


class _OutputError(Exception):
    """The output (standard output, or a file being written) cannot be written (exit 4)."""


class _Guarded:
    """A text stream whose write errors become :class:`_OutputError` naming the output
    (a closed pipe stays a ``BrokenPipeError``, ended quietly by :func:`main`)."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def _failed(self, exc: OSError) -> _OutputError:
        return _OutputError(f"nbrules: cannot write {self._name}: {exc.strerror or exc}")

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

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _rules_arg(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("dir", nargs="?", metavar="DIR|FILE",
                       help="a rules directory, or one rule file checked with the rules of --rules (default: all the "
                            "bundled rules)")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: the bundled rules)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="on-disk cache of checked rule files (default: $NBRULES_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/nbrules or ~/.cache/nbrules; NBRULES_CACHE=off turns it off)")


def _profile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", metavar="NAME",
                   help="read the parameters as profile NAME of the package's parameters.yaml says")


def _profile(args: argparse.Namespace, build: RuleSetBuild) -> dict[str, object]:
    """The readings of --profile (none when not given); a usage error when it is unknown."""
    name = getattr(args, "profile", None)
    try:
        return build.profile(name)
    except KeyError:
        raise _UsageError(f"NB545 [unknown-profile] no profile '{name}' in {build.label}; profiles: "
                          + (", ".join(build.profiles) or "none")) from None


def _build(args: argparse.Namespace, verdicts: bool = False) -> RuleSetBuild:
    path = getattr(args, "dir", None) or args.rules
    store = open_store(getattr(args, "cache_dir", None))
    if path is None:
        return build_bundled(store, verdicts)
    if not Path(path).is_dir():
        raise _UsageError(f"rules directory '{path}' does not exist")
    return build_directory(path, store=store, verdicts=verdicts)


def _target(args: argparse.Namespace) -> tuple[RuleSetBuild, str | None]:
    """The build a verb works on, and the display path of the one rule file it was given
    (None for a whole directory).  A file is checked together with the other rule files
    of ``--rules`` (default: the bundled ones), whose outputs it may read."""
    path = getattr(args, "dir", None)
    if path is None or not Path(path).is_file():
        return _build(args), None
    if args.rules is not None and not Path(args.rules).is_dir():
        raise _UsageError(f"rules directory '{args.rules}' does not exist")
    return build_file(path, args.rules)


def _of(diags: Sequence[Diagnostic], display: str | None) -> list[Diagnostic]:
    return list(diags) if display is None else [d for d in diags if d.path == display]


def _decisions_of(build: RuleSetBuild, display: str | None) -> list[Decision]:
    return [d for d in build.decisions if display is None or d.source.display == display]


def _decision_list(args: argparse.Namespace) -> tuple[str, ...] | None:
    """``--decisions a,b`` as a tuple of ids (None when not given)."""
    text = getattr(args, "decisions", None)
    if text is None:
        return None
    ids = tuple(i.strip() for i in text.split(","))
    if not all(ids):
        raise _UsageError(f"--decisions: expected decision ids separated by commas, found '{text}'")
    return ids


def _print_diagnostics(diags: Sequence[Diagnostic], stream: TextIO) -> None:
    for d in sort_diagnostics(diags):
        print(format_diagnostic(d), file=stream)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _counts(diags: Sequence[Diagnostic]) -> str:
    errors = sum(1 for d in diags if d.is_error)
    warnings = sum(1 for d in diags if d.severity and d.severity.value == "warning")
    return f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"


def _engine(args: argparse.Namespace) -> RuleEngine:
    build = _build(args, verdicts=True)
    if not build.ok:
        _print_diagnostics(build.diagnostics, sys.stderr)
        raise _RulesInvalid(build)
    use = getattr(args, "use", None) or ()
    cache = getattr(args, "cache_size", DEFAULT_CACHE_SIZE)
    chosen = _decision_list(args)
    if chosen is not None:
        in_force = [d.id for d in select_versions(build.decisions, use)[0]]
        unknown = [i for i in chosen if i not in in_force]
        if unknown:
            raise _UsageError(f"--decisions: no decision {', '.join(repr(i) for i in unknown)} in force; "
                              f"in force: {', '.join(in_force)}")
    as_of = getattr(args, "as_of", None)
    path = getattr(args, "dir", None) or args.rules
    profile = getattr(args, "profile", None)
    _profile(args, build)
    # the engine starts from the build checked above, and remembers where it came from for reload/watch
    store = open_store(getattr(args, "cache_dir", None))
    root = Path(path) if path is not None else bundled_rules_dir()
    origin = ((lambda: build_bundled(store, True)) if path is None
              else (lambda: build_directory(root, store=store, verdicts=True)))
    return RuleEngine(build, use=use, cache_size=cache, origin=origin, directory=root, decisions=chosen,
                      as_of=as_of, profile=profile)


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date (YYYY-MM-DD)") from None


_AS_OF_HELP = "choose the versions in force on this date, YYYY-MM-DD (default: today; recorded in the result)"


class _RulesInvalid(Exception):
    def __init__(self, build: RuleSetBuild) -> None:
        super().__init__(build.label)
        self.build = build


# -- verbs -----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from .governance import LOCK_FILE, LockFileError, lock_problems, read_lock, write_lock
    from .resources import bundled_rules_dir

    path = getattr(args, "dir", None) or args.rules
    if args.record and (path is None or Path(path).is_file()):
        raise _UsageError("nbrules validate --record: name the rules directory to record (DIR or --rules)")
    build, display = _target(args)
    root = Path(path) if path is not None and not Path(path).is_file() else bundled_rules_dir()
    try:
        recorded = read_lock(root)
    except LockFileError as exc:
        raise _UsageError(str(exc)) from exc
    diags = _of(sort_diagnostics([*build.diagnostics, *lock_problems(build.decisions, recorded)]), display)
    if args.format == "json":
        print(json.dumps([d.to_dict() for d in diags], indent=2, ensure_ascii=False))
    else:
        _print_diagnostics(diags, sys.stdout)
        clean = [d for d in _decisions_of(build, display) if build.file_ok(d.source.display)]
        files = len(build.files) if display is None else 1
        print(f"{display or build.label}: {_plural(files, 'file')}, {_plural(len(clean), 'valid decision')}, "
              f"{_counts(diags)}")
    failing = any(d.is_error for d in diags) or (args.strict and diags)
    if args.record:
        if build.errors():
            print("nbrules validate --record: nothing recorded, the rule files have errors", file=sys.stderr)
        else:
            n = write_lock(root, build.decisions, recorded)
            print(f"recorded the sha256 of {_plural(len(build.decisions), 'version')} in {root / LOCK_FILE} "
                  f"({n} in all)", file=sys.stderr)
    return EXIT_FINDINGS if failing else EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    from .cases import run_cases

    build, display = _target(args)
    if not build.ok:
        _print_diagnostics(_of(build.diagnostics, display) or build.diagnostics, sys.stdout)
        print(f"{display or build.label}: cannot run cases, the rule files have errors ({_counts(build.diagnostics)})")
        return EXIT_RULES
    total = failed = 0
    readings = _profile(args, build)
    for decision in _decisions_of(build, display):
        results = list(run_cases([decision], readings))
        bad = [r for r in results if not r.passed]
        total += len(results)
        failed += len(bad)
        status = "ok" if not bad else "FAILED"
        print(f"{decision.source.display}  {decision.key}  {_plural(len(results), 'case')}, "
              f"{len(results) - len(bad)} passed  {status}")
        for r in bad:
            print(format_diagnostic(r.diagnostic()))
            for line in r.failures:
                print(f"      {line}")
        if args.verbose:
            for r in results:
                if r.passed:
                    print(f"    ok  {r.case.name}")
    print(f"{_plural(total, 'case')}, {total - failed} passed, {failed} failed")
    return EXIT_FINDINGS if failed else EXIT_OK


def _read_input(path: str, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of the patient file (one more tells it is too large)."""
    if path == "-":
        return sys.stdin.buffer.read(limit + 1)
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except OSError as exc:
        raise _UsageError(f"cannot read '{path}': {exc.strerror or exc}") from exc


#: evaluate's options that apply only with --batch (argparse defaults are None: "not given").
_BATCH_ONLY = (("out", "--out"), ("workers", "--workers"), ("input_format", "--input-format"),
               ("id_column", "--id-column"), ("quiet", "--quiet"))


def _check_evaluate_options(args: argparse.Namespace) -> None:
    """Refuse options that do not apply, rather than ignore them."""
    if args.batch is None:
        given = [flag for name, flag in _BATCH_ONLY if getattr(args, name) is not None]
        if given:
            raise _UsageError(f"nbrules evaluate: {', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --batch")
        if args.file is None:
            raise _UsageError("nbrules evaluate: give a patient file (or - for stdin), or --batch FILE")
    else:
        if args.file is not None:
            raise _UsageError(f"nbrules evaluate: give a patient file or --batch, not both (found '{args.file}' "
                              f"and --batch {args.batch})")
        if args.format == "text":
            raise _UsageError("nbrules evaluate: --format text explains one patient; --batch writes JSON lines")
        if args.fhir:
            raise _UsageError("nbrules evaluate: --fhir reads one FHIR Bundle, not a --batch")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_evaluate_options(args)
    if args.batch:
        return _batch(args)
    engine = _engine(args)
    data = _read_input(args.file, args.max_input)
    try:
        if args.fhir:
            return _evaluate_fhir(engine, data, args)
        result = engine.evaluate_json(data, max_bytes=args.max_input)
    except PatientInputError as exc:
        for d in exc.diagnostics:
            hint = f" ({d.hint})" if d.hint else ""
            line = f"{d.pointer or '(record)'}: {d.code} [{d.name}] {d.message}{hint}"
            print(escape_controls(line), file=sys.stderr)
        return EXIT_PATIENT
    if args.format == "text":
        from .explain import explain

        sys.stdout.write(explain(result, {d.id: d for d in engine.decisions}, engine.build.vocabulary))
    else:
        sys.stdout.write(result.to_json() + "\n")
    return EXIT_OK


def _evaluate_fhir(engine: RuleEngine, data: bytes, args: argparse.Namespace) -> int:
    import datetime

    from .fhir import load_mapping
    from .fhir_out import evaluate_fhir_json

    if args.format == "text":
        raise _UsageError("nbrules evaluate: --fhir writes JSON (the result, what was read, and the FHIR resources)")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = evaluate_fhir_json(engine, data, load_mapping(facts=engine.build.package.facts,
                                                                 outputs=engine.build.vocabulary), now, args.max_input)
    sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    import time

    from .verify import verify_decision

    build, display = _target(args)
    readings = _profile(args, build)
    if not build.ok:
        _print_diagnostics(_of(build.diagnostics, display) or build.diagnostics, sys.stdout)
    # Errors inside example cases do not stop the analysis of the rules themselves.
    broken = {d.path for d in build.errors() if not (d.pointer or "").startswith("/cases")}
    start = time.perf_counter()
    reports = []
    targets = _decisions_of(build, display)
    skipped = [d for d in targets if d.source.display in broken]
    for d in skipped:
        print(f"{d.key}: not verified, {d.source.display} has errors")
    for d in targets:
        if d in skipped:
            continue
        base = {k: v for k, v in readings.items() if k in d.parameters}
        runs: list[tuple[str, dict[str, object] | None]] = [
            (f" with profile {args.profile}" if base else "", dict(readings) if base else None)]
        if args.all_parameters:
            runs += [(f" with {name} = {json.dumps(v)}", {**readings, name: v})
                     for name, p in d.parameters.items() for v, _ in p.alternatives if v != base.get(name)]
            runs += [(f" with profile {prof}", build.profile(prof)) for prof in build.profiles
                     if prof != args.profile and any(k in d.parameters for k in build.profile(prof))]
        for label, params in runs:
            report = verify_decision(d, params)
            reports.append((label, report))
    failed = False
    if args.format == "json":
        print(json.dumps([{"decision": r.decision.id, "version": r.decision.version, "parameters": label.strip(),
                           "complete_cells": r.known_cells, "cells": r.cells, "ok": r.ok,
                           "findings": r.findings} for label, r in reports], indent=2, ensure_ascii=False))
        failed = any(not r.ok for _, r in reports)
    else:
        for label, r in reports:
            shown = [d for d in r.diagnostics if args.verbose or d.severity.value != "info"]  # type: ignore[union-attr]
            _print_diagnostics(shown, sys.stdout)
            print(r.summary().replace(":", label + ":", 1))
            failed = failed or not r.ok
        total = sum(r.known_cells for _, r in reports)
        verdict = "errors found" if failed else "no gaps, overlaps or dead rules"
        if not reports and (skipped or not build.ok):  # never read as clean: nothing was verified
            verdict = "nothing verified, the rule files have errors"
        elif skipped:
            verdict += f"; {len(skipped)} decision{'s' if len(skipped) != 1 else ''} not verified, their files have errors"
        elif any(d.is_error for d in _of(build.diagnostics, display)):
            verdict += ", but the rule files have errors"
        print(f"{len(reports)} verification{'s' if len(reports) != 1 else ''}, {total} complete cells in "
              f"{time.perf_counter() - start:.2f} s: {verdict}")
    if skipped:
        return EXIT_RULES  # a decision could not be verified; the others were all the same
    return EXIT_FINDINGS if failed or any(d.is_error for d in _of(build.diagnostics, display)) else EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from .render import render_html, render_markdown

    build = _build(args)
    if not build.ok:
        _print_diagnostics(build.diagnostics, sys.stderr)
        raise _RulesInvalid(build)
    _profile(args, build)
    chosen = [build.profiled(d, args.profile) for d in build.decisions]
    if args.decision:
        chosen = [d for d in chosen if args.decision in (d.id, d.key)]
        if not chosen:
            raise _UsageError(f"no decision '{args.decision}'; installed: "
                              + ", ".join(d.key for d in build.decisions))
    text = (render_html(chosen, vocabulary=build.vocabulary) if args.format == "html"
            else render_markdown(chosen, vocabulary=build.vocabulary))
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"cannot write '{args.out}': {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _checked(build: RuleSetBuild) -> RuleSetBuild:
    if not build.ok:
        _print_diagnostics(build.diagnostics, sys.stderr)
        raise _RulesInvalid(build)
    return build


def _side(ref: str, args: argparse.Namespace) -> tuple[RuleSetBuild, Decision]:
    """One side of a diff: a rule file anywhere (checked with the rules of --rules), or
    decision@version installed in --rules."""
    if Path(ref).is_file():
        build, display = build_file(ref, args.rules)
        found = _decisions_of(_checked(build), display)
        if not found:
            raise _UsageError(f"'{ref}' defines no decision")
        return build, found[0]
    if "@" in ref:
        build = _checked(_build(args))
        match = [d for d in build.decisions if d.key == ref]
        if not match:
            raise _UsageError(f"'{ref}' is not installed; installed: " + ", ".join(d.key for d in build.decisions))
        return build, match[0]
    raise _UsageError(f"'{ref}' is neither decision@version, a rule file nor a rules directory")


def cmd_diff(args: argparse.Namespace) -> int:
    from .cohort import CohortFormatError, detect_format, read_rows
    from .diff import DecisionDiff, diff_cohort, diff_decisions

    if args.cohort is None:
        given = [flag for flag, v in (("--input-format", args.input_format), ("--id-column", args.id_column)) if v]
        if given:
            raise _UsageError(f"nbrules diff: {', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --cohort")
    old_dir, new_dir = Path(args.old), Path(args.new)
    pairs = []
    if old_dir.is_dir() != new_dir.is_dir():
        raise _UsageError("nbrules diff: compare two rules directories, or two versions of one decision "
                          f"(found '{args.old}' and '{args.new}')")
    if old_dir.is_dir() and new_dir.is_dir():
        old_build, new_build = _checked(build_directory(old_dir)), _checked(build_directory(new_dir))
        for one in (old_build, new_build):
            _profile(args, one)
        old_sel = [old_build.profiled(d, args.profile) for d in select_versions(old_build.decisions)[0]]
        new_sel = [new_build.profiled(d, args.profile) for d in select_versions(new_build.decisions)[0]]
        old_by = {d.id: d for d in old_sel}
        new_by = {d.id: d for d in new_sel}
        ids = list(old_by) + [i for i in new_by if i not in old_by]
        pairs = [(old_by.get(i), new_by.get(i)) for i in ids]
        engines = (lambda: RuleEngine(old_build, cache_size=_COHORT_CACHE, profile=args.profile),
                   lambda: RuleEngine(new_build, cache_size=_COHORT_CACHE, profile=args.profile))
    else:
        (ob, old), (nb, new) = _side(args.old, args), _side(args.new, args)
        if old.id != new.id:
            raise _UsageError(f"nbrules diff: '{args.old}' is decision {old.id} and '{args.new}' is decision "
                              f"{new.id}; diff compares two versions of one decision")
        _profile(args, ob)
        _profile(args, nb)
        pairs = [(ob.profiled(old, args.profile), nb.profiled(new, args.profile))]
        engines = (lambda: RuleEngine(ob, use=[old.key], cache_size=_COHORT_CACHE, profile=args.profile),
                   lambda: RuleEngine(nb, use=[new.key], cache_size=_COHORT_CACHE, profile=args.profile))
    diffs = [diff_decisions(a, b) if a is not None and b is not None else DecisionDiff(a, b) for a, b in pairs]
    cohort = None
    if args.cohort:
        fmt = args.input_format or ("jsonl" if args.cohort == "-" else _format_of(args.cohort, detect_format))
        old_engine, new_engine = engines[0](), engines[1]()
        # every output, downstream decisions included: a new stage can change the risk groups
        outputs = list(dict.fromkeys(o for e in (old_engine, new_engine) for d in e.decisions for o in d.decides))
        try:
            with _open_text(args.cohort) as stream:
                cohort = diff_cohort(old_engine, new_engine,
                                     read_rows(stream, fmt, args.id_column or "id", new_engine.build.package.facts),
                                     outputs)
        except CohortFormatError as exc:
            raise _UsageError(str(exc)) from exc
        finally:
            old_engine.close()
            new_engine.close()
    if args.format == "json":
        payload: dict[str, object] = {"decisions": [d.to_dict() for d in diffs]}
        if cohort is not None:
            payload["cohort"] = cohort.to_dict()
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(d.text() for d in diffs))
        if cohort is not None:
            print()
            print(cohort.text(args.cohort))
    if cohort is not None:
        cohort.close()
    return EXIT_OK


_COHORT_CACHE = 65536


def _format_of(path: str, detect: Callable[[str], str]) -> str:
    from .cohort import CohortFormatError

    try:
        return detect(path)
    except CohortFormatError as exc:
        raise _UsageError(str(exc)) from exc


def _open_text(path: str) -> IO[bytes]:
    """A cohort, opened in binary: rows are decoded one by one (a bad line costs that row)."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _UsageError(f"cannot read '{path}': {exc.strerror or exc}") from exc


def _batch(args: argparse.Namespace) -> int:
    from .batch import EngineSpec, run_batch
    from .cohort import CohortFormatError, detect_format

    # standard input has no name to tell the format by: JSONL unless --input-format says csv
    bulk = args.batch != "-" and Path(args.batch).is_dir()  # a FHIR Bulk Data export (NDJSON per resource type)
    fmt = args.input_format or ("fhir-ndjson" if bulk else "jsonl" if args.batch == "-"
                                else _format_of(args.batch, detect_format))
    if (fmt == "fhir-ndjson") != bulk:
        raise _UsageError(f"nbrules evaluate: --batch {args.batch}: a FHIR Bulk Data export is a directory of "
                          ".ndjson files; a cohort is a JSONL or CSV file")
    if args.batch != "-" and not bulk and not Path(args.batch).is_file():
        raise _UsageError(f"cannot read '{args.batch}': no such file")
    path = getattr(args, "dir", None) or args.rules
    # one evaluation date for the whole cohort, in every worker, even across midnight
    args.as_of = args.as_of or datetime.date.today()
    engine = _engine(args)  # the rules are checked here, once, before any worker starts
    spec = EngineSpec(rules=path, use=tuple(args.use or ()), cache_size=args.cache_size, decisions=_decision_list(args),
                      as_of=engine.as_of, profile=args.profile)
    out: TextIO = sys.stdout
    # A file is written as OUT.partial and renamed to OUT only when every row is written:
    # a run that is killed or fails leaves OUT.partial, never a truncated OUT.
    partial = f"{args.out}.partial" if args.out not in (None, "-") else None
    if partial is not None and (os.path.islink(args.out) or (os.path.lexists(args.out) and
                                                             not os.path.isfile(args.out))):
        # the rename would replace a device, FIFO or symlink with a regular file
        raise _UsageError(f"nbrules evaluate: --out {args.out}: it exists and is not a regular file; "
                          "give the path of a regular file (or - for standard output)")
    done = False
    try:
        if partial is not None:
            try:
                out = cast(TextIO, _Guarded(open(partial, "w", encoding="utf-8"), f"'{partial}'"))
            except OSError as exc:
                raise _UsageError(f"cannot write '{partial}': {exc.strerror or exc}") from exc
        progress = sys.stderr if sys.stderr.isatty() and not args.quiet else None
        summary = run_batch(args.batch, out, fmt, spec, workers=args.workers or 1, id_column=args.id_column or "id",
                            progress=progress, engine=engine, max_row=args.max_input)
        done = True
    except CohortFormatError as exc:
        raise _UsageError(str(exc)) from exc
    finally:
        engine.close()
        if out is not sys.stdout:
            try:
                out.close()
            except OSError as exc:  # the last buffered rows could not be written: OUT.partial stays
                if done:
                    raise _OutputError(f"nbrules: cannot write '{partial}': {exc.strerror or exc}") from exc
            if done and partial is not None:
                os.replace(partial, args.out)
    if not args.quiet:
        print(summary.text(), file=sys.stderr)
    return EXIT_OK


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before the server starts, so that a bad
    address is a usage error and a port in use is a one-line error, not a traceback."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise _UsageError(f"nbrules serve: --host {host}: cannot resolve it "
                          f"({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise _ListenError(f"nbrules serve: cannot listen on {host} port {port}: {why}") from exc


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .service import create_app, header_timeout_protocol
    except ImportError as exc:
        raise _UsageError(f"nbrules serve needs the 'serve' extra: pip install 'nbrules[serve]' ({exc.name} is missing)")
    from .fhir import load_mapping
    from .resources import bundled_rules_dir

    engine = _engine(args)
    try:
        mapping = load_mapping(Path(args.fhir_mapping) if args.fhir_mapping else None, engine.build.package.facts,
                               engine.build.vocabulary)
        sock = _listen(args.host, args.port)
    except BaseException:
        engine.close()
        raise
    if args.watch:
        def report(r: object) -> None:
            if r.ok:  # type: ignore[attr-defined]  # a refused reload is logged by the watcher, every problem
                print(f"nbrules: {r.summary()}", file=sys.stderr)  # type: ignore[attr-defined]

        engine.watch(interval=args.watch, on_reload=report)
    app = create_app(engine, mapping=mapping, max_body=args.max_body, max_patients=args.max_patients,
                     body_timeout=args.body_timeout)
    rules = args.rules or f"{bundled_rules_dir()} (bundled)"
    in_force = ", ".join(f"{d.id} {d.version}" for d in engine.decisions)
    watching = f"; reloading changed files every {args.watch:g} s" if args.watch else ""
    print(f"nbrules {__version__}: listening on {_url(sock)}; rules {rules}; in force on "
          f"{engine.as_of.isoformat()}: {in_force}{watching}", file=sys.stderr, flush=True)
    try:
        config = uvicorn.Config(app, log_level=args.log_level, access_log=False,
                                http=header_timeout_protocol(args.header_timeout))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        engine.close()
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from .editing import init_package

    dest = Path(args.dir)
    try:
        written = init_package(dest)
    except FileExistsError as exc:
        raise _UsageError(f"nbrules init: {exc}") from exc
    except OSError as exc:
        raise _UsageError(f"nbrules init: cannot write '{dest}': {exc.strerror or exc}") from exc
    print(f"{dest}: {_plural(len(written), 'file')} written (the bundled knowledge package, and its formats in "
          f"{dest / 'schemas'} for editor completion). Edit, then: nbrules validate {dest}; nbrules test {dest}; "
          f"nbrules verify {dest}. Guide: nbrules docs knowledge-package")
    return EXIT_OK


def cmd_docs(args: argparse.Namespace) -> int:
    from .editing import doc_pages, doc_text

    if not args.page:
        print("\n".join(doc_pages()))
        return EXIT_OK
    try:
        print(doc_text(args.page), end="")
    except KeyError:
        raise _UsageError(f"nbrules docs: no page '{args.page}' (pages: {', '.join(doc_pages())})") from None
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .editing import schema_names
    from .resources import schemas_dir
    from .vocabulary import patient_schema

    if args.name == "patient":
        build = _build(args)
        if not build.ok:
            _print_diagnostics(build.diagnostics, sys.stderr)
            raise _RulesInvalid(build)
        pkg = build.package
        schema = patient_schema(pkg.facts, package=f"{pkg.name} {pkg.version}" if pkg.name else "")
        print(json.dumps(schema, indent=2, ensure_ascii=False))
    elif args.name in schema_names():
        print((schemas_dir() / f"{args.name}.schema.json").read_text(encoding="utf-8"), end="")
    else:
        raise _UsageError(f"nbrules schema: no schema '{args.name}' (patient, {', '.join(schema_names())})")
    return EXIT_OK


#: the upper bounds of numeric options (a value past them is a usage error, not an overflow later)
_MAX_COUNT = 2 ** 31  # bytes, rows, cache entries
_MAX_WORKERS = (os.cpu_count() or 16) * 4
_MAX_SECONDS = 86_400.0  # a day: polling intervals and timeouts


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range ({low} to {high})" if high is not None else f"{value} is below {low}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    if value > _MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} is out of range (more than 0, at most {_MAX_SECONDS:g} seconds)")
    return value


def cmd_codes(args: argparse.Namespace) -> int:
    from .diagnostics import CODES

    for c in CODES.values():
        print(f"{c.code}  {c.severity.value:<7}  {c.name:<24}  {c.summary}")
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------


def _parser() -> _Parser:
    p = _Parser(prog="nbrules", description="Neuroblastoma staging and risk classification from cited rule files.")
    p.add_argument("--version", action="version", version=f"nbrules {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    v = sub.add_parser("validate", help="load, validate and check rule files; report every problem")
    _rules_arg(v, positional=True)
    v.add_argument("--format", choices=("text", "json"), default="text")
    v.add_argument("--strict", action="store_true", help="fail on warnings too")
    v.add_argument("--record", action="store_true",
                   help="record the sha256 of every decision@version in DIR/versions.lock; later runs report a file "
                        "changed without raising its version (NB812)")
    v.set_defaults(func=cmd_validate)

    t = sub.add_parser("test", help="run the example cases of every rule file")
    _rules_arg(t, positional=True)
    t.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    _profile_arg(t)
    t.set_defaults(func=cmd_test)

    e = sub.add_parser("evaluate", help="evaluate one patient (JSON file, or - for stdin), or a batch")
    e.add_argument("file", metavar="FILE|-", nargs="?")
    _rules_arg(e)
    e.add_argument("--format", choices=("json", "text"), default="json")
    e.add_argument("--use", action="append", metavar="DECISION@VERSION", help="pin a version (repeatable)")
    e.add_argument("--decisions", metavar="ID,ID",
                   help="run only these decisions (and those whose outputs they read); batch status is computed "
                        "over their outputs")
    e.add_argument("--max-input", type=_int_at_least(1, _MAX_COUNT), default=DEFAULT_MAX_INPUT, metavar="BYTES",
                   help="largest patient file, and largest batch row (default 1 MiB, as the HTTP body)")
    e.add_argument("--as-of", type=_date, metavar="DATE", help=_AS_OF_HELP)
    e.add_argument("--fhir", action="store_true",
                   help="FILE is a FHIR R4 Bundle: print the result, what was read, and a transaction Bundle "
                        "creating the results as FHIR (mappings/fhir-r4.yaml)")
    e.add_argument("--batch", metavar="IN", help="evaluate every row of a JSONL or CSV file (- for stdin, JSONL "
                                                 "unless --input-format csv)")
    e.add_argument("--out", metavar="OUT", help="batch: write JSON lines here (default: standard output)")
    e.add_argument("--workers", type=_int_at_least(1, _MAX_WORKERS), metavar="N", help="batch: worker processes (default 1)")
    e.add_argument("--input-format", choices=("jsonl", "csv", "fhir-ndjson"),
                   help="batch: input format (default: from the name; jsonl for -; fhir-ndjson for a directory, "
                        "a FHIR Bulk Data export)")
    e.add_argument("--id-column", help="batch: name of the id column (default: id)")
    e.add_argument("--cache-size", type=_int_at_least(0, _MAX_COUNT), default=DEFAULT_CACHE_SIZE, metavar="N",
                   help="outcomes remembered per decision and cell (0: none; results are identical)")
    e.add_argument("-q", "--quiet", action="store_true", default=None, help="batch: no progress bar and no summary")
    _profile_arg(e)
    e.set_defaults(func=cmd_evaluate)

    vf = sub.add_parser("verify", help="check every decision over its whole input domain: gaps, overlaps, dead rules")
    _rules_arg(vf, positional=True)
    vf.add_argument("--all-parameters", action="store_true",
                    help="also verify under each documented alternative value of each parameter, and each profile")
    _profile_arg(vf)
    vf.add_argument("--format", choices=("text", "json"), default="text")
    vf.add_argument("-v", "--verbose", action="store_true", help="show information findings (declared gaps) too")
    vf.set_defaults(func=cmd_verify)

    r = sub.add_parser("render", help="write decisions as tables for clinical review")
    r.add_argument("decision", nargs="?", metavar="DECISION", help="decision id or id@version (default: all)")
    _rules_arg(r)
    r.add_argument("--format", choices=("html", "md"), default="md")
    r.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    _profile_arg(r)
    r.set_defaults(func=cmd_render)

    df = sub.add_parser("diff", help="what changes between two versions of a decision, or two rules directories")
    df.add_argument("old", metavar="OLD", help="decision@version, a rule file (anywhere), or a rules directory")
    df.add_argument("new", metavar="NEW", help="decision@version, a rule file (anywhere), or a rules directory")
    _rules_arg(df)
    df.add_argument("--cohort", metavar="FILE", help="also run a cohort (JSONL or CSV with an id column; - for stdin)")
    df.add_argument("--input-format", choices=("jsonl", "csv"),
                    help="cohort format (default: from the file name; jsonl for -)")
    df.add_argument("--id-column", help="cohort: name of the id column (default: id)")
    df.add_argument("--format", choices=("text", "json"), default="text")
    _profile_arg(df)
    df.set_defaults(func=cmd_diff)

    sv = sub.add_parser("serve", help="run the HTTP service (evaluate, decisions, health, OpenAPI, CDS Hooks)")
    _rules_arg(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=_int_at_least(0, 65535), default=8000,
                    help="port to listen on (default 8000; 0: any free port, shown on the start line)")
    sv.add_argument("--use", action="append", metavar="DECISION@VERSION", help="pin a version (repeatable)")
    sv.add_argument("--as-of", type=_date, metavar="DATE",
                    help="choose the versions in force on this date, YYYY-MM-DD (default: today, following the clock)")
    sv.add_argument("--watch", type=_seconds, metavar="SECONDS", help="reload changed rule files, polling this often")
    sv.add_argument("--fhir-mapping", metavar="FILE",
                    help="CDS Hooks: map FHIR codes to facts with this file (default: the bundled mappings/fhir-r4.yaml)")
    sv.add_argument("--max-body", type=_int_at_least(1, _MAX_COUNT), default=1_048_576, metavar="BYTES",
                    help="largest request body")
    sv.add_argument("--max-patients", type=_int_at_least(1, _MAX_COUNT), default=1000, metavar="N",
                    help="largest list of patients")
    sv.add_argument("--header-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                    help="close a connection whose request headers take longer (default 10)")
    sv.add_argument("--body-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                    help="answer 408 when a request body takes longer (default 30)")
    sv.add_argument("--cache-size", type=_int_at_least(0, _MAX_COUNT), default=DEFAULT_CACHE_SIZE, metavar="N",
                    help="outcomes remembered per decision")
    sv.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    _profile_arg(sv)
    sv.set_defaults(func=cmd_serve)

    ini = sub.add_parser("init", help="write an editable copy of the bundled knowledge package into DIR")
    ini.add_argument("dir", metavar="DIR")
    ini.set_defaults(func=cmd_init)

    dc = sub.add_parser("docs", help="print an editing guide (rule-files, knowledge-package, diagnostics...)")
    dc.add_argument("page", nargs="?", metavar="PAGE", help="page name (default: list the pages)")
    dc.set_defaults(func=cmd_docs)

    sc = sub.add_parser("schema", help="print a JSON Schema: patient (generated from facts.yaml), ruleset, facts...")
    sc.add_argument("name", metavar="NAME", help="patient, or a file format: ruleset, package, facts, fhir-mapping")
    _rules_arg(sc)
    sc.set_defaults(func=cmd_schema)

    c = sub.add_parser("codes", help="list every diagnostic code")
    c.set_defaults(func=cmd_codes)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the console script)."""
    parser = _parser()
    stdout = sys.stdout
    sys.stdout = cast(TextIO, _Guarded(stdout, "standard output"))
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit, so that a write error is reported
        return code
    except _OutputError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, but not as a success
        _quiet_stdout(stdout)
        return EXIT_USAGE
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except _ListenError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_LISTEN
    except _RulesInvalid as exc:
        print(f"{exc.build.label}: the rule files have errors ({_counts(exc.build.diagnostics)}); "
              f"run 'nbrules validate' for details", file=sys.stderr)
        return EXIT_RULES
    except NbrulesError as exc:
        print(exc.report(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a defect: say so plainly; the traceback only on request
        if os.environ.get("NBRULES_DEBUG"):
            raise
        print(f"nbrules: internal error: {type(exc).__name__}: {exc}\n"
              f"This is a defect in nbrules; rerun with NBRULES_DEBUG=1 for the traceback.", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        sys.stdout = stdout


def _quiet_stdout(stdout: TextIO) -> None:
    """Point standard output's descriptor at the null device, so that the interpreter's
    flush at exit does not fail again on the closed pipe (Python's documented remedy)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (e.g. captured): nothing to flush at exit
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
