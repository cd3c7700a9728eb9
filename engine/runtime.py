"""Stage 5, *evaluate*: the :class:`RuleEngine` façade.

The engine holds the rule set in force and hands each job to its own module:

* :mod:`nbrules.versions`: which version of each decision is in force, and why;
* :mod:`nbrules.evaluation`: the compiled rule set in force and one patient evaluated
  on it (decisions in dependency order, each one's outputs facts for the next; a value
  given in the input is not re-derived, with a warning when the rules would derive
  another; an output no rule sets is answered by the runner's missing-fact analysis);
* :mod:`nbrules.reloading`: the report of a reload and the thread that watches a
  rules directory.

The engine itself swaps rule sets atomically (:meth:`~RuleEngine.reload`, a new day)
and keeps each in use until the evaluations that started on it end.
"""

from __future__ import annotations

import datetime
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ._version import __version__
from .cache import SHARED
from .diagnostics import Diagnostic
from .errors import NbrulesError, PatientInputError, VersionError
from .evaluation import RuleSetState, evaluate_patient
from .model import Decision
from .patient import parse_patient_json
from .pipeline import RuleSetBuild, build_bundled, build_directory, build_sources
from .reloading import ReloadReport, Watcher
from .resources import bundled_rules_dir
from .results import KnowledgeInfo, Result, RulesetInfo
from .runner import DecisionRunner
from .sources import RuleSource, directory_state
from .versions import VersionChoice, _today, choose_versions, select_versions

_LOG = logging.getLogger("nbrules.watch")

__all__ = ["RuleEngine", "ReloadReport", "VersionChoice", "choose_versions", "select_versions", "DEFAULT_CACHE_SIZE"]

#: Outcomes each decision remembers per cell of its input domain.  Results are
#: byte-identical with and without (tests/test_batch.py); 0 turns it off.
DEFAULT_CACHE_SIZE = 65536


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
        self._state = RuleSetState(build, self._use, cache_size, self._day(), profile)
        self._state.plan(self._requested)  # an unknown decision id fails here, not at the first patient
        self._engine_label = f"nbrules {__version__}"
        self._watcher: Watcher | None = None
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

    def _acquire(self) -> RuleSetState:
        if self._state.as_of != self._day():
            self._choose_again()
        with self._lock:
            state = self._state
            state.in_flight += 1
            return state

    def _release(self, state: RuleSetState) -> None:
        with self._lock:
            state.in_flight -= 1
            free = state.retired and state.in_flight == 0
        if free:
            state.close()

    def _retire(self, state: RuleSetState) -> None:
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
            new = RuleSetState(self._state.build, self._use, self.cache_size, day, self.profile)
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
            new = RuleSetState(build, self._use, self.cache_size, self._day(), self.profile)
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
        self._watcher = Watcher(self._sources_fingerprint, self.reload, interval, on_reload)
        self._watcher.start()

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
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

    def _evaluate(self, state: RuleSetState, facts: Mapping[str, Any],
                  runners: Sequence[DecisionRunner] | None = None) -> Result:
        """Evaluate on ``state`` with ``runners`` (default: every decision of the state)."""
        return evaluate_patient(state, facts, runners, self._engine_label)
