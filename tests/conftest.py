"""Shared fixtures.  The bundled engine is built once per session (compiling is cheap,
but durable-rules rulesets are process-wide resources)."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest

from nbrules import RuleEngine
from nbrules.cache import SHARED

# The on-disk cache of checked packages (nbrules.store) is off for the suite: no test
# writes into the user's cache or reads an entry another left.  tests/test_store.py
# turns it on, in a temporary directory.
os.environ["NBRULES_CACHE"] = "off"

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session", autouse=True)
def shared_memos() -> Iterator[None]:
    """The suite builds and closes hundreds of engines one after another: it holds the
    memos of file contents shared by all builds (nbrules.cache.SHARED) for the whole
    session, as any such process may, so that closing one engine does not clear them."""
    SHARED.hold()
    yield
    SHARED.release()


@pytest.fixture(scope="session")
def engine() -> Iterator[RuleEngine]:
    eng = RuleEngine.default()
    yield eng
    eng.close()


@pytest.fixture
def two_versions(tmp_path: Path) -> Path:
    """A copy of the bundled rules plus a draft INRGSS 1.1.0 whose MS age limit is 548 days."""
    root = tmp_path / "rules"
    shutil.copytree(REPO / "rules", root)
    text = (root / "staging/inrgss.yaml").read_text()
    new = text.replace("version: 1.0.0\nstatus: active", "version: 1.1.0\nstatus: draft") \
        .replace("  ms_age_limit_days:\n    value: 547", "  ms_age_limit_days:\n    value: 548")
    (root / "staging/inrgss-1.1.0.yaml").write_text(new)
    return root


@pytest.fixture
def rules_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write rule files (name -> YAML text, dedented) into a fresh directory."""

    def make(**files: str) -> Path:
        root = tmp_path / "rules"
        root.mkdir(exist_ok=True)
        for name, text in files.items():
            (root / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return make


DEMO = """\
decision: demo
title: Demo decision
version: 1.0.0
status: active
effective: 2024-01-01
sources:
  src: "A source"
parameters:
  limit: {value: 547, note: "why this value"}
reads: [age_days, mycn_status]
decides:
  demo_out: [low, high]
rules:
  - id: young
    cite: [src]
    when:
      all:
        - {fact: age_days, less_than: {param: limit}}
        - {fact: mycn_status, is: not_amplified}
    then: {demo_out: low}
  - id: other
    cite: [src]
    when:
      any:
        - {fact: age_days, at_least: {param: limit}}
        - {fact: mycn_status, is: amplified}
    then: {demo_out: high}
cases:
  - name: infant
    given: {age_days: 100, mycn_status: not_amplified}
    expect: {demo_out: low, fired: [young]}
"""
