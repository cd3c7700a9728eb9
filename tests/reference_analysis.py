"""The FORMER implementation of the missing-fact analysis, kept as the tests' oracle.

Until issue 15, :class:`nbrules.runner.DecisionRunner` found what missing facts could
change by running durable-rules on a representative of every box of unknown facts
(up to ~1,500 engine runs for the first partly known patient).  The product now reads
the same boxes from the domain model (:mod:`nbrules.analysis`); this module keeps the
engine search, unchanged but for its home, so that tests/test_analysis_equality.py can
prove the two give byte-identical outcomes.  It is not part of the product.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nbrules.analysis import Leaf, MissingFactAnalysis
from nbrules.compiler import Program
from nbrules.runner import DecisionRunner


class EngineSearch(MissingFactAnalysis):
    """The former ``DecisionRunner._analyse``: durable-rules run on every box (what a box
    settles, :meth:`MissingFactAnalysis.box`, and the summary are shared)."""

    def __init__(self, runner: DecisionRunner) -> None:
        super().__init__(runner.program)
        self.runner = runner
        self._limits = tuple(self.space.limits)

    def _violated(self, facts: Mapping[str, Any]) -> str | None:
        """Id of the first error constraint ``facts`` violate, or None."""
        for b in self._limits:
            if b.holds(facts):
                return b.constraint.id
        return None

    def leaves(self, view: Mapping[str, Any], unknown: tuple[str, ...], restrict: Mapping[str, Sequence[str]],
               context: Mapping[str, Any]) -> list[Leaf]:
        """Split the unknown facts into cells until the engine settles every box."""
        domain = self.program.domain
        leaves: list[Leaf] = []

        def visit(cells: dict[str, int], remaining: tuple[str, ...], inapplicable: tuple[tuple[str, str], ...]) -> None:
            facts = dict(view)
            for fact, idx in cells.items():
                facts[fact] = domain.partitions[fact].cells[idx].representative
            if cells and self._violated({**context, **facts}):
                return  # no patient has these facts (e.g. an MKI class for a ganglioneuroma)
            rules, scopes = self.runner._fire(facts)
            pending = set(remaining)
            trusted = [r for r in rules + scopes if not (r.unknown_tests & pending)]
            leaf = self.box(cells, remaining, trusted, inapplicable)
            if leaf is not None:
                leaves.append(leaf)
                return
            fact, rest = remaining[0], remaining[1:]
            part = domain.partitions[fact]
            allowed = self.allowed(fact, restrict)
            blocked = [self._violated({**context, **facts, fact: part.cells[idx].representative}) for idx in allowed]
            options = [idx for idx, why in zip(allowed, blocked) if why is None]
            if not options and allowed:
                # forbidden here by a constraint (a grade for a ganglioneuroma): the fact stays unknown
                visit(cells, rest, inapplicable + ((fact, str(blocked[0])),))
            for idx in options:
                visit({**cells, fact: idx}, rest, inapplicable)

        visit({}, unknown, ())
        return leaves


class ReferenceRunner(DecisionRunner):
    """A :class:`DecisionRunner` answering missing facts with the former engine search."""

    def __init__(self, program: Program, cache_size: int = 0) -> None:
        super().__init__(program, cache_size=cache_size)
        self.analysis = EngineSearch(self)
