"""Batch evaluation: a cohort in, one JSON result per line out, in input order.

Rows stream through in bounded chunks, so memory stays constant however large the
input.  With ``workers`` > 1 the chunks are spread over processes (durable-rules
is not thread-safe; processes scale), each with its own engine; results come back
in input order.  A bad row is never lost: it yields an error record with its row
number, id and the JSON pointer of every problem (status ``invalid``), and an
evaluation that fails for any other reason yields an ``error`` record (NB530); the
run goes on.  Worker processes exit when the parent process dies.
"""

from __future__ import annotations

import datetime
import io
import json
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, Sequence, TypeVar

from .cohort import Row, jsonl_lines, jsonl_row, read_rows, unique_id
from .diagnostics import Diagnostic
from .encoding import compact, string
from .errors import NbrulesError, PatientInputError
from .patient import DEFAULT_MAX_INPUT, not_text
from .protocols import Evaluator
from .results import Result

if TYPE_CHECKING:
    from .pipeline import RuleSetBuild
    from .runtime import RuleEngine

__all__ = ["BatchSummary", "EngineSpec", "run_batch", "row_record", "status_of"]

CHUNK = 256
#: The status of a FHIR Bulk patient whose record has no usable neuroblastoma diagnosis.
NO_DIAGNOSIS = "no-neuroblastoma-diagnosis"


@dataclass(frozen=True)
class EngineSpec:
    """How a worker process builds its engine (picklable)."""

    rules: str | None = None  # a rules directory; None for the bundled rules
    use: tuple[str, ...] = ()
    cache_size: int = 65536
    decisions: tuple[str, ...] | None = None  # the decisions to run (None: all)
    as_of: datetime.date | None = None  # the parent's evaluation date, so workers choose the same versions
    profile: str | None = None

    def build(self, checked: RuleSetBuild | None = None) -> RuleEngine:
        """The engine; from ``checked`` (a :class:`~nbrules.pipeline.RuleSetBuild` of the same
        rules, already loaded and checked) when given, which skips loading and checking."""
        from .runtime import RuleEngine

        if checked is not None:
            return RuleEngine(checked, use=self.use, cache_size=self.cache_size, decisions=self.decisions,
                              as_of=self.as_of, profile=self.profile)
        if self.rules is None:
            return RuleEngine.default(use=self.use, cache_size=self.cache_size, decisions=self.decisions,
                                      as_of=self.as_of, profile=self.profile)
        return RuleEngine.from_directory(self.rules, use=self.use, cache_size=self.cache_size,
                                         decisions=self.decisions, as_of=self.as_of, profile=self.profile)


@dataclass
class BatchSummary:
    rows: int = 0
    ok: int = 0
    indeterminate: int = 0
    invalid: int = 0
    error: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        errors = f", {self.error} failed" if self.error else ""
        if self.statuses.get(NO_DIAGNOSIS):
            errors += f", {self.statuses[NO_DIAGNOSIS]} without a neuroblastoma diagnosis"
        return (f"{self.rows} rows: {self.ok} ok, {self.indeterminate} indeterminate, {self.invalid} invalid{errors} "
                f"({rate:,.0f} rows/s)")


def status_of(result: Result, outputs: Iterable[str] | None = None) -> str:
    """``indeterminate`` when one of ``outputs`` (default: any output) awaits missing
    facts, else ``ok``.  Batch passes the outputs of the decisions chosen with
    ``--decisions``, so an output of a decision that only feeds them does not count."""
    if outputs is None:
        return "indeterminate" if result.indeterminate else "ok"
    return "indeterminate" if any(o in result.indeterminate for o in outputs) else "ok"


def _text(line: str) -> str:
    """``line`` as writable UTF-8: a lone surrogate (never expected) becomes a JSON escape."""
    return line.encode("utf-8", "backslashreplace").decode("utf-8") if not_text(line) else line


