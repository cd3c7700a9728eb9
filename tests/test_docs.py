"""Documentation and bundled files stay in step with the code."""

from __future__ import annotations

import re

from nbrules import build_bundled
from nbrules.diagnostics import CODES
from nbrules.pipeline import PACKAGE_FILES

from .conftest import REPO


def test_every_code_is_documented_with_meaning_and_fix() -> None:
    text = (REPO / "docs" / "diagnostics.md").read_text()
    documented = re.findall(r"^### (NB\d{3}) `([a-z-]+)` \((error|warning|info)\)", text, re.M)
    assert [(c, n, s) for c, n, s in documented] == [(c.code, c.name, c.severity.value) for c in CODES.values()]
    assert text.count("**Fix:**") == len(CODES)


def test_bundled_rule_files_start_with_the_schema_line() -> None:
    for f in build_bundled().files:
        first = f.source.data.decode().splitlines()[0]
        rel = f.source.path.relative_to(REPO / "rules")  # type: ignore[union-attr]
        depth = len(rel.parts)
        schema = PACKAGE_FILES.get(rel.as_posix(), "ruleset.schema.json")
        assert first == f"# yaml-language-server: $schema={'../' * depth}schemas/{schema}", f.source.display


def test_schemas_are_valid_2020_12() -> None:
    import json

    from jsonschema import Draft202012Validator

    for name in ("ruleset.schema.json", "patient.schema.json", "fhir-mapping.schema.json"):
        schema = json.loads((REPO / "schemas" / name).read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def test_rule_file_guide_lists_every_operator() -> None:
    from nbrules.model import TEST_OPERATORS

    text = (REPO / "docs" / "rule-files.md").read_text()
    for op in TEST_OPERATORS:
        assert op in text, op
