"""Invalid rule files as fixtures, each with the exact diagnostics it must produce.

Each directory under tests/data/invalid/ holds a ``rules/`` directory (one defect,
named after the code it must trigger) and ``expected.txt``: the formatted
diagnostics, byte for byte, as ``nbrules validate`` prints them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nbrules import build_directory, format_diagnostic

from .conftest import DATA

FIXTURES = sorted(p for p in (DATA / "invalid").iterdir() if p.is_dir())


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_exact_diagnostics(fixture: Path) -> None:
    if fixture.name.startswith("NB101") and not yaml.__with_libyaml__:
        pytest.skip("the syntax-error wording is libyaml's; pure-Python PyYAML words it differently")
    build = build_directory(fixture / "rules", label="rules")
    text = "".join(format_diagnostic(d) + "\n" for d in build.diagnostics)
    expected = (fixture / "expected.txt").read_text(encoding="utf-8")
    assert text == expected


@pytest.mark.parametrize("fixture", [p for p in FIXTURES if p.name != "valid"], ids=lambda p: p.name)
def test_fixture_triggers_its_code(fixture: Path) -> None:
    code = fixture.name.split("-")[0]
    build = build_directory(fixture / "rules", label="rules")
    assert code in {d.code for d in build.diagnostics}


def test_valid_fixture_is_clean() -> None:
    build = build_directory(DATA / "invalid" / "valid" / "rules", label="rules")
    assert build.ok and not build.diagnostics


def test_every_load_validate_check_code_has_a_fixture() -> None:
    from nbrules.diagnostics import CODES

    covered = {p.name.split("-")[0] for p in FIXTURES}
    wanted = {c for c in CODES if c[:3] in ("NB1", "NB2", "NB3")}
    assert wanted <= covered, sorted(wanted - covered)
