"""The ``nbrules`` command line.  Thin: every verb calls the Python API.

Exit codes are named in :mod:`nbrules.errors` (``EXIT_CODES``, the README's table).
"""

from __future__ import annotations

import argparse
import datetime
import errno
import gc
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence, TextIO, cast

from ._version import __version__
from .commands import (GuardedStream, RulesHaveErrors, diff_rules, evaluate_batch, open_engine, patient_schema_of,
                       render_rules, run_rule_cases, validate_rules, verify_rules)
from .diagnostics import Diagnostic, Severity, count_summary, did_you_mean, format_diagnostic, sort_diagnostics
from .errors import (EXIT_FINDINGS, EXIT_INTERNAL, EXIT_LISTEN, EXIT_OK, EXIT_PATIENT, EXIT_RULES, EXIT_USAGE,
                     NbrulesError, PatientInputError)
from .patient import DEFAULT_MAX_INPUT, escape_controls
from .runtime import DEFAULT_CACHE_SIZE, RuleEngine
from .store import BuildStore, open_store

if TYPE_CHECKING:  # pragma: no cover - imported by serve only (a one-shot evaluate does not need it)
    import socket

__all__ = ["main", "EXIT_OK", "EXIT_FINDINGS", "EXIT_PATIENT", "EXIT_RULES", "EXIT_USAGE", "EXIT_LISTEN",
           "EXIT_INTERNAL"]


class _UsageError(Exception):
    pass


class _ListenError(Exception):
    """``serve`` cannot listen on the address it was given (exit 5)."""


class _Parser(argparse.ArgumentParser):
    #: The verbs whose parsers were built (set by :func:`_parser` on the top parser).
    verbs: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


