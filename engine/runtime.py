"""Stage 5, *evaluate*: run the compiled decisions on one patient.

Decisions run in dependency order; each one's outputs become facts for the next.
A value given in the input is not re-derived (the result says so, and warns when
the rules would derive another value).  Each decision runs through a
:class:`~nbrules.runner.DecisionRunner`; an output no rule sets is answered by its
missing-fact analysis.  The engine can :meth:`~RuleEngine.reload` its rule files
atomically and watch them for changes.
"""

from __future__ import annotations

import datetime
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ._version import __version__
from .cache import SHARED
from .compiler import compile_decision
from .diagnostics import Diagnostic, has_errors
from .errors import NbrulesError, PatientInputError, RuleSetError, VersionError
from .governance import governance_problems
from .model import Decision
from .patient import PatientValidator, facts_sha256, parse_patient_json
from .pipeline import RuleSetBuild, build_bundled, build_directory, build_sources
from .resources import bundled_rules_dir
from .runner import DecisionRunner
from .results import APPLIES_IF_GIVEN, FiredRule, FromInput, Indeterminate, KnowledgeInfo, NotApplicable, Result, RulesetInfo, Settled
from .sources import RuleSource, directory_state

__all__ = ["RuleEngine", "ReloadReport", "VersionChoice", "choose_versions", "select_versions", "DEFAULT_CACHE_SIZE"]

_LOG = logging.getLogger("nbrules.watch")

#: Outcomes each decision remembers per cell of its input domain.  Results are
#: byte-identical with and without (tests/test_batch.py); 0 turns it off.
DEFAULT_CACHE_SIZE = 65536



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


@dataclass(frozen=True)
class ReloadReport:
    """What :meth:`RuleEngine.reload` did: swapped in a new rule set, kept the old one, or
    found nothing changed.  ``diagnostics`` says why a reload was refused."""

    ok: bool
    changed: bool
    diagnostics: tuple[Diagnostic, ...]
    rulesets: tuple[RulesetInfo, ...]
    #: When the reload finished (UTC, ISO 8601 to the millisecond).
    at: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
                    .isoformat(timespec="milliseconds").replace("+00:00", "Z"), compare=False)

    def lines(self) -> list[str]:
        """The summary, then one ``path:line:col: severity CODE [name] message`` line per diagnostic."""
        return [self.summary()] + [d.headline() for d in self.diagnostics]

    def to_dict(self) -> dict[str, Any]:
        """What ``/health`` shows of the last reload attempt."""
        return {"at": self.at, "ok": self.ok, "changed": self.changed, "summary": self.summary(),
                "problems": [d.to_dict() for d in self.diagnostics]}

    def summary(self) -> str:
        if not self.ok:
            return f"reload refused, still serving the previous rules: {len(self.diagnostics)} problem(s)"
        if not self.changed:
            return "rules unchanged"
        return "reloaded: " + ", ".join(f"{r.decision} {r.version}" for r in self.rulesets)


