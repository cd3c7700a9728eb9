"""Governance: an ``active`` rule file runs only when it is clean.

Loading an engine refuses any active file that does not verify clean (no gaps,
overlaps or dead rules) or whose example cases fail; validate and check errors
already stop every load.  Drafts and retired files are exempt: they run only when
pinned.  Verdicts are memoised per file content, so reloading unchanged files is cheap.

A rules directory may also hold ``versions.lock``: the sha256 recorded for each
``decision@version`` (``nbrules validate --record``).  ``nbrules validate`` reports a
file whose content no longer has the hash recorded for its version (NB812): edited in
place without raising its version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Mapping

from .cache import SHARED, SizedCache
from .diagnostics import Diagnostic
from .model import Decision

__all__ = ["governance_problems", "remember", "LOCK_FILE", "LockFileError", "read_lock", "lock_problems", "write_lock"]

#: The file, at the top of a rules directory, holding the recorded hash of each version.
LOCK_FILE = "versions.lock"
_LOCK_HEADER = ("# nbrules: the sha256 of each decision@version when it was recorded (nbrules validate --record).\n"
                "# A rule file whose version is listed here must keep this content: raise its version to change it.\n")


class LockFileError(ValueError):
    """``versions.lock`` cannot be read; the message names the line."""


def read_lock(root: Path) -> dict[str, str]:
    """``{decision@version: sha256}`` from ``root/versions.lock``; empty when there is none.

    Raises :class:`LockFileError` for a line that is not ``decision@version sha256``.
    """
    path = Path(root) / LOCK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise LockFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    recorded: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or "@" not in parts[0] or len(parts[1]) != 64:
            raise LockFileError(f"{path}:{number}: expected 'decision@version sha256', found {line.strip()!r}")
        recorded[parts[0]] = parts[1]
    return recorded


def lock_problems(decisions: Iterable[Decision], recorded: Mapping[str, str]) -> list[Diagnostic]:
    """NB812 for every decision whose content differs from the hash recorded for its version."""
    out = []
    for d in decisions:
        was = recorded.get(d.key)
        if was is not None and was != d.sha256:
            out.append(d.positions.diag(
                "NB812", f"{d.key} changed since its hash was recorded in {LOCK_FILE} (sha256 {was[:12]} -> "
                         f"{d.sha256[:12]}) but its version did not", "/version",
                hint="raise the version of the edited file; if the change is meant to keep this version, "
                     "record it again with 'nbrules validate --record'"))
    return out


def write_lock(root: Path, decisions: Iterable[Decision], recorded: Mapping[str, str]) -> int:
    """Record the hash of every decision given, keeping the other recorded versions
    (a version removed and later restored must come back with its content).  Returns the
    number of versions recorded in the file."""
    merged = dict(recorded)
    merged.update({d.key: d.sha256 for d in decisions})
    body = "".join(f"{key} {merged[key]}\n" for key in sorted(merged))
    (Path(root) / LOCK_FILE).write_text(_LOCK_HEADER + body, encoding="utf-8")
    return len(merged)

#: Verdicts by file, content hash and the facts read (one policy: :mod:`nbrules.cache`);
#: held by the live engines, cleared when the last one closes.
_VERDICTS: "SizedCache[Any, tuple[Diagnostic, ...]]" = SHARED.cache("governance.verdicts", 4 * 1024 * 1024)


def _key(decision: Decision) -> Any:
    """The file, its content hash and a digest of the facts it was checked against (the
    facts themselves would keep every build's vocabulary alive as long as the entry)."""
    facts = repr(sorted(decision.facts.items())).encode("utf-8")
    return (decision.source.display, decision.sha256, hashlib.sha256(facts).hexdigest())


def remember(decision: Decision, verdict: tuple[Diagnostic, ...]) -> None:
    """Take ``verdict`` as what :func:`governance_problems` says of ``decision`` (a verdict
    read back from the on-disk cache, :mod:`nbrules.store`, computed for the same bytes)."""
    if decision.status != "active":
        return
    _VERDICTS.put(_key(decision), verdict)


def governance_problems(decision: Decision) -> tuple[Diagnostic, ...]:
    """Why an active decision may not run (empty when it may), NB801 first."""
    if decision.status != "active":
        return ()
    key = _key(decision)
    hit = _VERDICTS.get(key)
    if hit is not None:
        return hit
    from .cases import run_cases  # only when a verdict is not known (not from the on-disk cache)
    from .verify import verify_decision

    report = verify_decision(decision, dead_conditions=False)
    problems = [d for d in report.diagnostics if d.is_error]
    failing = [r for r in run_cases([decision]) if not r.passed]
    problems += [r.diagnostic() for r in failing]
    result: tuple[Diagnostic, ...] = ()
    if problems:
        reasons = []
        if report.diagnostics and any(d.is_error for d in report.diagnostics):
            reasons.append(f"{sum(1 for d in report.diagnostics if d.is_error)} verify error(s)")
        if failing:
            reasons.append(f"{len(failing)} failing case(s)")
        head = decision.positions.diag(
            "NB801", f"{decision.key} is active but not clean: {', '.join(reasons)}", "/status",
            hint="fix it, or set status: draft until it passes validate, test and verify")
        result = (head, *problems)
    return _VERDICTS.put(key, result)
