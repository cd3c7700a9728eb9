"""Long checks: valgrind over the evaluation path, and flat memory over 100,000 evaluations."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys

import pytest

from nbrules import RuleEngine

from .conftest import REPO

pytestmark = pytest.mark.slow


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_valgrind_finds_nothing_in_durable_rules_on_our_path() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "valgrind" / "check.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 inside durable-rules" in proc.stdout


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_valgrind_check_does_catch_the_known_bug() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "valgrind" / "check.py"), "--control"],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "deleteState" in proc.stdout


def test_memory_is_flat_over_100000_evaluations(engine: RuleEngine) -> None:
    runner = engine.runners[0]
    patients = [
        {"age_days": 183, "primary_idrfs": [], "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": False},
        {"age_days": 900, "metastatic_sites": ["bone"]},
        {"age_days": 300, "primary_idrfs": [], "metastatic_sites": []},
        {"metastatic_sites": ["skin"]},
    ]
    views = [runner.view(p) for p in patients]
    for i in range(5000):  # warm up allocator pools
        runner.engine.run(views[i % 4])
    gc.collect()
    before = _rss_mb()
    for i in range(100_000):
        runner.engine.run(views[i % 4])
    gc.collect()
    grown = _rss_mb() - before
    # A leaked session costs ~1 KB: 100,000 of them would be ~100 MB.
    assert grown < 5, f"resident memory grew by {grown:.1f} MB"
    assert not runner.engine.has_session(runner.engine.last_sid or "")


def test_memory_is_flat_over_200_engine_constructions() -> None:
    facts = {"age_days": 300, "metastatic_sites": ["liver"]}
    for _ in range(20):
        RuleEngine.default().close()
    gc.collect()
    before = _rss_mb()
    for _ in range(200):
        eng = RuleEngine.default()
        eng.evaluate(facts)
        eng.close()
    gc.collect()
    grown = _rss_mb() - before
    assert grown < 15, f"resident memory grew by {grown:.1f} MB over 200 engines"
