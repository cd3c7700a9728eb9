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

import contextlib
import datetime
import gc
import io
import itertools
import json
import mmap
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from .cohort import Row, jsonl_lines, jsonl_row, read_rows, unique_id
from .diagnostics import Diagnostic
from .encoding import compact, string
from .errors import NbrulesError, PatientInputError, WorkerLost
from .patient import DEFAULT_MAX_INPUT, not_text
from .protocols import Evaluator
from .results import Result

if TYPE_CHECKING:
    from .pipeline import RuleSetBuild
    from .runner import DecisionRunner, Lesson
    from .runtime import RuleEngine

__all__ = ["BatchSummary", "EngineSpec", "run_batch", "row_record", "status_of"]

#: The status of a FHIR Bulk patient whose record has no usable neuroblastoma diagnosis.
NO_DIAGNOSIS = "no-neuroblastoma-diagnosis"


@dataclass(frozen=True)
class EngineSpec:
    """How a batch's engine is built (picklable): by a spawned worker process, and by
    :func:`run_batch` when it is given no engine.  A forked worker builds nothing: it
    evaluates with its copy of the parent's engine."""

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
#
# ``--workers N`` is N processes evaluating: this one and N - 1 worker processes.  This
# process reads the input, keeps each worker fed with chunks, evaluates a chunk itself
# whenever the workers have enough, and writes every record in input order.  It moves
# chunks and results itself, between two chunks of its own, with no helper thread:
# a thread that needed the GIL to move results (as concurrent.futures' do) would wait on
# this one's evaluating, and the workers would starve (measured: benchmarks/workers.py).

#: Rows per chunk a process evaluates at a time.
CHUNK = 64
#: Chunks sent ahead to each worker process, so it never waits for this one.
DEPTH = 4
#: Bytes of a chunk's results a forked worker hands over in shared memory (a slot per
#: chunk sent ahead); results that do not fit cross the pipe instead.
SLOT = 1 << 21


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """In a worker: end the process as soon as ``parent`` is no longer its parent (it
    died, even by SIGKILL; the worker is then re-parented)."""
    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="nbrules-parent-watch", daemon=True).start()


def _widen(conn: Connection) -> None:
    """Let a pipe hold ~1 MB (Linux; elsewhere it keeps its size): a worker then rarely
    waits for this process to take its results."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(conn.fileno(), set_size, 1 << 20)


@dataclass
class _Lines:
    """A chunk's records as they are written: each row's line, and what the writer needs
    besides, ``heads[i]``: ``(status,)`` or ``(row id, row number, status)`` (a repeated
    id's record replaces its row's, :func:`_line_records`).

    A forked worker process hands its lines over in shared memory (see :class:`_Worker`):
    one copy of the bytes, and no ~5 KB object per row to pickle and unpickle.
    """

    heads: list[tuple[Any, ...]]
    lines: list[str]

    @classmethod
    def of(cls, records: Sequence[tuple[Any, ...]]) -> _Lines:
        """From ``(head..., line)`` records."""
        return cls([r[:-1] for r in records], [r[-1] for r in records])


def _work(chunk: Sequence[Row], engine: Evaluator) -> _Lines:
    """The records of ``chunk``'s rows: heads ``(status,)``."""
    outputs = engine.requested_outputs()
    return _Lines.of([row_record(row, engine, outputs) for row in chunk])


def _work_lines(chunk: Sequence[tuple[int, bytes | str | None]], id_column: str, max_row: int,
                engine: Evaluator) -> _Lines:
    """Parse and evaluate JSONL lines; heads ``(row id, row number, status)``."""
    outputs = engine.requested_outputs()
    out = []
    for number, line in chunk:
        row = jsonl_row(number, line, id_column, max_row)
        if row is not None:
            out.append((row.id, row.number, *row_record(row, engine, outputs)))
    return _Lines.of(out)


Lessons = list[tuple[str, list["Lesson"]]]


def _journals(engine: Evaluator, on: bool) -> dict[str, DecisionRunner]:
    """``engine``'s decision runners by signature, their journals turned on (or off);
    none for an evaluator without runners."""
    runners = {r.signature: r for r in getattr(engine, "runners", ())}
    for r in runners.values():
        r.keep_journal(on)
    return runners


def _lessons(runners: Mapping[str, DecisionRunner]) -> Lessons:
    """What the runners computed since last asked (their journals, emptied)."""
    out: Lessons = []
    for signature, r in runners.items():
        taken = r.take_journal()
        if taken:
            out.append((signature, taken))
    return out


