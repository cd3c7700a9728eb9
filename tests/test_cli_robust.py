"""The command line under a new user's trial: an --out that is not a regular file, a CSV
with an unclosed quote, standard output that cannot be written, numeric options out of
range, verify on a file with errors."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbrules.cli import main

from .conftest import REPO

INFANT = REPO / "examples" / "ms-infant.json"
COHORT = 'id,age_days\nb1,183\nb2,102\n'


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- 1. --out that exists and is not a regular file ----------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_batch_refuses_an_out_that_is_not_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         kind: str) -> None:
    cohort = tmp_path / "c.csv"
    cohort.write_text(COHORT)
    out = tmp_path / "out.jsonl"
    target = tmp_path / "target.jsonl"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        target.write_text("keep me\n")
        out.symlink_to(target)
    code, stdout, err = run(capsys, "evaluate", "--batch", str(cohort), "--out", str(out), "-q")
    assert code == 4
    assert len(err.strip().splitlines()) == 1 and "not a regular file" in err
    assert out.is_symlink() if kind == "symlink" else not out.is_file()  # left as it was
    if kind == "symlink":
        assert target.read_text() == "keep me\n"
    assert not Path(f"{out}.partial").exists()


def test_batch_still_replaces_a_regular_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "c.csv"
    cohort.write_text(COHORT)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    code, _, _ = run(capsys, "evaluate", "--batch", str(cohort), "--out", str(out), "-q")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["b1", "b2"]


# -- 2. a CSV record is one line: an unclosed quote costs that line only --------------------

def test_an_unclosed_csv_quote_costs_its_line_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "c.csv"
    src.write_text('id,age_days\nb1,"183\nb2,102\n\nb3,400\n' + "".join(f"x{i},{i}\n" for i in range(2000)))
    code, out, err = run(capsys, "evaluate", "--batch", str(src))
    assert code == 0
    recs = [json.loads(line) for line in out.splitlines()]
    # every data line gives one record, numbered by its line (header line 1; line 4 is blank, skipped)
    assert [r["row"] for r in recs] == [2, 3, 5] + list(range(6, 2006))
    assert recs[0]["status"] == "invalid" and recs[0]["problems"][0]["code"] == "NB501"
    assert "quote" in recs[0]["problems"][0]["message"]
    assert [r["id"] for r in recs[1:3]] == ["b2", "b3"] and recs[-1]["id"] == "x1999"
    assert all(r["status"] != "invalid" for r in recs[1:])
    assert "2003 rows" in err and "1 invalid" in err


# -- 3. standard output that cannot be written -----------------------------------------------

class _Full(io.StringIO):
    """Standard output on a full disk (as /dev/full is): every write fails with ENOSPC."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("argv", [
    ["evaluate", str(INFANT)],
    ["evaluate", "--batch", "COHORT", "-q"],
    ["render", "inrgss", "--format", "md"],
    ["codes"],
    ["validate"],
])
def test_a_full_standard_output_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    cohort = tmp_path / "c.csv"
    cohort.write_text(COHORT)
    monkeypatch.setattr(sys, "stdout", _Full())
    code = main([str(cohort) if a == "COHORT" else a for a in argv])
    err = capsys.readouterr().err
    assert code == 4
    assert err.splitlines() == ["nbrules: cannot write standard output: No space left on device"]


