"""Stage 1, *load*: read a rule file safely and remember where every node is.

PyYAML's composer gives nodes with marks; we build plain JSON-like data from the
node tree ourselves so that:

* explicit tags (``!!python/object`` …) are refused (NB103);
* anchors, aliases and merge keys are refused before anything is expanded (NB104);
* duplicate keys are reported instead of silently keeping the last (NB102);
* scalars follow the YAML 1.2 core schema: ``yes``/``no``/``on``/``off`` stay
  strings and dates stay strings;
* every node's position is indexed by JSON pointer for every later message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .diagnostics import Diagnostic, Severity
from .sources import RuleSource

__all__ = ["Span", "LoadedFile", "load_source", "escape_pointer", "join_pointer"]


@dataclass(frozen=True)
class Span:
    """A 1-based position; ``end_column`` is exclusive and on ``line`` when known."""

    line: int
    column: int
    end_line: int
    end_column: int


def escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def join_pointer(base: str, token: str | int) -> str:
    return f"{base}/{escape_pointer(str(token))}"


@dataclass
class LoadedFile:
    """The data of one rule file with its position index and load diagnostics."""

    source: RuleSource
    data: Any = None
    values: dict[str, Span] = field(default_factory=dict)
    keys: dict[str, Span] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    def span(self, pointer: str, key: bool = False) -> Span | None:
        """Position of the value (or, with ``key``, of the key) at ``pointer``.

        Falls back to the nearest enclosing node that has a position.
        """
        table = self.keys if key else self.values
        if pointer in table:
            return table[pointer]
        p = pointer
        while p:
            p = p.rsplit("/", 1)[0]
            if p in self.values:
                return self.values[p]
        return self.values.get("")

    def diag(
        self,
        code: str,
        message: str,
        pointer: str = "",
        *,
        key: bool = False,
        hint: str | None = None,
        span: Span | None = None,
        severity: Severity | None = None,
    ) -> Diagnostic:
        """A diagnostic located at ``pointer`` in this file (the one place locations are made)."""
        sp = span or self.span(pointer, key=key)
        line = sp.line if sp else 1
        col = sp.column if sp else 1
        end = sp.end_column if sp and sp.end_line == sp.line else None
        src = self.lines[line - 1] if 0 < line <= len(self.lines) else None
        if src is not None and end is None:
            end = len(src.rstrip()) + 1
        return Diagnostic(
            code=code,
            message=message,
            path=self.source.display,
            line=line,
            column=col,
            end_column=end,
            pointer=pointer,
            hint=hint,
            source_line=src,
            severity=severity,
        )


# YAML 1.2 core schema, restricted to decimal numbers.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_BOOL_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")


def _scalar_value(node: ScalarNode) -> Any:
    text = node.value
    if node.style is not None:  # quoted or block scalar: always a string
        return text
    if _NULL.match(text):
        return None
    if _BOOL_TRUE.match(text):
        return True
    if _BOOL_FALSE.match(text):
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


_STD_TAG = "tag:yaml.org,2002:"


class _Composer(yaml.SafeLoader):
    """A composer that reports tags and aliases instead of honouring them."""

    def __init__(self, stream: str, report: list[tuple[str, str, Any]]) -> None:
        super().__init__(stream)
        self._report = report

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            self.get_event()  # type: ignore[no-untyped-call]
            self._report.append(("NB104", f"alias '*{event.anchor}' is not allowed in rule files", event.start_mark))
            return ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)  # type: ignore[arg-type]
        if isinstance(event, (ScalarEvent, MappingStartEvent, SequenceStartEvent)):
            if event.anchor is not None:
                self._report.append(("NB104", f"anchor '&{event.anchor}' is not allowed in rule files", event.start_mark))
                event.anchor = None
            if event.tag not in (None, "!"):
                shown = "!!" + event.tag[len(_STD_TAG):] if event.tag.startswith(_STD_TAG) else event.tag
                self._report.append(("NB103", f"explicit tag '{shown}' is not allowed in rule files", event.start_mark))
                event.tag = None
                if isinstance(event, ScalarEvent):
                    event.implicit = (True, True)
        return super().compose_node(parent, index)


def _span(node: Node) -> Span:
    s, e = node.start_mark, node.end_mark
    return Span(s.line + 1, s.column + 1, e.line + 1, e.column + 1)


def load_source(source: RuleSource) -> LoadedFile:
    """Load one rule file; never raises for bad content (problems become diagnostics)."""
    out = LoadedFile(source=source)
    if source.read_error is not None:
        out.diagnostics.append(
            Diagnostic(code="NB105", message=f"cannot read file: {source.read_error}", path=source.display, line=1, column=1)
        )
        return out
    try:
        text = source.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = source.data[: exc.start].count(b"\n") + 1
        out.diagnostics.append(
            Diagnostic(
                code="NB105",
                message=f"file is not UTF-8 (byte 0x{source.data[exc.start]:02x} at offset {exc.start})",
                path=source.display,
                line=line,
                column=1,
                hint="save the file as UTF-8",
            )
        )
        return out
    out.lines = text.splitlines()
    report: list[tuple[str, str, Any]] = []
    loader = _Composer(text, report)
    try:
        root = loader.get_single_node()
    except yaml.composer.ComposerError as exc:
        mark = exc.problem_mark or exc.context_mark
        code = "NB106" if "single document" in (exc.context or "") else "NB101"
        msg = "the file holds more than one YAML document" if code == "NB106" else f"{exc.context or ''} {exc.problem or ''}".strip()
        out.diagnostics.append(_mark_diag(out, code, msg, mark, hint="a rule file is one YAML document; remove the second '---'" if code == "NB106" else None))
        return out
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "syntax error"
        context = f" {exc.context}" if exc.context else ""
        hint = "indent with spaces, not tabs" if "\\t" in problem or "tab" in problem else "check indentation and quoting near this position"
        out.diagnostics.append(_mark_diag(out, "NB101", f"{problem}{context}", mark, hint=hint))
        return out
    except yaml.YAMLError as exc:  # pragma: no cover - reader errors are MarkedYAMLErrors
        out.diagnostics.append(Diagnostic(code="NB101", message=str(exc), path=source.display, line=1, column=1))
        return out
    finally:
        loader.dispose()
    for code, msg, mark in report:
        hint = (
            "write the value out in full; rule files do not support YAML references"
            if code == "NB104"
            else "remove the tag; rule files hold plain strings, numbers, booleans, lists and mappings"
        )
        out.diagnostics.append(_mark_diag(out, code, msg, mark, hint=hint))
    if root is None:
        out.data = None
        out.values[""] = Span(1, 1, 1, 1)
        return out
    out.data = _build(root, "", out)
    return out


def _mark_diag(out: LoadedFile, code: str, message: str, mark: Any, hint: str | None = None) -> Diagnostic:
    line = mark.line + 1 if mark is not None else 1
    col = mark.column + 1 if mark is not None else 1
    return out.diag(code, message, span=Span(line, col, line, col + 1), hint=hint)


def _build(node: Node, pointer: str, out: LoadedFile) -> Any:
    out.values[pointer] = _span(node)
    if isinstance(node, ScalarNode):
        return _scalar_value(node)
    if isinstance(node, SequenceNode):
        return [_build(child, join_pointer(pointer, i), out) for i, child in enumerate(node.value)]
    if isinstance(node, MappingNode):
        result: dict[str, Any] = {}
        first_seen: dict[str, Span] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                d = _node_diag(out, key_node, "NB107", "a mapping key must be a plain string, not a list or mapping")
                out.diagnostics.append(d)
                continue
            key = key_node.value
            if key == "<<" and key_node.style is None:
                out.diagnostics.append(
                    _node_diag(out, key_node, "NB104", "merge key '<<' is not allowed in rule files",
                               hint="write the keys out in full")
                )
                continue
            child = join_pointer(pointer, key)
            if key in first_seen:
                prev = first_seen[key]
                out.diagnostics.append(
                    _node_diag(
                        out, key_node, "NB102", f"key '{key}' appears twice in this mapping",
                        hint=f"the first '{key}' is at line {prev.line}; YAML would silently keep only the last one",
                    )
                )
                continue
            first_seen[key] = _span(key_node)
            out.keys[child] = _span(key_node)
            result[key] = _build(value_node, child, out)
        return result
    raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover


def _node_diag(out: LoadedFile, node: Node, code: str, message: str, hint: str | None = None) -> Diagnostic:
    return out.diag(code, message, span=_span(node), hint=hint)
