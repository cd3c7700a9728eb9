"""The seams take an Evaluator (nbrules.protocols), not a RuleEngine: anything with its
members stands in for the engine in batch, cohort diff, CDS cards and FHIR write-back.
(mypy --strict checks statically that RuleEngine is an Evaluator: engine/protocols.py.)"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from nbrules import RuleEngine
from nbrules.batch import row_record
from nbrules.cohort import Row
from nbrules.diff import diff_cohort
from nbrules.model import Decision
from nbrules.pipeline import RuleSetBuild
from nbrules.protocols import Evaluator
from nbrules.results import Result

# criteria.md (INRGSS, Monclair 2009): metastases limited to skin, liver and/or marrow
# below 18 months of age is stage MS.
MS_183 = {"age_days": 183, "primary_idrfs": [], "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": False}


class Counting:
    """An Evaluator that is not a RuleEngine: it counts evaluations and delegates."""

    def __init__(self, inner: RuleEngine) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def build(self) -> RuleSetBuild:
        return self.inner.build

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self.inner.decisions

    def evaluate(self, facts: Mapping[str, Any], decisions: Sequence[str] | None = None) -> Result:
        self.calls += 1
        return self.inner.evaluate(facts, decisions)

    def requested_outputs(self, decisions: Sequence[str] | None = None) -> tuple[str, ...]:
        return self.inner.requested_outputs(decisions)

    def close(self) -> None:  # the seams never close an engine they were given
        raise AssertionError("closed an engine it did not build")


def test_a_rule_engine_is_an_evaluator_and_other_objects_are_not(engine: RuleEngine) -> None:
    assert isinstance(engine, Evaluator)
    assert isinstance(Counting(engine), Evaluator)
    assert not isinstance(object(), Evaluator)


def test_batch_rows_go_through_any_evaluator(engine: RuleEngine) -> None:
    ev = Counting(engine)
    status, line = row_record(Row(1, "p1", dict(MS_183)), ev)
    assert ev.calls == 1
    record = json.loads(line)
    assert (record["id"], record["result"]["outputs"]["inrgss_stage"]) == ("p1", "MS")
    assert row_record(Row(1, "p1", dict(MS_183)), engine) == (status, line)  # the same line as with the engine


def test_cohort_diff_goes_through_any_evaluator(engine: RuleEngine) -> None:
    old, new = Counting(engine), Counting(engine)
    rows = [Row(i, f"p{i}", {**MS_183, "age_days": 100 + 200 * i}) for i in range(1, 5)]
    report = diff_cohort(old, new, rows, ["inrgss_stage"])
    assert (old.calls, new.calls) == (4, 4)
    assert (report.evaluated, report.changed_patients) == (4, 0)  # one engine twice: nothing changes
