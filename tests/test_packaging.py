"""A wheel built from the repository works in a fresh venv outside it.

Slow: builds a wheel and a virtual environment (durable-rules comes from pip's cache
when it was built before).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


def test_wheel_carries_rules_and_schemas_and_evaluates_outside_the_repo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)])
    [wheel] = list(dist.glob("nbrules-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "nbrules/rules/staging/inrgss.yaml" in names
    assert "nbrules/schemas/facts.schema.json" in names and "nbrules/schemas/ruleset.schema.json" in names
    assert "nbrules/rules/facts.yaml" in names and "nbrules/rules/package.yaml" in names
    assert "nbrules/docs/knowledge-package.md" in names and "nbrules/docs/rule-files.md" in names
    assert "nbrules/py.typed" in names
    assert "nbrules/mappings/fhir-r4.yaml" in names
    assert "nbrules/docs/criteria.md" in names  # the reference the rules cite, resolved in the wheel
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "LICENSE (Apache-2.0) travels in the wheel"

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", str(wheel)])
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "p.json").write_text(json.dumps({"age_days": 900, "metastatic_sites": ["bone"]}))
    nbrules = env_dir / "bin" / "nbrules"
    out = subprocess.run([str(nbrules), "evaluate", "p.json"], cwd=work, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["outputs"]["inrgss_stage"] == "M"
    assert result["rulesets"][0]["file"] == "rules/staging/inrgss.yaml"
    for verb in ("validate", "test"):
        proc = subprocess.run([str(nbrules), verb], cwd=work, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    probe = subprocess.run([str(py), "-c", "import nbrules, pathlib; print(pathlib.Path(nbrules.__file__).parent)"],
                           cwd=work, capture_output=True, text=True, check=True)
    assert str(REPO) not in probe.stdout
    mapping = subprocess.run([str(py), "-c", "from nbrules.fhir import load_mapping; print(len(load_mapping().stages))"],
                             cwd=work, capture_output=True, text=True)
    assert mapping.returncode == 0 and int(mapping.stdout) >= 1, mapping.stderr
    # editing from the wheel: an editable copy that validates, and the guides
    subprocess.run([str(nbrules), "init", "my-rules"], cwd=work, capture_output=True, text=True, check=True)
    assert (work / "my-rules" / "schemas" / "facts.schema.json").is_file()
    proc = subprocess.run([str(nbrules), "validate", "my-rules"], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    guide = subprocess.run([str(nbrules), "docs", "knowledge-package"], cwd=work, capture_output=True, text=True,
                           check=True)
    assert "facts.yaml" in guide.stdout


def test_wheel_metadata_is_for_the_interpreter_that_built_it(tmp_path: Path) -> None:
    """The durable-rules requirement depends on the Python version (setup.py), so does the tag."""
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)])
    [wheel] = list(dist.glob("nbrules-*.whl"))
    z = zipfile.ZipFile(wheel)
    [meta] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [line for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Dist: durable-rules")]
    if sys.version_info < (3, 13):
        assert wheel.name.endswith("-cp311.cp312-none-any.whl")
        assert requires == ["Requires-Dist: durable-rules==2.0.28"]
    else:  # durable-rules built here with -DPyEval_CallObject=PyObject_CallObject
        assert wheel.name.endswith(f"-cp{sys.version_info.major}{sys.version_info.minor}-none-any.whl")
        [req] = requires
        assert req.startswith("Requires-Dist: durable-rules@ file://") or req.startswith("Requires-Dist: durable-rules @ file://")


def test_an_sdist_installs_and_evaluates_in_a_fresh_venv(tmp_path: Path) -> None:
    """As from a package index: pip builds nbrules from its sdist (on 3.13, durable-rules with the fix)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    dist = tmp_path / "dist"
    _run([py, "-m", "pip", "install", "-q", "setuptools>=77"])  # to make the sdist (venvs of 3.12+ have none)
    src = tmp_path / "src"  # a copy, so that building leaves nothing in the repository
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".mypy_cache", ".pytest_cache"))
    _run([py, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"], cwd=src)
    [sdist] = list(dist.glob("nbrules-*.tar.gz"))
    _run([py, "-m", "pip", "install", "-q", str(sdist)])
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "p.json").write_text(json.dumps({"age_days": 183, "primary_idrfs": [], "metastatic_sites": ["liver"],
                                             "mibg_bone_or_marrow_avid": False}))
    out = subprocess.run([str(env_dir / "bin" / "nbrules"), "evaluate", "p.json"], cwd=work, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["outputs"]["inrgss_stage"] == "MS"  # criteria.md S9: < 18 months, liver only
