"""The fast paths of verify give exactly what the cell-by-cell definitions give.

Verify groups the cells of a number into runs of equal truth (binary search), finds
overlapping rules with one sweep, and classifies numbers by bisection; each is
checked here against the plain definition on every bundled decision and on generated
tables.  (Timings are in benchmarks/verify_scaling.py, not here.)
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from nbrules import build_bundled, build_directory
from nbrules.conditions import atom_truth, atoms
from nbrules.domain import NumberPartition
from nbrules.model import Decision
from nbrules.verify import DecisionSpace, _overlapping_pairs, verify_decision

from .conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from verify_scaling import band_file  # noqa: E402

BUNDLED = build_bundled().decisions


def naive_atom_sets(space: DecisionSpace, atom: object) -> tuple[int, int]:
    """The definition: the truth of the atom on each cell's representative, slice by slice."""
    fact = atom.fact  # type: ignore[attr-defined]
    k = space.facts.index(fact)
    part = space.domain.partitions[fact]
    t = f = 0
    for v in range(len(part) + 1):
        truth = atom_truth(atom, {} if v == len(part) else {fact: part.cells[v].representative})  # type: ignore[arg-type]
        if truth is True:
            t |= space.slice(k, v)
        elif truth is False:
            f |= space.slice(k, v)
    return t, f


def spaces(decision: Decision) -> list[DecisionSpace]:
    """The decision under its parameter values and under each documented alternative."""
    out = [DecisionSpace(decision)]
    for name, p in decision.parameters.items():
        out += [DecisionSpace(decision, {name: v}) for v, _ in p.alternatives]
    return out


@pytest.mark.parametrize("decision", BUNDLED, ids=lambda d: d.key)
def test_atom_sets_equal_the_cell_by_cell_definition(decision: Decision) -> None:
    for space in spaces(decision):
        for nnf in space.rule_nnf + space.scope_nnf:
            for atom in atoms(nnf):
                assert space.atom_sets(atom) == naive_atom_sets(space, atom), atom


def test_atom_sets_on_a_generated_table_with_equalities(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    root.mkdir()
    text = band_file(60).replace("{fact: age_days, at_least: 1200}", "{fact: age_days, is: 1200}")
    (root / "bands.yaml").write_text(text, encoding="utf-8")
    [decision] = build_directory(root).decisions
    space = DecisionSpace(decision)
    for nnf in space.rule_nnf:
        for atom in atoms(nnf):
            assert space.atom_sets(atom) == naive_atom_sets(space, atom)


def test_overlapping_pairs_equal_all_pairs() -> None:
    rng = random.Random(11)
    for _ in range(200):
        masks = [rng.getrandbits(rng.choice((4, 16, 64))) & rng.getrandbits(64) for _ in range(rng.randint(0, 12))]
        want = [(i, j) for i in range(len(masks)) for j in range(i + 1, len(masks)) if masks[i] & masks[j]]
        assert _overlapping_pairs(masks) == want


@pytest.mark.parametrize("decision", BUNDLED, ids=lambda d: d.key)
def test_number_classification_by_bisection_equals_a_scan(decision: Decision) -> None:
    rng = random.Random(5)
    space = DecisionSpace(decision)
    for part in space.domain.partitions.values():
        if not isinstance(part, NumberPartition):
            continue
        bounds = [x for iv in part._intervals for x in (iv.lo, iv.hi)]
        probes = bounds + [b + d for b in bounds for d in (-1, -0.5, 0.5, 1)] + [rng.uniform(-10, 40000) for _ in range(200)]
        for x in probes:
            scan = next((i for i, iv in enumerate(part._intervals) if iv.contains(x)), None)
            assert part.classify(x) == scan, (part.fact, x)


def test_a_large_table_finds_exactly_the_injected_gap_and_overlap(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    root.mkdir()
    text = band_file(3000)  # bands of 12 days: b100 is [1200, 1212), b2000 is [24000, 24012)
    text = text.replace("{fact: age_days, at_least: 1200}", "{fact: age_days, at_least: 1190}")  # overlaps b99
    text = text.replace("{fact: age_days, at_least: 24000}", "{fact: age_days, at_least: 24003}")  # a gap
    (root / "bands.yaml").write_text(text, encoding="utf-8")
    [decision] = build_directory(root, label="rules").decisions
    report = verify_decision(decision)
    found = [(d.code, d.message) for d in report.diagnostics if d.is_error]
    assert found == [
        ("NB601", "no rule fires for 1 cell of complete facts, e.g. {age_days: 24000}"),
        ("NB602", "rules 'b99' and 'b100' set different values for bands_band in 1 cell, e.g. {age_days: 1190}"),
    ]
