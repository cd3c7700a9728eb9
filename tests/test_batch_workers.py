"""Batch with worker processes: this process evaluates too, results come back in input
order byte for byte as one process writes them, and the cells one process meets are
taught to the others (a cell's outcome is a function of its key)."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from nbrules import RuleEngine
from nbrules.batch import EngineSpec, _Cells, _spread, run_batch
from nbrules.errors import WorkerLost

SITES = [[], ["liver"], ["skin", "liver"], ["bone_marrow"], ["bone"], ["bone", "bone_marrow"], ["lung"]]


def _cohort(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Patients with a random part of their facts left out: complete ones, and partly
    known ones whose outcomes the missing-fact analysis gives (indeterminate, not applicable)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sites = rng.choice(SITES)
        p: dict[str, Any] = {
            "age_days": rng.choice([rng.randint(0, 546), rng.randint(547, 6000)]),
            "metastatic_sites": sites,
            "primary_idrfs": rng.choice([[], ["two_compartments"], ["renal_pedicle_invasion"]]),
            "mycn_status": rng.choice(["amplified", "not_amplified"]),
            "histology_category": rng.choice(["neuroblastoma", "ganglioneuroblastoma_intermixed",
                                              "ganglioneuroblastoma_nodular"]),
            "ploidy": rng.choice(["diploid", "hyperdiploid"]),
            "chr11q_status": rng.choice(["normal", "aberrant"]),
        }
        if "bone_marrow" in sites:
            p["bone_marrow_tumor_percent"] = rng.choice([5, 20])
        for name in list(p):
            if name != "age_days" and rng.random() < 0.2:
                del p[name]
        rows.append({"id": f"r{i}", **p})
    return rows


@pytest.fixture(scope="module")
def cohort_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workers") / "cohort.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _cohort(1500)))
    return path


def _run(path: Path, workers: int, spec: EngineSpec, engine: RuleEngine | None = None) -> str:
    out = io.StringIO()
    summary = run_batch(str(path), out, "jsonl", spec, workers=workers, engine=engine)
    assert summary.rows == 1500
    return out.getvalue()


def test_every_number_of_workers_writes_the_same_bytes(cohort_file: Path) -> None:
    spec = EngineSpec()
    with spec.build() as engine:
        one = _run(cohort_file, 1, spec, engine)
    statuses = {json.loads(line)["status"] for line in one.splitlines()}
    assert statuses == {"ok", "indeterminate"}  # complete and partly known patients both
    for workers in (2, 3):
        with spec.build() as engine:
            assert _run(cohort_file, workers, spec, engine) == one, f"{workers} workers"
    assert _run(cohort_file, 2, spec) == one  # the engine built by the batch
    uncached = EngineSpec(cache_size=0)
    with uncached.build() as engine:  # no cache, so nothing to teach: the same bytes still
        assert _run(cohort_file, 2, uncached, engine) == one


def test_a_forked_worker_evaluates_with_its_copy_of_this_engine(cohort_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked worker builds nothing (no loading, checking or compiling again): it
    evaluates with the engine it inherited, and writes what this process would."""
    parent = os.getpid()
    real = EngineSpec.build

    def build(self: EngineSpec, checked: Any = None) -> RuleEngine:
        if os.getpid() != parent:
            raise AssertionError("a worker process built an engine")
        return real(self, checked)

    monkeypatch.setattr(EngineSpec, "build", build)
    spec = EngineSpec(decisions=("inrgss", "inrg"))
    with spec.build() as engine:
        one = _run(cohort_file, 1, spec, engine)
    with spec.build() as engine:
        assert _run(cohort_file, 2, spec, engine) == one


