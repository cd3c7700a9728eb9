"""Build hook: the durable-rules requirement, fixed for Python 3.13 and later.

Everything else about the package is declared in pyproject.toml. durable-rules 2.0.28
(its last release, an sdist compiled at install) calls ``PyEval_CallObject``, which
Python 3.13 removed from its C API: the extension then fails to compile where implicit
declarations are errors (gcc 14) and fails to import everywhere else. Upstream has
merged the one-line fix but not released it, and a package cannot set the compiler
flags pip uses for one of its dependencies. So on Python 3.13 and later, building
nbrules (``pip install -e .``, or from its sdist) first builds durable-rules' own sdist,
downloaded from the package index with its sha256 checked, with
``-DPyEval_CallObject=PyObject_CallObject`` (durable-rules' setup.py replaces CFLAGS
but the compiler still reads CPPFLAGS), keeps that wheel in the user's cache, and
requires durable-rules from it. Nothing of durable-rules is copied into nbrules.

Because the requirement depends on the interpreter, so does the wheel's tag: a wheel
built on 3.11 or 3.12 is ``cp311.cp312-none-any`` (a plain requirement on the index's
durable-rules), one built on 3.13 or later only installs on that version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import setup

DURABLE_RULES = "durable-rules==2.0.28"
# sha256 of durable_rules-2.0.28.tar.gz as published on PyPI.
DURABLE_RULES_SDIST_SHA256 = "053b26f5e48d312d4fa27995243f954671be6eece477f150c059c364eb4d7d61"
FIX = "-DPyEval_CallObject=PyObject_CallObject"
FIRST_WITHOUT_CALLOBJECT = (3, 13)


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    where = f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}"
    return base / "nbrules" / "durable-rules-2.0.28-callobject-fix" / where


def _fixed_durable_rules_wheel() -> Path:
    """The durable-rules wheel built with the fix (built once per interpreter)."""
    cache = _cache_dir()
    built = sorted(cache.glob("durable_rules-2.0.28-*.whl"))
    if built:
        return built[0]
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["CPPFLAGS"] = f"{env.get('CPPFLAGS', '')} {FIX}".strip()
    # This pip runs inside the build of nbrules: it must not share the outer pip's
    # build tracker, and must not reuse a wheel of durable-rules built without the fix.
    env.pop("PIP_BUILD_TRACKER", None)
    env.pop("PIP_REQ_TRACKER", None)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{DURABLE_RULES} --hash=sha256:{DURABLE_RULES_SDIST_SHA256}\n")
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                   "--no-cache-dir", "--no-binary", "durable-rules", "--require-hashes",
                   "-r", str(requirements), "-w", tmp]
        print(f"nbrules: building {DURABLE_RULES} with {FIX} for Python "
              f"{sys.version_info.major}.{sys.version_info.minor}", file=sys.stderr)
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        wheels = sorted(Path(tmp).glob("durable_rules-2.0.28-*.whl"))
        if done.returncode != 0 or not wheels:
            sys.stderr.write(done.stdout)
            raise SystemExit(
                f"nbrules: could not build {DURABLE_RULES} with {FIX} (pip said the above). "
                "It needs a C compiler, the Python headers and access to the package index.")
        target = cache / wheels[0].name
        os.replace(wheels[0], target)  # atomic: a concurrent build sees all or nothing
    return target


def _durable_rules_requirement() -> str:
    if sys.version_info < FIRST_WITHOUT_CALLOBJECT:
        return DURABLE_RULES
    return f"durable-rules @ {_fixed_durable_rules_wheel().as_uri()}"


def _wheel_python_tag() -> str | None:
    if sys.implementation.name != "cpython":
        return None
    if sys.version_info < FIRST_WITHOUT_CALLOBJECT:
        return "cp311.cp312"
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


_OPTIONS = {"bdist_wheel": {"python_tag": tag}} if (tag := _wheel_python_tag()) else {}

setup(
    install_requires=[_durable_rules_requirement(), "PyYAML>=6.0", "jsonschema>=4.18", "Jinja2>=3.1", "orjson>=3.9"],
    options=_OPTIONS,
)
