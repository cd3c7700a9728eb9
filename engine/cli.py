"""The ``nbrules`` command line.  Thin: every verb calls the Python API.

Exit codes (also in the README):

====  =====================================================================
0     success; for validate/test/verify: no errors found
1     findings: validate/verify found errors, or a case failed
2     invalid patient input (one line per problem: pointer, expected, found)
3     invalid rule files, or a requested version cannot run
4     usage error, or a file that cannot be read
70    internal error (a defect in nbrules; please report it)
====  =====================================================================
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence, TextIO

from ._version import __version__
from .cases import run_cases
from .diagnostics import Diagnostic, format_diagnostic, sort_diagnostics
from .errors import NbrulesError, PatientInputError
from .explain import explain
from .pipeline import RuleSetBuild, build_bundled, build_directory
from .model import Decision
from .runtime import DEFAULT_CACHE_SIZE, RuleEngine, select_versions

__all__ = ["main", "EXIT_OK", "EXIT_FINDINGS", "EXIT_PATIENT", "EXIT_RULES", "EXIT_USAGE", "EXIT_INTERNAL"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_PATIENT = 2
EXIT_RULES = 3
EXIT_USAGE = 4
EXIT_INTERNAL = 70


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _rules_arg(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("dir", nargs="?", metavar="DIR", help="rules directory (default: the bundled rules)")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: the bundled rules)")


def _profile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", metavar="NAME",
                   help="read the parameters as profile NAME of the package's parameters.yaml says")


def _profile(args: argparse.Namespace, build: RuleSetBuild) -> dict[str, object]:
    """The readings of --profile (none when not given); a usage error when it is unknown."""
    name = getattr(args, "profile", None)
    try:
        return build.profile(name)
    except KeyError:
        raise _UsageError(f"no profile '{name}' in {build.label}; profiles: "
                          + (", ".join(build.profiles) or "none")) from None


def _build(args: argparse.Namespace) -> RuleSetBuild:
    path = getattr(args, "dir", None) or args.rules
    if path is None:
        return build_bundled()
    if not Path(path).is_dir():
        raise _UsageError(f"rules directory '{path}' does not exist")
    return build_directory(path)


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
    build = _build(args)
    if not build.ok:
        _print_diagnostics(build.diagnostics, sys.stderr)
        raise _RulesInvalid(build)
    use = getattr(args, "use", None) or ()
    cache = getattr(args, "cache_size", DEFAULT_CACHE_SIZE)
    path = getattr(args, "dir", None) or args.rules
    profile = getattr(args, "profile", None)
    _profile(args, build)
    if path is None:
        return RuleEngine.default(use=use, cache_size=cache, profile=profile)
    # remembers the directory for reload/watch
    return RuleEngine.from_directory(path, use=use, cache_size=cache, profile=profile)


class _RulesInvalid(Exception):
    def __init__(self, build: RuleSetBuild) -> None:
        super().__init__(build.label)
        self.build = build


# -- verbs -----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    build = _build(args)
    if args.format == "json":
        print(json.dumps([d.to_dict() for d in build.diagnostics], indent=2, ensure_ascii=False))
    else:
        _print_diagnostics(build.diagnostics, sys.stdout)
        clean = [d for d in build.decisions if build.file_ok(d.source.display)]
        print(f"{build.label}: {_plural(len(build.files), 'file')}, {_plural(len(clean), 'valid decision')}, "
              f"{_counts(build.diagnostics)}")
    failing = build.errors() or (args.strict and build.diagnostics)
    return EXIT_FINDINGS if failing else EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    build = _build(args)
    if not build.ok:
        _print_diagnostics(build.diagnostics, sys.stdout)
        print(f"{build.label}: cannot run cases, the rule files have errors ({_counts(build.diagnostics)})")
        return EXIT_RULES
    total = failed = 0
    readings = _profile(args, build)
    for decision in build.decisions:
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


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _UsageError(f"cannot read '{path}': {exc.strerror or exc}") from exc


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.batch:
        return _batch(args)
    if args.file is None:
        raise _UsageError("nbrules evaluate: give a patient file (or - for stdin), or --batch FILE")
    engine = _engine(args)
    data = _read_input(args.file)
    try:
        result = engine.evaluate_json(data)
    except PatientInputError as exc:
        for d in exc.diagnostics:
            hint = f" ({d.hint})" if d.hint else ""
            print(f"{d.pointer or '(record)'}: {d.code} [{d.name}] {d.message}{hint}", file=sys.stderr)
        return EXIT_PATIENT
    if args.format == "text":
        sys.stdout.write(explain(result, {d.id: d for d in engine.decisions}))
    else:
        sys.stdout.write(result.to_json() + "\n")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    import time

    from .verify import verify_decision

    build = _build(args)
    readings = _profile(args, build)
    if not build.ok:
        _print_diagnostics(build.diagnostics, sys.stdout)
    # Errors inside example cases do not stop the analysis of the rules themselves.
    broken = {d.path for d in build.errors() if not (d.pointer or "").startswith("/cases")}
    start = time.perf_counter()
    reports = []
    skipped = [d for d in build.decisions if d.source.display in broken]
    for d in skipped:
        print(f"{d.key}: not verified, {d.source.display} has errors")
    for d in build.decisions:
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
        print(f"{len(reports)} verification{'s' if len(reports) != 1 else ''}, {total} complete cells in "
              f"{time.perf_counter() - start:.2f} s: {'errors found' if failed else 'no gaps, overlaps or dead rules'}")
    if skipped and not reports:
        return EXIT_RULES
    return EXIT_FINDINGS if failed or not build.ok else EXIT_OK


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
    text = render_html(chosen) if args.format == "html" else render_markdown(chosen)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"cannot write '{args.out}': {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _resolve(ref: str, build: RuleSetBuild) -> "Decision":
    """decision@version, or the path of a rule file of the build."""
    if "@" in ref and not Path(ref).exists():
        match = [d for d in build.decisions if d.key == ref]
        if not match:
            raise _UsageError(f"'{ref}' is not installed; installed: " + ", ".join(d.key for d in build.decisions))
        return match[0]
    path = Path(ref).resolve()
    match = [d for d in build.decisions if d.source.path is not None and d.source.path.resolve() == path]
    if not match:
        raise _UsageError(f"'{ref}' is neither decision@version nor a rule file of {build.label}")
    return match[0]


def cmd_diff(args: argparse.Namespace) -> int:
    from .cohort import CohortFormatError, detect_format, read_rows
    from .diff import DecisionDiff, diff_cohort, diff_decisions

    old_dir, new_dir = Path(args.old), Path(args.new)
    pairs = []
    if old_dir.is_dir() and new_dir.is_dir():
        old_build, new_build = build_directory(old_dir), build_directory(new_dir)
        for one in (old_build, new_build):
            if not one.ok:
                _print_diagnostics(one.diagnostics, sys.stderr)
                raise _RulesInvalid(one)
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
        build = _build(args)
        if not build.ok:
            _print_diagnostics(build.diagnostics, sys.stderr)
            raise _RulesInvalid(build)
        _profile(args, build)
        old, new = _resolve(args.old, build), _resolve(args.new, build)
        pairs = [(build.profiled(old, args.profile), build.profiled(new, args.profile))]
        engines = (lambda: RuleEngine(build, use=[old.key], cache_size=_COHORT_CACHE, profile=args.profile),
                   lambda: RuleEngine(build, use=[new.key], cache_size=_COHORT_CACHE, profile=args.profile))
    diffs = [diff_decisions(a, b) if a is not None and b is not None else DecisionDiff(a, b) for a, b in pairs]
    cohort = None
    if args.cohort:
        fmt = args.input_format or _format_of(args.cohort, detect_format)
        old_engine, new_engine = engines[0](), engines[1]()
        # every output, downstream decisions included: a new stage can change the risk groups
        outputs = list(dict.fromkeys(o for e in (old_engine, new_engine) for d in e.decisions for o in d.decides))
        try:
            with _open_text(args.cohort) as stream:
                cohort = diff_cohort(old_engine, new_engine, read_rows(stream, fmt, args.id_column), outputs)
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


def _open_text(path: str) -> TextIO:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise _UsageError(f"cannot read '{path}': {exc.strerror or exc}") from exc


def _batch(args: argparse.Namespace) -> int:
    from .batch import EngineSpec, run_batch
    from .cohort import CohortFormatError, detect_format

    fmt = args.input_format or _format_of(args.batch, detect_format)
    if args.batch != "-" and not Path(args.batch).is_file():
        raise _UsageError(f"cannot read '{args.batch}': no such file")
    path = getattr(args, "dir", None) or args.rules
    spec = EngineSpec(rules=path, use=tuple(args.use or ()), cache_size=args.cache_size, profile=args.profile)
    engine = _engine(args)  # the rules are checked here, once, before any worker starts
    out: TextIO = sys.stdout
    try:
        if args.out not in (None, "-"):
            try:
                out = open(args.out, "w", encoding="utf-8")
            except OSError as exc:
                raise _UsageError(f"cannot write '{args.out}': {exc.strerror or exc}") from exc
        progress = sys.stderr if sys.stderr.isatty() and not args.quiet else None
        summary = run_batch(args.batch, out, fmt, spec, workers=args.workers, id_column=args.id_column,
                            progress=progress, engine=engine)
    except CohortFormatError as exc:
        raise _UsageError(str(exc)) from exc
    finally:
        engine.close()
        if out is not sys.stdout:
            out.close()
    if not args.quiet:
        print(summary.text(), file=sys.stderr)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .service import create_app
    except ImportError as exc:
        raise _UsageError(f"nbrules serve needs the 'serve' extra: pip install 'nbrules[serve]' ({exc.name} is missing)")
    from .fhir import load_mapping

    mapping = load_mapping(Path(args.fhir_mapping) if args.fhir_mapping else None)
    engine = _engine(args)
    if args.watch:
        def report(r: object) -> None:
            print(f"nbrules: {r.summary()}", file=sys.stderr)  # type: ignore[attr-defined]

        engine.watch(interval=args.watch, on_reload=report)
    app = create_app(engine, mapping=mapping, max_body=args.max_body, max_patients=args.max_patients)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    finally:
        engine.close()
    return EXIT_OK


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
    e.add_argument("--batch", metavar="IN", help="evaluate every row of a JSONL or CSV file (- for stdin)")
    e.add_argument("--out", metavar="OUT", help="batch: write JSON lines here (default: standard output)")
    e.add_argument("--workers", type=int, default=1, metavar="N", help="batch: worker processes (default 1)")
    e.add_argument("--input-format", choices=("jsonl", "csv"), help="batch: input format (default: from the name)")
    e.add_argument("--id-column", default="id", help="batch: name of the id column (default: id)")
    e.add_argument("--cache-size", type=int, default=DEFAULT_CACHE_SIZE, metavar="N",
                   help="batch: outcomes remembered per decision and cell (0: none; results are identical)")
    e.add_argument("-q", "--quiet", action="store_true", help="batch: no progress bar and no summary")
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
    df.add_argument("old", metavar="OLD", help="decision@version, a rule file, or a rules directory")
    df.add_argument("new", metavar="NEW", help="decision@version, a rule file, or a rules directory")
    _rules_arg(df)
    df.add_argument("--cohort", metavar="FILE", help="also run a cohort (JSONL or CSV with an id column; - for stdin)")
    df.add_argument("--input-format", choices=("jsonl", "csv"), help="cohort format (default: from the file name)")
    df.add_argument("--id-column", default="id", help="name of the id column (default: id)")
    df.add_argument("--format", choices=("text", "json"), default="text")
    _profile_arg(df)
    df.set_defaults(func=cmd_diff)

    sv = sub.add_parser("serve", help="run the HTTP service (evaluate, decisions, health, OpenAPI, CDS Hooks)")
    _rules_arg(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--use", action="append", metavar="DECISION@VERSION", help="pin a version (repeatable)")
    sv.add_argument("--watch", type=float, metavar="SECONDS", help="reload changed rule files, polling this often")
    sv.add_argument("--fhir-mapping", metavar="FILE",
                    help="CDS Hooks: map FHIR codes to facts with this file (default: the bundled mappings/fhir-r4.yaml)")
    sv.add_argument("--max-body", type=int, default=1_048_576, metavar="BYTES", help="largest request body")
    sv.add_argument("--max-patients", type=int, default=1000, metavar="N", help="largest list of patients")
    sv.add_argument("--cache-size", type=int, default=DEFAULT_CACHE_SIZE, metavar="N", help="outcomes remembered per decision")
    sv.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    _profile_arg(sv)
    sv.set_defaults(func=cmd_serve)

    c = sub.add_parser("codes", help="list every diagnostic code")
    c.set_defaults(func=cmd_codes)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the console script)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.func(args))
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except _RulesInvalid as exc:
        print(f"{exc.build.label}: the rule files have errors ({_counts(exc.build.diagnostics)}); "
              f"run 'nbrules validate' for details", file=sys.stderr)
        return EXIT_RULES
    except NbrulesError as exc:
        print(exc.report(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a defect: say so plainly; the traceback only on request
        if os.environ.get("NBRULES_DEBUG"):
            raise
        print(f"nbrules: internal error: {type(exc).__name__}: {exc}\n"
              f"This is a defect in nbrules; rerun with NBRULES_DEBUG=1 for the traceback.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
