"""Every example case of every bundled rule file runs as a test of its own."""

from __future__ import annotations

import pytest

from nbrules import build_bundled
from nbrules.cases import run_cases

BUILD = build_bundled()
CASES = [(d, c) for d in BUILD.decisions for c in d.cases]


@pytest.mark.parametrize("decision, case", CASES, ids=[f"{d.id}: {c.name}" for d, c in CASES])
def test_case(decision, case) -> None:  # type: ignore[no-untyped-def]
    [result] = [r for r in run_cases([_only(decision, case)])]
    assert result.passed, result.failures


def _only(decision, case):  # type: ignore[no-untyped-def]
    import dataclasses

    clone = dataclasses.replace(decision)
    object.__setattr__(clone, "cases", (case,))
    return clone


def test_every_rule_is_exercised_by_a_case() -> None:
    for d in BUILD.decisions:
        fired = {rid for c in d.cases for rid in (c.fired or ())}
        assert {r.id for r in d.rules} <= fired, (d.key, sorted({r.id for r in d.rules} - fired))
