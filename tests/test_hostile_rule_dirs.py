"""Hostile rule directories: nothing in a rules directory can hang, exhaust or crash the
loader.  Special files are made here in tmp (they cannot be committed); the hostile
file contents (NB120–NB123) are committed fixtures under tests/data/invalid/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from nbrules import build_directory
from nbrules.sources import directory_sources, directory_state, read_capped

from .conftest import DATA

VALID = DATA / "invalid" / "valid" / "rules" / "demo.yaml"
HOSTILE_CONTENT = ["NB120-control-character", "NB121-number-out-of-range", "NB122-nesting-too-deep",
                   "NB123-condition-too-deep"]


def cli(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess, with a timeout: a hang fails the test."""
    return subprocess.run([sys.executable, "-m", "nbrules.cli", *argv], input=stdin, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    root = tmp_path / "rules"
    root.mkdir()
    shutil.copy(VALID, root / "demo.yaml")
    return root


def special_files(root: Path) -> dict[str, str]:
    """A symlink to /dev/zero, a FIFO and a socket, each named *.yaml; name -> kind."""
    os.symlink("/dev/zero", root / "zero.yaml")
    os.mkfifo(root / "fifo.yaml")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.yaml"))
    sock.close()
    return {"zero.yaml": "character device", "fifo.yaml": "FIFO", "sock.yaml": "socket"}


def test_devices_fifos_and_sockets_are_reported_never_read(rules: Path) -> None:
    kinds = special_files(rules)
    build = build_directory(rules, label="rules")
    found = {d.path: d for d in build.diagnostics}
    assert set(found) == {f"rules/{n}" for n in kinds}
    for name, kind in kinds.items():
        d = found[f"rules/{name}"]
        assert d.code == "NB105" and (d.line, d.column) == (1, 1)
        assert kind in d.message and "not a regular file" in d.message and d.hint
    assert [x.id for x in build.decisions] == ["demo"]  # the regular file is still read and checked


@pytest.mark.parametrize("command", [["validate"], ["test"], ["verify"]])
def test_commands_on_special_files_finish_with_located_findings(rules: Path, command: list[str]) -> None:
    special_files(rules)
    proc = cli(*command, str(rules))
    assert proc.returncode in (1, 3), proc.stderr
    assert "rules/fifo.yaml:1:1: error NB105" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluate_on_special_files_exits_3(rules: Path) -> None:
    special_files(rules)
    proc = cli("evaluate", "--rules", str(rules), "-", stdin='{"age_days": 100, "mycn_status": "amplified"}')
    assert proc.returncode == 3 and "NB105" in proc.stderr and "Traceback" not in proc.stderr


def test_reads_stop_after_the_cap(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_bytes(b"a" * 100)
    assert read_capped(f, cap=100) == (b"a" * 100, None)
    data, error = read_capped(f, cap=99)
    assert data == b"" and error is not None and "limited to 99" in error


def test_a_symlink_to_a_regular_file_is_read(rules: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.yaml"
    shutil.move(str(rules / "demo.yaml"), target)
    os.symlink(target, rules / "demo.yaml")
    build = build_directory(rules, label="rules")
    assert build.ok and [d.id for d in build.decisions] == ["demo"]


def test_an_unlistable_subdirectory_is_reported(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, permissions cannot make a directory unlistable: os.walk's listing fails here instead."""
    (rules / "sub").mkdir()
    shutil.copy(VALID, rules / "sub" / "other.yaml")
    real = os.scandir

    def scandir(path: "os.PathLike[str] | str") -> "os._ScandirIterator[str]":
        if Path(path) == rules / "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    build = build_directory(rules, label="rules")
    [d] = build.diagnostics
    assert (d.code, d.path, d.line, d.column) == ("NB105", "rules/sub/", 1, 1)
    assert d.message == "cannot read directory: Permission denied"
    assert not build.ok
    assert ("sub", 0, 0, -1) in directory_state(rules)  # the watcher sees it too


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list and read anything")
def test_unreadable_directory_and_file_by_permissions(rules: Path) -> None:  # pragma: no cover - root in CI
    (rules / "sub").mkdir()
    shutil.copy(VALID, rules / "sub" / "other.yaml")
    (rules / "sub").chmod(0)
    (rules / "demo.yaml").chmod(0)
    try:
        sources = {s.name: s.read_error for s in directory_sources(rules)}
        assert sources == {"sub/": "Permission denied", "demo.yaml": "Permission denied"}
    finally:
        (rules / "sub").chmod(0o755)
        (rules / "demo.yaml").chmod(0o644)


@pytest.mark.parametrize("fixture", HOSTILE_CONTENT)
def test_hostile_content_exits_with_findings_not_70(fixture: str) -> None:
    rules = str(DATA / "invalid" / fixture / "rules")
    code = fixture.split("-")[0]
    validate = cli("validate", rules)
    assert validate.returncode == 1 and f"error {code}" in validate.stdout + validate.stderr
    evaluate = cli("evaluate", "--rules", rules, "-", stdin='{"age_days": 100}')
    assert evaluate.returncode == 3 and code in evaluate.stderr
    assert "Traceback" not in validate.stderr + evaluate.stderr


def test_control_characters_are_shown_as_symbols() -> None:
    text = (DATA / "invalid" / "NB120-control-character" / "expected.txt").read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x00" not in text and "\u241b" in text


def test_a_chain_of_thousands_of_named_conditions_is_reported_not_a_recursion_error(rules: Path) -> None:
    n = 3000
    text = VALID.read_text(encoding="utf-8")
    chain = "conditions:\n  c0: {fact: mycn_status, is: 'not_amplified'}\n" + "".join(
        f"  c{i}: {{not: {{not: {{condition: c{i - 1}}}}}}}\n" for i in range(1, n))
    text = text.replace("{fact: mycn_status, is: not_amplified}", f"{{condition: c{n - 1}}}", 1)
    (rules / "demo.yaml").write_text(text.replace("reads:", chain + "reads:"), encoding="utf-8")
    build = build_directory(rules, label="rules")
    [d] = [d for d in build.diagnostics if d.is_error]
    # c_i nests 3i deep (not, not, a reference): c11 is the first beyond 32
    assert d.code == "NB123" and "'c11' nests all/any/not 33 deep" in d.message and d.pointer == "/conditions/c11"


def test_the_deepest_nesting_allowed_runs_end_to_end(rules: Path) -> None:
    """30 levels of any (60 of YAML nesting, within both limits) load, compile and evaluate
    (as a draft: the extra tests are impossible, which verify rightly reports)."""
    cond = "{fact: mycn_status, is: not_amplified}"
    for _ in range(29):
        cond = "{any: [" + cond + ", {fact: age_days, less_than: 0}]}"
    text = VALID.read_text(encoding="utf-8").replace("{fact: mycn_status, is: not_amplified}", cond, 1)
    (rules / "demo.yaml").write_text(text.replace("status: active", "status: draft"), encoding="utf-8")
    proc = cli("evaluate", "--rules", str(rules), "--use", "demo@1.0.0", "-", stdin='{"age_days": 100, "mycn_status": "not_amplified"}')
    assert proc.returncode == 0, proc.stderr
    assert '"demo_out":"low"' in proc.stdout.replace(" ", "")


# -- the watcher survives any failure (real server on loopback) -----------------------------


def _serve_watching(rules: Path, log: Path) -> tuple["subprocess.Popen[bytes]", str]:
    """`nbrules serve --watch 0.1` on loopback, its stderr to ``log`` (a pipe nobody reads could fill)."""
    pytest.importorskip("uvicorn")
    sys.path.insert(0, str(DATA.parent.parent / "benchmarks"))
    from load_test import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nbrules.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--rules", str(rules), "--watch", "0.1"], stdout=subprocess.DEVNULL,
                            stderr=log.open("wb"))
    url = f"http://127.0.0.1:{port}"
    _until(lambda: _get(url, "/health") is not None, "the server did not become healthy")
    return proc, url


def _get(url: str, path: str) -> Any:
    import http.client
    import json

    host, port = url.split("//")[1].split(":")
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
    except OSError:
        return None
    assert resp.status == 200
    return body


def _until(check: Callable[[], Any], message: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(message)


def test_watcher_survives_hostile_swaps_and_health_shows_the_last_failure(rules: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc, url = _serve_watching(rules, log)
    try:
        health = _get(url, "/health")
        assert health["watching"] is True and health["last_reload"] is None
        for name, make in (("zero.yaml", lambda p: os.symlink("/dev/zero", p)), ("fifo.yaml", os.mkfifo)):
            make(rules / name)
            last = _until(lambda: (_get(url, "/health")["last_reload"] or {}).get("problems"),
                          f"no refused reload reported for {name}")
            health = _get(url, "/health")
            assert health["status"] == "ok" and health["watching"] is True
            assert health["last_reload"]["ok"] is False and "refused" in health["last_reload"]["summary"]
            [problem] = last
            assert (problem["code"], problem["path"], problem["line"], problem["column"]) == (
                "NB105", f"rules/{name}", 1, 1)
            assert [r["version"] for r in health["rulesets"]] == ["1.0.0"]  # still serving the last good set
            os.unlink(rules / name)
            _until(lambda: (_get(url, "/health")["last_reload"] or {}).get("ok") is True, "the watcher stopped")
        demo = rules / "demo.yaml"
        demo.write_text(demo.read_text(encoding="utf-8").replace("version: 1.0.0", "version: 1.0.1"), encoding="utf-8")
        _until(lambda: [r["version"] for r in _get(url, "/health")["rulesets"]] == ["1.0.1"],
               "the watcher did not reload after the hostile swaps")
        assert _get(url, "/health")["last_reload"]["changed"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text(encoding="utf-8")
    for name, kind in (("zero.yaml", "a character device"), ("fifo.yaml", "a FIFO")):
        assert f"rules/{name}:1:1: error NB105 [unreadable-file] cannot read file: {kind}" in text
    assert "Traceback" not in text and "reloaded: demo 1.0.1" in text


def test_watcher_goes_on_after_an_exception_in_the_callback(rules: Path) -> None:
    from nbrules import RuleEngine

    calls: list[bool] = []

    def explode(report: Any) -> None:
        calls.append(report.ok)
        raise RuntimeError("a callback that fails")

    with RuleEngine.from_directory(rules) as eng:
        eng.watch(interval=0.05, on_reload=explode)
        demo = rules / "demo.yaml"
        text = demo.read_text(encoding="utf-8")
        demo.write_text(text.replace("version: 1.0.0", "version: 1.0.1"), encoding="utf-8")
        # write_text truncates first: a poll may see the file half-written, refuse it and
        # call back with ok=False before the finished file's reload; wait for the good ones.
        _until(lambda: calls.count(True) == 1, "no reload")
        demo.write_text(text.replace("version: 1.0.0", "version: 1.0.2"), encoding="utf-8")
        _until(lambda: calls.count(True) == 2, "the watcher died with the callback")
        assert eng.watching and [d.version for d in eng.decisions] == ["1.0.2"]
        assert eng.last_reload is not None and eng.last_reload.ok


def test_an_unexpected_failure_is_a_refused_reload_nb620(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbrules import RuleEngine

    with RuleEngine.from_directory(rules) as eng:
        def boom() -> Any:
            raise RecursionError("maximum recursion depth exceeded")

        monkeypatch.setattr(eng, "_origin", boom)
        report = eng.reload()
        assert not report.ok and [d.code for d in report.diagnostics] == ["NB620"]
        assert "RecursionError" in report.diagnostics[0].message and eng.last_reload is report
        assert [d.version for d in eng.decisions] == ["1.0.0"]


@pytest.mark.slow
def test_bounded_load_during_rule_swaps_hostile_ones_included(tmp_path: Path) -> None:
    """A real server under --watch: 8 clients send requests (at most 50,000, at most 180 s)
    while the rule files are swapped 40 times, every 0.25 s: clean edits, broken YAML, NUL
    bytes, a /dev/zero symlink, a FIFO.  No request fails, every refused swap leaves the previous rules in
    force, and the watcher is alive at the end (it takes the last clean edit)."""
    import http.client
    import json
    import threading

    rules = tmp_path / "rules"
    shutil.copytree(DATA.parent.parent / "rules", rules)
    proc, url = _serve_watching(rules, tmp_path / "server.log")  # puts benchmarks/ on sys.path
    from load_test import patients, rss_mb
    host, port = url.split("//")[1].split(":")
    bodies = [json.dumps(p).encode() for p in patients(300)]
    total, clients, deadline = 50_000, 8, time.monotonic() + 180
    lock = threading.Lock()
    done = threading.Event()
    sent, failures, worst, peak = [0], [], [0.0], [rss_mb(proc.pid)]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        i = k
        while True:
            with lock:
                if sent[0] >= total or time.monotonic() > deadline or done.is_set():
                    break
                sent[0] += 1
            t = time.perf_counter()
            try:
                conn.request("POST", "/evaluate", body=bodies[i % len(bodies)],
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200 or b'"outputs"' not in data:
                    failures.append(f"HTTP {resp.status}: {data[:200]!r}")
            except Exception as exc:  # noqa: BLE001 - counted
                failures.append(repr(exc))
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            with lock:
                worst[0] = max(worst[0], time.perf_counter() - t)
            i += clients
        conn.close()

    mki = rules / "histology/mki-class.yaml"
    clean = mki.read_text(encoding="utf-8")
    hostile = [lambda: os.symlink("/dev/zero", rules / "zero.yaml"), lambda: os.mkfifo(rules / "fifo.yaml"),
               lambda: (rules / "broken.yaml").write_text("decision: [", encoding="utf-8"),
               lambda: (rules / "nul.yaml").write_bytes(b"decision: x\x00\n")]
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    try:
        for t in threads:
            t.start()
        swaps = 0
        while any(t.is_alive() for t in threads) and swaps < 40:
            if swaps % 2 == 0:
                mki.write_text(clean.replace("version: 1.0.0", f"version: 1.0.{swaps + 1}"), encoding="utf-8")
            else:
                for extra in ("zero.yaml", "fifo.yaml", "broken.yaml", "nul.yaml"):
                    if os.path.lexists(rules / extra):
                        os.unlink(rules / extra)
                hostile[(swaps // 2) % len(hostile)]()
            swaps += 1
            time.sleep(0.25)
            peak[0] = max(peak[0], rss_mb(proc.pid))
        done.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        for extra in ("zero.yaml", "fifo.yaml", "broken.yaml", "nul.yaml"):
            if os.path.lexists(rules / extra):
                os.unlink(rules / extra)
        mki.write_text(clean.replace("version: 1.0.0", "version: 9.9.9"), encoding="utf-8")
        _until(lambda: "9.9.9" in {r["version"] for r in _get(url, "/health")["rulesets"]},
               "the watcher did not take the last clean edit")
        health = _get(url, "/health")
        assert health["watching"] is True and health["last_reload"]["ok"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"\nrule swaps under load: {sent[0]} requests in {elapsed:.1f} s, {swaps} swaps, {len(failures)} failures, "
          f"worst {worst[0] * 1000:.0f} ms, peak server RSS {peak[0]:.0f} MB")
    assert not failures, failures[:3]
    assert swaps == 40 and sent[0] > 1000
    log = (tmp_path / "server.log").read_text(encoding="utf-8")
    for code in ("NB105", "NB101", "NB120"):  # the hostile swaps were seen, refused and logged
        assert f"error {code}" in log, code
    assert "Traceback" not in log
