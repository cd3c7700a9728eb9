"""Batches never lose a row: every bad row becomes an error record with its row number
and the run goes on; a killed run leaves OUT.partial (never a truncated OUT) and no
worker process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbrules.cli import main

from .conftest import DATA, REPO

HOSTILE = DATA / "hostile"


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_bad_jsonl_row_is_an_error_record_and_the_run_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    for workers in ("1", "2"):
        assert main(["evaluate", "--batch", str(HOSTILE / "bad-rows.jsonl"), "--out", str(out), "--workers", workers,
                     "-q"]) == 0
        recs = _records(out)
        assert [r["row"] for r in recs] == list(range(1, 15))
        assert [r["id"] for r in recs[:8]] == [f"r{i}" for i in range(1, 9)]  # the rows before the bad line survive
        codes = {r["row"]: r["problems"][0]["code"] for r in recs if r["status"] == "invalid"}
        assert codes == {9: "NB501", 10: "NB509", 11: "NB509", 12: "NB551"}
        assert recs[12]["id"] == "exp" and recs[12]["status"] in ("ok", "indeterminate")  # 1e-05 evaluates
        assert recs[13]["id"] == "last"


def test_every_bad_csv_row_is_an_error_record(tmp_path: Path) -> None:
    src = tmp_path / "cohort.csv"
    with open(src, "wb") as f:
        f.write(b"id,age_days,metastatic_sites\n")
        f.write(b"a,100,\n")
        f.write(b"big,100," + b"x" * 200_000 + b"\n")  # a field over the csv module's 128 KiB limit
        f.write(b"long," + b"9" * 5000 + b",\n")
        f.write(b"caf\xe9,100,\n")  # not UTF-8
        f.write(b'deep,100,"' + b"[" * 1000 + b"]" * 1000 + b'"\n')
        f.write(b"z,400,[]\n")
    out = tmp_path / "out.jsonl"
    assert main(["evaluate", "--batch", str(src), "--out", str(out), "-q"]) == 0
    recs = _records(out)
    assert [r["row"] for r in recs] == [2, 3, 4, 5, 6, 7]  # line numbers: the header is line 1
    assert [r["status"] for r in recs] == ["indeterminate", "invalid", "invalid", "invalid", "invalid", "indeterminate"]
    assert [r["problems"][0]["code"] for r in recs[1:5]] == ["NB509", "NB509", "NB551", "NB509"]
    assert recs[2]["problems"][0]["pointer"] == "/age_days"


def test_a_row_over_the_size_limit_is_skipped_in_bounded_pieces(tmp_path: Path) -> None:
    src = tmp_path / "cohort.jsonl"
    src.write_text('{"id": "a", "age_days": 1}\n{"id": "huge", "x": "' + "y" * 3_000_000 + '"}\n{"id": "b"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["evaluate", "--batch", str(src), "--out", str(out), "-q"]) == 0
    recs = _records(out)
    assert [(r["row"], r["status"]) for r in recs] == [(1, "indeterminate"), (2, "invalid"), (3, "indeterminate")]
    assert recs[1]["problems"][0]["code"] == "NB509"


def test_output_is_renamed_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert main(["evaluate", "--batch", str(HOSTILE / "bad-rows.jsonl"), "--out", str(out), "-q"]) == 0
    assert out.exists() and not Path(f"{out}.partial").exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _running_batch(tmp_path: Path, workers: int) -> tuple[subprocess.Popen[str], Path, Path]:
    """A CLI batch of 200,000 rows with ``workers``, once it has written its first rows:
    (the process, OUT, OUT.partial)."""
    src = tmp_path / "cohort.jsonl"
    with open(src, "w") as f:
        for i in range(200_000):
            f.write(json.dumps({"id": f"p{i}", "age_days": i % 3000, "metastatic_sites": [] if i % 2 else ["bone"],
                                "mycn_status": "not_amplified"}) + "\n")
    out = tmp_path / "out.jsonl"
    partial = Path(f"{out}.partial")
    proc = subprocess.Popen([sys.executable, "-m", "nbrules.cli", "evaluate", "--batch", str(src), "--out", str(out),
                             "--workers", str(workers), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size > 0) and proc.poll() is None:
        time.sleep(0.2)
    return proc, out, partial


def test_a_killed_run_leaves_a_partial_file_and_no_workers(tmp_path: Path) -> None:
    proc, out, partial = _running_batch(tmp_path, 3)
    try:
        workers = _children(proc.pid)  # --workers 3: this process and two worker processes
        assert partial.exists() and len(workers) == 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "worker processes outlived the killed parent"
        assert not out.exists() and partial.stat().st_size > 0  # clearly partial: only OUT.partial
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_killed_worker_stops_the_run_with_nb531_and_exit_71(tmp_path: Path) -> None:
    """A worker ignores SIGINT (Ctrl-C is the parent's); kill -9 of a worker (as the
    out-of-memory killer does) stops the run at once with exit code 71 and one NB531
    naming the signal, no traceback; only OUT.partial is left, holding whole lines, the
    first rows of the output."""
    proc, out, partial = _running_batch(tmp_path, 2)
    try:
        [worker] = _children(proc.pid)
        os.kill(worker, signal.SIGINT)
        time.sleep(0.5)
        assert _alive(worker), "a worker ended on SIGINT"
        os.kill(worker, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 71, err
    assert "Traceback" not in err
    assert f"NB531 [worker-lost] a worker process (pid {worker}) was killed by SIGKILL" in err
    assert err.count("NB531") == 1
    assert not out.exists()
    lines = partial.read_text().splitlines()
    assert lines and [json.loads(line)["row"] for line in lines] == list(range(1, len(lines) + 1))


@pytest.mark.parametrize("name, out", [("cohort.jsonl", "cohort.jsonl"), ("res.jsonl.partial", "res.jsonl"),
                                       ("export", "export/Patient.ndjson"), ("export", "export/Results.NDJSON")])
def test_results_are_never_written_over_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  name: str, out: str) -> None:
    """--out naming the input (or OUT.partial being it), or an .ndjson file inside the
    FHIR Bulk export read, is refused before anything is written: the input is left as
    it was."""
    source = tmp_path / name
    if name == "export":
        shutil.copytree(REPO / "examples" / "fhir" / "bulk", source)
        before = {p.name: p.read_bytes() for p in source.iterdir()}
    else:
        source.write_text('{"id": "a", "age_days": 100}\n')
        before = {name: source.read_bytes()}
    args = ["evaluate", "--batch", str(source), "--out", str(tmp_path / out), "-q"]
    assert main(args + ([] if name == "export" else ["--input-format", "jsonl"])) == 4
    assert "it is the input" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in source.iterdir()} if name == "export" else {name: source.read_bytes()}
    assert after == before


def test_input_refused_before_a_row_leaves_no_partial_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CSV without its id column, or a directory without .ndjson files, is a usage error
    (exit 4) found before any row: nothing is written, not even an empty OUT.partial."""
    csv_file = tmp_path / "noid.csv"
    csv_file.write_text("pid,age_days\nx,100\n")
    empty = tmp_path / "export"
    empty.mkdir()
    for source, why in ((csv_file, "the CSV header has no 'id' column"), (empty, "this directory holds none")):
        out = tmp_path / "out.jsonl"
        assert main(["evaluate", "--batch", str(source), "--out", str(out), "--workers", "2", "-q"]) == 4
        err = capsys.readouterr().err
        assert err.startswith(f"nbrules evaluate: --batch {source}: ") and why in err, err
        assert not out.exists() and not Path(f"{out}.partial").exists()
