"""Typed exceptions.  Each carries its diagnostics and survives pickling.

Exceptions are for stopping; findings are :class:`~nbrules.diagnostics.Diagnostic`
records.  Every exception here has an ``exit_code`` the CLI uses.
"""

from __future__ import annotations

from typing import Any, Iterable

from .diagnostics import Diagnostic, format_diagnostic

__all__ = ["NbrulesError", "RuleSetError", "UsageError", "PatientInputError", "EngineError", "VersionError", "MappingError",
           "WorkerLost", "EXIT_OK", "EXIT_FINDINGS", "EXIT_PATIENT", "EXIT_RULES", "EXIT_USAGE", "EXIT_LISTEN",
           "EXIT_INTERNAL", "EXIT_WORKER_LOST", "EXIT_CODES"]

# -- exit codes of the command line (the README's table is checked against EXIT_CODES) --------

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_PATIENT = 2
EXIT_RULES = 3
EXIT_USAGE = 4
EXIT_LISTEN = 5
EXIT_INTERNAL = 70
EXIT_WORKER_LOST = 71

#: exit code -> (meaning, the commands that can return it; ``*`` for every command).
EXIT_CODES: dict[int, tuple[str, tuple[str, ...]]] = {
    EXIT_OK: ("success: nothing to report", ("*",)),
    EXIT_FINDINGS: ("findings: rule files with errors, a failing case, a gap, overlap or dead rule",
                    ("validate", "test", "verify")),
    EXIT_PATIENT: ("invalid patient input, one line per problem (JSON pointer, expected, found); with --fhir, also a "
                   "record read only in part (NB747: result printed, nothing written back) or without a neuroblastoma diagnosis "
                   "(NB744: not evaluated)", ("evaluate",)),
    EXIT_RULES: ("the rule files have errors, or a requested version cannot run",
                 ("evaluate", "evaluate --batch", "test", "verify", "render", "diff", "serve")),
    EXIT_USAGE: ("usage error: an unknown or inapplicable option, a bad value, an unreadable file or an output "
                 "that cannot be written (a full disk; a closed pipe, quietly)",
                 ("*",)),
    EXIT_LISTEN: ("the service cannot listen on the address (port in use, or not permitted)", ("serve",)),
    EXIT_INTERNAL: ("internal error: a defect in nbrules (rerun with NBRULES_DEBUG=1 for the traceback)", ("*",)),
    EXIT_WORKER_LOST: ("a worker process was lost (killed, e.g. by the out-of-memory killer, out of memory, or not "
                       "started; NB531): the rows written before stay, in OUT.partial with --out FILE", ("evaluate --batch",)),
}


class NbrulesError(Exception):
    """Base class of every error nbrules raises on purpose."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, diagnostics: Iterable[Diagnostic] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.diagnostics))

    def __str__(self) -> str:
        """The message and every diagnostic (``str(exc)`` carries the problems)."""
        return self.report()

    def report(self) -> str:
        """The message followed by every diagnostic, formatted for a terminal."""
        parts = [self.message] + [format_diagnostic(d) for d in self.diagnostics]
        return "\n".join(parts)


class RuleSetError(NbrulesError):
    """Rule files failed to load, validate or check; ``diagnostics`` says where and why."""

    exit_code = EXIT_RULES


class WorkerLost(NbrulesError):
    """A batch worker process ended before its rows were done (killed by a signal, by
    the out-of-memory killer for one, or out of memory), or could not be started; the
    run stops."""

    exit_code = EXIT_WORKER_LOST


class UsageError(NbrulesError):
    """A request the caller can correct: a rules directory that does not exist, a profile
    or decision that is not declared, an unreadable input or an unwritable output."""

    exit_code = EXIT_USAGE


class PatientInputError(NbrulesError):
    """A patient record is invalid; each diagnostic carries the JSON pointer of a fact."""

    exit_code = EXIT_PATIENT


class VersionError(NbrulesError):
    """A requested decision version is not installed or may not run."""

    exit_code = EXIT_RULES


class MappingError(NbrulesError):
    """A FHIR mapping file is invalid; ``diagnostics`` says where and why."""

    exit_code = EXIT_RULES


class EngineError(NbrulesError):
    """durable-rules failed during an evaluation (a defect, never bad input)."""

    exit_code = EXIT_INTERNAL
