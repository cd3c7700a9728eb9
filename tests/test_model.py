"""The checked model: built once, holding positions (not the loaded data) of its file."""

from __future__ import annotations

import dataclasses

import pytest

from nbrules import build_directory
from nbrules.loader import LoadedFile, SourceMap

from .conftest import REPO


def test_checked_decisions_keep_positions_not_the_loaded_file() -> None:
    build = build_directory(REPO / "rules")
    assert build.decisions
    for d in build.decisions:
        assert isinstance(d.positions, SourceMap) and not hasattr(d.positions, "data")
        assert not any(isinstance(v, LoadedFile) for v in vars(d).values())
        lines = d.source.data.decode("utf-8-sig").splitlines()
        for rule in d.rules:  # a rule's location is the line of its '- id:' in the file
            path, line = d.location(rule.pointer).rsplit(":", 1)
            assert path == d.source.display
            assert lines[int(line) - 1].strip() in (f"- id: {rule.id}", f"- id: '{rule.id}'")
        for case in d.cases:
            assert lines[case.line - 1].strip().startswith(f"- name: {case.name}")


def test_decisions_are_built_once_and_never_patched() -> None:
    """Frozen objects, no field set after construction: the cases and the package's input
    constraints are given to the constructor (package_checks.with_constraints makes new objects)."""
    build = build_directory(REPO / "rules")
    constraints = build.constraints
    assert constraints is not None
    for d in build.decisions:
        assert d.constraints is constraints and d.cases
        with pytest.raises(dataclasses.FrozenInstanceError):
            d.cases = ()  # type: ignore[misc]

