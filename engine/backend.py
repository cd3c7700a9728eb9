"""The durable-rules adapter: the only module that imports durable-rules.

It drives durable-rules' C extension (``durable_rules_engine``) directly, making the
calls ``durable.engine`` makes for one asserted fact, in the same order, without its
Python layer (no ``Host``, no JSON round trips of the session state, no ``Closure``
objects; see docs/durable-rules.md, "The lean path").  It absorbs every pitfall
measured in docs/durable-rules.md (architecture.md §7):

* no ``Host`` at all: the ruleset is created with ``create_ruleset``, so there are no
  dispatcher threads walking freed sessions;
* one process-wide lock around every engine call: the C core is not thread-safe;
* a fresh session per evaluation, always deleted in ``finally`` (at most 1024 live
  sessions per ruleset, and memory stays flat);
* a catch-all rule that fires for every asserted fact, so every session has started an
  action before it is deleted (deleting one that has not frees uninitialised memory);
  a session is deleted only once ``start_action_for_state`` returned an action;
* ``assert_fact`` (every matching rule fires), not ``post`` (consumed by one rule);
  result codes 1 (not handled), 2 (observed) and 3 (deferred), and every error number,
  are surfaced as :class:`~nbrules.errors.EngineError`;
* which rule fired is read from each action message the C core writes
  (``{"<rule>": ...}``); a rule matched twice (an ``$or`` with two true branches) gives
  two messages, de-duplicated in the result; a name that is not one of the ruleset's
  rules is an error, never a guess;
* ``update_state`` is not called: no action changes the state, and no rule can see
  the state fact (every pattern tests the discriminator), so writing it back would
  re-store the same fact (events.c ``updateState``);
* an exception raised by the ``on_fire`` hook is surfaced as ``EngineError`` (the
  session is still deleted);
* definitions are never mutated (they are written out as JSON), names carry
  version, hash and a serial (a name cannot be registered twice), and retired
  rulesets are freed with ``delete_ruleset``;
* every number handed to durable-rules is written in a form its JSON reader accepts:
  the reader takes an exponent only after a decimal point, and Python writes
  ``1e-05``, orjson ``1e+16`` (see :func:`engine_json` and :func:`fact_text`).
"""

from __future__ import annotations

import json
import os
import itertools
import re
import threading
import weakref
from typing import Any, Callable, Mapping

import durable_rules_engine  # type: ignore[import-not-found]
import orjson

from .errors import EngineError

__all__ = ["EngineRuleset", "DISCRIMINATOR", "CATCH_ALL", "engine_lock", "live_rulesets", "engine_json",
           "fact_text"]

#: Field that marks a fact as a patient fact; every pattern tests it, so no pattern
#: can match the engine's own state fact.
DISCRIMINATOR = "__nb"
#: Name of the rule that fires for every patient fact.
CATCH_ALL = "__seen"

_LOCK = threading.RLock()
if hasattr(os, "register_at_fork"):
    # a process forked while another thread is inside durable-rules would inherit the
    # lock held, and its C state half-changed: a fork waits for the call to end, and
    # the child starts with the lock free (batch workers are forked)
    os.register_at_fork(before=_LOCK.acquire, after_in_parent=_LOCK.release, after_in_child=_LOCK.release)
_SIDS = itertools.count(1)
_NAMES = itertools.count(1)
_LIVE: "weakref.WeakSet[EngineRuleset]" = weakref.WeakSet()

# durable_rules_engine's result codes for an asserted fact (rules.h)
_NOT_HANDLED, _OBSERVED, _DEFERRED = 1, 2, 3
_REFUSED = {_NOT_HANDLED: "no rule, not even the catch-all, matched",
            _OBSERVED: "the fact was already observed in a fresh session",
            _DEFERRED: "the fact was deferred (no queue callback is set)"}


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


#: Where orjson's text may not be what durable-rules reads as the value: a digit
#: followed by an exponent (orjson writes ``1e+16`` and ``5e-324``, with no decimal
#: point) or ``null`` (orjson's text of a non-finite float).  A string holding one only
#: sends the fact to the slower path.
_CAREFUL = re.compile(rb"[0-9]e|null")


def fact_text(value: Mapping[str, Any]) -> str:
    """:func:`engine_json` of a fact, faster: orjson's text when durable-rules reads it as
    the same value, else :func:`engine_json`'s.

    orjson writes some floats otherwise than Python (``0.00001`` for ``1e-05``,
    ``1.5e-7`` for ``1.5e-07``): the reader (json.c ``getNumber``, state.c ``atof``)
    reads both as the same double.  Where orjson writes an exponent after a bare digit
    (``1e+16``, refused with error 204) or ``null`` (for NaN and infinities, which
    Python writes ``NaN``/``Infinity``), or cannot write the value at all (an integer
    beyond 64 bits, a key that is not a string, a lone surrogate), the standard path
    writes it.  Raises ``TypeError``/``ValueError`` for what is not JSON data.
    """
    try:
        out = orjson.dumps(value)
    except TypeError:
        return engine_json(value)
    if _CAREFUL.search(out) is None:
        return out.decode("utf-8")
    return engine_json(value)


