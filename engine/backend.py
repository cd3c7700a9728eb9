"""The durable-rules adapter: the only module that imports durable-rules.

It absorbs every pitfall measured in docs/durable-rules.md (architecture.md §7):

* a ``Host`` subclass whose ``_run`` does nothing: no dispatcher threads walking
  freed sessions;
* one process-wide lock around every engine call: the C core is not thread-safe;
* a fresh session per evaluation, always deleted in ``finally`` (at most 1024 live
  sessions per ruleset, and memory stays flat);
* a catch-all rule that fires for every asserted fact, so every session has run an
  action before it is deleted (deleting one that has not frees uninitialised memory);
* ``assert_fact`` (every matching rule fires), not ``post`` (consumed by one rule);
* actions bound per rule to a closure that records which rule fired; activations
  repeated by ``$or`` are de-duplicated;
* exceptions raised in actions, which durable-rules swallows into the session
  state, are surfaced as :class:`~nbrules.errors.EngineError`;
* ruleset definitions are deep-copied (``set_rulesets`` mutates them), names carry
  version, hash and a serial (a name cannot be registered twice), and retired
  rulesets are freed with ``delete_ruleset``;
* every number handed to durable-rules is written in a form its JSON reader accepts:
  the reader takes an exponent only after a decimal point, and Python writes
  ``1e-05`` (see :func:`engine_json`).
* ``durable.engine._unix_now`` calls ``datetime.utcfromtimestamp``, deprecated since
  Python 3.12 (a DeprecationWarning on every session): it is replaced by the same
  computation without the deprecated call.
"""

from __future__ import annotations

import datetime
import itertools
import json
import threading
import weakref
from typing import Any, Callable, Mapping

import durable.engine as _durable_engine  # type: ignore[import-untyped]
import durable_rules_engine  # type: ignore[import-not-found]
import durable.engine
from durable.engine import Host, MessageNotHandledException

from .errors import EngineError

__all__ = ["EngineRuleset", "DISCRIMINATOR", "CATCH_ALL", "engine_lock", "live_rulesets", "engine_json"]

#: Field that marks a fact as a patient fact; every pattern tests it, so no pattern
#: can match the engine's own state fact.
DISCRIMINATOR = "__nb"
#: Name of the rule that fires for every patient fact.
CATCH_ALL = "__seen"

_EPOCH = datetime.datetime(1970, 1, 1)  # == datetime.utcfromtimestamp(0), naive like durable's


def _unix_now() -> float:
    """durable-rules' ``_unix_now`` (local wall time minus the naive epoch, in seconds),
    without ``datetime.utcfromtimestamp``, deprecated since Python 3.12."""
    return (datetime.datetime.now() - _EPOCH).total_seconds()


durable.engine._unix_now = _unix_now

_LOCK = threading.RLock()
_SIDS = itertools.count(1)
_NAMES = itertools.count(1)
_LIVE: "weakref.WeakSet[EngineRuleset]" = weakref.WeakSet()


def _number(x: float) -> str:
    """A float as durable-rules' reader accepts it: ``1e-05`` becomes ``1.0e-05``
    (same double; Python's shortest repr otherwise)."""
    text = repr(x)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        return f"{mantissa}.0e{exponent}"
    return text


def _bare_exponent(value: Any) -> bool:
    """Whether ``value`` holds a float that Python would write as ``1e-05`` (on the hot
    path: strings, ints and booleans are passed over by type alone)."""
    t = type(value)
    if t is float:
        text = repr(value)
        return "e" in text and "." not in text
    if t is dict:
        items: Any = value.values()
    elif t is list or t is tuple:
        items = value
    else:
        return False
    for v in items:
        tv = type(v)
        if (tv is float or tv is dict or tv is list or tv is tuple) and _bare_exponent(v):
            return True
    return False