def _learn(runners: Mapping[str, DecisionRunner], lessons: Lessons) -> None:
    for signature, taught in lessons:
        runner = runners.get(signature)
        if runner is not None:
            runner.learn(taught)


@dataclass(frozen=True)
class _InSlot:
    """A worker's :class:`_Lines` whose lines wait in its slot of shared memory, one
    after the other, ``sizes[i]`` bytes of UTF-8 each."""

    heads: list[tuple[Any, ...]]
    sizes: list[int]


def _into_slot(done: _Lines, shared: mmap.mmap, slot: int) -> _InSlot | _Lines:
    """``done`` written in ``slot`` of ``shared``; as it is when its lines do not fit."""
    at, end = slot * SLOT, (slot + 1) * SLOT
    sizes = []
    for line in done.lines:
        data = line.encode("utf-8")
        if at + len(data) > end:
            return done
        shared[at:at + len(data)] = data
        at += len(data)
        sizes.append(len(data))
    return _InSlot(done.heads, sizes)


def _from_slot(taken: _InSlot, shared: mmap.mmap, slot: int) -> _Lines:
    lines = []
    at = slot * SLOT
    with memoryview(shared) as view:
        for size in taken.sizes:
            lines.append(str(view[at:at + size], "utf-8"))
            at += size
    return _Lines(taken.heads, lines)


