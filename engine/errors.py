"""Typed exceptions.  Each carries its diagnostics and survives pickling.

Exceptions are for stopping; findings are :class:`~nbrules.diagnostics.Diagnostic`
records.  Every exception here has an ``exit_code`` the CLI uses.
"""

from __future__ import annotations

from typing import Any, Iterable

from .diagnostics import Diagnostic, format_diagnostic

__all__ = ["NbrulesError", "RuleSetError", "PatientInputError", "EngineError", "VersionError", "MappingError"]


class NbrulesError(Exception):
    """Base class of every error nbrules raises on purpose."""

    exit_code = 70

    def __init__(self, message: str, diagnostics: Iterable[Diagnostic] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.diagnostics))

    def __str__(self) -> str:
        return self.message

    def report(self) -> str:
        """The message followed by every diagnostic, formatted for a terminal."""
        parts = [self.message] + [format_diagnostic(d) for d in self.diagnostics]
        return "\n".join(parts)


class RuleSetError(NbrulesError):
    """Rule files failed to load, validate or check; ``diagnostics`` says where and why."""

    exit_code = 3


class PatientInputError(NbrulesError):
    """A patient record is invalid; each diagnostic carries the JSON pointer of a fact."""

    exit_code = 2


class VersionError(NbrulesError):
    """A requested decision version is not installed or may not run."""

    exit_code = 3


class MappingError(NbrulesError):
    """A FHIR mapping file is invalid; ``diagnostics`` says where and why."""

    exit_code = 3


class EngineError(NbrulesError):
    """durable-rules failed during an evaluation (a defect, never bad input)."""

    exit_code = 70
