"""Reference documents that rule files cite by row: where they are, which rows they have.

A rule file may declare a source as a *document* of the knowledge package::

    sources:
      criteria.md: {title: "nbrules criteria reference", document: criteria.md}

and then cite its rows: ``criteria.md S9``, ``criteria.md §0.1 note A``.  The text
after the key (the *locator*) names an anchor of the document: ``§`` becomes ``s``
and each run of spaces one ``-`` (:func:`anchor_id`: ``§0.1 note A`` →
``s0.1-note-A``).  Anchors are written in the Markdown as ``<a id="S9"></a>``.

A document is looked up in the root of the rules directory first (an edited copy of
a package may carry its own), then among the documents bundled with nbrules
(``docs/`` of a checkout, ``nbrules/docs`` of an installed wheel).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .cache import SHARED, SizedCache
from .resources import docs_dir

__all__ = ["Reference", "anchor_id", "find_reference", "render_reference", "split_citation"]

_ANCHOR = re.compile(r"""<a\s+id=["']([^"']+)["']\s*>""")


def anchor_id(locator: str) -> str:
    """The anchor a locator names: ``§4.2`` → ``s4.2``, ``§0.1 note A`` → ``s0.1-note-A``."""
    return re.sub(r"\s+", "-", locator.replace("§", "s").strip())


def split_citation(cite: str) -> tuple[str, str]:
    """``'criteria.md §0.1 note A'`` → ``('criteria.md', '§0.1 note A')``; no locator → ``''``."""
    key, _, locator = cite.strip().partition(" ")
    return key, locator.strip()


@dataclass(frozen=True)
class Reference:
    """One reference document: its name, where it was found and its anchors.

    ``display`` is the path shown to users: ``docs/criteria.md`` for the bundled
    document, the path below the rules directory's parent for a package's own copy.
    """

    name: str
    path: Path
    display: str
    anchors: frozenset[str]

    def link(self, locator: str) -> str:
        """``docs/criteria.md#S9``: the document and the row a locator names."""
        return f"{self.display}#{anchor_id(locator)}" if locator else self.display

    def has(self, locator: str) -> bool:
        return anchor_id(locator) in self.anchors


#: Anchors of each document read, by the sha256 of its text (one policy: :mod:`nbrules.cache`).
_ANCHORS: "SizedCache[bytes, frozenset[str]]" = SHARED.cache("reference.anchors", 1024 * 1024)


def _anchors(text: str) -> frozenset[str]:
    return _ANCHORS.get_or_build(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest(),
                                 lambda: frozenset(_ANCHOR.findall(text)))


def _read(name: str, path: Path, display: str) -> Reference | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return Reference(name, path, display, _anchors(text))


def find_reference(name: str, rules_root: Path | None) -> Reference | None:
    """The document ``name`` (a bare file name such as ``criteria.md``), or ``None``.

    ``rules_root`` is the rules directory the citing file belongs to (``None`` for
    rule text held only in memory).  Names with a path separator are refused: a
    package's documents sit at its root.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    if rules_root is not None:
        own = rules_root / name
        if own.is_file():
            return _read(name, own, f"{rules_root.name}/{name}")
    bundled = docs_dir() / name
    if bundled.is_file():
        return _read(name, bundled, f"docs/{name}")
    return None


_PAGE_CSS = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
             "table{border-collapse:collapse;font-size:.9rem}th,td{border:1px solid #c7ccd1;padding:.3rem .45rem;"
             "vertical-align:top;text-align:left}th{background:#e9eef3}:target{background:#fff3b0}"
             "tr:has(:target) td{background:#fff3b0}code{background:#f1f3f5}")


def render_reference(ref: Reference) -> str:
    """The document as one HTML page, anchors kept, so ``#S9`` scrolls to row S9.

    Uses markdown-it-py (CommonMark with tables; the document's own ``<a id>``
    anchors pass through as HTML).  Raises ``ImportError`` without the ``serve`` extra.
    """
    import html

    from markdown_it import MarkdownIt

    text = ref.path.read_text(encoding="utf-8")
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    title = html.escape(ref.display)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_PAGE_CSS}</style></head><body><p><a href=\"/\">nbrules workbench</a></p>{body}</body></html>")