def _serve(tasks: Connection, results: Connection, spec: EngineSpec, parent: int, engine: Evaluator | None,
           shared: mmap.mmap | None, work: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """A worker process: answer each pickled ``(chunk, lessons, slot)`` from ``tasks``
    with ``("ok", (work(chunk, *args, engine), lessons))`` on ``results``, until an
    empty message or the end of ``tasks``; ``("failed", exception, traceback)`` if
    anything fails.

    Forked, ``engine`` is this process's copy of the parent's (nothing to load, check or
    compile again, and exactly the rules the parent checked), ``shared`` the memory it
    shares with the parent: a :class:`_Lines` result's lines are written in ``slot`` of
    it and an :class:`_InSlot` sent instead (unless they do not fit).  The lessons are
    outcomes computed in the other processes (learnt before the chunk) and in this one
    (sent with its results), so a cell met in one process is seldom met again in the
    others (only when two meet it before either has told).  Spawned (``engine`` None), the worker builds its engine
    from ``spec``; results cross the pipe.  Ctrl-C is the parent's to handle (it stops
    its workers): a worker ignores SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for end in _PARENT_ENDS:  # forked: the parent's ends of every worker's pipes, its own included
        end.close()
    _exit_with_parent(parent)
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def read() -> None:  # take every chunk at once, so the parent never blocks sending one
        data = b"x"
        while data:
            try:
                data = tasks.recv_bytes()
            except EOFError:  # the parent closed its end: no more tasks
                data = b""
            except BaseException:  # out of memory for a chunk, say: this thread can no longer
                # drain the tasks, and the parent would block sending the next one while
                # this process blocks sending results; ending the process at once lets the
                # parent see both pipes end (NB531)
                os._exit(_READ_FAILED)
            inbox.put(data)

    try:
        with contextlib.ExitStack() as owned:
            runners = _journals(engine, on=True) if engine is not None else {}
            if engine is None:
                engine = owned.enter_context(spec.build())
            threading.Thread(target=read, name="nbrules-batch-inbox", daemon=True).start()
            while data := inbox.get():
                chunk, taught, slot = pickle.loads(data)
                _learn(runners, taught)
                done = work(chunk, *args, engine)
                if shared is not None and slot is not None and isinstance(done, _Lines):
                    done = _into_slot(done, shared, slot)
                results.send_bytes(pickle.dumps(("ok", (done, _lessons(runners))), _PROTOCOL))
    except BaseException as exc:  # reported to the parent, which raises it
        with contextlib.suppress(BaseException):
            trace = traceback.format_exc()
            try:
                message = pickle.dumps(("failed", exc, trace), _PROTOCOL)
            except Exception:
                message = pickle.dumps(("failed", RuntimeError(f"{type(exc).__name__}: {exc}"), trace), _PROTOCOL)
            results.send_bytes(message)


_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: The exit status of a worker that could not read its next chunk.
_READ_FAILED = 75
#: The parent's ends of the pipes of the worker processes it has now: a worker forked
#: later inherits them and closes them first thing, so that each pipe's ends are held
#: only by the two processes it joins (a worker then sees the end of its tasks).
_PARENT_ENDS: list[Connection] = []


class _WorkerTraceback(Exception):
    """A worker process's traceback, chained to the error it raised (NBRULES_DEBUG=1 shows it)."""


class _Pending:
    """A chunk's results, in input order: ready, or awaited from a worker (not to be
    confused with a worker's *slots* of shared memory)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value


class _Worker:
    """A worker process and the two pipes that feed and drain it.  Raises
    :class:`WorkerLost` (NB531) when the process cannot be started."""

    def __init__(self, spec: EngineSpec, engine: Evaluator, work: Callable[..., Any],
                 args: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context()
        task_end, self.tasks = context.Pipe(duplex=False)
        self.results, result_end = context.Pipe(duplex=False)
        # forked, a worker evaluates with its copy of this engine (inherited, not
        # pickled): nothing to load, check, verify or compile again, and exactly the
        # rules this process checked; it hands its results over in shared memory, a
        # slot per chunk sent ahead, each slot free again once its results are taken
        forked = context.get_start_method() == "fork"
        self.shared: mmap.mmap | None = None
        self.slots = list(range(DEPTH))
        _PARENT_ENDS.extend((self.tasks, self.results))
        try:
            if forked:
                self.shared = mmap.mmap(-1, DEPTH * SLOT)
            self.process = context.Process(target=_serve, name="nbrules-batch-worker", daemon=True,
                                           args=(task_end, result_end, spec, os.getpid(), engine if forked else None,
                                                 self.shared, work, args))
            self.process.start()
        except OSError as exc:  # no process or no shared memory (too many processes, no memory)
            self._forget()
            self.tasks.close()
            self.results.close()
            if self.shared is not None:
                self.shared.close()
            raise _lost(f"could not be started ({exc.strerror or exc})") from exc
        finally:
            task_end.close()
            result_end.close()
        _widen(self.tasks)
        _widen(self.results)
        self.awaited: deque[tuple[_Pending, int | None]] = deque()

    def submit(self, chunk: list[Any], lessons: Lessons) -> _Pending:
        pending = _Pending()
        at = self.slots.pop() if self.shared is not None and self.slots else None
        self.awaited.append((pending, at))
        try:
            self.tasks.send_bytes(pickle.dumps((chunk, lessons, at), _PROTOCOL))
        except OSError:  # it died: the next take says how
            pass
        return pending

    def take(self, block: bool, cells: _Cells) -> None:
        """Fill the awaited slots whose results have come (``block``: wait for one), and
        pass the lessons that came with them to ``cells``.  Raises what the worker raised
        (its traceback chained), or :class:`WorkerLost` when it ended or ran out of memory."""
        while self.awaited and (block or self.results.poll()):
            block = False
            try:
                message = pickle.loads(self.results.recv_bytes())
            except (EOFError, OSError):
                self.process.join(5)
                raise self.lost() from None
            if message[0] != "ok":
                _, exc, trace = message
                if isinstance(exc, MemoryError):
                    raise _lost(f"(pid {self.process.pid}) ran out of memory") from _WorkerTraceback(trace)
                raise exc from _WorkerTraceback(trace)
            value, lessons = message[1]
            pending, at = self.awaited.popleft()
            if at is not None:
                if isinstance(value, _InSlot):
                    assert self.shared is not None
                    value = _from_slot(value, self.shared, at)
                self.slots.append(at)
            pending.value = value
            cells.taught(self, lessons)

    def lost(self) -> WorkerLost:
        """The error for this worker's end: killed by a signal, or exited."""
        code = self.process.exitcode
        if code is None:
            how = "closed its pipe"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name}" + (" (by another process, or the out-of-memory killer)"
                                             if -code == signal.SIGKILL else "")
        elif code == _READ_FAILED:
            how = "could not read its next rows (out of memory, most likely)"
        else:
            how = f"exited with status {code}"
        return _lost(f"(pid {self.process.pid}) {how} before its rows were done")

    def stop(self, wait: bool) -> None:
        """Send the last message (``wait``: and give the worker 10 s to end), then end it."""
        try:
            with contextlib.suppress(OSError):
                if wait:
                    self.tasks.send_bytes(b"")
            self.tasks.close()
            self.process.join(10 if wait else 0)
        finally:
            if self.process.is_alive():
                self.process.terminate()
                self.process.join()
            self.results.close()
            if self.shared is not None:
                self.shared.close()
            self._forget()

    def _forget(self) -> None:
        for end in (self.tasks, self.results):
            if end in _PARENT_ENDS:
                _PARENT_ENDS.remove(end)


