"""The on-disk cache of checked knowledge packages, so a one-shot ``nbrules`` process
starts without loading, validating, checking, verifying and case-running rule files
that have not changed.

An entry is addressed by a sha256 over everything the checked result depends on
(:meth:`BuildStore.key`): the format of the cache, the nbrules version and the size and
modification time of every module of the installed nbrules (an edited checkout is a new
version), the Python implementation and version, the size and modification time of the
installed PyYAML, jsonschema and referencing (a reinstall rewrites them),
the label and every rule file (name, shown path, path, read error, sha256 of its bytes),
the sha256 of every file-format schema, and the size and modification time of the
documents citations are checked against (``docs/*.md`` and the non-YAML files at the
root of the rules directory).  A change to any of them is a new key, so an entry is
never updated in place and never trusted across versions of nbrules.

An entry holds the :class:`~nbrules.pipeline.RuleSetBuild` (checked decisions, every
diagnostic) and, once an engine has needed them, the governance verdict of each
decision (verify and example cases, :func:`~nbrules.governance.governance_problems`)
and each decision compiled with its default parameters (``RuleSetBuild.compiled``),
pickled.  Pickle is acceptable here
because the cache directory is the user's own: it is created with mode 0700, and a
directory not owned by the user, or writable by group or others, is not used at all.
Anyone able to write into it could equally edit the user's shell start-up files.  Each
entry starts with a header naming the format, the nbrules and Python versions and the
sha256 of the pickled bytes; an entry whose header or digest does not match (truncated,
corrupt, written by another version) is ignored and rebuilt.

Writes go to a temporary file in the same directory, then ``os.replace``: concurrent
processes each write a whole entry, and readers see either none or a whole one.  At
most :data:`MAX_ENTRIES` entries are kept; the oldest go first.

Location: ``--cache-dir DIR``, else ``$NBRULES_CACHE_DIR``, else
``$XDG_CACHE_HOME/nbrules``, else ``~/.cache/nbrules``.  ``NBRULES_CACHE=off`` turns the
cache off.  A result is the same, byte for byte, with the cache, without it and from a
cold or warm one.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .diagnostics import Diagnostic
    from .pipeline import RuleSetBuild
    from .sources import RuleSource

__all__ = ["BuildStore", "StoredBuild", "open_store", "default_directory", "MAX_ENTRIES", "ENV_DIR", "ENV_SWITCH"]

#: Environment variable naming the cache directory.
ENV_DIR = "NBRULES_CACHE_DIR"
#: Environment variable turning the cache off (``off``, ``0``, ``no`` or ``false``).
ENV_SWITCH = "NBRULES_CACHE"
#: Entries kept in the cache directory; older ones are removed when a new one is written.
MAX_ENTRIES = 32
#: Bumped whenever the layout of an entry changes.
_FORMAT = 2
_SUFFIX = ".nbc"
_OFF = ("off", "0", "no", "false")


@dataclass(frozen=True)
class StoredBuild:
    """What one cache entry holds: the checked build and the governance verdict of each
    of its decisions, in the same order (empty when it may run), or None when they have
    not been computed (``nbrules validate`` does not need them)."""

    build: "RuleSetBuild"
    verdicts: "tuple[tuple[Diagnostic, ...], ...] | None"


def default_directory() -> Path | None:
    """``$NBRULES_CACHE_DIR``, else ``$XDG_CACHE_HOME/nbrules``, else ``~/.cache/nbrules``;
    None when there is no home directory to put it in."""
    named = os.environ.get(ENV_DIR)
    if named:
        return Path(named)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "nbrules"
    try:
        return Path.home() / ".cache" / "nbrules"
    except (RuntimeError, KeyError):  # no HOME and no password entry
        return None


def open_store(directory: str | Path | None = None) -> "BuildStore | None":
    """The cache at ``directory`` (default :func:`default_directory`), or None when
    ``NBRULES_CACHE`` turns it off or there is nowhere to put it."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in _OFF:
        return None
    where = Path(directory) if directory is not None else default_directory()
    return BuildStore(where) if where is not None else None


def _stamp(path: Path) -> str:
    """Name, size and modification time of ``path`` (cheap: only ``stat``)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{path.name}:missing"
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def _listing(directory: Path, keep: "tuple[str, ...] | None" = None, skip: tuple[str, ...] = ()) -> list[Path]:
    """The regular, non-hidden files of ``directory`` (not recursive), sorted by name."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    out = []
    for n in names:
        if n.startswith(".") or (keep is not None and not n.endswith(keep)) or n.endswith(skip):
            continue
        p = directory / n
        try:
            if stat.S_ISREG(os.stat(p).st_mode):
                out.append(p)
        except OSError:
            continue
    return out