class _State:
    """One complete, checked, compiled rule set.  Immutable once built; evaluations in
    flight keep the state they started with, and it is freed when the last one ends."""

    def __init__(self, build: RuleSetBuild, use: Iterable[str], cache_size: int, as_of: datetime.date,
                 profile: str | None = None) -> None:
        if not build.ok:
            raise RuleSetError(f"the rule files in {build.label} have errors", build.errors())
        refused = [p for d in build.decisions for p in governance_problems(d)]
        if refused:
            raise RuleSetError(f"the rule files in {build.label} include active files that are not clean", refused)
        choice = choose_versions(build.decisions, use, as_of)
        version_diags = choice.diagnostics
        if has_errors(version_diags):
            raise VersionError("cannot select the requested versions", [d for d in version_diags if d.is_error])
        if not choice.chosen:
            raise VersionError(
                f"no decision in {build.label} is in force on {as_of.isoformat()}",
                [Diagnostic(code="NB810", message=f"nothing would run: no decision in {build.label} has a version "
                                                  f"in force on {as_of.isoformat()}",
                            hint="each NB811 below says why and how to make that decision run")]
                + [d for d in version_diags if d.code == "NB811"])
        try:
            readings = build.profile(profile)
        except KeyError:
            shown = ", ".join(build.profiles) or "none (the package has no parameters.yaml profiles)"
            raise VersionError(f"no profile '{profile}' in {build.label}", [Diagnostic(
                code="NB545", message=f"no profile '{profile}' in {build.label}", hint=f"profiles: {shown}")]) from None
        self.profile = profile
        #: Parameter overrides of the profile, per decision (its readings of that decision's parameters).
        self.overrides = {d.id: {k: v for k, v in readings.items() if k in d.parameters} for d in choice.chosen}
        self.build = build
        self.as_of = as_of
        self.version_warnings = tuple(d for d in version_diags if not d.is_error)
        self.decisions: tuple[Decision, ...] = choice.chosen
        constraints = build.constraints.rebind(self.decisions) if build.constraints is not None else None
        self.validator = PatientValidator(build.package.facts, constraints=constraints,
                                          params={d.id: d.param_values(self.overrides[d.id]) for d in self.decisions})
        runners: list[DecisionRunner] = []
        try:
            for d in self.decisions:
                runners.append(DecisionRunner(compile_decision(d, self.overrides[d.id]), cache_size=cache_size))
        except BaseException:
            for r in runners:
                r.close()
            raise
        self.runners: tuple[DecisionRunner, ...] = tuple(runners)
        self.rulesets = tuple(RulesetInfo(d.id, d.version, d.status, d.source.display, d.sha256, d.effective,
                                          choice.reasons[d.key]) for d in self.decisions)
        pkg = build.package
        self.knowledge = KnowledgeInfo(pkg.name, pkg.version, profile or "",
                                       pkg.sha256((d.source for d in self.decisions), profile or ""))
        self.fingerprint = tuple(sorted((f.source.display, f.source.sha256) for f in build.files))
        self.in_flight = 0
        self.retired = False
        self._plans: dict[tuple[str, ...], tuple[DecisionRunner, ...]] = {}

    def plan(self, requested: Sequence[str] | None) -> tuple[DecisionRunner, ...]:
        """The runners to run for the decisions ``requested`` (ids; None: all), with the
        decisions whose outputs they read, transitively, in dependency order.

        Raises :class:`VersionError` (NB802) for an id that is not in force.
        """
        if requested is None:
            return self.runners
        key = tuple(requested)
        hit = self._plans.get(key)
        if hit is not None:
            return hit
        by_id = {d.id: d for d in self.decisions}
        unknown = [i for i in key if i not in by_id]
        if unknown:
            raise VersionError(f"no decision {', '.join(repr(i) for i in unknown)} is in force", [Diagnostic(
                code="NB802", message=f"no decision '{i}' is in force", hint="in force: " + ", ".join(by_id))
                for i in unknown])
        owner = {out: d.id for d in self.decisions for out in d.decides}
        needed: set[str] = set()
        todo = list(key)
        while todo:
            did = todo.pop()
            if did not in needed:
                needed.add(did)
                todo.extend(owner[f] for f in by_id[did].reads if f in owner)
        plan = tuple(r for r in self.runners if r.decision.id in needed)
        self._plans[key] = plan
        return plan

    def close(self) -> None:
        for r in self.runners:
            r.close()