class _Unbuilt(_Parser):
    """Stands in for the parser of a verb this process does not run: its arguments are
    not added (building the parser of every verb took ~7 ms of a one-shot command)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        return None


def _rules_arg(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("dir", nargs="?", metavar="DIR|FILE",
                       help="a rules directory, or one rule file checked with the rules of --rules (default: all the "
                            "bundled rules)")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: the bundled rules)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="on-disk cache of checked rule files (default: $NBRULES_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/nbrules or ~/.cache/nbrules; NBRULES_CACHE=off turns it off)")


def _store(args: argparse.Namespace) -> BuildStore | None:
    """The on-disk cache of checked packages (:mod:`nbrules.store`) of ``--cache-dir``."""
    return open_store(getattr(args, "cache_dir", None))


def _profile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", metavar="NAME",
                   help="use the parameter values of profile NAME, declared in the package's parameters.yaml")



def _rules_of(args: argparse.Namespace) -> str | None:
    """The rules directory a verb works on: DIR (or FILE) when given, else --rules."""
    path: str | None = getattr(args, "dir", None) or args.rules
    return path


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


def _engine(args: argparse.Namespace) -> RuleEngine:
    return open_engine(_rules_of(args), use=getattr(args, "use", None) or (),
                       cache_size=getattr(args, "cache_size", DEFAULT_CACHE_SIZE), decisions=_decision_list(args),
                       as_of=getattr(args, "as_of", None), profile=getattr(args, "profile", None),
                       store=_store(args))


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date (YYYY-MM-DD)") from None


_AS_OF_HELP = "choose the versions in force on this date, YYYY-MM-DD (default: today; recorded in the result)"


# -- verbs: each calls a function of nbrules.commands, prints what it returns ---------------


def cmd_validate(args: argparse.Namespace) -> int:
    report = validate_rules(args.dir, args.rules, record=args.record, store=_store(args))
    if args.format == "json":
        print(json.dumps([d.to_dict() for d in report.diagnostics], indent=2, ensure_ascii=False))
    else:
        _print_diagnostics(report.diagnostics, sys.stdout)
        print(report.summary())
    if report.record_refused:
        print("nbrules validate --record: nothing recorded, the rule files have errors", file=sys.stderr)
    elif report.recorded is not None:
        versions, total, lock = report.recorded
        print(f"recorded the sha256 of {_plural(versions, 'version')} in {lock} ({total} in all)", file=sys.stderr)
    return EXIT_FINDINGS if report.failing(args.strict) else EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    report = run_rule_cases(args.dir, args.rules, args.profile, store=_store(args))
    if not report.runnable:
        _print_diagnostics(report.diagnostics, sys.stdout)
        print(f"{report.label}: cannot run cases, the rule files have errors "
              f"({count_summary(report.build_diagnostics)})")
        return EXIT_RULES
    for one in report.decisions:
        results, bad = one.results, one.failed
        status = "ok" if not bad else "FAILED"
        print(f"{one.decision.source.display}  {one.decision.key}  {_plural(len(results), 'case')}, "
              f"{len(results) - len(bad)} passed  {status}")
        for r in bad:
            print(format_diagnostic(r.diagnostic()))
            for line in r.failures:
                print(f"      {line}")
        if args.verbose:
            for r in results:
                if r.passed:
                    print(f"    ok  {r.case.name}")
    total, failed = report.total, report.failed
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
        if args.patient is not None and not args.fhir:
            raise _UsageError("nbrules evaluate: --patient applies only with --fhir (it picks a Patient of the Bundle)")
    else:
        if args.file is not None:
            raise _UsageError(f"nbrules evaluate: give a patient file or --batch, not both (found '{args.file}' "
                              f"and --batch {args.batch})")
        if args.format == "text":
            raise _UsageError("nbrules evaluate: --format text explains one patient; --batch writes JSON lines")
        if args.fhir:
            raise _UsageError("nbrules evaluate: --fhir reads one FHIR Bundle, not a --batch")
        if args.patient is not None:
            raise _UsageError("nbrules evaluate: --patient applies only with --fhir, not with --batch "
                              "(a Bulk Data export gives one row per patient)")


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
            print(escape_controls(d.patient_line()), file=sys.stderr)
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
                                                                 outputs=engine.build.vocabulary), now, args.max_input,
                             patient=args.patient)
    sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    if out.get("problems"):  # part of a record (NB747): the result is printed, nothing is written back
        from .diagnostics import Diagnostic

        for p in out["problems"]:
            line = Diagnostic(code=p["code"], pointer=p["pointer"], message=p["message"], hint=p.get("hint")).patient_line()
            print(escape_controls(line), file=sys.stderr)
        return EXIT_PATIENT
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    report = verify_rules(args.dir, args.rules, args.profile, all_parameters=args.all_parameters, store=_store(args))
    if report.diagnostics:
        _print_diagnostics(report.diagnostics, sys.stdout)
    for d in report.skipped:
        print(f"{d.key}: not verified, {d.source.display} has errors")
    failed = report.failed
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        for label, r in report.runs:
            shown = [d for d in r.diagnostics if args.verbose or d.severity is not Severity.INFO]
            _print_diagnostics(shown, sys.stdout)
            print(r.summary().replace(":", label + ":", 1))
        runs, skipped = len(report.runs), len(report.skipped)
        verdict = "errors found" if failed else "no gaps, overlaps or dead rules"
        if not runs and (skipped or not report.built_ok):  # never read as clean: nothing was verified
            verdict = "nothing verified, the rule files have errors"
        elif skipped:
            verdict += f"; {skipped} decision{'s' if skipped != 1 else ''} not verified, their files have errors"
        elif report.rule_errors:
            verdict += ", but the rule files have errors"
        print(f"{runs} verification{'s' if runs != 1 else ''}, {report.complete_cells} complete cells in "
              f"{report.seconds:.2f} s: {verdict}")
    if report.skipped:
        return EXIT_RULES  # a decision could not be verified; the others were all the same
    return EXIT_FINDINGS if failed or report.rule_errors else EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    text = render_rules(args.rules, args.decision, args.format, args.profile)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"cannot write '{args.out}': {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    if args.cohort is None:
        given = [flag for flag, v in (("--input-format", args.input_format), ("--id-column", args.id_column)) if v]
        if given:
            raise _UsageError(f"nbrules diff: {', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --cohort")
    report = diff_rules(args.old, args.new, args.rules, args.profile, cohort=args.cohort,
                        cohort_format=args.input_format, id_column=args.id_column or "id")
    try:
        if args.format == "json":
            print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        else:
            print("\n\n".join(d.text() for d in report.decisions))
            if report.cohort is not None:
                print()
                print(report.cohort.text(args.cohort))
    finally:
        report.close()
    return EXIT_OK


def _batch(args: argparse.Namespace) -> int:
    progress = sys.stderr if sys.stderr.isatty() and not args.quiet else None
    summary = evaluate_batch(args.batch, sys.stdout if args.out in (None, "-") else args.out, args.input_format,
                             rules=args.rules, use=args.use or (), decisions=_decision_list(args), as_of=args.as_of,
                             profile=args.profile, cache_size=args.cache_size, workers=args.workers or 1,
                             id_column=args.id_column or "id", max_row=args.max_input, progress=progress,
                             store=_store(args))
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
    if args.fetch_timeout is not None and not args.fetch_from:
        raise _UsageError("nbrules serve: --fetch-timeout applies only with --fetch-from")
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
    limits = None
    if args.fetch_timeout is not None:
        from .fhir_fetch import FetchLimits

        limits = FetchLimits(seconds=args.fetch_timeout)
    app = create_app(engine, mapping=mapping, max_body=args.max_body, max_patients=args.max_patients,
                     body_timeout=args.body_timeout, fetch_from=args.fetch_from or (), fetch_limits=limits)
    rules = args.rules or f"{bundled_rules_dir()} (bundled)"
    in_force = ", ".join(f"{d.id} {d.version}" for d in engine.decisions)
    watching = f"; reloading changed files every {args.watch:g} s" if args.watch else ""
    if args.fetch_from:
        watching += f"; fetching what CDS prefetch lacks from {', '.join(args.fetch_from)}"
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

    if args.name == "patient":
        print(json.dumps(patient_schema_of(args.rules), indent=2, ensure_ascii=False))
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


def _fetch_prefix(text: str) -> str:
    try:
        from .fhir_fetch import prefix_problem
    except ImportError:  # without httpx: serve reports the missing extra
        return text
    why = prefix_problem(text)
    if why is not None:
        raise argparse.ArgumentTypeError(f"'{text}': {why}")
    return text


def cmd_codes(args: argparse.Namespace) -> int:
    from .diagnostics import CODES

    for c in CODES.values():
        print(f"{c.code}  {c.severity.value:<7}  {c.name:<24}  {c.summary}")
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------


def _parser(only: str | None = None) -> _Parser:
    """The CLI's parser; with ``only``, a verb given first on the command line, the
    parser of that verb alone (the whole parser when no verb has that name)."""
    p = _Parser(prog="nbrules", description="Neuroblastoma staging and risk classification from cited rule files.")
    p.add_argument("--version", action="version", version=f"nbrules {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    built: list[str] = []

    def verb(name: str, **kwargs: Any) -> _Parser:
        if only is not None and name != only:
            return _Unbuilt(add_help=False)
        built.append(name)
        return sub.add_parser(name, **kwargs)

    v = verb("validate", help="load, validate and check rule files; report every problem")
    _rules_arg(v, positional=True)
    v.add_argument("--format", choices=("text", "json"), default="text")
    v.add_argument("--strict", action="store_true", help="fail on warnings too")
    v.add_argument("--record", action="store_true",
                   help="record the sha256 of every decision@version in DIR/versions.lock; later runs report a file "
                        "changed without raising its version (NB812)")
    v.set_defaults(func=cmd_validate)

    t = verb("test", help="run the example cases of every rule file")
    _rules_arg(t, positional=True)
    t.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    _profile_arg(t)
    t.set_defaults(func=cmd_test)

    e = verb("evaluate", help="evaluate one patient (JSON file, or - for stdin), or a batch")
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
    e.add_argument("--patient", metavar="ID",
                   help="--fhir: evaluate the Patient with this id, when the Bundle holds several")
    e.add_argument("--batch", metavar="IN", help="evaluate every row of a JSONL or CSV file (- for stdin, JSONL "
                                                 "unless --input-format csv)")
    e.add_argument("--out", metavar="OUT", help="batch: write JSON lines here (default: standard output)")
    e.add_argument("--workers", type=_int_at_least(1, _MAX_WORKERS), metavar="N", help="batch: processes that evaluate, this one included (default 1; at most 4 per core)")
    e.add_argument("--input-format", choices=("jsonl", "csv", "fhir-ndjson"),
                   help="batch: input format (default: from the name; jsonl for -; fhir-ndjson for a directory, "
                        "a FHIR Bulk Data export)")
    e.add_argument("--id-column", help="batch: name of the id column (default: id)")
    e.add_argument("--cache-size", type=_int_at_least(0, _MAX_COUNT), default=DEFAULT_CACHE_SIZE, metavar="N",
                   help="outcomes remembered per decision and cell (0: none; results are identical)")
    e.add_argument("-q", "--quiet", action="store_true", default=None, help="batch: no progress bar and no summary")
    _profile_arg(e)
    e.set_defaults(func=cmd_evaluate)

    vf = verb("verify", help="check every decision over its whole input domain: gaps, overlaps, dead rules")
    _rules_arg(vf, positional=True)
    vf.add_argument("--all-parameters", action="store_true",
                    help="also verify under each documented alternative value of each parameter, and each profile")
    _profile_arg(vf)
    vf.add_argument("--format", choices=("text", "json"), default="text")
    vf.add_argument("-v", "--verbose", action="store_true", help="show information findings (declared gaps) too")
    vf.set_defaults(func=cmd_verify)

    r = verb("render", help="write decisions as tables for clinical review")
    r.add_argument("decision", nargs="?", metavar="DECISION", help="decision id or id@version (default: all)")
    _rules_arg(r)
    r.add_argument("--format", choices=("html", "md"), default="md")
    r.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    _profile_arg(r)
    r.set_defaults(func=cmd_render)

    df = verb("diff", help="what changes between two versions of a decision, or two rules directories")
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

    sv = verb("serve", help="run the HTTP service (evaluate, decisions, health, OpenAPI, CDS Hooks)")
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
    sv.add_argument("--fetch-from", action="append", type=_fetch_prefix, metavar="PREFIX",
                    help="CDS Hooks: fetch what a request's prefetch lacks from its fhirServer when it lies under this "
                         "base URL, e.g. https://ehr.example.org/fhir/ (repeatable; default: never fetch)")
    sv.add_argument("--fetch-timeout", type=_seconds, metavar="SECONDS",
                    help="CDS Hooks: wall time for all the fetches of one request (default 20)")
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

    ini = verb("init", help="write an editable copy of the bundled knowledge package into DIR")
    ini.add_argument("dir", metavar="DIR")
    ini.set_defaults(func=cmd_init)

    dc = verb("docs", help="print an editing guide (rule-files, knowledge-package, diagnostics...)")
    dc.add_argument("page", nargs="?", metavar="PAGE", help="page name (default: list the pages)")
    dc.set_defaults(func=cmd_docs)

    sc = verb("schema", help="print a JSON Schema: patient (generated from facts.yaml), ruleset, facts...")
    sc.add_argument("name", metavar="NAME", help="patient, or a file format: ruleset, package, facts, fhir-mapping")
    _rules_arg(sc)
    sc.set_defaults(func=cmd_schema)

    c = verb("codes", help="list every diagnostic code")
    c.set_defaults(func=cmd_codes)
    if only is not None and not built:
        return _parser()
    p.verbs = tuple(built)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the console script)."""
    given = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(given[0] if given and not given[0].startswith("-") else None)
    if argv is None:
        # run as the program: the modules and the parser live as long as the process, so
        # the cyclic collector need not walk them again (about 10 ms of a one-shot evaluate)
        gc.freeze()
    stdout = sys.stdout
    sys.stdout = cast(TextIO, GuardedStream(stdout, "standard output"))
    try:
        if given and given[0].startswith("-") and given[0] not in ("-h", "--help", "--version"):
            # argparse would take the option's value for the verb ("invalid choice: 'rules'")
            raise _UsageError(f"nbrules: {given[0]}: options go after the command (nbrules COMMAND [options]); "
                              "see nbrules -h")
        if given and not given[0].startswith("-") and given[0] not in parser.verbs:
            close = did_you_mean(given[0], parser.verbs)
            raise _UsageError(f"nbrules: '{escape_controls(given[0])}' is not a command" + (f"; {close}" if close else "")
                              + f" (commands: {', '.join(parser.verbs)})")
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit, so that a write error is reported
        return code
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, but not as a success
        _quiet_stdout(stdout)
        return EXIT_USAGE
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except _ListenError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_LISTEN
    except RulesHaveErrors as exc:
        _print_diagnostics(exc.diagnostics, sys.stderr)
        print(f"{exc.message}; run 'nbrules validate' for details", file=sys.stderr)
        return EXIT_RULES
    except NbrulesError as exc:
        print(exc.report(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("nbrules: interrupted", file=sys.stderr)
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