def _code_fingerprint() -> str:
    """nbrules' version, and the size and modification time of each of its modules."""
    here = Path(__file__).resolve().parent
    parts = [__version__, sys.implementation.cache_tag or "", sys.version]
    parts += [_stamp(p) for p in _listing(here, keep=(".py",))]
    from importlib.util import find_spec

    for lib in ("yaml", "jsonschema", "referencing"):  # their messages and parsing are part of a build
        try:
            spec = find_spec(lib)
        except (ImportError, ValueError):  # pragma: no cover - a broken installation
            spec = None
        parts.append(f"{lib}:{_stamp(Path(spec.origin)) if spec is not None and spec.origin else 'missing'}")
    return "\n".join(parts)


class BuildStore:
    """The cache in one directory (see the module docstring).  Every method is quiet:
    a cache that cannot be read or written is simply not used."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._code: str | None = None

    # -- keys --------------------------------------------------------------------------

    def key(self, sources: Sequence["RuleSource"], label: str, root: Path | None) -> str:
        """The hex sha256 addressing the checked build of ``sources`` shown under ``label``
        (``root``: the rules directory, whose non-YAML files may be cited documents)."""
        from .resources import docs_dir, schemas_dir

        if self._code is None:
            self._code = _code_fingerprint()
        h = hashlib.sha256()

        def part(text: str) -> None:
            data = text.encode("utf-8", "surrogateescape")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)

        part(f"nbrules-cache {_FORMAT}")
        part(self._code)
        part(label)
        part(str(root) if root is not None else "")
        for s in sources:
            for text in (s.name, s.display, str(s.path), s.read_error or "", s.sha256):
                part(text)
        part("schemas")
        for p in _listing(schemas_dir(), keep=(".json",)):
            part(p.name)
            try:
                part(hashlib.sha256(p.read_bytes()).hexdigest())
            except OSError as exc:  # validation will say so; the key only has to differ
                part(f"unreadable: {exc.strerror or exc}")
        part("documents")
        for p in _listing(docs_dir(), keep=(".md",)):
            part(_stamp(p))
        if root is not None:
            for p in _listing(root, skip=(".yaml", ".yml")):
                part(_stamp(p))
        return h.hexdigest()

    # -- entries -----------------------------------------------------------------------

    def _header(self, digest: str) -> bytes:
        tag = sys.implementation.cache_tag or "python"
        return f"nbrules-cache {_FORMAT} {__version__} {tag} {digest}\n".encode("ascii")

    def _usable(self) -> bool:
        """The directory exists (created 0700 if not), is ours and not writable by others."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.stat(self.directory)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        getuid = getattr(os, "getuid", None)
        if getuid is not None and (st.st_uid != getuid() or st.st_mode & 0o022):
            return False
        return True

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{_SUFFIX}"

    def get(self, key: str) -> StoredBuild | None:
        """The entry at ``key``; None when there is none or it cannot be trusted."""
        if not self._usable():
            return None
        try:
            with open(self.path(key), "rb") as f:
                blob = f.read()
        except OSError:
            return None
        head, sep, payload = blob.partition(b"\n")
        if not sep:
            return None
        digest = hashlib.sha256(payload).hexdigest()
        if head + b"\n" != self._header(digest):
            return None
        # unpickling allocates the whole build (about 150,000 objects) and frees nothing:
        # the cyclic collector, which would walk the growing build again and again
        # meanwhile, is paused (as it was found) around it
        enabled = gc.isenabled()
        gc.disable()
        try:
            entry = pickle.loads(payload)
        except Exception:  # written by us and digest-checked; anything else: rebuild
            return None
        finally:
            if enabled:
                gc.enable()
        if not (isinstance(entry, tuple) and len(entry) == 2 and entry[0] == key
                and isinstance(entry[1], StoredBuild)):
            return None
        stored: StoredBuild = entry[1]
        return stored

    def put(self, key: str, value: StoredBuild) -> bool:
        """Write the entry at ``key`` atomically; False when it could not be written."""
        if not self._usable():
            return False
        try:
            payload = pickle.dumps((key, value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # pragma: no cover - a build that cannot be pickled is simply not cached
            return False
        import tempfile

        blob = self._header(hashlib.sha256(payload).hexdigest()) + payload
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=_SUFFIX)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.path(key))
            tmp = None
        except OSError:
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self._prune()
        return True

    def entries(self) -> list[Path]:
        """The entries in the directory, oldest first."""
        found = []
        for p in _listing(self.directory, keep=(_SUFFIX,)):
            try:
                found.append((os.stat(p).st_mtime_ns, p.name, p))
            except OSError:
                continue
        return [p for _, _, p in sorted(found)]

    def _prune(self) -> None:
        old = self.entries()
        for p in old[:max(0, len(old) - MAX_ENTRIES)]:
            try:
                p.unlink()
            except OSError:
                pass

    def clear(self) -> int:
        """Remove every entry; returns how many were removed."""
        n = 0
        for p in self.entries():
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
        return n

