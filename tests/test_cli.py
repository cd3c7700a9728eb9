"""The command line: exit codes, formats, and no traceback for any bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from nbrules.cli import main

from .conftest import DATA, DEMO, REPO

EXAMPLE = REPO / "examples" / "ms-infant.json"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "evaluate", str(EXAMPLE))
    assert code == 0
    assert json.loads(out)["outputs"]["inrgss_stage"] == "MS"


def test_evaluate_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(EXAMPLE.read_bytes())))
    code, out, _ = run(capsys, "evaluate", "-")
    assert code == 0 and json.loads(out)["outputs"]["inrgss_stage"] == "MS"


def test_evaluate_text_explains(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "evaluate", str(EXAMPLE), "--format", "text")
    assert code == 0
    assert "inrgss 1.0.0, rule MS  (rules/staging/inrgss.yaml:" in out
    assert "Sources cited" in out and "Monclair T" in out


def test_bad_patient_exits_2_with_one_line_per_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{"age_days": "183", "mycn_status": "amp", "bogus": 1}')
    code, out, err = run(capsys, "evaluate", str(p))
    assert code == 2 and out == ""
    lines = sorted(err.strip().splitlines())
    assert lines == [
        "/age_days: NB502 [input-wrong-type] expected a whole number, found text '183'",
        "/bogus: NB503 [input-unknown-fact] expected a patient fact, found unknown fact 'bogus' "
        "(the patient facts are declared in facts.yaml of the rules directory)",
        "/mycn_status: NB504 [input-value-not-allowed] expected one of amplified, not_amplified; found text 'amp'",
    ]


@pytest.mark.parametrize("payload", [b"", b"[]", b"null", b"{", b"\xff", b'{"a":1,"a":2}', b"1e999999", b'"x"',
                                     b'{"age_days": NaN}', b'{"symptoms": "coagulopathy"}'])
def test_no_traceback_for_any_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, payload: bytes) -> None:
    p = tmp_path / "in.json"
    p.write_bytes(payload)
    code, out, err = run(capsys, "evaluate", str(p))
    assert code == 2
    assert "Traceback" not in err and err.strip()


def test_missing_input_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", "/nonexistent/patient.json")
    assert code == 4 and "cannot read" in err


def test_unknown_command_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "frobnicate")[0] == 4
    assert run(capsys, "evaluate", str(EXAMPLE), "--colour")[0] == 4


def test_validate_clean_and_with_findings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate")
    assert code == 0 and "0 errors" in out
    fixture = DATA / "invalid" / "NB301-unknown-fact" / "rules"
    code, out, _ = run(capsys, "validate", str(fixture))
    assert code == 1
    assert "error NB301 [unknown-fact] fact 'mycn_amplifed' is not declared" in out
    assert "hint: did you mean 'mycn_status'?" in out


def test_validate_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = DATA / "invalid" / "NB204-value-not-allowed" / "rules"
    code, out, _ = run(capsys, "validate", str(fixture), "--format", "json")
    [d] = json.loads(out)
    assert code == 1 and d["code"] == "NB204" and d["line"] == 5 and d["pointer"] == "/status"


def test_evaluate_with_invalid_rules_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = DATA / "invalid" / "NB301-unknown-fact" / "rules"
    code, _, err = run(capsys, "evaluate", str(EXAMPLE), "--rules", str(fixture))
    assert code == 3 and "NB301" in err and "Traceback" not in err


def test_rules_option_points_at_another_directory(capsys: pytest.CaptureFixture[str],
                                                  rules_dir: Callable[..., Path], tmp_path: Path) -> None:
    root = rules_dir(demo=DEMO)
    p = tmp_path / "p.json"
    p.write_text('{"age_days": 100, "mycn_status": "amplified"}')
    code, out, _ = run(capsys, "evaluate", str(p), "--rules", str(root))
    assert code == 0 and json.loads(out)["outputs"] == {"demo_out": "high"}


def test_test_command_reports_a_failing_case(capsys: pytest.CaptureFixture[str], rules_dir: Callable[..., Path]) -> None:
    root = rules_dir(demo=DEMO.replace("expect: {demo_out: low, fired: [young]}", "expect: {demo_out: high, fired: [other]}"))
    code, out, _ = run(capsys, "test", str(root))
    assert code == 1
    assert "error NB701 [case-failed] case 'infant' failed" in out
    assert "demo_out: expected high, got low" in out
    assert "fired: expected [other], got [young]" in out


def test_test_command_on_bundled_rules(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "test")
    assert code == 0 and " 0 failed" in out


def test_console_script_is_installed() -> None:
    proc = subprocess.run([sys.executable, "-m", "nbrules.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("nbrules ")


def test_a_verb_given_first_builds_only_its_own_parser(capsys: pytest.CaptureFixture[str]) -> None:
    """A one-shot command builds the parser of its verb alone; a name that is no verb
    still gets the whole parser's answer, naming every verb."""
    from nbrules.cli import EXIT_USAGE, _parser

    only = _parser("evaluate")
    full = _parser()
    assert only.parse_args(["evaluate", "p.json", "--workers", "2"]) == full.parse_args(
        ["evaluate", "p.json", "--workers", "2"])
    assert only.format_usage() == full.format_usage()
    assert _parser("evalute").format_help() == full.format_help()
    helps = []
    for parser in (only, full):
        with pytest.raises(SystemExit):
            parser.parse_args(["evaluate", "-h"])
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] and "--workers N" in helps[0]
    assert main(["evalute", "p.json"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'evalute' is not a command; did you mean 'evaluate'?" in err and "codes" in err


def test_an_option_before_the_verb_is_refused_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse alone would read the option's value as the verb ("invalid choice: 'rules'")."""
    from nbrules.cli import EXIT_USAGE

    assert main(["--rules", "rules", "evaluate", "p.json"]) == EXIT_USAGE
    assert "nbrules: --rules: options go after the command" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip().startswith("nbrules ")