def _lost(what: str) -> WorkerLost:
    """NB531: the error names the worker and what happened to it once, in its diagnostic."""
    return WorkerLost("nbrules evaluate --batch: stopped, a worker process was lost",
                      [Diagnostic(code="NB531", message=f"a worker process {what}",
                                  hint="the rows written before stay (in OUT.partial with --out FILE; on standard "
                                       "output with --out -); run again, with fewer workers if memory was short")])


class _Cells:
    """The outcomes the processes of a forked batch compute, passed on to the others.

    Each process meets most of the cells (cache keys) of its rows for the first time; a
    cell costs an engine run (~40 us, durable-rules' share) the first time, a lookup
    afterwards.  Lessons (see :meth:`DecisionRunner.learn`) from this process and from
    every worker are logged, and each worker is sent those it has not seen with its next
    chunk.  The log keeps only what some worker has yet to be sent: memory stays bounded
    by the cells met while a chunk is out.
    """

    def __init__(self, engine: Evaluator, pool: Sequence[_Worker], on: bool) -> None:
        self.runners = _journals(engine, on=True) if on else {}
        self.on = on
        self.log: deque[tuple[_Worker | None, Lessons]] = deque()
        self.start = 0  # the log position of log[0]
        self.sent = {id(w): 0 for w in pool}  # per worker, the log position it has been sent up to

    def taught(self, origin: _Worker, lessons: Lessons) -> None:
        if self.on and lessons:
            _learn(self.runners, lessons)
            self.log.append((origin, lessons))

    def lessons_for(self, worker: _Worker) -> Lessons:
        if not self.on:
            return []
        own = _lessons(self.runners)
        if own:
            self.log.append((None, own))
        out: Lessons = []
        for origin, lessons in itertools.islice(self.log, self.sent[id(worker)] - self.start, None):
            if origin is not worker:
                out.extend(lessons)
        self.sent[id(worker)] = self.start + len(self.log)
        oldest = min(self.sent.values())
        while self.start < oldest:
            self.log.popleft()
            self.start += 1
        return out

    def close(self) -> None:
        for r in self.runners.values():
            r.keep_journal(False)


_T = TypeVar("_T")
_R = TypeVar("_R")