@pytest.mark.parametrize("slot", [1 << 21, 1024, 0], ids=["in-shared-memory", "through-the-pipe", "some-each-way"])
def test_a_workers_lines_come_back_unchanged_in_shared_memory_or_through_the_pipe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slot: int) -> None:
    """A forked worker hands its lines over in shared memory, a slot per chunk; lines
    that do not fit their slot cross the pipe.  Either way the bytes are this process's,
    ids beyond ASCII (two, three and four UTF-8 bytes) and a lone surrogate included,
    and the shared memory is given back at the end.  (``some-each-way``: every other
    chunk's rows carry long ids, and the slot holds the lines of a short chunk only.)"""
    from nbrules import batch

    rows = _cohort(1280, seed=5)
    for i, row in enumerate(rows):
        pad = "x" * 1500 if (i // batch.CHUNK) % 2 else ""
        row["id"] = ["Zoë", "患者", "🧒", "\ud800"][i % 4] + f"-{i}" + pad
    path = tmp_path / "cohort.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = EngineSpec(decisions=("inrgss", "inrg"))
    with spec.build() as engine:
        one = io.StringIO()
        run_batch(str(path), one, "jsonl", spec, workers=1, engine=engine)
    assert "患者-1" in one.getvalue() and "\\ud800-3" in one.getvalue()
    if slot == 0:
        lines = one.getvalue().splitlines()
        size = [sum(len(line.encode()) for line in lines[i:i + batch.CHUNK]) for i in range(0, len(lines), batch.CHUNK)]
        slot = max(size[0::2]) + 1  # the short chunks fit, the long ones do not
        assert slot < min(size[1::2])
    here = os.getpid()
    in_slot: list[int] = []
    evaluated_here: list[int] = []
    real_from_slot, real_work = batch._from_slot, batch._work_lines

    def from_slot(*args: Any) -> Any:
        in_slot.append(len(args[0].heads))
        return real_from_slot(*args)

    def work_lines(chunk: Any, *args: Any) -> Any:
        if os.getpid() == here:
            evaluated_here.append(len(chunk))
        return real_work(chunk, *args)

    mapped: list[Any] = []
    real_init = batch._Worker.__init__

    def init(self: Any, *args: Any) -> None:
        real_init(self, *args)
        mapped.append(self.shared)

    monkeypatch.setattr(batch, "_from_slot", from_slot)
    monkeypatch.setattr(batch, "_work_lines", work_lines)
    monkeypatch.setattr(batch._Worker, "__init__", init)
    monkeypatch.setattr(batch, "SLOT", slot)
    with spec.build() as engine:
        more = io.StringIO()
        run_batch(str(path), more, "jsonl", spec, workers=3, engine=engine)
    assert more.getvalue() == one.getvalue()
    piped = len(rows) - sum(in_slot) - sum(evaluated_here)
    assert (sum(in_slot) > 0, piped > 0) == {1 << 21: (True, False), 1024: (False, True)}.get(slot, (True, True))
    assert len(mapped) == 2 and all(m is not None and m.closed for m in mapped)


def test_near_the_end_this_process_keeps_the_chunks_a_worker_would_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker is sent a chunk only while this process has more left than the worker
    has queued, so neither waits long for the other at the end; the last chunk is
    always this process's."""
    from nbrules import batch
    from nbrules.batch import CHUNK, DEPTH, _counted

    assert list(_counted(range(6), 2)) == [(0, None), (1, None), (2, None), (3, 2), (4, 1), (5, 0)]
    assert list(_counted(range(2), 4)) == [(0, 1), (1, 0)]
    left: list[int | None] = [None]
    sent: list[tuple[int | None, int]] = []  # (chunks left after this one, chunks the worker had queued)

    def counted(chunks: Any, horizon: int) -> Any:
        for chunk, n in _counted(chunks, horizon):
            left[0] = n
            yield chunk, n

    real_submit = batch._Worker.submit

    def submit(self: Any, chunk: Any, lessons: Any) -> Any:
        sent.append((left[0], len(self.awaited)))
        return real_submit(self, chunk, lessons)

    monkeypatch.setattr(batch, "_counted", counted)
    monkeypatch.setattr(batch._Worker, "submit", submit)
    spec = EngineSpec(decisions=("inrgss",))
    here = os.getpid()
    with spec.build() as engine:
        where = [pid for chunk in _spread(range(CHUNK * 40), 2, spec, engine, _whose) for pid in chunk]
    assert where[-1] == here
    assert sent and all(n is None or queued < n for n, queued in sent), sent
    assert any(n is None for n, _ in sent) and max(queued for _, queued in sent) < DEPTH


def _whose(chunk: list[Any], engine: Any) -> list[int]:
    return [os.getpid()]


def test_the_cells_a_worker_met_are_taught_to_this_process(cohort_file: Path) -> None:
    """After a 2-worker run, every row's cells are known here, those of the rows the
    worker evaluated included: evaluating them all again runs the engine not once."""
    spec = EngineSpec()
    rows = [json.loads(line) for line in cohort_file.read_text().splitlines()]
    with spec.build() as engine:
        _run(cohort_file, 2, spec, engine)
        before = sum(r.engine_runs for r in engine.runners)
        for row in rows:
            row.pop("id")
            engine.evaluate(row)
        assert sum(r.engine_runs for r in engine.runners) == before
        assert all(r.journal is None for r in engine.runners)  # journals off after the batch
    with spec.build() as alone:  # the same rows in a fresh engine do run it
        for row in rows[:50]:
            alone.evaluate(row)
        assert sum(r.engine_runs for r in alone.runners) > 0


def test_a_runner_that_learns_a_journal_gives_the_same_outcomes_without_running_the_engine() -> None:
    rows = _cohort(300, seed=11)
    for row in rows:
        row.pop("id")
    with RuleEngine.default() as teacher, RuleEngine.default() as pupil, \
            RuleEngine.default(cache_size=0) as plain:
        for r in teacher.runners:
            r.journal = []
        expected = [teacher.evaluate(p).to_json() for p in rows]
        by_signature = {r.signature: r for r in pupil.runners}
        taught = analysed = 0
        for r in teacher.runners:
            assert r.journal is not None
            analysed += sum(1 for lesson in r.journal if len(lesson[0]) > 2)
            by_signature[r.signature].learn(r.journal)
            taught += len(r.journal)
        assert taught > 100 and analysed > 0  # outcomes of the missing-fact analysis taught too
        assert [pupil.evaluate(p).to_json() for p in rows] == expected
        assert sum(r.engine_runs for r in pupil.runners) == 0
        assert [plain.evaluate(p).to_json() for p in rows] == expected


def test_runners_under_other_parameters_have_other_signatures() -> None:
    """A lesson is taken only by a runner of the same compiled rules: a profile that moves
    a threshold changes the signature of the decisions that use it, and only theirs."""
    with RuleEngine.default() as a, RuleEngine.default() as b, RuleEngine.default(profile="day-547-younger") as c:
        assert [r.signature for r in a.runners] == [r.signature for r in b.runners]
        moved = {r.decision.id for r, other in zip(a.runners, c.runners) if r.signature != other.signature}
        assert "inrgss" in moved and len(moved) < len(a.runners)


_PARENT = os.getpid()


def _dies_in_a_worker(chunk: list[Any], engine: Any) -> list[int]:
    if os.getpid() != _PARENT:
        os._exit(3)
    return [len(chunk)]


def test_a_worker_that_dies_is_an_error_not_a_hang() -> None:
    global _PARENT
    _PARENT = os.getpid()
    spec = EngineSpec(decisions=("inrgss",))
    with spec.build() as engine:
        with pytest.raises(WorkerLost) as caught:
            list(_spread(range(5000), 2, spec, engine, _dies_in_a_worker))
    assert "exited with status 3 before its rows were done" in caught.value.diagnostics[0].message
    assert caught.value.diagnostics[0].code == "NB531" and caught.value.exit_code == 71


class _FakeWorker:
    pass


def test_the_lesson_log_keeps_only_what_a_worker_has_yet_to_be_sent() -> None:
    with RuleEngine.default() as engine:
        a, b = _FakeWorker(), _FakeWorker()
        cells = _Cells(engine, [a, b], on=True)  # type: ignore[list-item]
        runner = engine.runners[0]
        lesson = ("key", (), (), {})
        cells.taught(a, [(runner.signature, [lesson])])  # type: ignore[arg-type]
        assert cells.lessons_for(a) == []  # its own lesson is not sent back
        assert len(cells.log) == 1  # b has yet to be sent it
        assert cells.lessons_for(b) == [(runner.signature, [lesson])]
        assert len(cells.log) == 0  # everyone has it: dropped
        cells.close()
        assert all(r.journal is None for r in engine.runners)


def test_spawned_workers_build_their_own_engine_and_write_the_same_bytes(
        cohort_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where processes are spawned (macOS, Windows), a worker cannot inherit this one's
    checked rules: it builds its engine from the spec, and no lessons are exchanged (its
    rules are the files on disk, not necessarily this process's)."""
    import multiprocessing

    spec = EngineSpec(decisions=("inrgss", "inrg"))
    with spec.build() as engine:
        one = _run(cohort_file, 1, spec, engine)
    spawn = multiprocessing.get_context("spawn")
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: spawn)
    with spec.build() as engine:
        before = len(engine.runners[0]._cache)
        assert _run(cohort_file, 2, spec, engine) == one
        evaluated_here = len(engine.runners[0]._cache) - before
    with spec.build() as engine:  # every cell met by one process, for comparison
        _run(cohort_file, 1, spec, engine)
        assert evaluated_here < len(engine.runners[0]._cache)  # nothing taught: the worker's cells stayed there


def test_objects_frozen_for_the_fork_are_unfrozen_after_the_batch(cohort_file: Path) -> None:
    """The batch leaves this process's objects out of collections while it forks and runs
    (no collector writes to pages the workers share), and gives them back at the end."""
    import gc

    frozen_during: list[int] = []
    spec = EngineSpec(decisions=("inrgss",))

    def spy(chunk: Any, *args: Any) -> Any:
        frozen_during.append(gc.get_freeze_count())
        return _work_lines(chunk, *args)

    from nbrules.batch import _work_lines, jsonl_lines

    assert gc.get_freeze_count() == 0
    with spec.build() as engine, open(cohort_file, "rb") as lines:
        chunks = list(_spread(jsonl_lines(lines, 1 << 20), 2, spec, engine, spy, "id", 1 << 20))
    assert sum(len(chunk.lines) for chunk in chunks) == 1500
    assert frozen_during and min(frozen_during) > 0  # frozen while this process evaluated its chunks
    assert gc.get_freeze_count() == 0


def test_a_host_that_froze_its_heap_keeps_it_frozen(cohort_file: Path) -> None:
    """A host (a pre-fork server; the CLI itself) that called gc.freeze() keeps its heap
    frozen after a batch: the batch thaws only what it froze in a heap it found thawed."""
    import gc

    spec = EngineSpec(decisions=("inrgss",))
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with spec.build() as engine:
            _run(cohort_file, 2, spec, engine)
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()


def _fails_in_a_worker(chunk: list[Any], engine: Any) -> list[int]:
    if os.getpid() != _PARENT:
        raise ValueError("a bug in a worker")
    return [len(chunk)]


def test_an_error_in_a_worker_is_raised_here_with_its_traceback() -> None:
    global _PARENT
    _PARENT = os.getpid()
    spec = EngineSpec(decisions=("inrgss",))
    with spec.build() as engine:
        with pytest.raises(ValueError, match="a bug in a worker") as caught:
            list(_spread(range(5000), 2, spec, engine, _fails_in_a_worker))
    assert "_fails_in_a_worker" in str(caught.value.__cause__)  # the worker's traceback, chained
    assert all(r.journal is None for r in engine.runners)


def test_a_worker_that_cannot_be_started_stops_the_run_and_leaves_no_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second of three workers cannot be forked (too many processes): NB531, and the
    first, already started, is stopped; journals off, nothing frozen."""
    import gc
    import multiprocessing

    context = multiprocessing.get_context()
    real_start = context.Process.start
    started: list[Any] = []

    def start(self: Any) -> None:
        if started:
            raise OSError(11, "Resource temporarily unavailable")
        real_start(self)
        started.append(self)

    monkeypatch.setattr(context.Process, "start", start)
    spec = EngineSpec(decisions=("inrgss",))
    with spec.build() as engine:
        with pytest.raises(WorkerLost) as caught:
            list(_spread(range(5000), 3, spec, engine, _dies_in_a_worker))
        assert caught.value.diagnostics[0].code == "NB531"
        assert "could not be started" in caught.value.diagnostics[0].message
        assert all(r.journal is None for r in engine.runners)
    [first] = started
    assert not first.is_alive() and first.exitcode is not None
    assert gc.get_freeze_count() == 0


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # on purpose (3.12+)
def test_a_fork_waits_for_a_durable_rules_call_and_the_child_starts_with_the_lock_free() -> None:
    """A process forked (a batch worker) while another thread is inside durable-rules
    would inherit its lock held: the fork waits for the call to end, and the child can
    evaluate."""
    import threading
    import time

    from nbrules.backend import engine_lock

    with RuleEngine.default(decisions=("inrgss",)) as engine:
        inside = threading.Event()

        def hold() -> None:
            with engine_lock():
                inside.set()
                time.sleep(0.3)

        holder = threading.Thread(target=hold)
        holder.start()
        inside.wait()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: one evaluation, then out
            try:
                ok = engine.evaluate({"age_days": 100, "primary_idrfs": [], "metastatic_sites": []}).outputs.get(
                    "inrgss_stage") == "L1"  # localised, no IDRF, no metastasis: L1
            finally:
                os._exit(0 if ok else 1)
        waited = time.perf_counter() - start
        deadline = time.monotonic() + 20
        done, status = os.waitpid(pid, os.WNOHANG)
        while not done and time.monotonic() < deadline:  # a child stuck on the lock: fail, not hang
            time.sleep(0.05)
            done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        holder.join()
    assert done, "the forked child never got the durable-rules lock"
    assert waited > 0.1 and os.waitstatus_to_exitcode(status) == 0


def test_a_worker_that_cannot_read_its_next_rows_ends_the_run_instead_of_hanging(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker out of memory reading a chunk can no longer drain its tasks: were it to
    go on, this process could block sending it a chunk while it blocks sending results.
    It ends at once, and the run stops with NB531 (measured before: a hang)."""
    import signal
    from multiprocessing.connection import Connection

    parent = os.getpid()
    real = Connection.recv_bytes
    calls = [0]

    def recv_bytes(self: Connection, maxlength: int | None = None) -> bytes:
        if os.getpid() != parent:
            calls[0] += 1
            if calls[0] == 3:
                raise MemoryError
        return real(self, maxlength)

    def too_long(signum: int, frame: Any) -> None:
        raise TimeoutError("the run hung")

    monkeypatch.setattr(Connection, "recv_bytes", recv_bytes)
    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(60)
    try:
        spec = EngineSpec(decisions=("inrgss",))
        with spec.build() as engine:
            with pytest.raises(WorkerLost) as caught:
                list(_spread(range(5000), 2, spec, engine, _whose))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "could not read its next rows" in caught.value.diagnostics[0].message


def test_a_small_input_starts_only_the_workers_it_can_keep_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """One chunk is evaluated here, with no worker process; three chunks start at most
    two workers, whatever --workers says."""
    from nbrules import batch

    started: list[int] = []
    real_init = batch._Worker.__init__

    def init(self: Any, *args: Any) -> None:
        started.append(1)
        real_init(self, *args)

    monkeypatch.setattr(batch._Worker, "__init__", init)
    spec = EngineSpec(decisions=("inrgss",))
    here = os.getpid()
    with spec.build() as engine:
        assert [pid for c in _spread(range(3), 4, spec, engine, _whose) for pid in c] == [here]
        assert started == []
        chunks = list(_spread(range(3 * batch.CHUNK), 8, spec, engine, _whose))
    assert len(chunks) == 3 and len(started) == 2