def _write(value: Any) -> str:
    if isinstance(value, float):
        return _number(value) if value == value and abs(value) != float("inf") else json.dumps(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{_write(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_write(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def engine_json(value: Any, **options: Any) -> str:
    """JSON text of ``value`` that durable-rules 2.0.28 reads back as the same value.

    Its reader (``json.c``) accepts an exponent only after a decimal point and fails
    with error 204 on ``1e-05``, which is how Python writes small and large floats.
    Values without such a float take the standard (C) encoder unchanged.
    """
    if not _bare_exponent(value):
        return json.dumps(value, ensure_ascii=False)
    return _write(value)


class _DurableJson:
    """What ``durable.engine`` sees as its ``json`` module: :func:`engine_json` for
    writing (facts, ruleset definitions, session state), the standard reader."""

    dumps = staticmethod(engine_json)
    loads = staticmethod(json.loads)


# durable.engine serialises every fact, definition and state with ``json.dumps``
# right before handing it to the C core; this is the one place to write numbers.
_durable_engine.json = _DurableJson


def engine_lock() -> threading.RLock:
    """The lock held around every call into durable-rules (exposed for tests)."""
    return _LOCK


def live_rulesets() -> int:
    """How many compiled rulesets are loaded in durable-rules right now."""
    with _LOCK:
        return sum(1 for r in list(_LIVE) if not r.closed)


class _QuietHost(Host):  # type: ignore[misc]
    """A Host without the background dispatcher threads of ``Host._run``."""

    def _run(self) -> None:
        return None


def _free(handle: int) -> None:
    with _LOCK:
        durable_rules_engine.delete_ruleset(handle)


class EngineRuleset:
    """One compiled decision loaded into durable-rules.

    ``definition`` maps rule names to durable-rules patterns (``{"all": [...]}``),
    without actions; :meth:`run` asserts one fact in a fresh session and returns
    the names of the rules that fired.
    """

    def __init__(self, label: str, definition: Mapping[str, Mapping[str, Any]],
                 on_fire: Callable[[str], None] | None = None) -> None:
        self.name = f"nbrules:{label}:{next(_NAMES)}"
        self.closed = False
        self.last_sid: str | None = None
        self._fired: set[str] = set()
        self._failure: BaseException | None = None
        self._on_fire = on_fire
        # durable-rules keeps the definition and deletes each rule's "run": a copy of each
        # rule's mapping keeps the program's own intact (the patterns are only read, and
        # written out as JSON, so they are shared rather than deep-copied)
        rules: dict[str, dict[str, Any]] = {k: dict(v) for k, v in definition.items()}
        rules[CATCH_ALL] = {"all": [{"m": {DISCRIMINATOR: 1}}]}
        for rule_name, rule in rules.items():
            rule["run"] = self._action(rule_name)
        self._host = _QuietHost()
        with _LOCK:
            try:
                self._host.register_rulesets({self.name: rules})
            except Exception as exc:  # durable-rules reports malformed rulesets by number only
                raise EngineError(f"durable-rules refused ruleset {label}: {exc}") from exc
            self._handle: int = self._host.get_ruleset(self.name)._handle
        self._finalizer = weakref.finalize(self, _free, self._handle)
        _LIVE.add(self)

    def _action(self, rule_name: str) -> Callable[[Any], None]:
        # One parameter only: durable-rules treats a two-parameter action as asynchronous.
        def action(c: Any) -> None:
            try:
                self._fired.add(rule_name)
                if self._on_fire is not None:
                    self._on_fire(rule_name)
            except BaseException as exc:
                self._failure = exc
                raise

        return action

    def run(self, fact: Mapping[str, Any]) -> frozenset[str]:
        """Assert ``fact`` in a new session; return the rule names that fired."""
        with _LOCK:
            if self.closed:
                raise EngineError(f"ruleset {self.name} was closed")
            sid = str(next(_SIDS))
            self.last_sid = sid
            message = dict(fact)
            message["sid"] = sid
            message[DISCRIMINATOR] = 1
            self._fired = set()
            self._failure = None
            try:
                try:
                    state = self._host.assert_fact(self.name, message)
                except MessageNotHandledException as exc:  # pragma: no cover - the catch-all prevents it
                    raise EngineError(f"no rule, not even the catch-all, matched in {self.name}") from exc
                except Exception as exc:
                    raise EngineError(f"durable-rules failed in {self.name}: {exc}") from exc
                if self._failure is not None or (isinstance(state, dict) and state.get("exception")):
                    detail = repr(self._failure) if self._failure is not None else str(state.get("exception"))
                    raise EngineError(f"an action failed in {self.name}: {detail}")
                if CATCH_ALL not in self._fired:  # pragma: no cover - would make delete_state unsafe
                    raise EngineError(f"the catch-all rule did not fire in {self.name}")
            finally:
                if CATCH_ALL in self._fired:
                    self._host.delete_state(self.name, sid)
            return frozenset(self._fired - {CATCH_ALL})

    def has_session(self, sid: str) -> bool:
        """Whether durable-rules still holds session ``sid`` (it must not after :meth:`run`)."""
        with _LOCK:
            try:
                durable_rules_engine.get_facts(self._handle, sid)
            except Exception:  # error 309: no such session
                return False
            return True

    def close(self) -> None:
        """Free the ruleset in durable-rules (idempotent)."""
        with _LOCK:
            if not self.closed:
                self.closed = True
                self._finalizer()
