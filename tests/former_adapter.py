"""The adapter's former path through durable-rules' Python layer (``durable.engine.Host``),
kept out of the product as an oracle: tests/test_lean_adapter.py checks that the lean
path of :class:`nbrules.backend.EngineRuleset` starts the same actions in the same
order, and benchmarks/adapter.py measures the two in the same run.

It is the adapter as it was before the lean path (nbrules 2026-11): a ``Host`` without
dispatcher threads, one single-parameter action per rule recording its name, the
session deleted after the catch-all fired, ``durable.engine`` writing JSON through
:func:`nbrules.backend.engine_json` and its ``_unix_now`` without the call deprecated
since Python 3.12.
"""

from __future__ import annotations

import datetime
import itertools
import json
from typing import Any, Callable, Mapping

import durable.engine  # type: ignore[import-untyped]
from durable.engine import Host

from nbrules.backend import CATCH_ALL, DISCRIMINATOR, engine_json, engine_lock
from nbrules.errors import EngineError

_EPOCH = datetime.datetime(1970, 1, 1)
_SIDS = itertools.count(1)
_NAMES = itertools.count(1)


def _unix_now() -> float:
    return (datetime.datetime.now() - _EPOCH).total_seconds()


class _DurableJson:
    dumps = staticmethod(engine_json)
    loads = staticmethod(json.loads)


durable.engine._unix_now = _unix_now
durable.engine.json = _DurableJson


class _QuietHost(Host):  # type: ignore[misc]
    def _run(self) -> None:
        return None


class FormerRuleset:
    """One ruleset run through durable.engine's Host; :meth:`run` as EngineRuleset.run."""

    def __init__(self, label: str, definition: Mapping[str, Mapping[str, Any]],
                 on_fire: Callable[[str], None] | None = None) -> None:
        self.name = f"former:{label}:{next(_NAMES)}"
        self._fired: set[str] = set()
        self._failure: BaseException | None = None
        self._on_fire = on_fire
        rules: dict[str, dict[str, Any]] = {k: dict(v) for k, v in definition.items()}
        rules[CATCH_ALL] = {"all": [{"m": {DISCRIMINATOR: 1}}]}
        for rule_name, rule in rules.items():
            rule["run"] = self._action(rule_name)
        self._host = _QuietHost()
        with engine_lock():
            self._host.register_rulesets({self.name: rules})
            self._handle: int = self._host.get_ruleset(self.name)._handle

    def _action(self, rule_name: str) -> Callable[[Any], None]:
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
        with engine_lock():
            sid = f"former-{next(_SIDS)}"
            message = dict(fact)
            message["sid"] = sid
            message[DISCRIMINATOR] = 1
            self._fired = set()
            self._failure = None
            try:
                try:
                    state = self._host.assert_fact(self.name, message)
                except Exception as exc:
                    raise EngineError(f"durable-rules failed in {self.name}: {exc}") from exc
                if self._failure is not None or (isinstance(state, dict) and state.get("exception")):
                    raise EngineError(f"an action failed in {self.name}")
            finally:
                if CATCH_ALL in self._fired:
                    self._host.delete_state(self.name, sid)
            return frozenset(self._fired - {CATCH_ALL})

    def close(self) -> None:
        import durable_rules_engine  # type: ignore[import-not-found]

        with engine_lock():
            durable_rules_engine.delete_ruleset(self._handle)
