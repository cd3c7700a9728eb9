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


def test_every_example_output_in_the_readme_is_what_nbrules_gives() -> None:
    """Every example block is regenerated from nbrules (line numbers, messages, text);
    on failure, run ``python tests/update_readme.py`` and review the diff."""
    from .readme_blocks import BLOCKS, README, generate, names

    text = README.read_text(encoding="utf-8")
    assert sorted(names(text)) == sorted(BLOCKS)  # every kind of example is in the README, once
    expected = generate(text)
    for want, have in zip(expected.split("<!-- example: ")[1:], text.split("<!-- example: ")[1:]):
        name = have.split(" ", 1)[0]
        assert have.split("```", 2)[1] == want.split("```", 2)[1], (
            f"README example '{name}' is out of date: run python tests/update_readme.py")
    assert expected == text


def test_the_readme_shows_the_line_the_rule_is_written_on() -> None:
    """The check above is not vacuous: the Python example shows the rule's real line."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"\('MS', 'rules/staging/inrgss\.yaml:(\d+)'\)", text)
    assert shown is not None
    lines = (REPO / "rules" / "staging" / "inrgss.yaml").read_text().splitlines()
    assert lines[int(shown.group(1)) - 1].strip() == "- id: MS"


def test_the_package_docstring_and_module_examples_run_as_doctests() -> None:
    import doctest

    import nbrules
    import nbrules.explain
    import nbrules.vocabulary

    for module in (nbrules, nbrules.explain, nbrules.vocabulary):
        failed, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert tried > 0 and failed == 0, module.__name__


def test_license_is_the_apache_2_text_named_in_pyproject() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert 'license = "Apache-2.0"' in (REPO / "pyproject.toml").read_text()