def _chunks(rows: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _counted(chunks: Iterable[_T], horizon: int) -> Iterator[tuple[_T, int | None]]:
    """Each of ``chunks`` with how many follow it, once that is at most ``horizon``
    (None before): reads ``horizon`` + 1 chunks ahead."""
    source = iter(chunks)
    ahead = deque(itertools.islice(source, horizon + 1))
    for chunk in source:
        ahead.append(chunk)
        yield ahead.popleft(), None
    while ahead:
        chunk = ahead.popleft()
        yield chunk, len(ahead)


@contextlib.contextmanager
def _engine_for(spec: EngineSpec, engine: Evaluator | None) -> Iterator[Evaluator]:
    """``engine``, or (None) one built from ``spec`` and closed on leaving."""
    if engine is not None:
        yield engine
        return
    with spec.build() as built:
        yield built


def _spread(items: Iterable[Any], workers: int, spec: EngineSpec, engine: Evaluator | None,
            work: Callable[..., _R], *args: Any) -> Iterator[_R]:
    """``work(chunk, *args, engine)`` over chunks of ``items`` by ``workers`` processes,
    this one included (see the comment above); the result of each chunk, in input order.

    Chunks balance themselves between fast and slow processes, and only the rows another
    process evaluates cross a pipe.  At most ``(DEPTH + 1) * workers`` chunks are held,
    and ``DEPTH + 1`` more read ahead (to know when the input nears its end): memory
    stays constant.  ``engine`` (built from ``spec`` when None, and then closed)
    is this process's.  Raises what a worker raised, or :class:`WorkerLost` (NB531)
    when one ends before its rows are done.
    """
    window: deque[tuple[_Pending, _Worker | None]] = deque()
    limit = (DEPTH + 1) * workers
    done = False
    forked = multiprocessing.get_context().get_start_method() == "fork"
    with contextlib.ExitStack() as cleanup:  # every step runs, in reverse, even if one fails
        engine = cleanup.enter_context(_engine_for(spec, engine))
        if forked:
            # What Python's gc docs advise before a fork: the objects alive now are left out
            # of collections (until the end of the batch) so that no process's collector
            # writes to their pages, each of which the kernel would then copy (measured: 23k
            # page faults per process instead of 6k, and 2 workers 1.30x one instead of
            # 1.45x).  A host that had frozen its heap (the CLI does) keeps it frozen.
            if gc.get_freeze_count() == 0:
                cleanup.callback(gc.unfreeze)
            gc.freeze()

        def stop(worker: _Worker) -> None:
            worker.stop(wait=done)

        pool: list[_Worker] = []
        cells: _Cells | None = None
        for chunk, left in _counted(_chunks(items, CHUNK), DEPTH):
            if cells is None:  # the first chunk: start as many workers as the input can keep busy
                for _ in range(workers - 1 if left is None else min(workers - 1, left)):
                    pool.append(_Worker(spec, engine, work, args))
                    cleanup.callback(stop, pool[-1])
                # only forked workers run this engine's rules (their copies of it)
                cells = _Cells(engine, pool, on=forked)
                cleanup.callback(cells.close)
            for w in pool:
                w.take(False, cells)
            free = min(pool, key=lambda w: len(w.awaited), default=None)
            # near the end, a worker is sent a chunk only while this process has as many
            # left to do as it has queued: all finish about together (measured: this
            # process waited ~30 ms at the end of 20,000 rows for the worker's last chunks)
            if free is not None and len(free.awaited) < DEPTH and (left is None or len(free.awaited) < left):
                window.append((free.submit(chunk, cells.lessons_for(free)), free))
            else:
                window.append((_Pending(work(chunk, *args, engine)), None))
            while window and (window[0][0].value is not None or len(window) >= limit):
                yield _settled(window.popleft(), cells)
        while window:
            assert cells is not None
            yield _settled(window.popleft(), cells)
        done = True


def _settled(entry: tuple[_Pending, _Worker | None], cells: _Cells) -> Any:
    pending, worker = entry
    while pending.value is None and worker is not None:
        worker.take(True, cells)
    assert pending.value is not None
    return pending.value


def _line_records(lines: Iterable[tuple[int, bytes | str | None]], spec: EngineSpec, workers: int, id_column: str,
                  max_row: int, engine: Evaluator | None = None) -> Iterator[_Lines]:
    """The records of JSONL lines evaluated by ``workers`` processes, a chunk at a time,
    in input order.

    Lines are parsed where they are evaluated, so this process does not parse the
    workers' rows.  A row whose id an earlier row has gets the NB560 record
    :func:`~nbrules.cohort.read_rows` gives it.
    """
    first: dict[str, int] = {}
    for chunk in _spread(lines, workers, spec, engine, _work_lines, id_column, max_row):
        again = {}
        for i, (row_id, number, _) in enumerate(chunk.heads):
            if row_id is not None:
                row = unique_id(Row(number, row_id, None), first, id_column)
                if row.problems:
                    again[i] = (row_id, number, *row_record(row, None))
        for i, record in again.items():
            chunk.heads[i], chunk.lines[i] = record[:-1], record[-1]
        yield chunk


def _records(rows: Iterable[Row], spec: EngineSpec, workers: int,
             engine: Evaluator | None = None) -> Iterator[_Lines]:
    if workers > 1:
        yield from _spread(rows, workers, spec, engine, _work)
        return
    with _engine_for(spec, engine) as evaluator:
        for chunk in _chunks(rows, CHUNK):
            yield _work(chunk, evaluator)


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

    ``workers``: processes that evaluate, this one included.  ``engine`` (built from
    ``spec`` by the caller, and left open; built here when None) evaluates this
    process's rows, so it must be ``spec``'s: an engine of another profile, date or
    choice of decisions would mix two configurations in one output.  A forked worker
    process evaluates with its copy of ``engine``: no other thread may be using the
    engine while the batch starts its workers (a lock held at the fork would stay held
    in the copy; the CLI has no other thread).  A spawned one (macOS, Windows) builds
    its own from ``spec``.  Lines are parsed where they are evaluated.  Raises
    :class:`WorkerLost` (NB531) when a worker ends before its rows are done.
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


def _write(chunks: Iterable[_Lines], out: IO[str], summary: BatchSummary, bar: _Progress | None,
           counter: _CountingReader | None) -> None:
    statuses = summary.statuses
    for chunk in chunks:
        for head, line in zip(chunk.heads, chunk.lines):
            out.write(line + "\n")
            statuses[head[-1]] = statuses.get(head[-1], 0) + 1
        summary.rows += len(chunk.heads)
        if bar is not None and counter is not None:
            bar.update(summary.rows, counter.count)
    summary.ok = summary.statuses.get("ok", 0)
    summary.indeterminate = summary.statuses.get("indeterminate", 0)
    summary.invalid = summary.statuses.get("invalid", 0)
    summary.error = summary.statuses.get("error", 0)
