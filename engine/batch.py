"""Batch evaluation: a cohort in, one JSON result per line out, in input order.

Rows stream through in bounded chunks, so memory stays constant however large the
input.  With ``workers`` > 1 the chunks are spread over processes (durable-rules
is not thread-safe; processes scale), each with its own engine; results come back
in input order.  A bad row is never lost: it yields an error record with its row
number, id and the JSON pointer of every problem.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator, Sequence

from .cohort import Row, read_rows
from .errors import PatientInputError
from .results import Result

__all__ = ["BatchSummary", "EngineSpec", "run_batch", "row_record", "status_of"]

CHUNK = 256


@dataclass(frozen=True)
class EngineSpec:
    """How a worker process builds its engine (picklable)."""

    rules: str | None = None  # a rules directory; None for the bundled rules
    use: tuple[str, ...] = ()
    cache_size: int = 65536
    profile: str | None = None

    def build(self) -> Any:
        from .runtime import RuleEngine

        if self.rules is None:
            return RuleEngine.default(use=self.use, cache_size=self.cache_size, profile=self.profile)
        return RuleEngine.from_directory(self.rules, use=self.use, cache_size=self.cache_size, profile=self.profile)


@dataclass
class BatchSummary:
    rows: int = 0
    ok: int = 0
    indeterminate: int = 0
    invalid: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.rows} rows: {self.ok} ok, {self.indeterminate} indeterminate, {self.invalid} invalid "
                f"({rate:,.0f} rows/s)")


def status_of(result: Result) -> str:
    """``indeterminate`` when some output awaits missing facts, else ``ok``."""
    return "indeterminate" if result.indeterminate else "ok"


def row_record(row: Row, engine: Any) -> tuple[str, str]:
    """(status, one JSON line) for a row."""
    problems = row.problems
    if not problems and row.facts is not None:
        try:
            result = engine.evaluate(row.facts)
        except PatientInputError as exc:
            problems = exc.diagnostics
        else:
            status = status_of(result)
            head = json.dumps({"row": row.number, "id": row.id, "status": status}, ensure_ascii=False,
                              separators=(",", ":"))
            return status, f'{head[:-1]},"result":{result.to_compact_json()}}}'

    record = {"row": row.number, "id": row.id, "status": "invalid",
              "problems": [{"pointer": d.pointer or "", "code": d.code, "name": d.name, "message": d.message,
                            **({"hint": d.hint} if d.hint else {})} for d in problems]}
    return "invalid", json.dumps(record, ensure_ascii=False, separators=(",", ":"))


# -- worker processes ------------------------------------------------------------------------

_WORKER_ENGINE: Any = None


def _init_worker(spec: EngineSpec) -> None:
    global _WORKER_ENGINE
    _WORKER_ENGINE = spec.build()


def _work(chunk: Sequence[Row]) -> list[tuple[str, str]]:
    return [row_record(row, _WORKER_ENGINE) for row in chunk]


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _records(rows: Iterable[Row], spec: EngineSpec, workers: int, engine: Any = None) -> Iterator[tuple[str, str]]:
    if workers <= 1:
        own = engine is None
        engine = spec.build() if own else engine
        try:
            for row in rows:
                yield row_record(row, engine)
        finally:
            if own:
                engine.close()
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(spec,)) as pool:
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
              progress: IO[str] | None = None, engine: Any = None) -> BatchSummary:
    """Evaluate every row of ``source`` (a path, or ``-`` for stdin) and write JSON lines to ``out``.

    With one worker, ``engine`` (built from ``spec`` by the caller, and left open) is
    used instead of building another; worker processes always build their own.
    """
    summary = BatchSummary()
    start = time.perf_counter()
    if source == "-":
        raw: IO[bytes] = sys.stdin.buffer
        total = None
    else:
        raw = open(source, "rb")
        total = os.fstat(raw.fileno()).st_size
    counter = _CountingReader(raw)
    text = io.TextIOWrapper(io.BufferedReader(counter), encoding="utf-8-sig", newline="")
    bar = _Progress(progress, total) if progress is not None else None
    try:
        for status, line in _records(read_rows(text, fmt, id_column), spec, workers, engine):
            out.write(line + "\n")
            summary.rows += 1
            summary.statuses[status] = summary.statuses.get(status, 0) + 1
            if bar is not None:
                bar.update(summary.rows, counter.count)
    finally:
        if source != "-":
            raw.close()
    summary.ok = summary.statuses.get("ok", 0)
    summary.indeterminate = summary.statuses.get("indeterminate", 0)
    summary.invalid = summary.statuses.get("invalid", 0)
    summary.seconds = time.perf_counter() - start
    if bar is not None:
        bar.update(summary.rows, counter.count, final=True)
    return summary