def row_record(row: Row, engine: Evaluator | None, outputs: Sequence[str] | None = None) -> tuple[str, str]:
    """(status, one JSON line) for a row: ``ok``/``indeterminate`` with the result,
    ``invalid`` with the problems of bad input, ``error`` when the evaluation failed,
    :data:`NO_DIAGNOSIS` (not evaluated) for a FHIR patient whose ``read`` names no
    diagnosis; a row's ``read`` goes into its line.
    ``outputs``: ``engine.requested_outputs()``, computed once by the caller (default:
    computed here); ``engine`` may be None for a row with problems."""
    problems = row.problems
    status = "invalid"
    if row.read is not None and row.read.get("diagnosis") is None and not problems:
        # a FHIR patient without a usable neuroblastoma diagnosis: not evaluated (CDS Hooks gives no cards)
        record: dict[str, Any] = {"row": row.number, "id": row.id, "status": NO_DIAGNOSIS, "read": row.read}
        return NO_DIAGNOSIS, _text(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    if not problems and row.facts is not None and engine is not None:
        try:
            result = engine.evaluate(row.facts)
        except PatientInputError as exc:
            problems = exc.diagnostics
        except Exception as exc:  # a defect: this row gets an error record, the run goes on
            status = "error"
            problems = (exc.diagnostics[0] if isinstance(exc, NbrulesError) and exc.diagnostics else
                        Diagnostic(code="NB530", message=f"{type(exc).__name__}: {exc}"),)
        else:
            status = status_of(result, engine.requested_outputs() if outputs is None else outputs)
            head = f'{{"row":{row.number},"id":{string(row.id)},"status":"{status}","result":'
            read = "" if row.read is None else f',"read":{compact(row.read)}'
            return status, _text(f'{head}{result.to_compact_json()}{read}}}')

    record = {"row": row.number, "id": row.id, "status": status,
              "problems": [d.to_record() for d in problems]}
    if row.read is not None:
        record["read"] = row.read
    return status, _text(json.dumps(record, ensure_ascii=False, separators=(",", ":")))


# -- worker processes ------------------------------------------------------------------------

_WORKER_ENGINE: Evaluator | None = None


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """In a worker: end the process as soon as ``parent`` is no longer its parent (it
    died, even by SIGKILL; the worker is then re-parented)."""
    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="nbrules-parent-watch", daemon=True).start()


def _init_worker(spec: EngineSpec, parent: int, checked: RuleSetBuild | None = None) -> None:
    global _WORKER_ENGINE
    _exit_with_parent(parent)
    _WORKER_ENGINE = spec.build(checked)


def _pool(spec: EngineSpec, workers: int, engine: Evaluator | None) -> ProcessPoolExecutor:
    """Worker processes, each with its own engine.  Where workers are forked, each starts
    from the parent engine's checked rule set (inherited, not pickled): it only compiles,
    instead of loading, checking, verifying and running the cases again (seconds), and
    every worker has exactly the rules the parent checked."""
    forked = multiprocessing.get_start_method() == "fork"
    checked = engine.build if engine is not None and forked else None
    return ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                               initargs=(spec, os.getpid(), checked))


def _work(chunk: Sequence[Row]) -> list[tuple[str, str]]:
    assert _WORKER_ENGINE is not None
    outputs = _WORKER_ENGINE.requested_outputs()
    return [row_record(row, _WORKER_ENGINE, outputs) for row in chunk]


def _work_lines(chunk: Sequence[tuple[int, bytes | str | None]], id_column: str,
                max_row: int) -> list[tuple[str | None, int, str, str]]:
    """In a worker: parse and evaluate JSONL lines; (row id, row number, status, line) each."""
    assert _WORKER_ENGINE is not None
    outputs = _WORKER_ENGINE.requested_outputs()
    out = []
    for number, line in chunk:
        row = jsonl_row(number, line, id_column, max_row)
        if row is not None:
            out.append((row.id, row.number, *row_record(row, _WORKER_ENGINE, outputs)))
    return out


def _line_records(lines: Iterable[tuple[int, bytes | str | None]], spec: EngineSpec, workers: int, id_column: str,
                  max_row: int, engine: Evaluator | None = None) -> Iterator[tuple[str, str]]:
    """The records of JSONL lines evaluated by ``workers`` processes, in input order.

    The lines go to the workers unparsed, so the parent only reads and writes: parsing
    in the parent would make it the bottleneck of the run.  A row whose id an earlier
    row has gets the NB560 record :func:`~nbrules.cohort.read_rows` gives it.
    """
    first: dict[str, int] = {}
    with _pool(spec, workers, engine) as pool:
        window: deque[Future[list[tuple[str | None, int, str, str]]]] = deque()

        def done(future: Future[list[tuple[str | None, int, str, str]]]) -> Iterator[tuple[str, str]]:
            for row_id, number, status, line in future.result():
                if row_id is not None:
                    row = unique_id(Row(number, row_id, None), first, id_column)
                    if row.problems:
                        status, line = row_record(row, None)
                yield status, line

        for chunk in _chunks(lines, CHUNK):
            window.append(pool.submit(_work_lines, chunk, id_column, max_row))
            if len(window) >= 2 * workers:  # bounded: memory stays constant
                yield from done(window.popleft())
        while window:
            yield from done(window.popleft())


