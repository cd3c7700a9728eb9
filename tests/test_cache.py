"""One cache policy (nbrules.cache): memos bounded by estimated bytes, LRU, thread-safe,
cleared with the engines that hold them."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from nbrules import RuleEngine
from nbrules.cache import CachePool, SizedCache, approx_size
from nbrules.loader import load_source
from nbrules.pipeline import _LOADED, loaded_size
from nbrules.sources import file_source
from nbrules.validator import validate_file

from .conftest import REPO
from .test_reload import _rss_mb


def test_a_cache_is_bounded_by_bytes_not_by_count() -> None:
    c: SizedCache[int, bytes] = SizedCache("t", 1000, size=len, key_size=lambda _: 0)
    for i in range(10):
        c.put(i, b"x" * 300)
    assert c.bytes <= 1000 and len(c) == 3  # three of 300 bytes fit under 1000
    assert [k for k in range(10) if k in c] == [7, 8, 9]
    c.put(100, b"y" * 10)  # small values: many more fit
    assert c.bytes == 910 and len(c) == 4
    c.put(200, b"z" * 1001)  # larger than the whole bound: returned, not kept
    assert 200 not in c and c.bytes == 910
    assert c.stats().evictions == 7


def test_keys_count_towards_the_bound() -> None:
    """A memo keyed by large objects is bounded by them too (the governance memo's keys once
    held each build's fact vocabulary, ~12 kB a reload, while its values were 40 bytes)."""
    c: SizedCache[tuple[str, ...], int] = SizedCache("t", 10_000, size=lambda _: 0)
    for i in range(100):
        c.put((f"k{i}", "x" * 1000), i)
    assert 0 < c.bytes <= 10_000 and len(c) < 10
    assert c.stats().evictions == 100 - len(c)


def test_governance_memo_keys_hold_no_build_of_the_vocabulary(engine: RuleEngine) -> None:
    from nbrules.governance import _key

    for runner in engine.runners:
        assert approx_size(_key(runner.decision)) < 1000  # a path, a hash, a digest


def test_least_recently_used_goes_first() -> None:
    c: SizedCache[str, bytes] = SizedCache("t", 30, size=len, key_size=lambda _: 0)
    c.put("a", b"1" * 10)
    c.put("b", b"2" * 10)
    c.put("c", b"3" * 10)
    assert c.get("a") == b"1" * 10  # a is now the most recently used
    c.put("d", b"4" * 10)
    assert "b" not in c and {"a", "c", "d"} <= {k for k in "abcd" if k in c}


def test_a_cache_of_zero_bytes_keeps_nothing() -> None:
    c: SizedCache[str, str] = SizedCache("t", 0)
    built = []
    for _ in range(3):
        c.get_or_build("k", lambda: built.append(1) or "v")
    assert len(built) == 3 and len(c) == 0
    with pytest.raises(ValueError):
        SizedCache("t", -1)


def test_get_or_build_builds_once_and_counts_hits() -> None:
    c: SizedCache[str, list[int]] = SizedCache("t", 10_000)
    first = c.get_or_build("k", lambda: [1, 2, 3])
    assert c.get_or_build("k", lambda: [9]) is first
    s = c.stats()
    assert (s.hits, s.misses, s.entries) == (1, 1, 1)
    c.clear()
    assert len(c) == 0 and c.bytes == 0 and c.get("k") is None


def test_threads_sharing_a_cache_keep_it_consistent() -> None:
    c: SizedCache[int, bytes] = SizedCache("t", 5000, size=len, key_size=lambda _: 0)

    def work(seed: int) -> None:
        for i in range(2000):
            k = (seed * 7919 + i) % 97
            got = c.get_or_build(k, lambda: bytes(k % 50 + 1))
            assert len(got) == k % 50 + 1

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [k for k in range(97) if k in c]
    assert c.bytes == sum(k % 50 + 1 for k in held) <= 5000


def test_the_size_estimate_counts_shared_objects_once_and_follows_dataclasses() -> None:
    blob = "x" * 10_000
    assert approx_size([blob, blob]) < 2 * approx_size(blob)
    assert approx_size({"a": [blob]}) > 10_000
    f = load_source(file_source(REPO / "rules/facts.yaml", "facts.yaml", "rules/facts.yaml"))
    assert approx_size(f) > 10 * len(f.source.data)  # the position index of every node


def test_the_estimate_of_a_loaded_file_is_close_to_what_loading_allocates() -> None:
    src = file_source(REPO / "rules/staging/inrgss.yaml", "inrgss.yaml", "rules/staging/inrgss.yaml")
    validate_file(load_source(src), "ruleset.schema.json")  # compile the validator first
    gc.collect()
    tracemalloc.start()
    try:
        f = load_source(src)
        value = (f, tuple(validate_file(f, "ruleset.schema.json")))
        allocated = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert 0.5 * allocated <= approx_size(value) <= 3 * allocated


def test_the_load_memo_estimates_every_bundled_file_close_to_the_full_walk() -> None:
    for path in sorted((REPO / "rules").rglob("*.yaml")):
        f = load_source(file_source(path, path.name, str(path)))
        value = (f, tuple(validate_file(f, "ruleset.schema.json")))
        assert 0.7 <= loaded_size(value) / approx_size(value) <= 1.5, path.name


def test_the_last_holder_to_release_a_pool_clears_it() -> None:
    pool = CachePool()
    c = pool.cache("x", 1000, size=len)
    assert pool.cache("x", 5) is c  # one cache per name
    pool.hold()
    pool.hold()
    c.put("k", b"v")
    pool.release()
    assert "k" in c  # one holder left
    pool.release()
    assert len(c) == 0
    with pytest.raises(RuntimeError):
        pool.release()


_CLOSE_SCRIPT = """
import sys
from nbrules import RuleEngine
from nbrules.cache import SHARED
def held():
    return {s.name: s.entries for s in SHARED.stats()}
with RuleEngine.default() as one:
    with RuleEngine.default() as two:
        full = held()
        assert full["pipeline.loaded"] >= 10 and full["governance.verdicts"] >= 1, full
    after_one = held()  # the first engine still holds the memos
one.close()  # closing twice is harmless
print(full["pipeline.loaded"], after_one["pipeline.loaded"], sum(held().values()))
"""


def test_closing_the_last_engine_clears_the_shared_memos() -> None:
    """In a fresh process (the suite itself holds the memos for speed)."""
    proc = subprocess.run([sys.executable, "-c", _CLOSE_SCRIPT], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    full, after_one, after_all = map(int, proc.stdout.split())
    assert after_one == full and after_all == 0


def _big_rules(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the bundled rules whose INRGSS file is padded to some 850 KB (comments
    are kept in the loaded file's lines), and that file."""
    root = tmp_path / "rules"
    shutil.copytree(REPO / "rules", root)
    inrgss = root / "staging/inrgss.yaml"
    inrgss.write_text(inrgss.read_text() + "".join(f"# padding line {i:06d} " + "." * 60 + "\n"
                                                   for i in range(10000)))
    return root, inrgss


def test_reloading_new_versions_of_a_big_file_keeps_the_load_memo_within_its_bound(tmp_path: Path) -> None:
    root, inrgss = _big_rules(tmp_path)
    with RuleEngine.from_directory(root) as eng:
        for i in range(8):
            inrgss.write_text(inrgss.read_text() + f"# edit {i}\n")
            assert eng.reload().changed
            assert _LOADED.bytes <= _LOADED.max_bytes
        versions = sum(1 for k in list(_LOADED._entries) if k[1] == str(inrgss))
        one = loaded_size(_LOADED.get(next(k for k in list(_LOADED._entries) if k[1] == str(inrgss))))
        assert one > 2_000_000  # the padded file, loaded, is a few megabytes
        assert versions <= _LOADED.max_bytes // one < 9  # not all nine versions are kept


@pytest.mark.slow
def test_reloading_a_big_file_fifty_times_leaves_memory_flat(tmp_path: Path) -> None:
    root, inrgss = _big_rules(tmp_path)
    with RuleEngine.from_directory(root) as eng:
        for i in range(20):  # warm-up: the load memo fills up to its bound
            inrgss.write_text(inrgss.read_text() + f"# edit {i}\n")
            assert eng.reload().changed
        gc.collect()
        before = _rss_mb()
        for i in range(20, 70):  # well past the memo's bound (about 14 entries)
            inrgss.write_text(inrgss.read_text() + f"# edit {i}\n")
            assert eng.reload().changed
        gc.collect()
        grown = _rss_mb() - before
    print(f"50 reloads of an 850 KB rule file: resident memory grew by {grown:.1f} MB; load memo "
          f"{_LOADED.bytes / 1e6:.1f} MB estimated in {len(_LOADED)} entries (bound {_LOADED.max_bytes / 1e6:.1f} MB)")
    assert grown < 10, f"resident memory grew by {grown:.1f} MB over 50 reloads of an 850 KB file"
