"""Stage 1, *load*: read a rule file safely and remember where every node is.

PyYAML's parser (libyaml's C parser when available) gives events with marks; we
build plain JSON-like data from the event stream ourselves so that:

* explicit tags (``!!python/object`` …) are refused (NB103);
* anchors, aliases and merge keys are refused before anything is expanded (NB104);
* duplicate keys are reported instead of silently keeping the last (NB102);
* scalars follow the YAML 1.2 core schema: ``yes``/``no``/``on``/``off`` stay
  strings and dates stay strings;
* every node's position is indexed by JSON pointer for every later message.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

if TYPE_CHECKING:  # bound by _import_yaml() when a file is first parsed
    import yaml
    from yaml.events import (
        AliasEvent,
        DocumentStartEvent,
        MappingEndEvent,
        MappingStartEvent,
        ScalarEvent,
        SequenceEndEvent,
        SequenceStartEvent,
        StreamEndEvent,
    )

    _PARSER: Any

from .diagnostics import Diagnostic, Severity
from .sources import MAX_RULE_FILE_BYTES, RuleSource

__all__ = ["Span", "SourceMap", "LoadedFile", "load_source", "escape_pointer", "join_pointer"]


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


class _Positions:
    """Locating nodes of one file by JSON pointer (shared by :class:`SourceMap` and
    :class:`LoadedFile`): ``values``/``keys`` map a pointer to the span of its value/key;
    ``lines`` are the file's lines (the source line shown under a diagnostic); ``kept``
    translates pointers of a copy with list items left out (see :attr:`LoadedFile.kept`)."""

    source: RuleSource
    values: Mapping[str, Span]
    keys: Mapping[str, Span]
    lines: Sequence[str]
    kept: Mapping[str, tuple[int, ...]]

    def in_file(self, pointer: str) -> str:
        """``pointer`` into the data as a pointer into the file (they differ only in a copy
        with list items left out)."""
        if not self.kept:
            return pointer
        parts = pointer.split("/", 3)
        if len(parts) >= 3 and parts[1] in self.kept and parts[2].isdigit():
            kept = self.kept[parts[1]]
            i = int(parts[2])
            if i < len(kept):
                parts[2] = str(kept[i])
                return "/".join(parts)
        return pointer

    def span(self, pointer: str, key: bool = False) -> Span | None:
        """Position of the value (or, with ``key``, of the key) at ``pointer``.

        Falls back to the nearest enclosing node that has a position.
        """
        pointer = self.in_file(pointer)
        table = self.keys if key else self.values
        if pointer in table:
            return table[pointer]
        p = pointer
        while p:
            p = p.rsplit("/", 1)[0]
            if p in self.values:
                return self.values[p]
        return self.values.get("")

    def line(self, pointer: str) -> int:
        """The 1-based line of the node at ``pointer`` (1 when unknown)."""
        span = self.span(pointer)
        return span.line if span else 1

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
        pointer = self.in_file(pointer)
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


@dataclass(frozen=True, eq=False)
class SourceMap(_Positions):
    """Where the nodes of one file are: what later stages keep of a loaded file to locate
    their diagnostics (the checked model holds this, not the loaded data)."""

    source: RuleSource
    values: Mapping[str, Span]
    keys: Mapping[str, Span]
    lines: Sequence[str]
    kept: Mapping[str, tuple[int, ...]]


@dataclass
class LoadedFile(_Positions):
    """The data of one rule file with its position index and load diagnostics."""

    source: RuleSource
    data: Any = None
    values: dict[str, Span] = field(default_factory=dict)
    keys: dict[str, Span] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    #: For a copy of the data with list items left out (pipeline._prune): for each
    #: top-level list, the index in the file of each item kept.  Pointers into the copy
    #: are translated through it, so every location names the node in the file.
    kept: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    @property
    def positions(self) -> SourceMap:
        """The positions of this file's nodes, without its data (shares the tables)."""
        return SourceMap(self.source, self.values, self.keys, self.lines, self.kept)


# YAML 1.2 core schema, restricted to decimal numbers.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_BOOL_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")

