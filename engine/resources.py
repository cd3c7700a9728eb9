"""The bundled rules and schemas.

In an installed wheel they live inside the package directory (``nbrules/rules``,
``nbrules/schemas``; found beside this module, as :mod:`importlib.resources` would
find them for a package on the file system, without the 10 ms of importing it).  In a source
checkout or an editable install the package directory is ``engine/`` and the
data sit beside it at the repository's top level (``rules/``, ``schemas/``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["bundled_rules_dir", "docs_dir", "schemas_dir", "mappings_dir", "read_schema"]


def _data_dir(kind: str) -> Path:
    packaged = Path(__file__).resolve().parent / kind
    if packaged.is_dir():
        return packaged
    checkout = packaged.parent.parent / kind
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"nbrules is installed without its bundled {kind}/ directory")


def bundled_rules_dir() -> Path:
    """Directory of the rule files shipped with nbrules."""
    return _data_dir("rules")


def mappings_dir() -> Path:
    """Directory of the data-driven mappings (``fhir-r4.yaml``)."""
    return _data_dir("mappings")


def docs_dir() -> Path:
    """Directory of the documentation shipped with nbrules: the criteria reference and the
    editing guides (``rule-files.md``, ``knowledge-package.md``…)."""
    return _data_dir("docs")


def schemas_dir() -> Path:
    """Directory of the file formats: ``ruleset``, ``package``, ``facts``, ``fhir-mapping`` (``*.schema.json``)."""
    return _data_dir("schemas")



@lru_cache(maxsize=None)
def read_schema(name: str) -> Any:
    """Parse one of the bundled JSON Schemas (cached; treat the result as read-only)."""
    return json.loads((schemas_dir() / name).read_text(encoding="utf-8"))
