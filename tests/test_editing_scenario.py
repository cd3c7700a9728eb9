"""docs/editing-scenario.md is executed: its edits are applied and its commands print
what the document says they print."""

from __future__ import annotations

from .conftest import REPO
from .scenario import run_scenario


def test_documented_editing_scenario_runs_as_written() -> None:
    text = (REPO / "docs" / "editing-scenario.md").read_text()
    assert text.count("<!-- edit:") >= 4 and "nbrules diff" in text and "nbrules verify" in text
    run_scenario(text, REPO)
