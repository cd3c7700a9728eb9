"""The FHIR mapping file is data: checked like a rule file, with located diagnostics."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from nbrules import MappingError
from nbrules.cli import main
from nbrules.fhir import load_mapping

from .conftest import REPO

BAD = REPO / "tests" / "data" / "fhir" / "mappings" / "bad-meaning.yaml"


def _problems(path: Path) -> list[str]:
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    return [d.headline() for d in info.value.diagnostics]


def test_bundled_mapping_is_clean_and_has_the_ncit_stage_codes() -> None:
    m = load_mapping()
    ncit = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
    assert {v: m.stage_code("inrgss_stage", v) for v in ("L1", "L2", "M", "MS")} == {
        "L1": (ncit, "C133428"), "L2": (ncit, "C133429"), "M": (ncit, "C133430"), "MS": (ncit, "C133431")}


def test_meaning_problems_are_located_with_hints() -> None:
    assert _problems(BAD) == [
        f"{BAD}:6:16: error NB204 [value-not-allowed] expected a system named in 'systems' or a URI; found 'loacl'",
        f"{BAD}:8:3: error NB301 [unknown-fact] unknown fact 'mycn_staus'",
        f"{BAD}:14:11: error NB303 [type-mismatch] kind 'boolean' does not fit chr11q_status, which is one of "
        "aberrant, normal",
        f"{BAD}:18:47: error NB302 [value-outside-domain] 'diplod' is not a value of ploidy (expected one of "
        "hyperdiploid, diploid, hypodiploid)",
    ]


def test_format_problems_and_one_code_for_two_facts(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("version: 2\nsystems: {l: 'urn:x'}\ndiagnosis: {codes: [{system: l, code: nb}]}\n"
                    "observations:\n"
                    "  mycn_status: {codes: [{system: l, code: g}], kind: coded,"
                    " values: [{system: l, code: a, value: amplified}]}\n"
                    "  chr1p_status: {codes: [{system: l, code: g}], kind: coded,"
                    " values: [{system: l, code: a, value: aberrant}]}\n"
                    "  age_days: {codes: [{system: l, code: age}], kind: integer, unit: d}\n")
    assert _problems(path) == [
        f"{path}:1:10: error NB204 [value-not-allowed] expected one of 1; found the number 2",
        f"{path}:7:62: error NB203 [unknown-key] unknown key 'unit'",
    ]
    path.write_text(path.read_text().replace("version: 2", "version: 1").replace(", unit: d", ""))
    assert _problems(path) == [f"{path}:6:26: error NB207 [duplicate-item] code urn:x|g already gives mycn_status"]


def test_mapping_error_pickles_with_its_diagnostics() -> None:
    with pytest.raises(MappingError) as info:
        load_mapping(BAD)
    back = pickle.loads(pickle.dumps(info.value))
    assert back.diagnostics == info.value.diagnostics and back.exit_code == 3


def test_serve_refuses_a_bad_mapping_before_listening(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--fhir-mapping", str(BAD), "--port", "0"]) == 3
    err = capsys.readouterr().err
    assert "has 4 problem(s)" in err and "did you mean 'mycn_status'?" in err
    assert main(["serve", "--fhir-mapping", str(BAD.parent / "missing.yaml")]) == 3
    assert "cannot read the FHIR mapping" in capsys.readouterr().err
