"""nbrules: neuroblastoma staging and risk-group criteria as versioned, cited rule files.

Typical use (run as a doctest by the test suite)::

    >>> from nbrules import RuleEngine
    >>> engine = RuleEngine.default()
    >>> result = engine.evaluate({"age_days": 183, "primary_idrfs": [], "metastatic_sites": ["liver"],
    ...                           "mibg_bone_or_marrow_avid": False})
    >>> result.outputs["inrgss_stage"]
    'MS'
    >>> result.fired[0].rule, result.fired[0].decision
    ('MS', 'inrgss')
    >>> result.to_json().startswith('{')      # the full, deterministic result
    True

Errors raised on purpose derive from :class:`NbrulesError` and carry diagnostics.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # the names below are imported on first use (PEP 562 ``__getattr__``)
    from .commands import (RulesHaveErrors, diff_rules, evaluate_batch, open_engine, patient_schema_of, render_rules,
                           run_rule_cases, validate_rules, verify_rules)
    from .diagnostics import CODES, Diagnostic, Severity, format_diagnostic
    from .errors import EngineError, MappingError, NbrulesError, PatientInputError, RuleSetError, UsageError, VersionError
    from .pipeline import RuleSetBuild, build_bundled, build_directory, build_sources
    from .results import FiredRule, FromInput, Indeterminate, NotApplicable, Result, RulesetInfo, Settled
    from .runtime import RuleEngine

#: The module of each exported name.  Importing ``nbrules`` (which every ``nbrules.x``
#: import does first) imports none of them: a one-shot ``nbrules evaluate`` imports only
#: the modules it uses, and ``from nbrules import X`` imports X's module then.
_EXPORTS = {
    **dict.fromkeys(("RulesHaveErrors", "diff_rules", "evaluate_batch", "open_engine", "patient_schema_of",
                     "render_rules", "run_rule_cases", "validate_rules", "verify_rules"), "commands"),
    **dict.fromkeys(("CODES", "Diagnostic", "Severity", "format_diagnostic"), "diagnostics"),
    **dict.fromkeys(("EngineError", "MappingError", "NbrulesError", "PatientInputError", "RuleSetError",
                     "UsageError", "VersionError"), "errors"),
    **dict.fromkeys(("RuleSetBuild", "build_bundled", "build_directory", "build_sources"), "pipeline"),
    **dict.fromkeys(("FiredRule", "FromInput", "Indeterminate", "NotApplicable", "Result", "RulesetInfo",
                     "Settled"), "results"),
    "RuleEngine": "runtime",
}


def __getattr__(name: str) -> Any:
    """``nbrules.X`` for an exported X, imported from its module on first use (then kept
    as an attribute of the package); AttributeError for any other name."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nbrules' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "CODES",
    "Diagnostic",
    "EngineError",
    "FiredRule",
    "FromInput",
    "Indeterminate",
    "MappingError",
    "NbrulesError",
    "NotApplicable",
    "PatientInputError",
    "Result",
    "RuleEngine",
    "RuleSetBuild",
    "RuleSetError",
    "RulesHaveErrors",
    "RulesetInfo",
    "Settled",
    "Severity",
    "UsageError",
    "VersionError",
    "__version__",
    "build_bundled",
    "build_directory",
    "build_sources",
    "diff_rules",
    "evaluate_batch",
    "format_diagnostic",
    "open_engine",
    "patient_schema_of",
    "render_rules",
    "run_rule_cases",
    "validate_rules",
    "verify_rules",
]