#: Characters YAML does not allow in a stream (C0 controls but tab/newline/CR, DEL, C1 but NEL,
#: surrogates, U+FFFE/U+FFFF): found before parsing, so the message can say where and which.
_FORBIDDEN_PATTERN = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


@lru_cache(maxsize=1)
def _forbidden() -> re.Pattern[str]:
    """:data:`_FORBIDDEN_PATTERN` compiled on first use (compiling its ranges takes several
    milliseconds, which a process reading its rules from the on-disk cache never needs)."""
    return re.compile(_FORBIDDEN_PATTERN)


_CONTROL_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "BS", 0x0B: "VT", 0x0C: "FF", 0x1B: "ESC", 0x7F: "DEL"}
#: Largest integer magnitude a rule file may hold (64-bit signed); larger ones are NB121.
MAX_INTEGER = 2**63 - 1
#: Deepest nesting of mappings and lists in a rule file (NB122): ample for conditions
#: (each all/any level is two), and far from the recursion limits of the later stages.
MAX_NESTING = 64

_STD_TAG = "tag:yaml.org,2002:"


def _import_yaml() -> None:
    """Import PyYAML on first use and bind, in this module, ``yaml``, the event classes
    the composer tests for and ``_PARSER`` (libyaml's C parser when PyYAML was built with
    it: several times faster, same events).  Deferred because a process that reads its
    rules from the on-disk cache (:mod:`nbrules.store`) parses no YAML, and importing
    PyYAML is a good part of its start-up."""
    names = globals()
    if "_PARSER" in names:
        return
    import yaml as yaml_module
    from yaml import events

    names.update({n: getattr(events, n) for n in _EVENTS})
    names["yaml"] = yaml_module
    names["_PARSER"] = getattr(yaml_module, "CSafeLoader", yaml_module.SafeLoader)


_EVENTS = ("AliasEvent", "DocumentStartEvent", "MappingEndEvent", "MappingStartEvent", "ScalarEvent",
           "SequenceEndEvent", "SequenceStartEvent", "StreamEndEvent")
_ALIAS_HINT = "write the value out in full; rule files do not support YAML references"
_TAG_HINT = "remove the tag; rule files hold plain strings, numbers, booleans, lists and mappings"


def _scalar(value: str, plain: bool) -> Any:
    """YAML 1.2 core schema for plain scalars; quoted and block scalars stay text."""
    if not plain:
        return value
    if _NULL.match(value):
        return None
    if _BOOL_TRUE.match(value):
        return True
    if _BOOL_FALSE.match(value):
        return False
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return value


def _out_of_range(value: str) -> str | None:
    """Why the plain scalar ``value`` is a number no rule file may hold, or None."""
    if _INT.match(value):
        digits = value.lstrip("+-")
        if len(digits) <= 19 and abs(int(value)) <= MAX_INTEGER:
            return None
        shown = value if len(value) <= 24 else f"{value[:10]}…{value[-10:]} ({len(digits)} digits)"
        return (f"expected an integer between -{MAX_INTEGER} and {MAX_INTEGER} (64 bits), found {shown}")
    if _FLOAT.match(value) and not math.isfinite(float(value)):
        shown = value if len(value) <= 24 else f"{value[:10]}…{value[-10:]} ({len(value)} characters)"
        return f"expected a finite number (at most about 1.8e308 in magnitude), found {shown}"
    return None


def visible(text: str) -> str:
    """``text`` with every character YAML forbids shown as a visible symbol (␀ ␛ ␇ …, or �),
    one for one, so that a source line can be printed safely and carets still line up."""
    return _forbidden().sub(lambda m: _symbol(ord(m.group())), text)


def _symbol(code: int) -> str:
    if code < 0x20:
        return chr(0x2400 + code)
    return "\u2421" if code == 0x7F else "\ufffd"