def test_a_closed_pipe_ends_quietly_with_a_failure_code(tmp_path: Path) -> None:
    cohort = tmp_path / "c.jsonl"
    cohort.write_text("".join(json.dumps({"id": f"p{i}", "age_days": 100 + i}) + "\n" for i in range(3000)))
    proc = subprocess.Popen([sys.executable, "-m", "nbrules.cli", "evaluate", "--batch", str(cohort), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as `| head -1` does
    err = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert json.loads(first)["row"] == 1
    assert code == 4  # rows were not delivered: not a success
    assert err == b""  # quietly: no traceback, no "Exception ignored"


# -- 4. numeric options have a range ---------------------------------------------------------

HUGE = "99999999999999999999"


@pytest.mark.parametrize("argv, expected", [
    (["evaluate", str(INFANT), "--max-input", HUGE], "--max-input: 99999999999999999999 is out of range (1 to"),
    (["evaluate", str(INFANT), "--max-input", "0"], "--max-input: 0 is out of range (1 to"),
    (["evaluate", str(INFANT), "--max-input", "-1"], "--max-input: -1 is out of range (1 to"),
    (["evaluate", str(INFANT), "--cache-size", HUGE], "--cache-size: 99999999999999999999 is out of range (0 to"),
    (["evaluate", "--batch", "COHORT", "--workers", HUGE], "--workers: 99999999999999999999 is out of range (1 to"),
    (["serve", "--watch", HUGE], "--watch: 99999999999999999999 is out of range"),
    (["serve", "--watch", "86401"], "--watch: 86401 is out of range"),
    (["serve", "--body-timeout", "1e30"], "--body-timeout: 1e30 is out of range"),
    (["serve", "--max-body", HUGE], "--max-body: 99999999999999999999 is out of range (1 to"),
    (["serve", "--max-patients", HUGE], "--max-patients: 99999999999999999999 is out of range (1 to"),
    (["serve", "--cache-size", HUGE], "--cache-size: 99999999999999999999 is out of range (0 to"),
])
def test_a_numeric_option_out_of_range_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        argv: list[str], expected: str) -> None:
    cohort = tmp_path / "c.csv"
    cohort.write_text(COHORT)
    code, out, err = run(capsys, *[str(cohort) if a == "COHORT" else a for a in argv])
    assert code == 4 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_the_largest_worker_count_is_a_few_per_core(capsys: pytest.CaptureFixture[str]) -> None:
    most = (os.cpu_count() or 16) * 4
    code, _, err = run(capsys, "evaluate", "--batch", str(REPO / "examples" / "cohort.jsonl"), "--workers",
                       str(most + 1))
    assert code == 4 and f"out of range (1 to {most})" in err


# -- 5. verify on a file with errors never reads as clean ------------------------------------

def test_verify_of_a_file_with_errors_says_nothing_was_verified(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "inrgss.yaml"
    bad.write_text((REPO / "rules" / "staging" / "inrgss.yaml").read_text().replace(
        "\nversion: 1.0.0\n", "\nversion: [\n", 1))
    code, out, _ = run(capsys, "verify", str(bad))
    assert code != 0
    last = out.strip().splitlines()[-1]
    assert last.endswith("nothing verified, the rule files have errors")
    assert "no gaps" not in out


# -- 6. the README's sentence on --rules and --profile is true ------------------------------

def _takes(command: str, option: str, capsys: pytest.CaptureFixture[str]) -> bool:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return option in capsys.readouterr().out


def test_the_readme_says_which_commands_take_rules_and_profile(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (REPO / "README.md").read_text()
    assert "Every command that reads rules (all but `init`, `docs` and `codes`) takes `--rules DIR`" in readme
    assert "(`test`, `verify`, `render`, `evaluate`, `diff`, `serve`) take `--profile NAME`" in readme
    readers = ["validate", "test", "verify", "render", "evaluate", "diff", "serve", "schema"]
    assert all(_takes(c, "--rules", capsys) for c in readers)
    assert not any(_takes(c, "--rules", capsys) for c in ("init", "docs", "codes"))
    assert all(_takes(c, "--profile", capsys) for c in ("test", "verify", "render", "evaluate", "diff", "serve"))
    assert not any(_takes(c, "--profile", capsys) for c in ("init", "docs", "codes"))


# -- 7. "applies" for one option, "apply" for several ---------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["evaluate", str(INFANT), "--out", "x.jsonl"], "nbrules evaluate: --out applies only with --batch"),
    (["evaluate", str(INFANT), "--out", "x.jsonl", "--workers", "2"],
     "nbrules evaluate: --out, --workers apply only with --batch"),
    (["diff", "inrgss@1.0.0", "inrgss@1.0.0", "--id-column", "pid"], "nbrules diff: --id-column applies only with --cohort"),
])
def test_an_option_that_does_not_apply_is_said_in_good_grammar(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                               says: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 4 and err.strip() == says