def engine_lock() -> threading.RLock:
    """The lock held around every call into durable-rules (exposed for tests)."""
    return _LOCK


def live_rulesets() -> int:
    """How many compiled rulesets are loaded in durable-rules right now."""
    with _LOCK:
        return sum(1 for r in list(_LIVE) if not r.closed)


def _free(handle: int) -> None:
    with _LOCK:
        durable_rules_engine.delete_ruleset(handle)


_assert_fact = durable_rules_engine.assert_fact
_start_action_for_state = durable_rules_engine.start_action_for_state
_complete_and_start_action = durable_rules_engine.complete_and_start_action
_delete_state = durable_rules_engine.delete_state


class EngineRuleset:
    """One compiled decision loaded into durable-rules.

    ``definition`` maps rule names to durable-rules patterns (``{"all": [...]}``),
    without actions; :meth:`run` asserts one fact in a fresh session and returns
    the names of the rules that fired.  ``on_fire``, if given, is called with the rule
    name of every action durable-rules starts, in its order (the catch-all included;
    a rule matched twice, twice).  Rule names may not hold ``"`` or ``\\``.
    Raises :class:`EngineError` when durable-rules refuses the definition.
    """

    def __init__(self, label: str, definition: Mapping[str, Mapping[str, Any]],
                 on_fire: Callable[[str], None] | None = None) -> None:
        self.name = f"nbrules:{label}:{next(_NAMES)}"
        self.closed = False
        self.last_sid: str | None = None
        self._on_fire = on_fire
        rules: dict[str, Any] = dict(definition)
        rules[CATCH_ALL] = {"all": [{"m": {DISCRIMINATOR: 1}}]}
        odd = [n for n in rules if '"' in n or "\\" in n]
        if odd:
            raise EngineError(f"durable-rules refused ruleset {label}: rule name {odd[0]!r} holds a quote or backslash")
        #: The rule names an action message may carry (its first key).
        self._names = frozenset(rules)
        with _LOCK:
            try:
                # the definition is only read: written out as JSON, never mutated
                self._handle: int = durable_rules_engine.create_ruleset(self.name, engine_json(rules))
            except Exception as exc:  # durable-rules reports malformed rulesets by number only
                raise EngineError(f"durable-rules refused ruleset {label}: {exc}") from exc
        self._finalizer = weakref.finalize(self, _free, self._handle)
        _LIVE.add(self)

    def run(self, fact: Mapping[str, Any]) -> frozenset[str]:
        """Assert ``fact`` in a new session; return the rule names that fired (the
        catch-all left out).  Raises :class:`EngineError` when durable-rules fails or
        refuses the fact, or when ``on_fire`` raises."""
        with _LOCK:
            if self.closed:
                raise EngineError(f"ruleset {self.name} was closed")
            sid = str(next(_SIDS))
            self.last_sid = sid
            message = dict(fact)
            message["sid"] = sid
            message[DISCRIMINATOR] = 1
            handle, names, on_fire = self._handle, self._names, self._on_fire
            fired: set[str] = set()
            started = False
            try:
                try:
                    code, state = _assert_fact(handle, fact_text(message))
                    if code:
                        raise EngineError(f"{_REFUSED.get(code, f'result code {code}')} in {self.name}")
                    # the calls durable.engine's Ruleset.do_actions and _flush_actions make, minus
                    # update_state (see the module docstring): each returns the next action's
                    # message, '{"<rule>":{"m":{...}}}', or None when no action is left
                    first = _start_action_for_state(handle, state)
                    if first is None:
                        raise EngineError(f"the catch-all rule did not fire in {self.name}")
                    started = True
                    text: str | None = first[1]
                    while text is not None:
                        end = text.find('"', 2)
                        rule = text[2:end]
                        if text[:2] != '{"' or rule not in names:
                            raise EngineError(f"unexpected action message from {self.name}: {text[:80]!r}")
                        fired.add(rule)
                        if on_fire is not None:
                            try:
                                on_fire(rule)
                            except Exception as exc:
                                raise EngineError(f"an action failed in {self.name}: {exc!r}") from exc
                        text = _complete_and_start_action(handle, state)
                except EngineError:
                    raise
                except Exception as exc:  # error numbers, MemoryError, facts that are not JSON data
                    raise EngineError(f"durable-rules failed in {self.name}: {exc}") from exc
                if CATCH_ALL not in fired:  # pragma: no cover - the catch-all matches every fact
                    raise EngineError(f"the catch-all rule did not fire in {self.name}")
            finally:
                if started:  # the session's action context is initialised: safe to delete
                    _delete_state(handle, sid)
            fired.discard(CATCH_ALL)
            return frozenset(fired)

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
