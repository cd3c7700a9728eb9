"""The same decisions on zen-engine (GoRules' JDM runtime), for the benchmark.

Each decision's rule file is exported, by this module, as a JDM decision table (hit
policy *collect*, one row per rule, the rule's condition as one ZEN expression over the
patient's facts, the rule id and what it sets as outputs), from the conditions in
negation normal form that nbrules compiles for durable-rules: nothing is written by
hand.  A patient is evaluated decision by decision in nbrules' order, each decision's
outputs becoming facts for the next, with zen's trace on.

A test on a fact the patient lacks is false here (``fact != null and ...``); in negation
normal form a rule then fires exactly when nbrules' three-valued condition is true.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import zen

from nbrules.conditions import FALSE, TRUE, And, Atom, Or
from nbrules.runner import DecisionRunner


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\\\", "\\\\\\\\").replace("'", "\\\\'") + "'"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return "[" + ", ".join(_literal(v) for v in items) + "]"
    raise ValueError(f"no ZEN literal for {value!r}")


def _atom(a: Atom) -> str:
    f, x = a.fact, a.value
    if a.op == "known":
        return f"{f} != null"
    if a.op == "unknown":
        return f"{f} == null"
    test = {
        "eq": lambda: f"{f} == {_literal(x)}",
        "ne": lambda: f"{f} != {_literal(x)}",
        "in": lambda: f"{f} in {_literal(x)}",
        "nin": lambda: f"not ({f} in {_literal(x)})",
        "lt": lambda: f"{f} < {_literal(x)}",
        "le": lambda: f"{f} <= {_literal(x)}",
        "gt": lambda: f"{f} > {_literal(x)}",
        "ge": lambda: f"{f} >= {_literal(x)}",
        "any": lambda: f"some({f}, # in {_literal(x or [])})",
        "none": lambda: f"not some({f}, # in {_literal(x or [])})",
        "all": lambda: f"all({_literal(x or [])}, # in {f})",
        "notall": lambda: f"not all({_literal(x or [])}, # in {f})",
        "subset": lambda: f"all({f}, # in {_literal(x or [])})",
        "notsubset": lambda: f"not all({f}, # in {_literal(x or [])})",
        "empty": lambda: f"len({f}) == 0",
        "nonempty": lambda: f"len({f}) > 0",
    }[a.op]()
    return f"({f} != null and {test})"


def expression(node: Any) -> str:
    """One ZEN expression for a condition in negation normal form."""
    if node is TRUE or node == TRUE:
        return "true"
    if node is FALSE or node == FALSE:
        return "false"
    if isinstance(node, Atom):
        return _atom(node)
    if isinstance(node, And):
        return "(" + " and ".join(expression(i) for i in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " or ".join(expression(i) for i in node.items) + ")"
    raise ValueError(f"unknown condition node {node!r}")


def jdm(runner: DecisionRunner) -> dict[str, Any]:
    """The decision of ``runner`` (its compiled rules, parameters bound) as a JDM graph."""
    d = runner.decision
    outs = list(d.decides)
    rules = []
    for cr in runner.program.rules:
        if cr.is_scope:
            continue
        row = {"_id": cr.id, "cond": expression(cr.nnf), "rule": _literal(cr.id)}
        for i, out in enumerate(outs):
            row[f"o{i}"] = _literal(cr.then[out]) if out in cr.then else ""
        rules.append(row)
    table = {"hitPolicy": "collect", "inputs": [{"id": "cond", "name": "condition"}],
             "outputs": [{"id": "rule", "name": "rule", "field": "rule"}]
             + [{"id": f"o{i}", "name": out, "field": out} for i, out in enumerate(outs)],
             "rules": rules}
    return {"nodes": [{"id": "in", "type": "inputNode", "name": "request", "position": {"x": 0, "y": 0}},
                      {"id": "table", "type": "decisionTableNode", "name": d.id, "position": {"x": 200, "y": 0},
                       "content": table},
                      {"id": "out", "type": "outputNode", "name": "response", "position": {"x": 400, "y": 0}}],
            "edges": [{"id": "e1", "sourceId": "in", "targetId": "table", "type": "edge"},
                      {"id": "e2", "sourceId": "table", "targetId": "out", "type": "edge"}]}


class ZenChain:
    """The decisions of ``runners`` on zen-engine, run in order with the trace on."""

    def __init__(self, runners: Sequence[DecisionRunner]) -> None:
        self.engine = zen.ZenEngine()
        self.steps = [(r.decision.id, tuple(r.decision.decides), self.engine.create_decision(json.dumps(jdm(r))))
                      for r in runners]

    def evaluate(self, facts: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]], list[Any]]:
        """Outputs, the (decision, rule) pairs that fired, and zen's traces."""
        known = dict(facts)
        outputs: dict[str, Any] = {}
        fired: list[tuple[str, str]] = []
        traces = []
        for did, decides, decision in self.steps:
            if all(out in facts for out in decides):
                outputs.update({out: facts[out] for out in decides})
                continue
            answer = decision.evaluate(known, {"trace": True})
            traces.append(answer["trace"])
            hits = answer["result"]
            fired += [(did, h["rule"]) for h in hits]
            for out in decides:
                values = {h[out] for h in hits if h.get(out) is not None}
                value = values.pop() if len(values) == 1 else None
                outputs[out] = value
                if value is not None:
                    known[out] = value
        return outputs, fired, traces
