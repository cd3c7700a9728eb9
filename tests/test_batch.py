"""Batch evaluation: input order, constant memory, worker processes, no row lost."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbrules import RuleEngine
from nbrules.batch import EngineSpec, _Progress, run_batch
from nbrules.cli import main

from .conftest import REPO

COHORT = REPO / "examples" / "cohort.jsonl"


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_batch_writes_one_record_per_row_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    assert main(["evaluate", "--batch", str(COHORT), "--out", str(out)]) == 0
    records = _lines(out.read_text())
    assert [r["row"] for r in records] == list(range(1, 9))
    assert [r["id"] for r in records] == ["p001", "p002", "p003", "p004", "p005", "p006", "p007", None]
    by = {r["row"]: r for r in records}
    assert by[6]["status"] == "invalid"
    assert by[6]["problems"][0] == {"pointer": "/age_days", "code": "NB502", "name": "input-wrong-type",
                                    "message": "expected a whole number, found text 'two years'"}
    assert by[8]["problems"][0]["code"] == "NB508"
    assert by[1]["result"]["outputs"]["inrgss_stage"] == "MS"
    err = capsys.readouterr().err
    assert "8 rows: 0 ok, 6 indeterminate, 2 invalid" in err


def test_batch_results_equal_single_evaluations(tmp_path: Path) -> None:
    out = io.StringIO()
    run_batch(str(COHORT), out, "jsonl", EngineSpec(cache_size=0))
    with RuleEngine.default(cache_size=0) as eng:
        for record, line in zip(_lines(out.getvalue()), COHORT.read_text().splitlines()):
            if record["status"] != "invalid":
                facts = json.loads(line)
                facts.pop("id")
                assert record["result"] == eng.evaluate(facts).to_dict()


def test_batch_csv_and_workers_give_the_same_output(tmp_path: Path) -> None:
    rows = ["id,age_days,metastatic_sites,primary_idrfs,mibg_bone_or_marrow_avid,mycn_status"]
    for i in range(1200):
        sites = ["", "liver", "bone", "skin;liver", "[]"][i % 5]
        rows.append(f"r{i},{100 + (i * 13) % 1500},{sites},{'[]' if i % 2 else 'renal_pedicle_invasion'},"
                    f"{'false' if i % 3 else ''},{'amplified' if i % 7 == 0 else 'not_amplified'}")
    rows.insert(400, "bad,notanumber,,,,")
    src = tmp_path / "cohort.csv"
    src.write_text("\n".join(rows) + "\n")
    one, two = io.StringIO(), io.StringIO()
    s1 = run_batch(str(src), one, "csv", EngineSpec(), workers=1)
    s2 = run_batch(str(src), two, "csv", EngineSpec(), workers=2)
    assert one.getvalue() == two.getvalue()
    assert (s1.rows, s1.invalid) == (s2.rows, s2.invalid) == (1201, 1)
    assert s1.ok + s1.indeterminate + s1.invalid == s1.rows


def test_no_progress_bar_when_piped(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "nbrules.cli", "evaluate", "--batch", str(COHORT), "--out",
                           str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 0 and "\r" not in proc.stderr and "rows/s" in proc.stderr


def test_progress_bar_shows_rate_and_eta() -> None:
    stream = io.StringIO()
    bar = _Progress(stream, total_bytes=1000)
    bar.update(50, 250, final=True)
    text = stream.getvalue()
    assert "50 rows" in text and "rows/s" in text and "25%" in text and "ETA " in text


def test_batch_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(COHORT.read_bytes())))
    assert main(["evaluate", "--batch", "-", "--input-format", "jsonl", "-q"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8


def test_cached_and_uncached_engines_give_identical_results() -> None:
    """The per-cell cache is a legitimate speed-up only if results are byte-identical."""
    import itertools

    patients = []
    for age, sites, mycn, hist, ploidy, q11 in itertools.product(
            [30, 200, 400, 546, 547, 900, 2000], [[], ["liver"], ["bone"], ["bone_marrow"]],
            [None, "amplified", "not_amplified"], [None, "neuroblastoma", "ganglioneuroblastoma_intermixed"],
            [None, "diploid", "hyperdiploid"], [None, "normal"]):
        p: dict = {"age_days": age, "metastatic_sites": sites, "primary_idrfs": [] if age % 2 else ["two_compartments"]}
        if "bone_marrow" in sites:
            p["bone_marrow_tumor_percent"] = 5 if age < 500 else 20
        for k, v in (("mycn_status", mycn), ("histology_category", hist), ("ploidy", ploidy), ("chr11q_status", q11)):
            if v is not None:
                p[k] = v
        patients.append(p)
    with RuleEngine.default(cache_size=0) as plain, RuleEngine.default(cache_size=64) as cached:
        for _ in range(2):  # the second pass is served from the cache (and evicts)
            for p in patients:
                assert cached.evaluate(p).to_json() == plain.evaluate(p).to_json()


_PEAK_RSS = """
import io, resource, sys
from nbrules.batch import EngineSpec, run_batch
with open(sys.argv[2], "w") as out:
    s = run_batch(sys.argv[1], out, "jsonl", EngineSpec(), workers=int(sys.argv[3]))
