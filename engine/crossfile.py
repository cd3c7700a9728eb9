"""Stage 3, *check*, across rule files: the checks that need every decision (one
version defined twice, NB311; an output decided by two decisions, NB307; decisions
reading each other in a cycle, NB308), the order decisions run in, and which version
of each decision is in force by default.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from .diagnostics import Diagnostic
from .loader import join_pointer
from .model import Decision

__all__ = ["cross_file", "dependency_order", "in_force"]


def cross_file(decisions: Sequence[Decision]) -> list[Diagnostic]:
    """NB311, NB307 and NB308 over the checked decisions of one rules directory."""
    diags: list[Diagnostic] = []
    seen: dict[str, Decision] = {}
    for d in decisions:
        if d.key in seen:
            other = seen[d.key]
            diags.append(d.positions.diag("NB311", f"decision {d.key} is also defined in {other.source.display}",
                                     "/version", hint="bump the version of one of the files"))
        else:
            seen[d.key] = d
    owner: dict[str, Decision] = {}
    for d in decisions:
        for out in d.decides:
            prev = owner.get(out)
            if prev is not None and prev.id != d.id:
                diags.append(d.positions.diag(
                    "NB307", f"output '{out}' is decided by both '{prev.id}' ({prev.source.display}) and '{d.id}'",
                    join_pointer("/decides", out), key=True,
                    hint="one output belongs to one decision; rename one of them"))
            else:
                owner.setdefault(out, d)
    graph = _graph(decisions)
    for cycle in _cycles(graph):
        first = next(d for d in decisions if d.id == cycle[0])
        path = " -> ".join(cycle + [cycle[0]])
        idx = next((i for i, r in enumerate(first.reads) if owner.get(r) and owner[r].id == cycle[1 % len(cycle)]), 0)
        diags.append(first.positions.diag("NB308", f"decisions depend on each other in a cycle: {path}",
                                     f"/reads/{idx}", hint="a decision may only read outputs of decisions it does not feed"))
    return diags


def _graph(decisions: Sequence[Decision]) -> dict[str, set[str]]:
    """decision id -> ids of the decisions whose outputs it reads."""
    owner: dict[str, str] = {}
    for d in decisions:
        for out in d.decides:
            owner.setdefault(out, d.id)
    graph: dict[str, set[str]] = {}
    for d in decisions:
        deps = graph.setdefault(d.id, set())
        for fact in d.reads:
            o = owner.get(fact)
            if o is not None and o != d.id:
                deps.add(o)
    return graph


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def dependency_order(decisions: Sequence[Decision]) -> list[Decision]:
    """Decisions ordered so each runs after those it reads from (ties: by id)."""
    graph = _graph(decisions)
    by_id: dict[str, list[Decision]] = {}
    for d in decisions:
        by_id.setdefault(d.id, []).append(d)
    done: set[str] = set()
    order: list[Decision] = []
    pending = set(graph)
    while pending:
        ready = sorted(n for n in pending if graph[n] <= done)
        if not ready:  # a cycle; the checker has reported it
            ready = sorted(pending)
        n = ready[0]
        pending.discard(n)
        done.add(n)
        order.extend(sorted(by_id[n], key=lambda d: d.version_key))
    return order


def in_force(decisions: Sequence[Decision]) -> dict[str, Decision]:
    """Per decision id, the version a reference means by default: the newest active one,
    else the newest of any status."""
    out: dict[str, Decision] = {}
    for d in decisions:
        cur = out.get(d.id)
        rank = (d.status == "active", d.version_key)
        if cur is None or rank > (cur.status == "active", cur.version_key):
            out[d.id] = d
    return out