class RuleEngine:
    """Evaluates patients with a checked, compiled set of rule files.

    Create one with :meth:`default` (the bundled rules) or :meth:`from_directory`,
    then call :meth:`evaluate`.  An engine is safe to share between threads; calls
    into durable-rules are serialised by the adapter's lock.  :meth:`reload` swaps in
    changed rule files atomically, only when all of them pass every check.

    Loading refuses rule files with errors, and ``active`` files that do not verify
    clean or fail their example cases (:mod:`nbrules.governance`).  ``use`` pins
    versions (``["cog-risk@1.0.0"]``); ``cache_size`` > 0 memoises each decision's
    outcome per cell of its input domain (identical results, faster).  ``decisions``
    (ids, e.g. ``["inrg"]``) chooses the decisions :meth:`evaluate` runs by default
    (None: all); the decisions they read outputs of run too.

    ``as_of`` is the date the versions in force are chosen for (:func:`choose_versions`)
    and is recorded in every result. By default it is today, and it follows the clock:
    the first evaluation on a new day chooses again, so a version becomes in force on
    its effective date without a restart. A fixed ``as_of`` makes results reproducible.

    ``profile`` names a profile of ``parameters.yaml`` whose readings every decision and input
    constraint uses; results name it (``Result.profile``).  An unknown profile raises
    :class:`VersionError` (NB545).
    """

    def __init__(self, build: RuleSetBuild, *, use: Iterable[str] = (), cache_size: int = DEFAULT_CACHE_SIZE,
                 origin: Callable[[], RuleSetBuild] | None = None, directory: Path | None = None,
                 decisions: Iterable[str] | None = None, as_of: datetime.date | None = None,
                 profile: str | None = None) -> None:
        self._use = tuple(use)
        self._requested: tuple[str, ...] | None = None if decisions is None else tuple(decisions)
        self._as_of = as_of
        self.profile = profile
        self.cache_size = cache_size
        self._origin = origin
        self._directory = directory
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._state = _State(build, self._use, cache_size, self._day(), profile)
        self._state.plan(self._requested)  # an unknown decision id fails here, not at the first patient
        self._engine_label = f"nbrules {__version__}"
        self._watcher: threading.Thread | None = None
        self._stop_watching = threading.Event()
        self._last_reload: ReloadReport | None = None
        SHARED.hold()  # the shared memos of file contents (nbrules.cache), let go by close()
        self._holds_shared = True

    # -- construction ------------------------------------------------------------------

    @classmethod
    def default(cls, *, use: Iterable[str] = (), cache_size: int = DEFAULT_CACHE_SIZE,
                decisions: Iterable[str] | None = None, as_of: datetime.date | None = None,
                profile: str | None = None) -> "RuleEngine":
        """An engine over the rule files bundled with nbrules."""
        return cls(build_bundled(), use=use, cache_size=cache_size, origin=build_bundled,
                   directory=bundled_rules_dir(), decisions=decisions, as_of=as_of,
                   profile=profile)

    @classmethod
    def from_directory(cls, path: str | Path, *, use: Iterable[str] = (), cache_size: int = DEFAULT_CACHE_SIZE,
                       decisions: Iterable[str] | None = None, as_of: datetime.date | None = None,
                       profile: str | None = None) -> "RuleEngine":
        """An engine over every ``*.yaml`` rule file below ``path``.

        Raises :class:`RuleSetError` with every diagnostic when a file is invalid.
        """
        root = Path(path)
        return cls(build_directory(root), use=use, cache_size=cache_size, origin=lambda: build_directory(root),
                   directory=root, decisions=decisions, as_of=as_of, profile=profile)

    @classmethod
    def from_sources(cls, sources: Sequence[RuleSource], label: str = "rules", *, use: Iterable[str] = (),
                     cache_size: int = DEFAULT_CACHE_SIZE, decisions: Iterable[str] | None = None,
                     as_of: datetime.date | None = None, profile: str | None = None) -> "RuleEngine":
        """An engine over rule files held in memory (it cannot :meth:`reload`)."""
        return cls(build_sources(sources, label), use=use, cache_size=cache_size, decisions=decisions, as_of=as_of,
                   profile=profile)

    # -- the rule set in force -----------------------------------------------------------

    @property
    def use(self) -> tuple[str, ...]:
        """The versions pinned (``decision@version``)."""
        return self._use

    @property
    def build(self) -> RuleSetBuild:
        return self._state.build

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The decision versions in force, in the order they run."""
        return self._state.decisions

    @property
    def runners(self) -> tuple[DecisionRunner, ...]:
        return self._state.runners

    @property
    def as_of(self) -> datetime.date:
        """The date the versions in force were chosen for."""
        return self._state.as_of

    @property
    def version_warnings(self) -> tuple[Diagnostic, ...]:
        return self._state.version_warnings

    @property
    def knowledge(self) -> KnowledgeInfo:
        """Package, version, profile and knowledge sha256 of the rule set in force."""
        return self._state.knowledge

    @property
    def rulesets(self) -> tuple[RulesetInfo, ...]:
        """Version, status, file and sha256 of every rule file in force."""
        return self._state.rulesets

    def _day(self) -> datetime.date:
        return self._as_of or _today()

    def _acquire(self) -> _State:
        if self._state.as_of != self._day():
            self._choose_again()
        with self._lock:
            state = self._state
            state.in_flight += 1
            return state

    def _release(self, state: _State) -> None:
        with self._lock:
            state.in_flight -= 1
            free = state.retired and state.in_flight == 0
        if free:
            state.close()

    def _retire(self, state: _State) -> None:
        with self._lock:
            state.retired = True
            free = state.in_flight == 0
        if free:
            state.close()

    def _choose_again(self) -> None:
        """A new day: choose the versions in force again, from the same rule files."""
        with self._reload_lock:
            day = self._day()
            if self._state.as_of == day:
                return
            new = _State(self._state.build, self._use, self.cache_size, day)
            with self._lock:
                old, self._state = self._state, new
            self._retire(old)

    # -- reload ------------------------------------------------------------------------

    @property
    def last_reload(self) -> ReloadReport | None:
        """The report of the last reload attempt (by :meth:`reload` or the watcher), or None."""
        return self._last_reload

    @property
    def watching(self) -> bool:
        """Whether the watcher thread is running."""
        return self._watcher is not None and self._watcher.is_alive()

    def reload(self) -> ReloadReport:
        """Rebuild from the rule files and swap the new set in only if every check passes.

        Load, validate, check, governance (verify and cases of active files) and compile
        all happen before the swap; on any failure the engine keeps serving the rule set
        it had and the report says why (an unexpected exception, a defect, is NB620).
        Evaluations already running finish on the set they started with; that set is
        freed (in durable-rules too) when they are done.  The report is kept as
        :attr:`last_reload`.
        """
        if self._origin is None:
            raise VersionError("this engine was built from sources held in memory and cannot reload")
        with self._reload_lock:
            report = self._reload()
            self._last_reload = report
            return report

    def _reload(self) -> ReloadReport:
        assert self._origin is not None
        try:
            build = self._origin()
            fingerprint = tuple(sorted((f.source.display, f.source.sha256) for f in build.files))
            if fingerprint == self._state.fingerprint and self._state.as_of == self._day():
                return ReloadReport(True, False, (), self._state.rulesets)
            new = _State(build, self._use, self.cache_size, self._day(), self.profile)
            try:
                new.plan(self._requested)  # the chosen decisions must still be in force
            except NbrulesError:
                new.close()
                raise
        except NbrulesError as exc:
            return ReloadReport(False, False, exc.diagnostics or (
                Diagnostic(code="NB801", message=str(exc)),), self._state.rulesets)
        except Exception as exc:  # a defect or exhausted resources: refuse, keep serving
            _LOG.exception("nbrules: reload failed unexpectedly")
            return ReloadReport(False, False, (Diagnostic(
                code="NB620", message=f"reload failed: {type(exc).__name__}: {exc}",
                hint="a defect in nbrules; the previous rules stay in force"),), self._state.rulesets)
        with self._lock:
            old, self._state = self._state, new
        self._retire(old)
        return ReloadReport(True, True, new.version_warnings, new.rulesets)

    def _sources_fingerprint(self) -> tuple[tuple[str, int, int, int], ...]:
        assert self._directory is not None
        return directory_state(self._directory)

    def watch(self, interval: float = 1.0, on_reload: Callable[[ReloadReport], None] | None = None) -> None:
        """Poll the rules directory every ``interval`` seconds; reload when a file changes.

        ``on_reload`` receives every report (refused reloads included).  The watcher
        survives any failure: a refused reload, an exception in ``on_reload`` or while
        polling is logged (logger ``nbrules.watch``) and polling goes on; a failed poll
        is retried.  Stop with :meth:`stop_watching` or :meth:`close`.
        """
        if self._directory is None or self._origin is None:
            raise VersionError("only an engine built from a directory can watch it")
        if self._watcher is not None:
            return
        self._stop_watching.clear()
        seen = self._sources_fingerprint()

        def poll() -> None:
            nonlocal seen
            now = self._sources_fingerprint()
            if now == seen:
                return
            report = self.reload()
            seen = now  # only once a reload has run: a failed poll is retried
            if not report.ok:
                _LOG.warning("nbrules: %s", "\n  ".join(report.lines()))
            if on_reload is not None:
                on_reload(report)

        def loop() -> None:
            while not self._stop_watching.wait(interval):
                try:
                    poll()
                except Exception:
                    _LOG.exception("nbrules: the rules watcher caught an error and goes on")

        self._watcher = threading.Thread(target=loop, name="nbrules-watch", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._stop_watching.set()
            self._watcher.join()
            self._watcher = None

    def close(self) -> None:
        """Stop watching and free the compiled rulesets (after evaluations in flight end)
        with the state's caches; the last engine of the process to close also clears the
        memos of file contents shared by every build (:mod:`nbrules.cache`).  Closing
        twice is harmless."""
        self.stop_watching()
        self._retire(self._state)
        with self._lock:
            holds, self._holds_shared = self._holds_shared, False
        if holds:
            SHARED.release()

    def __enter__(self) -> "RuleEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- evaluation --------------------------------------------------------------------

    def check_patient(self, facts: Any) -> list[Diagnostic]:
        """Every problem of a patient record (errors and warnings), without evaluating."""
        return self._state.validator.check(facts)

    def evaluate_json(self, text: str | bytes, max_bytes: int | None = None) -> Result:
        """Parse JSON text strictly (at most ``max_bytes`` long), then :meth:`evaluate` it."""
        data, diags = parse_patient_json(text, max_bytes)
        if diags:
            raise PatientInputError("the patient record is not valid JSON", diags)
        return self.evaluate(data)

    def requested_outputs(self, decisions: Sequence[str] | None = None) -> tuple[str, ...]:
        """The outputs of the decisions ``decisions`` (default: those chosen when the
        engine was built; None there: every decision in force).  A batch row's status
        is computed over these only."""
        chosen = self._requested if decisions is None else tuple(decisions)
        return tuple(out for d in self.decisions if chosen is None or d.id in chosen for out in d.decides)

    def evaluate(self, facts: Mapping[str, Any], decisions: Sequence[str] | None = None) -> Result:
        """Stage, classify and explain one patient.

        ``facts`` maps patient facts (``schemas/patient.schema.json``) to values; a fact
        left out or given as ``None`` (JSON ``null``) is unknown.  ``decisions`` (ids)
        chooses which decisions run (default: those chosen when the engine was built, else
        all); the decisions whose outputs they read run too, and appear in the result.

        Raises :class:`PatientInputError` (with one diagnostic per problem, each with
        its JSON pointer) when the record is invalid, :class:`VersionError` (NB802) for a
        decision id that is not in force.
        """
        state = self._acquire()
        try:
            return self._evaluate(state, facts, state.plan(self._requested if decisions is None else decisions))
        finally:
            self._release(state)

    def _evaluate(self, state: _State, facts: Mapping[str, Any],
                  runners: Sequence[DecisionRunner] | None = None) -> Result:
        """Evaluate on ``state`` with ``runners`` (default: every decision of the state)."""
        if runners is None:
            runners = state.runners
        diags = state.validator.check(facts)
        if has_errors(diags):
            raise PatientInputError("the patient record is invalid", [d for d in diags if d.is_error])
        warnings: list[Diagnostic] = [d for d in diags if not d.is_error] + list(state.version_warnings)
        given = state.validator.canonical(facts)
        known: dict[str, Any] = dict(given)
        open_values: dict[str, tuple[str, ...]] = {}
        missing_of: dict[str, tuple[str, ...]] = {}
        outputs: dict[str, str | None] = {}
        indeterminate: dict[str, Indeterminate] = {}
        not_applicable: dict[str, NotApplicable] = {}
        settled: dict[str, Settled] = {}
        from_input: dict[str, FromInput] = {}
        fired: list[FiredRule] = []
        for runner in runners:
            d = runner.decision
            view = runner.view(known)
            restrict = {f: open_values[f] for f in d.reads if f in open_values}
            if d.applies_if and not any(f in given for f in d.applies_if):
                # the record gives none of the facts that open this decision (applies_if_given)
                for out in d.decides:
                    if out in given:
                        outputs[out] = given[out]
                        from_input[out] = FromInput(d.id, given[out])
                        continue
                    outputs[out] = None
                    open_values[out] = ()
                    not_applicable[out] = NotApplicable(d.id, d.applies_reason, APPLIES_IF_GIVEN,
                                                        d.location("/applies_if_given"))
                continue
            if all(out in given for out in d.decides):
                for out in d.decides:
                    outputs[out] = given[out]
                    from_input[out] = FromInput(d.id, given[out])
                warnings.extend(self._compare_given(runner, view, restrict, given, known))
                continue
            outcome = runner.decide(view, restrict, known)
            for cr in outcome.fired:
                fired.append(runner.trace(len(fired) + 1, cr, view))
            for out, oc in outcome.outputs.items():
                if out in given:
                    outputs[out] = given[out]
                    from_input[out] = FromInput(d.id, given[out])
                    continue
                outputs[out] = oc.value if oc.status in ("set", "settled") else None
                if oc.status == "set":
                    known[out] = oc.value
                elif oc.status == "settled":
                    known[out] = oc.value
                    settled[out] = Settled(d.id, oc.value or "", oc.rules, oc.missing)
                elif oc.status in ("indeterminate", "conflict"):
                    via = {f: missing_of[f] for f in oc.missing if f in missing_of}
                    indeterminate[out] = Indeterminate(d.id, oc.candidates, oc.missing, via, oc.may_be_out_of_scope,
                                                       oc.rules if oc.status == "conflict" else ())
                    open_values[out] = oc.candidates
                    roots: list[str] = []
                    for f in oc.missing:
                        for root in missing_of.get(f, (f,)):
                            if root not in roots:
                                roots.append(root)
                    missing_of[out] = tuple(roots)
                    if oc.status == "conflict":
                        warnings.append(Diagnostic(
                            code="NB520", pointer=f"/{out}",
                            message=f"rules {', '.join(oc.rules)} of {d.key} set different values for {out}: "
                                    f"{', '.join(oc.candidates)}",
                            hint="run 'nbrules verify' on the rule files; this is an overlap"))
                else:
                    open_values[out] = ()
                    not_applicable[out] = NotApplicable(d.id, oc.reason or "", oc.scope,
                                                        self._scope_source(runner, oc.scope))
        rulesets = state.rulesets
        if len(runners) != len(state.runners):
            ran = {r.decision.id for r in runners}
            rulesets = tuple(r for r in rulesets if r.decision in ran)
        return Result(
            outputs=outputs,
            indeterminate=indeterminate,
            not_applicable=not_applicable,
            settled=settled,
            from_input=from_input,
            fired=tuple(fired),
            warnings=tuple(w.to_dict() for w in warnings),
            rulesets=rulesets,
            input=given,
            input_sha256=facts_sha256(given),
            engine=self._engine_label,
            knowledge=state.knowledge,
            as_of=state.as_of.isoformat(),
            profile=state.profile,
        )

    def _compare_given(self, runner: DecisionRunner, view: Mapping[str, Any], restrict: Mapping[str, Sequence[str]],
                       given: Mapping[str, Any], context: Mapping[str, Any]) -> list[Diagnostic]:
        """Warn (NB521) when the rules would derive another value than the one given."""
        d = runner.decision
        if not any(f in given for f in d.reads):
            return []
        outcome = runner.decide(view, restrict, context)
        out_diags = []
        for out, oc in outcome.outputs.items():
            if oc.status in ("set", "settled") and oc.value != given[out]:
                rules = ", ".join(r.id for r in outcome.fired if out in r.then) or "analysis"
                out_diags.append(Diagnostic(
                    code="NB521", pointer=f"/{out}",
                    message=f"{out} is given as {given[out]}, but {d.key} derives {oc.value} from the given facts "
                            f"(rule {rules}); the given value is used"))
        return out_diags

    @staticmethod
    def _scope_source(runner: DecisionRunner, scope: str | None) -> str | None:
        if scope is None:
            return None
        s = next(x for x in runner.decision.scopes if x.id == scope)
        return f"{runner.decision.source.display}:{s.line}"
