"""The README's two commands are the ones CI and the examples use."""

from __future__ import annotations

import re

import pytest

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


def _worked_examples() -> list[tuple[str, str, str]]:
    text = (REPO / "README.md").read_text()
    block = text.split("### Worked examples", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    rows = []
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        path = re.search(r"`(examples/[^`]+)`", cells[1]).group(1)  # type: ignore[union-attr]
        rows.append((cells[0].strip("`"), path, cells[2]))
    return rows


def test_readme_worked_examples_are_what_nbrules_answers() -> None:
    import json

    from nbrules import RuleEngine

    rows = _worked_examples()
    assert {d for d, _, _ in rows} == {"inrgss", "inrg", "mki-class", "inpc", "cog-risk", "inss", "cog-v1-risk",
                                       "response-primary", "response-metastatic", "response-marrow",
                                       "response-overall"}
    with RuleEngine.default() as engine:
        for decision, path, answer in rows:
            result = engine.evaluate(json.loads((REPO / path).read_text()))
            for claim in answer.split("; "):
                m = re.fullmatch(r"(\w+) = (\w+) \(rules? ([\w, -]+)\)", claim)
                if m:
                    name, value, rules = m.groups()
                    assert result.outputs[name] == value, claim
                    fired = {f.rule for f in result.fired if f.decision == decision}
                    assert set(rules.split(", ")) <= fired, claim
                    continue
                m = re.fullmatch(r"(\w+): ([\w ]+), needs ([\w, ]+)", claim)
                assert m, f"cannot read the README claim {claim!r}"
                name, candidates, missing = m.groups()
                ind = result.indeterminate[name]
                assert ind.candidates == tuple(candidates.split(" or ")), claim
                assert ind.missing == tuple(missing.split(", ")), claim


@pytest.mark.parametrize("example", ["discordant-l1-amplified.json", "inrc-after-induction.json"])
def test_text_examples_in_readme_match_the_text_output(example: str) -> None:
    import subprocess
    import sys

    text = (REPO / "README.md").read_text()
    shown = text.split(f"$ nbrules evaluate examples/{example} --format text", 1)[1].split("```")[0]
    proc = subprocess.run([sys.executable, "-m", "nbrules.cli", "evaluate", f"examples/{example}",
                           "--format", "text"], cwd=REPO, capture_output=True, text=True, check=True)
    for line in shown.strip().splitlines():
        if line.strip() != "...":
            assert line in proc.stdout.splitlines(), line
