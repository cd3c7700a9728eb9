"""Where rule files come from.  Fetching text is kept apart from compiling it.

A :class:`RuleSource` is the raw text of one rule file with its names and hash;
:func:`directory_sources` lists every ``*.yaml`` file under a directory in a
stable order.  The bundled rules and schemas are found by :mod:`nbrules.resources`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RuleSource", "directory_sources", "file_source", "MAX_RULE_FILE_BYTES"]

#: A rule file larger than this is refused unread (NB105): rule files are small.
MAX_RULE_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class RuleSource:
    """One rule file.

    ``name`` is the path relative to the rules directory (``staging/inrgss.yaml``),
    ``display`` the path shown in diagnostics and results (``rules/staging/inrgss.yaml``),
    ``data`` the raw bytes and ``sha256`` their hash.
    """

    name: str
    display: str
    path: Path | None
    data: bytes
    read_error: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @classmethod
    def from_text(cls, name: str, text: str, display: str | None = None) -> "RuleSource":
        """A source that exists only in memory (tests, HTTP uploads)."""
        return cls(name=name, display=display or name, path=None, data=text.encode("utf-8"))


def file_source(path: Path, name: str, display: str) -> RuleSource:
    """One rule file read from disk; a file that cannot be read (or is larger than
    :data:`MAX_RULE_FILE_BYTES`) comes back with empty data and its ``read_error``."""
    data, error = b"", None
    try:
        size = path.stat().st_size
        if size > MAX_RULE_FILE_BYTES:
            error = f"file is {size} bytes; rule files are limited to {MAX_RULE_FILE_BYTES}"
        else:
            data = path.read_bytes()
    except OSError as exc:
        error = exc.strerror or str(exc)
    return RuleSource(name=name, display=display, path=path, data=data, read_error=error)


def directory_sources(root: Path, label: str | None = None) -> list[RuleSource]:
    """Every ``*.yaml``/``*.yml`` file below ``root``, sorted by relative path.

    ``label`` prefixes the display path (default: the directory's own name), so that
    results name ``rules/staging/inrgss.yaml`` whatever the absolute location.
    Unreadable files are returned with empty data and reported by the loader.
    """
    root = Path(root)
    prefix = label if label is not None else root.name
    found: list[RuleSource] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.endswith((".yaml", ".yml")) or fn.startswith("."):
                continue
            full = Path(dirpath) / fn
            rel = full.relative_to(root).as_posix()
            found.append(file_source(full, rel, f"{prefix}/{rel}" if prefix else rel))
    found.sort(key=lambda s: s.name)
    return found
