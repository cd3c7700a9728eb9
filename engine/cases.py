"""Running the example cases of rule files (``nbrules test``).

Each case runs its decision alone, on exactly the facts it gives, with its own
parameter values when it sets any, on the durable-rules engine.  A failing case
becomes an NB701 diagnostic at the case's line, showing expected against actual
outputs and fired rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence, assert_never

from .compiler import compile_decision
from .diagnostics import Diagnostic
from .model import Case, Decision, ExpectIndeterminate
from .runner import DecisionOutcome, DecisionRunner, OutputOutcome

__all__ = ["CaseResult", "run_cases", "describe_outcome"]


@dataclass(frozen=True)
class CaseResult:
    decision: Decision
    case: Case
    failures: tuple[str, ...]
    outcome: DecisionOutcome

    @property
    def passed(self) -> bool:
        return not self.failures

    def diagnostic(self) -> Diagnostic:
        lines = "; ".join(self.failures)
        return self.decision.positions.diag("NB701", f"case '{self.case.name}' failed: {lines}", self.case.pointer,
                                       hint="the expectation comes from the criteria table; fix the rule, or the case "
                                            "if the table was misread")


def describe_outcome(oc: OutputOutcome | None) -> str:
    if oc is None:
        return "nothing"
    match oc.status:  # exhaustive: mypy --strict reports a status left out
        case "set" | "settled":
            return str(oc.value)
        case "not_applicable":
            return "null (not applicable)"
        case "conflict":
            return f"conflict between {' and '.join(oc.candidates)}"
        case "indeterminate":
            return f"indeterminate {{{', '.join(oc.candidates)}}} missing [{', '.join(oc.missing)}]"
        case _:
            assert_never(oc.status)


def _describe_expected(exp: str | None | ExpectIndeterminate) -> str:
    if exp is None:
        return "null (not applicable)"
    if isinstance(exp, ExpectIndeterminate):
        return f"indeterminate {{{', '.join(exp.candidates)}}} missing [{', '.join(exp.missing)}]"
    return exp


def _matches(exp: str | None | ExpectIndeterminate, oc: OutputOutcome) -> bool:
    if exp is None:
        return oc.status == "not_applicable"
    if isinstance(exp, ExpectIndeterminate):
        return (oc.status == "indeterminate" and set(exp.candidates) == set(oc.candidates)
                and set(exp.missing) == set(oc.missing))
    return oc.status in ("set", "settled") and oc.value == exp


def run_cases(decisions: Iterable[Decision], profile: Mapping[str, Any] | None = None) -> Iterator[CaseResult]:
    """Run every case of every decision; one durable-rules ruleset per parameter binding.

    ``profile`` (readings of a profile) sets parameters the case does not set itself."""
    for decision in decisions:
        runners: dict[tuple[tuple[str, Any], ...], DecisionRunner] = {}
        base = {k: v for k, v in (profile or {}).items() if k in decision.parameters}
        try:
            for case in decision.cases:
                params = {**base, **case.parameters}
                key = tuple(sorted(params.items()))
                runner = runners.get(key)
                if runner is None:
                    runner = DecisionRunner(compile_decision(decision, params))
                    runners[key] = runner
                yield _run_one(decision, case, runner)
        finally:
            for r in runners.values():
                r.close()


def _run_one(decision: Decision, case: Case, runner: DecisionRunner) -> CaseResult:
    outcome = runner.decide(runner.view(case.given))
    failures: list[str] = []
    for out, exp in case.expect.items():
        oc = outcome.outputs.get(out)
        if oc is None or not _matches(exp, oc):
            failures.append(f"{out}: expected {_describe_expected(exp)}, got {describe_outcome(oc)}")
    if case.fired is not None:
        got = [r.rule.id for r in outcome.fired]
        if set(got) != set(case.fired):
            failures.append(f"fired: expected [{', '.join(case.fired)}], got [{', '.join(got)}]")
    return CaseResult(decision, case, tuple(failures), outcome)


def summarise(results: Sequence[CaseResult]) -> tuple[int, int]:
    """(passed, failed)."""
    passed = sum(1 for r in results if r.passed)
    return passed, len(results) - passed
