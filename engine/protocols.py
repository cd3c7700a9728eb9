"""The seams between the engine and the modules that use it, as typing protocols.

Batch evaluation, cohort diff, CDS Hooks cards, FHIR write-back and the workbench's
result page need only a few things of an engine: to evaluate a patient, the outputs
that were asked for, the decisions in force and the checked build they come from.
They take an :class:`Evaluator`, so ``mypy --strict`` checks every use, and anything
with these members can stand in for :class:`nbrules.RuleEngine` (a wrapper that counts
or logs calls, an engine in another process behind a proxy).

``RuleEngine`` satisfies :class:`Evaluator` structurally (it does not inherit from it);
``tests/test_protocols.py`` checks that it does, with mypy and at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing this module costs nothing at start-up
    from .model import Decision
    from .pipeline import RuleSetBuild
    from .results import Result
    from .runtime import RuleEngine

__all__ = ["Evaluator"]


@runtime_checkable
class Evaluator(Protocol):
    """What the modules at the engine's seams use of it.

    - :meth:`evaluate` evaluates one patient: ``facts`` maps patient facts
      (``schemas/patient.schema.json``) to values, a missing or ``None`` fact is unknown;
      ``decisions`` (ids) chooses the decisions to run (None: the default choice).
      Raises :class:`nbrules.PatientInputError` for an invalid record and
      :class:`nbrules.VersionError` (NB802) for a decision not in force.
    - :meth:`requested_outputs` names the outputs of the decisions asked for (a batch
      row's status is computed over these).
    - :attr:`decisions` are the decisions in force, in dependency order.
    - :attr:`build` is the checked rule set they were chosen from (vocabulary with the
      words and codes of outputs, knowledge package, every version found).
    - :meth:`close` frees what the engine holds (its compiled rulesets and caches);
      a seam closes only an engine it built itself.
    """

    @property
    def build(self) -> RuleSetBuild: ...

    @property
    def decisions(self) -> tuple[Decision, ...]: ...

    def evaluate(self, facts: Mapping[str, Any], decisions: Sequence[str] | None = None) -> Result: ...

    def requested_outputs(self, decisions: Sequence[str] | None = None) -> tuple[str, ...]: ...

    def close(self) -> None: ...


if TYPE_CHECKING:
    def _a_rule_engine_is_an_evaluator(engine: RuleEngine) -> Evaluator:
        return engine  # mypy --strict checks that RuleEngine has every member, with these types