def _span_of(start: Any, end: Any) -> Span:
    return Span(start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def _point(span: Span) -> Span:
    return Span(span.line, span.column, span.line, span.column + 1)


class _Composer:
    """Builds plain data from the YAML event stream, indexing positions by JSON pointer.

    Tags, anchors, aliases and merge keys are reported, never honoured (an alias is
    never expanded); duplicate keys are reported instead of silently keeping the last.
    """

    def __init__(self, out: "LoadedFile", events: Iterator[Any]) -> None:
        self.out = out
        self.events = events
        self.last_end: Any = None  # end mark of the node consumed last
        self.depth = 0  # mappings and lists open around the current node

    def _report(self, code: str, message: str, span: Span, hint: str | None) -> None:
        self.out.diagnostics.append(self.out.diag(code, message, span=span, hint=hint))

    def _check(self, event: Any) -> None:
        span = _span_of(event.start_mark, event.end_mark)
        if getattr(event, "anchor", None) is not None:
            self._report("NB104", f"anchor '&{event.anchor}' is not allowed in rule files", _point(span), _ALIAS_HINT)
        tag = getattr(event, "tag", None)
        if tag not in (None, "!"):
            shown = "!!" + tag[len(_STD_TAG):] if tag.startswith(_STD_TAG) else tag
            self._report("NB103", f"explicit tag '{shown}' is not allowed in rule files", _point(span), _TAG_HINT)

    def node(self, event: Any, pointer: str, record: bool = True) -> Any:
        """Consume the node that starts with ``event``; return its data."""
        values = self.out.values if record else {}
        if isinstance(event, AliasEvent):
            span = _span_of(event.start_mark, event.end_mark)
            values[pointer] = span
            self.last_end = event.end_mark
            self._report("NB104", f"alias '*{event.anchor}' is not allowed in rule files", _point(span), _ALIAS_HINT)
            return None
        self._check(event)
        if isinstance(event, ScalarEvent):
            span = _span_of(event.start_mark, event.end_mark)
            values[pointer] = span
            self.last_end = event.end_mark
            plain = event.style in (None, "") and event.tag in (None, "!")
            problem = _out_of_range(event.value) if plain else None
            if problem is not None:
                self._report("NB121", problem, span, "rule files hold thresholds and counts: write the number "
                             "the criterion states, or quote it if it is meant as text")
                return None
            return _scalar(event.value, plain)
        if self.depth >= MAX_NESTING:
            self._skip_deep(event, pointer, values)
            return None
        self.depth += 1
        try:
            return self._collection(event, pointer, record, values)
        finally:
            self.depth -= 1

    def _skip_deep(self, event: Any, pointer: str, values: dict[str, Span]) -> None:
        """Report a list or mapping nested too deep and consume it without descending."""
        span = _span_of(event.start_mark, event.end_mark)
        values[pointer] = span
        self._report("NB122", f"expected lists and mappings nested at most {MAX_NESTING} deep, found one "
                     f"nested deeper", _point(span),
                     "flatten the condition: all/any take many items, so nested all (or nested any) can be merged")
        open_ = 1
        while open_:
            ev = next(self.events)
            if isinstance(ev, (SequenceStartEvent, MappingStartEvent)):
                open_ += 1
            elif isinstance(ev, (SequenceEndEvent, MappingEndEvent)):
                open_ -= 1
            self.last_end = ev.end_mark

    def _collection(self, event: Any, pointer: str, record: bool, values: dict[str, Span]) -> Any:
        if isinstance(event, SequenceStartEvent):
            items: list[Any] = []
            while True:
                ev = next(self.events)
                if isinstance(ev, SequenceEndEvent):
                    values[pointer] = _span_of(event.start_mark, ev.end_mark)
                    self.last_end = ev.end_mark
                    return items
                items.append(self.node(ev, join_pointer(pointer, len(items)), record))
        if isinstance(event, MappingStartEvent):
            return self._mapping(event, pointer, record)
        raise TypeError(f"unexpected YAML event {event!r}")  # pragma: no cover

    def _mapping(self, event: Any, pointer: str, record: bool) -> dict[str, Any]:
        values = self.out.values if record else {}
        result: dict[str, Any] = {}
        first: dict[str, Span] = {}
        values[pointer] = _span_of(event.start_mark, event.start_mark)
        while True:
            key_ev = next(self.events)
            if isinstance(key_ev, MappingEndEvent):
                values[pointer] = _span_of(event.start_mark, key_ev.end_mark)
                self.last_end = key_ev.end_mark
                return result
            key_span = _span_of(key_ev.start_mark, key_ev.end_mark)
            if not isinstance(key_ev, ScalarEvent):
                self.node(key_ev, pointer, record=False)
                key_span = _span_of(key_ev.start_mark, self.last_end)
                self._report("NB107", "a mapping key must be a plain string, not a list or mapping", key_span, None)
                self.node(next(self.events), pointer, record=False)
                continue
            self._check(key_ev)
            key = key_ev.value
            value_ev = next(self.events)
            if key == "<<" and key_ev.style in (None, ""):
                self._report("NB104", "merge key '<<' is not allowed in rule files", key_span, "write the keys out in full")
                self.node(value_ev, pointer, record=False)
                continue
            if key in first:
                self._report("NB102", f"key '{key}' appears twice in this mapping", key_span,
                             f"the first '{key}' is at line {first[key].line}; YAML would silently keep only the last one")
                self.node(value_ev, pointer, record=False)
                continue
            child = join_pointer(pointer, key)
            first[key] = key_span
            if record:
                self.out.keys[child] = key_span
            result[key] = self.node(value_ev, child, record)


def load_source(source: RuleSource) -> LoadedFile:
    """Load one rule file; never raises for bad content (problems become diagnostics)."""
    out = LoadedFile(source=source)
    if source.read_error is not None:
        out.diagnostics.append(
            Diagnostic(code="NB105", path=source.display, line=1, column=1,
                       message=f"cannot read {'directory' if source.name.endswith('/') else 'file'}: {source.read_error}",
                       hint=f"rule files are regular files (not devices, FIFOs or sockets) of at most {MAX_RULE_FILE_BYTES} bytes, "
                            "readable, in directories that can be listed")
        )
        return out
    try:
        text = source.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = source.data[: exc.start].count(b"\n") + 1
        out.diagnostics.append(Diagnostic(
            code="NB105", message=f"file is not UTF-8 (byte 0x{source.data[exc.start]:02x} at offset {exc.start})",
            path=source.display, line=line, column=1, hint="save the file as UTF-8"))
        return out
    out.lines = text.splitlines()
    out.values[""] = Span(1, 1, 1, 1)
    bad = _forbidden().search(text)
    if bad is not None:
        out.diagnostics.append(_forbidden_diag(source, text, bad.start(), len(_forbidden().findall(text))))
        return out
    _import_yaml()
    try:
        events = iter(yaml.parse(text, Loader=_PARSER))
        next(events)  # StreamStart
        if isinstance(next(events), StreamEndEvent):  # an empty file
            return out
        out.data = _Composer(out, events).node(next(events), "")
        next(events)  # DocumentEnd
        following = next(events)
        if isinstance(following, DocumentStartEvent):
            out.diagnostics.append(_mark_diag(out, "NB106", "the file holds more than one YAML document",
                                              following.start_mark,
                                              hint="a rule file is one YAML document; remove the second '---'"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "syntax error"
        context = f" {exc.context}" if exc.context else ""
        hint = "indent with spaces, not tabs" if "tab" in problem else "check indentation and quoting near this position"
        out.diagnostics.append(_mark_diag(out, "NB101", f"{problem}{context}", mark, hint=hint))
        out.data = None
    return out


def _forbidden_diag(source: RuleSource, text: str, pos: int, count: int) -> Diagnostic:
    """NB120 at the first character YAML forbids (located by newlines, as YAML counts lines)."""
    code = ord(text[pos])
    line = text.count("\n", 0, pos) + 1
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    src = visible(text[start:] if end < 0 else text[start:end]).rstrip("\r")
    name = _CONTROL_NAMES.get(code)
    found = f"U+{code:04X}" + (f" ({name})" if name else "")
    more = f"; {count - 1} more in the file" if count > 1 else ""
    return Diagnostic(code="NB120", path=source.display, line=line, column=pos - start + 1,
                      end_column=pos - start + 2, source_line=src,
                      message=f"expected printable text, found the control character {found}{more}",
                      hint="delete it: rule files are plain text, and YAML does not allow control characters")


def _mark_diag(out: LoadedFile, code: str, message: str, mark: Any, hint: str | None = None) -> Diagnostic:
    line = mark.line + 1 if mark is not None else 1
    col = mark.column + 1 if mark is not None else 1
    return out.diag(code, message, span=Span(line, col, line, col + 1), hint=hint)
