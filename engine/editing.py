"""Editing a knowledge package without the repository: ``nbrules init``, ``docs``, ``schema``.

:func:`init_package` writes an editable copy of the bundled package (every ``*.yaml``
file under ``rules/``) into a new directory, with the JSON Schemas copied into its
``schemas/`` subdirectory and each file's ``# yaml-language-server: $schema=`` line
rewritten to point there, so editor completion works wherever the copy lives.
:func:`doc_pages` and :func:`doc_text` give the editing documentation, which travels
inside the wheel (``nbrules/docs``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .resources import bundled_rules_dir, docs_dir, schemas_dir

__all__ = ["init_package", "doc_pages", "doc_text", "schema_names", "SCHEMA_LINE"]

#: The first-line comment editors (the Red Hat YAML extension) read to find a file's schema.
SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(?P<path>\S*?)(?P<name>[\w.-]+\.schema\.json)\s*$")


def init_package(dest: Path) -> list[Path]:
    """Copy the bundled package into ``dest`` (which must not exist or be empty).

    Returns the files written.  Raises :class:`FileExistsError` when ``dest`` holds
    anything, :class:`OSError` when it cannot be written.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"'{dest}' already exists and is not an empty directory")
    src = bundled_rules_dir()
    written: list[Path] = []
    for path in sorted(src.rglob("*.yaml")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n", 1)
        m = SCHEMA_LINE.match(lines[0])
        if m:
            up = "../" * (len(rel.parts) - 1)
            lines[0] = f"# yaml-language-server: $schema={up}schemas/{m.group('name')}"
        target.write_text("\n".join(lines), encoding="utf-8")
        written.append(target)
    (dest / "schemas").mkdir(parents=True, exist_ok=True)
    for schema in sorted(schemas_dir().glob("*.schema.json")):
        target = dest / "schemas" / schema.name
        shutil.copyfile(schema, target)
        written.append(target)
    return written


def schema_names() -> list[str]:
    """Names of the bundled JSON Schemas without ``.schema.json`` (``facts``, ``ruleset``…)."""
    return sorted(p.name[: -len(".schema.json")] for p in schemas_dir().glob("*.schema.json"))


def doc_pages() -> list[str]:
    """Names of the documentation pages (``rule-files``, ``knowledge-package``…)."""
    return sorted(p.stem for p in docs_dir().glob("*.md"))


def doc_text(page: str) -> str:
    """The Markdown text of one page; :class:`KeyError` for an unknown page."""
    if page not in doc_pages():
        raise KeyError(page)
    return (docs_dir() / f"{page}.md").read_text(encoding="utf-8")
