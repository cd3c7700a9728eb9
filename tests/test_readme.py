"""The README's two commands are the ones CI and the examples use."""

from __future__ import annotations

import re

from .conftest import REPO


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## Two commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_two_commands() -> None:
    cmds = _commands()
    assert len(cmds) == 2
    assert "nbrules evaluate examples/" in cmds[0]
    assert cmds[1].endswith("-m pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert _commands()[1] in ci.splitlines()


def test_the_example_named_in_the_readme_exists() -> None:
    path = re.search(r"evaluate (examples/\S+)", _commands()[0]).group(1)  # type: ignore[union-attr]
    assert (REPO / path).is_file()
