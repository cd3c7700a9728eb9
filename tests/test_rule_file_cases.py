"""Every example case of every bundled rule file runs as a test of its own."""

from __future__ import annotations

from functools import lru_cache

import pytest

from nbrules import build_bundled
from nbrules.cases import CaseResult, run_cases

BUILD = build_bundled()
CASES = [(d.key, i, c.name) for d in BUILD.decisions for i, c in enumerate(d.cases)]


@lru_cache(maxsize=None)
def _results(key: str) -> tuple[CaseResult, ...]:
    decision = next(d for d in BUILD.decisions if d.key == key)
    return tuple(run_cases([decision]))  # one compiled ruleset per parameter binding


@pytest.mark.parametrize("key, index, name", CASES, ids=[f"{k}: {n}" for k, _, n in CASES])
def test_case(key: str, index: int, name: str) -> None:
    result = _results(key)[index]
    assert result.case.name == name
    assert result.passed, result.failures


def test_every_rule_is_exercised_by_a_case() -> None:
    for d in BUILD.decisions:
        fired = {rid for c in d.cases for rid in (c.fired or ())}
        assert {r.id for r in d.rules} <= fired, (d.key, sorted({r.id for r in d.rules} - fired))