print(s.rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_batch_streams_in_constant_memory(tmp_path: Path, workers: int) -> None:
    """Peak memory of the batch process does not depend on the number of rows.  The rows
    repeat the example cohort's patients, so the per-cell cache (on, as by default) holds
    the same few cells for 2,000 rows as for 40,000: what would grow is rows or results held."""
    lines = COHORT.read_text().splitlines()

    def peak(rows: int) -> tuple[int, int]:
        src = tmp_path / f"c{rows}.jsonl"
        # every row its own id (a repeated id is an error record, NB560)
        src.write_text("\n".join(json.dumps({**json.loads(lines[i % len(lines)]), "id": f"r{i}"})
                                 for i in range(rows)) + "\n")
        out = tmp_path / "out.jsonl"
        proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(src), str(out), str(workers)],
                              capture_output=True, text=True, check=True)
        done, kb = map(int, proc.stdout.split())
        assert done == rows
        assert sum(1 for _ in open(out)) == rows
        return kb, out.stat().st_size // 1024

    small, _ = peak(2_000)
    large, out_kb = peak(40_000)  # 20x the rows; holding them or their results would cost > out_kb
    assert out_kb > 50_000
    # Allocator noise is a few MB; anything proportional to the rows would be > 50 MB.
    assert large - small < out_kb // 5, f"peak RSS {small} KB for 2,000 rows, {large} KB for 40,000"


def test_compact_json_is_the_plain_encoding_of_the_result() -> None:
    """The batch writes results with pre-encoded constant parts; the bytes must not differ."""
    patients = [json.loads(line) for line in COHORT.read_text().splitlines()]
    patients += [{"age_days": 700, "metastatic_sites": ["bone"], "inrgss_stage": "L1"},  # from input, with warning
                 {"age_days": 3000, "histology_category": "ganglioneuroma_mature"},  # not applicable
                 {"inpc_histology": "favorable", "age_days": 100, "metastatic_sites": []}]
    seen = 0
    with RuleEngine.default() as eng:
        for p in patients:
            p.pop("id", None)
            if eng.check_patient(p) and any(d.is_error for d in eng.check_patient(p)):
                continue
            r = eng.evaluate(p)
            plain = json.dumps(r.to_dict(), ensure_ascii=False, separators=(",", ":"))
            assert r.to_compact_json() == plain
            assert all(f.encoded is not None for f in r.fired)
            for f in r.fired:  # the on-demand path gives the same fragments
                assert f.static_json() == f.encoded
            seen += bool(r.warnings) + bool(r.from_input) + bool(r.not_applicable) + bool(r.indeterminate)
    assert seen >= 4


def test_workers_parse_the_lines_and_the_parent_keeps_ids_unique(tmp_path: Path) -> None:
    """With workers, JSONL lines are parsed in the workers and the parent checks ids
    (NB560); every record is byte for byte the single-process one, whether the workers
    start from the parent's checked rules or build their own."""
    rows = [json.loads(line) for line in COHORT.read_text().splitlines()]
    lines = [json.dumps(r) for r in rows]
    lines += ["", json.dumps({**rows[0]}),  # a blank line, then a row whose id the first row has
              json.dumps({k: v for k, v in rows[1].items() if k != "id"}),  # no id: NB508
              '{"id": "x", "age_days": 1, "age_days": 2}',  # duplicate key: NB506
              json.dumps({**rows[2], "id": "dup-later"}), json.dumps({**rows[3], "id": "dup-later"})]
    lines = lines * 30  # more than one chunk per worker
    src = tmp_path / "cohort.jsonl"
    src.write_text("\n".join(lines) + "\n")
    outputs = []
    spec = EngineSpec()
    with spec.build() as engine:
        for workers, parent in ((1, engine), (2, engine), (2, None)):
            out = io.StringIO()
            run_batch(str(src), out, "jsonl", spec, workers=workers, engine=parent)
            outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    records = _lines(outputs[0])
    seen: set[str] = set()
    for r in records:  # the first row with an id is evaluated, every later one is NB560
        again = r["id"] is not None and r["id"] in seen
        assert again == (r["status"] == "invalid" and r["problems"][0]["code"] == "NB560"), r
        seen.add(r["id"])
    codes = {r["problems"][0]["code"] for r in records if r["status"] == "invalid"}
    assert {"NB506", "NB508", "NB560"} <= codes
    assert [r["row"] for r in records] == sorted(r["row"] for r in records)
