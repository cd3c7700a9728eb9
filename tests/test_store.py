"""The on-disk cache of checked packages (nbrules.store): a hit skips load, validate,
check, verify and the cases; any change to what a build depends on is a miss; an entry
that cannot be trusted is rebuilt; and nothing a user sees depends on the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from nbrules import cases, governance, pipeline, store as store_mod, verify
from nbrules.cache import SizedCache
from nbrules.cli import main
from nbrules.pipeline import build_bundled, build_directory
from nbrules.resources import bundled_rules_dir
from nbrules.store import BuildStore, StoredBuild, open_store

from .conftest import DEMO, REPO

EXAMPLES = sorted((REPO / "examples").glob("*.json"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache directory, turned on (the suite runs with NBRULES_CACHE=off)."""
    monkeypatch.delenv("NBRULES_CACHE", raising=False)
    where = tmp_path / "cache"
    monkeypatch.setenv("NBRULES_CACHE_DIR", str(where))
    return where


@pytest.fixture
def forget(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Forget what this process has learnt (as a new process would), and make building,
    verifying or running cases fail loudly: what a hit returns comes from the disk."""

    def arm() -> None:
        monkeypatch.setattr(governance, "_VERDICTS", SizedCache("governance.verdicts", 4 * 1024 * 1024))

        def boom(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("rebuilt although the cache holds the build")

        monkeypatch.setattr(pipeline, "build_sources", boom)
        monkeypatch.setattr(verify, "verify_decision", boom)
        monkeypatch.setattr(cases, "run_cases", boom)

    return arm


def _entries(where: Path) -> list[Path]:
    return sorted(where.glob("*.nbc"))


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_second_build_is_read_from_the_cache(cache: Path, forget: Callable[[], None]) -> None:
    first = build_bundled(open_store())
    assert len(_entries(cache)) == 1
    assert (os.stat(cache).st_mode & 0o777) == 0o700
    forget()
    second = build_bundled(open_store())
    assert [d.key for d in second.decisions] == [d.key for d in first.decisions]
    assert second.diagnostics == first.diagnostics
    assert [(f.source.display, f.source.sha256) for f in second.files] == \
        [(f.source.display, f.source.sha256) for f in first.files]
    assert len(_entries(cache)) == 1


def test_an_edited_file_is_rebuilt(cache: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(bundled_rules_dir(), rules)
    before = build_directory(rules, store=open_store())
    target = rules / "histology" / "mki-class.yaml"
    text = target.read_text(encoding="utf-8")
    old_title = next(d.title for d in before.decisions if d.id == "mki-class")
    target.write_text(text.replace(f"title: {old_title}", "title: MKI class, edited"), encoding="utf-8")
    after = build_directory(rules, store=open_store())
    assert next(d.title for d in after.decisions if d.id == "mki-class") == "MKI class, edited"
    assert len(_entries(cache)) == 2


def test_an_entry_of_another_nbrules_version_is_not_trusted(cache: Path, rules_dir: Callable[..., Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = rules_dir(demo=DEMO)
    bs = open_store()
    assert bs is not None
    build = build_directory(root, store=bs)
    key = bs.key(pipeline.directory_sources(root, build.label), build.label, root)
    assert bs.get(key) is not None
    monkeypatch.setattr(store_mod, "__version__", "999.0.0")
    later = BuildStore(cache)
    assert later.key(pipeline.directory_sources(root, build.label), build.label, root) != key
    assert later.get(key) is None  # even under the same name, the header names the version that wrote it


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage", "empty", "foreign-header"])
def test_a_corrupt_entry_is_ignored_and_rebuilt(damage: str, cache: Path, rules_dir: Callable[..., Path]) -> None:
    root = rules_dir(demo=DEMO)
    fresh = build_directory(root, store=open_store())
    (entry,) = _entries(cache)
    blob = entry.read_bytes()
    entry.write_bytes({
        "truncated": blob[: len(blob) // 2],
        "flipped": blob[:-10] + bytes(b ^ 0xFF for b in blob[-10:]),
        "garbage": os.urandom(len(blob)),
        "empty": b"",
        "foreign-header": b"nbrules-cache 1 0.0.1 cpython-00 " + b"0" * 64 + b"\n" + blob.partition(b"\n")[2],
    }[damage])
    again = build_directory(root, store=open_store())
    assert [d.key for d in again.decisions] == [d.key for d in fresh.decisions]
    assert again.diagnostics == fresh.diagnostics
    assert BuildStore(cache).get(entry.stem) is not None  # rewritten whole


def test_turned_off_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    where = tmp_path / "cache"
    monkeypatch.setenv("NBRULES_CACHE", "off")
    assert open_store(where) is None
    code, out, _ = _cli(["evaluate", str(EXAMPLES[0]), "--cache-dir", str(where)], capsys)
    assert code == 0 and out
    assert not where.exists()


def test_the_cli_option_names_the_directory(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "elsewhere"
    code, _, _ = _cli(["evaluate", str(EXAMPLES[0]), "--cache-dir", str(mine)], capsys)
    assert code == 0
    assert len(_entries(mine)) == 1 and not cache.exists()


def test_results_are_byte_identical_with_and_without_the_cache(cache: Path, forget: Callable[[], None],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    runs: dict[str, list[tuple[int, str, str]]] = {}
    monkeypatch.setenv("NBRULES_CACHE", "off")
    runs["off"] = [_cli(["evaluate", str(p), "--format", fmt], capsys) for p in EXAMPLES for fmt in ("json", "text")]
    monkeypatch.delenv("NBRULES_CACHE")
    runs["cold"] = [_cli(["evaluate", str(p), "--format", fmt], capsys) for p in EXAMPLES[:1] for fmt in ("json",)]
    forget()
    runs["warm"] = [_cli(["evaluate", str(p), "--format", fmt], capsys) for p in EXAMPLES for fmt in ("json", "text")]
    assert runs["cold"][0] == runs["off"][0]
    assert runs["warm"] == runs["off"]
    assert all(code == 0 for code, _, _ in runs["off"])


def test_a_package_whose_cases_fail_still_fails_from_a_warm_cache(cache: Path, rules_dir: Callable[..., Path],
                                                                  forget: Callable[[], None],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = rules_dir(demo=DEMO.replace("expect: {demo_out: low, fired: [young]}",
                                       "expect: {demo_out: high, fired: [young]}"))
    patient = root.parent / "p.json"
    patient.write_text('{"age_days": 100, "mycn_status": "not_amplified"}', encoding="utf-8")
    cold = _cli(["evaluate", str(patient), "--rules", str(root)], capsys)
    forget()
    warm = _cli(["evaluate", str(patient), "--rules", str(root)], capsys)
    assert cold[0] == warm[0] == 3
    assert "NB801" in cold[2] and "NB701" in cold[2]  # active but not clean: the failing case
    assert warm == cold


def test_a_directory_others_can_write_is_not_used(tmp_path: Path, rules_dir: Callable[..., Path]) -> None:
    if not hasattr(os, "getuid"):
        pytest.skip("ownership and modes are POSIX")
    where = tmp_path / "shared"
    where.mkdir(mode=0o777)
    os.chmod(where, 0o777)
    bs = BuildStore(where)
    build_directory(rules_dir(demo=DEMO), store=bs)
    assert _entries(where) == []


def test_concurrent_writers_leave_one_whole_entry(cache: Path, rules_dir: Callable[..., Path]) -> None:
    root = rules_dir(demo=DEMO)
    build = build_directory(root)
    bs = BuildStore(cache)
    key = bs.key(pipeline.directory_sources(root, build.label), build.label, root)
    value = StoredBuild(build, tuple(() for _ in build.decisions))
    threads = [threading.Thread(target=bs.put, args=(key, value)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.name for p in cache.iterdir()] == [f"{key}.nbc"]  # no temporary file left behind
    hit = bs.get(key)
    assert hit is not None and [d.key for d in hit.build.decisions] == [d.key for d in build.decisions]


def test_old_entries_are_removed(cache: Path, rules_dir: Callable[..., Path]) -> None:
    build = build_directory(rules_dir(demo=DEMO))
    bs = BuildStore(cache)
    value = StoredBuild(build, None)
    for i in range(store_mod.MAX_ENTRIES + 3):
        assert bs.put(f"{i:064x}", value)
    assert len(_entries(cache)) == store_mod.MAX_ENTRIES
    assert bs.get(f"{0:064x}") is None and bs.get(f"{store_mod.MAX_ENTRIES + 2:064x}") is not None


def test_a_fresh_process_from_a_warm_cache_prints_the_same_bytes(cache: Path) -> None:
    env = dict(os.environ, NBRULES_CACHE_DIR=str(cache))
    env.pop("NBRULES_CACHE", None)
    cmd = [sys.executable, "-c", "import sys; from nbrules.cli import main; sys.exit(main())",
           "evaluate", str(EXAMPLES[0])]
    cold = subprocess.run(cmd, env=env, capture_output=True, check=False)
    warm = subprocess.run(cmd, env=env, capture_output=True, check=False)
    off = subprocess.run(cmd, env=dict(env, NBRULES_CACHE="off"), capture_output=True, check=False)
    assert cold.returncode == warm.returncode == off.returncode == 0
    assert cold.stdout == warm.stdout == off.stdout and cold.stdout
    assert len(_entries(cache)) == 1


def test_validate_reports_the_same_problems_from_a_warm_cache(cache: Path, rules_dir: Callable[..., Path],
                                                              forget: Callable[[], None],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = rules_dir(demo=DEMO.replace("title: Demo decision", "title: Demo decision\ntitel: typo"),
                     other=DEMO.replace("decision: demo", "decision: other").replace("demo_out", "other_out"))
    monkeypatch.setenv("NBRULES_CACHE", "off")
    off = _cli(["validate", str(root)], capsys)
    monkeypatch.delenv("NBRULES_CACHE")
    cold = _cli(["validate", str(root)], capsys)
    forget()
    warm = _cli(["validate", str(root)], capsys)
    assert off[0] == 1 and "NB203" in off[1]  # the unknown key 'titel', located
    assert cold == warm == off
    assert len(_entries(cache)) == 1


def test_validate_stores_no_verdicts_and_the_first_engine_adds_them(cache: Path, rules_dir: Callable[..., Path],
                                                                    forget: Callable[[], None],
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """validate needs no verify or cases (an editor runs it after every edit); an engine
    does, once, and writes them into the entry."""
    root = rules_dir(demo=DEMO)
    patient = root.parent / "p.json"
    patient.write_text('{"age_days": 100, "mycn_status": "not_amplified"}', encoding="utf-8")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("validate ran verify or the cases")

    with monkeypatch.context() as m:
        m.setattr(verify, "verify_decision", boom)
        m.setattr(cases, "run_cases", boom)
        assert _cli(["validate", str(root)], capsys)[0] == 0
    (entry,) = _entries(cache)
    hit = BuildStore(cache).get(entry.stem)
    assert hit is not None and hit.verdicts is None
    first = _cli(["evaluate", str(patient), "--rules", str(root)], capsys)
    hit = BuildStore(cache).get(entry.stem)
    assert hit is not None and hit.verdicts == ((),)  # the demo decision is clean
    forget()
    assert _cli(["evaluate", str(patient), "--rules", str(root)], capsys) == first
    assert first[0] == 0 and json.loads(first[1])["outputs"] == {"demo_out": "low"}  # 100 days < 547


def test_an_engine_from_a_warm_cache_compiles_nothing(cache: Path, forget: Callable[[], None],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The entry an engine writes holds every decision compiled with its default
    parameters, so a process that reads it compiles nothing and prints the same bytes;
    a profile compiles (once) only the decisions whose parameters it moves."""
    from nbrules import compiler

    first = _cli(["evaluate", str(EXAMPLES[0])], capsys)
    (entry,) = _entries(cache)
    hit = BuildStore(cache).get(entry.stem)
    assert hit is not None and len(hit.build.compiled) == len(hit.build.decisions)
    forget()
    compiled: list[str] = []
    real = compiler.compile_decision

    def counting(decision: Any, params: Any = None) -> Any:
        compiled.append(decision.id)
        return real(decision, params)

    monkeypatch.setattr(compiler, "compile_decision", counting)
    assert _cli(["evaluate", str(EXAMPLES[0])], capsys) == first
    assert compiled == []
    assert _cli(["evaluate", str(EXAMPLES[0]), "--profile", "day-547-younger"], capsys)[0] == 0
    assert sorted(compiled) == ["cog-risk", "inpc", "inrg", "inrgss"]  # the decisions reading the 18-month cut


def test_a_build_compiles_a_decision_once_per_set_of_parameters() -> None:
    build = build_bundled()
    decision = next(d for d in build.decisions if d.id == "inrg")
    program = build.program(decision)
    assert build.program(decision, {}) is program and build.program(decision, None) is program
    moved = build.program(decision, {"eighteen_months_days": 365})
    assert moved is not program and moved.params["eighteen_months_days"] == 365
    assert build.program(decision, {"eighteen_months_days": 365}) is moved
    assert build.program(decision, {"eighteen_months_days": 547}) is program  # the value in force already
    assert program.params == decision.param_values()
    profiled = build.profiled(decision, "day-547-younger")  # a copy, not of this build: not memoised
    assert build.program(profiled).params["eighteen_months_days"] == profiled.param_values()["eighteen_months_days"] \
        != program.params["eighteen_months_days"]
    assert len(build.compiled) == 2


def test_the_library_writes_nothing_unless_given_a_store(cache: Path, rules_dir: Callable[..., Path]) -> None:
    from nbrules.commands import open_engine, validate_rules

    root = rules_dir(demo=DEMO)
    validate_rules(str(root))
    open_engine(str(root)).close()
    assert not cache.exists()
    open_engine(str(root), store=open_store()).close()
    hit = BuildStore(cache).get(_entries(cache)[0].stem)
    assert hit is not None and hit.verdicts == ((),)
