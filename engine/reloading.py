"""Reloading and watching rule files: the report of a reload and the polling thread.

:meth:`RuleEngine.reload <nbrules.runtime.RuleEngine.reload>` rebuilds the rule set and
swaps it in only when every check passes; :class:`Watcher` polls a rules directory and
asks for a reload when a file changes.  Failures are logged on logger ``nbrules.watch``.
"""

from __future__ import annotations

import datetime
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from .diagnostics import Diagnostic
from .results import RulesetInfo

__all__ = ["ReloadReport", "Watcher"]

_LOG = logging.getLogger("nbrules.watch")


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



class Watcher:
    """A daemon thread that calls ``poll_state()`` every ``interval`` seconds and, when
    its value changes, ``reload()``; each report then goes to ``on_reload``.

    It survives any failure: a refused reload, an exception in ``on_reload`` or while
    polling is logged and polling goes on; a failed poll is retried (the state seen is
    updated only once a reload has run).
    """

    def __init__(self, poll_state: Callable[[], Hashable], reload: Callable[[], ReloadReport], interval: float,
                 on_reload: Callable[[ReloadReport], None] | None = None) -> None:
        self._poll_state = poll_state
        self._reload = reload
        self._interval = interval
        self._on_reload = on_reload
        self._stop = threading.Event()
        self._seen = poll_state()
        self._thread = threading.Thread(target=self._loop, name="nbrules-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop polling and wait for the thread to end."""
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        now = self._poll_state()
        if now == self._seen:
            return
        report = self._reload()
        self._seen = now  # only once a reload has run: a failed poll is retried
        if not report.ok:
            _LOG.warning("nbrules: %s", "\n  ".join(report.lines()))
        if self._on_reload is not None:
            self._on_reload(report)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._poll()
            except Exception:
                _LOG.exception("nbrules: the rules watcher caught an error and goes on")
