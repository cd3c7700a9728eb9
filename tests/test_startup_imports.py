"""What a one-shot process imports (issue 15: a warm ``nbrules evaluate`` in ≤ 0.2 s).

Importing ``nbrules`` imports none of its modules (the exports are resolved on first
use, PEP 562), and a ``nbrules evaluate`` that reads its rules from a warm on-disk
cache imports neither the YAML parser nor the libraries of the other verbs (schema
validation, HTTP service, templates, HTTP client), while every exported name still
imports and is the object its module defines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nbrules

ROOT = Path(__file__).resolve().parent.parent
PATIENT = ROOT / "examples" / "ms-infant.json"

#: Libraries a warm one-shot evaluation has no use for: PyYAML parses rule files (the
#: cache holds them checked), jsonschema/referencing validate rule files, starlette,
#: uvicorn, markdown-it and httpx serve or fetch over HTTP, jinja2 renders tables.
HEAVY = ("yaml", "jsonschema", "referencing", "starlette", "uvicorn", "jinja2", "httpx", "markdown_it",
         "fhir", "pydantic", "hypothesis")

#: Prints the top-level modules loaded once the CLI has run (to standard error, as JSON).
_PROBE = ("import json, sys\n"
          "from nbrules.cli import main\n"
          "code = main(sys.argv[1:])\n"
          "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
          "sys.exit(code)\n")


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, NBRULES_CACHE_DIR=str(cache))
    env.pop("NBRULES_CACHE", None)
    return env


def _modules(code: str, env: dict[str, str] | None = None, *args: str) -> tuple[list[str], bytes]:
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    loaded: list[str] = json.loads(done.stderr.decode().splitlines()[-1])
    return loaded, done.stdout


def test_a_warm_one_shot_evaluate_imports_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    env = _env(tmp_path)
    cold, cold_out = _modules(_PROBE, env, "evaluate", str(PATIENT))
    warm, warm_out = _modules(_PROBE, env, "evaluate", str(PATIENT))
    assert "yaml" in cold  # the cold run parsed the rule files: the probe sees what is imported
    assert warm_out == cold_out and json.loads(warm_out)["outputs"]["inrgss_stage"] == "MS"
    top = {m.split(".")[0] for m in warm}
    assert [lib for lib in HEAVY if lib in top] == []
    # nor the modules of the verbs it does not run (verify's DecisionSpace is used: the
    # missing-fact analysis reads it)
    idle = {"nbrules.service", "nbrules.workbench", "nbrules.fhir", "nbrules.fhir_fetch", "nbrules.render",
            "nbrules.cases", "nbrules.checker", "nbrules.crossfile", "nbrules.package_checks", "nbrules.diff",
            "nbrules.editing", "nbrules.cohort"}
    assert sorted(idle & set(warm)) == []


def test_importing_the_package_imports_none_of_its_modules() -> None:
    loaded, _ = _modules("import json, sys, nbrules; sys.stderr.write(json.dumps(sorted(sys.modules)))")
    assert sorted(m for m in loaded if m.startswith("nbrules.")) == ["nbrules._version"]


def test_every_exported_name_imports_and_is_its_modules_object() -> None:
    # in a fresh process, so that no earlier test has imported the modules already
    code = ("import importlib, json, sys, nbrules\n"
            "names = list(nbrules.__all__)\n"
            "exec('from nbrules import ' + ', '.join(names))\n"
            "star = {}\n"
            "exec('from nbrules import *', star)\n"
            "same = all(getattr(importlib.import_module('nbrules.' + m), n) is getattr(nbrules, n)\n"
            "           for n, m in nbrules._EXPORTS.items())\n"
            "sys.stderr.write(json.dumps([sorted(k for k in star if k != '__builtins__'), same]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    star, same = json.loads(done.stderr.decode().splitlines()[-1])
    assert star == sorted(nbrules.__all__) and same
    assert set(nbrules.__all__) == set(nbrules._EXPORTS) | {"__version__"}
    assert set(nbrules.__all__) <= set(dir(nbrules))


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(nbrules, "no_such_name")
