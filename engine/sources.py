"""Where rule files come from.  Fetching text is kept apart from compiling it.

A :class:`RuleSource` is the raw text of one rule file with its names and hash;
:func:`directory_sources` lists every ``*.yaml`` file under a directory in a
stable order.  The bundled rules and schemas are found by :mod:`nbrules.resources`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RuleSource", "directory_sources", "directory_state", "file_source", "read_capped", "MAX_RULE_FILE_BYTES"]

#: A rule file larger than this is refused unread (NB105): rule files are small.
MAX_RULE_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class RuleSource:
    """One rule file.

    ``name`` is the path relative to the rules directory (``staging/inrgss.yaml``),
    ``display`` the path shown in diagnostics and results (``rules/staging/inrgss.yaml``),
    ``data`` the raw bytes and ``sha256`` their hash.  ``read_error`` says why the file
    could not be read; a ``name`` ending in ``/`` is a directory that could not be listed.
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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def read_capped(path: Path, cap: int = MAX_RULE_FILE_BYTES) -> tuple[bytes, str | None]:
    """The bytes of the regular file at ``path`` and None, or ``b""`` and why it was not read.

    Never blocks and never reads more than ``cap`` + 1 bytes: devices, FIFOs and sockets
    (also behind a symlink) are refused before and after opening (the file is opened
    non-blocking and checked with ``fstat``), and a file that grows past ``cap`` while
    it is read is refused too.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return b"", f"{_kind(os.stat(path).st_mode)}, not a regular file; only regular files are read"
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return b"", f"{_kind(st.st_mode)}, not a regular file; only regular files are read"
            if st.st_size > cap:
                return b"", f"file is {st.st_size} bytes; rule files are limited to {cap}"
            chunks: list[bytes] = []
            size = 0
            while size <= cap:
                chunk = os.read(fd, min(1 << 16, cap + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > cap:
                return b"", f"file is more than {cap} bytes; rule files are limited to {cap}"
            return b"".join(chunks), None
        finally:
            os.close(fd)
    except OSError as exc:
        return b"", exc.strerror or str(exc)


def _walk(root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Every ``*.yaml``/``*.yml`` name below ``root`` (relative path, full path), and every
    subdirectory that could not be listed (relative path, reason).  Hidden names are skipped;
    symlinked directories are not followed."""
    files: list[tuple[str, Path]] = []
    failed: list[tuple[str, str]] = []

    def onerror(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else root
        if where == root and not root.exists():
            return  # a missing root is reported as no rule files (NB108)
        rel = where.relative_to(root).as_posix() if where != root else "."
        failed.append((rel, exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.endswith((".yaml", ".yml")) or fn.startswith("."):
                continue
            full = Path(dirpath) / fn
            files.append((full.relative_to(root).as_posix(), full))
    return files, failed


def file_source(path: Path, name: str, display: str) -> RuleSource:
    """One rule file read from disk (:func:`read_capped`); a file that cannot be read
    comes back with empty data and its ``read_error``, reported by the loader (NB105)."""
    data, error = read_capped(path)
    return RuleSource(name=name, display=display, path=path, data=data, read_error=error)


def directory_state(root: Path) -> tuple[tuple[str, int, int, int], ...]:
    """What the watcher compares between polls: (relative path, mtime, size, mode) of every
    rule file name and, with mode -1, every directory that could not be listed.  Only
    ``stat`` is called: nothing is opened, so a FIFO or device cannot block it."""
    files, failed = _walk(Path(root))
    state: list[tuple[str, int, int, int]] = [(rel, 0, 0, -1) for rel, _ in failed]
    for rel, full in files:
        try:
            st = os.stat(full)
            state.append((rel, st.st_mtime_ns, st.st_size, st.st_mode))
        except OSError as exc:
            state.append((rel, 0, 0, -(exc.errno or 1) - 1))
    return tuple(sorted(state))


def directory_sources(root: Path, label: str | None = None) -> list[RuleSource]:
    """Every ``*.yaml``/``*.yml`` file below ``root``, sorted by relative path.

    ``label`` prefixes the display path (default: the directory's own name), so that
    results name ``rules/staging/inrgss.yaml`` whatever the absolute location.
    Files that cannot be read (:func:`read_capped`) and subdirectories that cannot be
    listed are returned with empty data and a ``read_error``, reported by the loader (NB105).
    """
    root = Path(root)
    prefix = label if label is not None else root.name
    found: list[RuleSource] = []
    files, failed = _walk(root)
    for rel, reason in failed:
        name = rel if rel != "." else ""
        display = "/".join(x for x in (prefix, name) if x) or "."
        found.append(RuleSource(name=name + "/", display=display + "/", path=root / name, data=b"",
                                read_error=reason))
    for rel, full in files:
        data, error = read_capped(full)
        display = f"{prefix}/{rel}" if prefix else rel
        found.append(RuleSource(name=rel, display=display, path=full, data=data,
                                read_error=error))
    found.sort(key=lambda s: s.name)
    return found
