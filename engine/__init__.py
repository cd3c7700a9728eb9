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

from ._version import __version__
from .commands import (RulesHaveErrors, diff_rules, evaluate_batch, open_engine, patient_schema_of, render_rules,
                       run_rule_cases, validate_rules, verify_rules)
from .diagnostics import CODES, Diagnostic, Severity, format_diagnostic
from .errors import EngineError, MappingError, NbrulesError, PatientInputError, RuleSetError, UsageError, VersionError
from .pipeline import RuleSetBuild, build_bundled, build_directory, build_sources
from .results import FiredRule, FromInput, Indeterminate, NotApplicable, Result, RulesetInfo, Settled
from .runtime import RuleEngine

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