_T = TypeVar("_T")


def _chunks(rows: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _records(rows: Iterable[Row], spec: EngineSpec, workers: int,
             engine: Evaluator | None = None) -> Iterator[tuple[str, str]]:
    if workers <= 1:
        own = engine is None
        engine = spec.build() if engine is None else engine
        try:
            outputs = engine.requested_outputs()
            for row in rows:
                yield row_record(row, engine, outputs)
        finally:
            if own:
                engine.close()
        return
    with _pool(spec, workers, engine) as pool:
        window: deque[Future[list[tuple[str, str]]]] = deque()
        for chunk in _chunks(rows, CHUNK):
            window.append(pool.submit(_work, chunk))
            if len(window) >= 2 * workers:  # bounded: memory stays constant
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()


class _CountingReader(io.RawIOBase):
    """Counts the bytes read, for a progress bar by bytes (no pre-pass over the file)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        return n


class _Progress:
    def __init__(self, stream: IO[str], total_bytes: int | None) -> None:
        self.stream = stream
        self.total = total_bytes
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, rows: int, done_bytes: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = rows / elapsed
        line = f"\r{rows:,} rows  {rate:,.0f} rows/s"
        if self.total:
            frac = min(done_bytes / self.total, 1.0)
            eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
            bar = "#" * int(frac * 20)
            line += f"  [{bar:<20}] {frac * 100:3.0f}%  ETA {int(eta // 60)}:{int(eta % 60):02d}"
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()


def run_batch(source: str, out: IO[str], fmt: str, spec: EngineSpec, workers: int = 1, id_column: str = "id",
              progress: IO[str] | None = None, engine: Evaluator | None = None, max_row: int = DEFAULT_MAX_INPUT) -> BatchSummary:
    """Evaluate every row of ``source`` (a path, or ``-`` for stdin) and write JSON lines to ``out``.

    Every row gets one line, in input order; a row over ``max_row`` bytes gets an
    NB509 error record.

    With one worker, ``engine`` (built from ``spec`` by the caller, and left open) is
    used instead of building another; worker processes build their own, from its
    checked rule set where they are forked.  JSONL lines are parsed in the workers.
    """
    summary = BatchSummary()
    start = time.perf_counter()
    if fmt == "fhir-ndjson":  # a FHIR Bulk Data export directory: one row per patient
        from .fhir import load_mapping
        from .fhir_bulk import bulk_rows

        mapping = load_mapping(facts=engine.build.package.facts if engine is not None else None)
        _write(_records(bulk_rows(Path(source), mapping, max_row), spec, workers, engine), out, summary, None, None)
        summary.seconds = time.perf_counter() - start
        return summary
    if source == "-":
        raw: IO[bytes] = sys.stdin.buffer
        total = None
    else:
        raw = open(source, "rb")
        total = os.fstat(raw.fileno()).st_size
    counter = _CountingReader(raw)
    bar = _Progress(progress, total) if progress is not None else None
    try:
        if fmt == "jsonl" and workers > 1:
            records = _line_records(jsonl_lines(io.BufferedReader(counter), max_row), spec, workers, id_column,
                                    max_row, engine)
        else:
            records = _records(read_rows(io.BufferedReader(counter), fmt, id_column,
                                         engine.build.package.facts if engine is not None else None, max_row=max_row),
                               spec, workers, engine)
        _write(records, out, summary, bar, counter)
    finally:
        if source != "-":
            raw.close()
    summary.seconds = time.perf_counter() - start
    if bar is not None:
        bar.update(summary.rows, counter.count, final=True)
    return summary


def _write(records: Iterable[tuple[str, str]], out: IO[str], summary: BatchSummary, bar: _Progress | None,
           counter: _CountingReader | None) -> None:
    for status, line in records:
        out.write(line + "\n")
        summary.rows += 1
        summary.statuses[status] = summary.statuses.get(status, 0) + 1
        if bar is not None and counter is not None:
            bar.update(summary.rows, counter.count)
    summary.ok = summary.statuses.get("ok", 0)
    summary.indeterminate = summary.statuses.get("indeterminate", 0)
    summary.invalid = summary.statuses.get("invalid", 0)
    summary.error = summary.statuses.get("error", 0)
