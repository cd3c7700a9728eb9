"""Version selection: which version of each decision is in force on a date, and why.

A decision may have several versions installed (``active``, ``draft``, ``retired``,
each with an ``effective`` date).  :func:`choose_versions` picks one per decision, by
status and effective date unless a version is pinned; :class:`RuleEngine
<nbrules.runtime.RuleEngine>` calls it when it is built, on a reload and on the first
evaluation of a new day.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .diagnostics import Diagnostic
from .model import Decision

__all__ = ["VersionChoice", "choose_versions", "select_versions"]


@dataclass(frozen=True)
class VersionChoice:
    """The decision versions in force on ``as_of`` and why each was chosen.

    ``chosen`` keeps the order of the decisions given; ``reasons`` maps each chosen
    ``decision@version`` to a sentence (the ``selected`` field of a result's
    ``rulesets``); ``diagnostics`` holds NB802 (bad pin, error), NB803 (retired pinned)
    and NB811 (a decision with no version in force, warning).
    """

    chosen: tuple[Decision, ...]
    reasons: Mapping[str, str]
    diagnostics: tuple[Diagnostic, ...]
    as_of: datetime.date


def _today() -> datetime.date:
    """Today's date (the default evaluation date; tests replace it)."""
    return datetime.date.today()


def _effective(d: Decision) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(d.effective)
    except ValueError:  # the checker already reported it (NB315)
        return None


def choose_versions(decisions: Sequence[Decision], use: Iterable[str] = (),
                    as_of: datetime.date | None = None) -> VersionChoice:
    """One version per decision, by status *and* effective date, unless ``use`` pins one.

    The version in force is the newest ``active`` version whose ``effective`` date is on
    or before ``as_of`` (default: today). An active version taking effect later, a
    ``draft`` and a ``retired`` version run only when pinned (``decision@version``); a
    pinned retired version runs with warning NB803. A decision with no version in force
    does not run (warning NB811, which says how to make one run).
    """
    day = as_of or _today()
    pins: dict[str, str] = {}
    diags: list[Diagnostic] = []
    for item in use:
        if "@" not in item:
            diags.append(Diagnostic(code="NB802", message=f"'{item}' is not of the form decision@version",
                                    hint="for example --use cog-risk@2.0.0"))
            continue
        did, ver = item.split("@", 1)
        pins[did] = ver
    by_id: dict[str, list[Decision]] = {}
    for d in decisions:
        by_id.setdefault(d.id, []).append(d)
    chosen: list[Decision] = []
    reasons: dict[str, str] = {}
    for did, versions in by_id.items():
        if did in pins:
            match = [d for d in versions if d.version == pins[did]]
            if not match:
                diags.append(Diagnostic(code="NB802", message=f"{did}@{pins[did]} is not installed",
                                        hint="installed: " + ", ".join(sorted(d.key for d in versions))))
                continue
            pick = match[0]
            if pick.status == "retired":
                diags.append(Diagnostic(code="NB803", message=f"{pick.key} is retired and runs only because it was pinned"))
            chosen.append(pick)
            reasons[pick.key] = f"pinned ({pick.status}, effective {pick.effective})"
            continue
        ordered = sorted(versions, key=lambda d: d.version_key, reverse=True)
        in_force = [d for d in ordered if d.status == "active" and (e := _effective(d)) is not None and e <= day]
        later = [d for d in ordered if d.status == "active" and d not in in_force]
        waiting = "".join(f"; {d.version} is active from {d.effective}" for d in later)
        if in_force:
            pick = in_force[0]
            chosen.append(pick)
            reasons[pick.key] = f"newest active version in effect on {day.isoformat()} (effective {pick.effective}){waiting}"
            continue
        why = ", ".join(f"{d.version} is {d.status}" + (f" from {d.effective}" if d in later else "")
                        for d in ordered)
        newest = ordered[0]
        diags.append(Diagnostic(
            code="NB811", message=f"no version of {did} is in force on {day.isoformat()}: {why}",
            hint=f"pin one to run it (--use {newest.key}), or evaluate as of a later date (--as-of)"
                 if later else f"pin one to run it (--use {newest.key}), or make it active"))
    for did in pins:
        if did not in by_id:
            diags.append(Diagnostic(code="NB802", message=f"no decision '{did}' is installed",
                                    hint="installed: " + ", ".join(sorted(by_id))))
    order = {d.key: i for i, d in enumerate(decisions)}
    chosen.sort(key=lambda d: order[d.key])
    return VersionChoice(tuple(chosen), reasons, tuple(diags), day)


def select_versions(decisions: Sequence[Decision], use: Iterable[str] = (),
                    as_of: datetime.date | None = None) -> tuple[list[Decision], list[Diagnostic]]:
    """The versions in force and the diagnostics of :func:`choose_versions`."""
    choice = choose_versions(decisions, use, as_of)
    return list(choice.chosen), list(choice.diagnostics)
