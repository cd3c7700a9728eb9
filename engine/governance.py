"""Governance: an ``active`` rule file runs only when it is clean.

Loading an engine refuses any active file that does not verify clean (no gaps,
overlaps or dead rules) or whose example cases fail; validate and check errors
already stop every load.  Drafts and retired files are exempt: they run only when
pinned.  Verdicts are memoised per file content, so reloading unchanged files is cheap.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from .cases import run_cases
from .diagnostics import Diagnostic
from .model import Decision
from .verify import verify_decision

__all__ = ["governance_problems"]

_MEMO: "OrderedDict[Any, tuple[Diagnostic, ...]]" = OrderedDict()
_LOCK = threading.Lock()


def governance_problems(decision: Decision) -> tuple[Diagnostic, ...]:
    """Why an active decision may not run (empty when it may), NB801 first."""
    if decision.status != "active":
        return ()
    key = (decision.source.display, decision.sha256, tuple(sorted(decision.facts.items())))
    with _LOCK:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
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
        head = decision.file.diag(
            "NB801", f"{decision.key} is active but not clean: {', '.join(reasons)}", "/status",
            hint="fix it, or set status: draft until it passes validate, test and verify")
        result = (head, *problems)
    with _LOCK:
        _MEMO[key] = result
        if len(_MEMO) > 256:
            _MEMO.popitem(last=False)
    return result
