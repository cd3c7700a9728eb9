"""The criteria reference ships with the product and every citation of a row resolves to it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nbrules import RuleEngine
from nbrules.cli import main
from nbrules.reference import anchor_id, find_reference, split_citation
from nbrules.render import render_html, render_markdown

from .conftest import REPO

ENGINE = RuleEngine.default()


def test_anchor_ids() -> None:
    assert anchor_id("S9") == "S9"
    assert anchor_id("§4.2") == "s4.2"
    assert anchor_id("§0.1 note A") == "s0.1-note-A"
    assert split_citation("criteria.md §0.1 note A") == ("criteria.md", "§0.1 note A")
    assert split_citation("monclair2009") == ("monclair2009", "")


def test_reference_has_a_row_for_every_published_row_id() -> None:
    """Row ids of the published tables, listed here independently of the rule files."""
    ref = find_reference("criteria.md", None)
    assert ref is not None and ref.display == "docs/criteria.md"
    wanted = ([f"S{i}" for i in range(1, 12)] + [f"IDRF-{i}" for i in range(1, 21)]
              + [f"v1-{i}" for i in range(1, 21)] + [f"V2-{i}" for i in range(1, 18)] + ["V2-6x"]
              + list("ABCDEFGIJKNOPQR") + ["H-a", "H-b", "L1", "L2", "M", "MS"]
              + [f"INSS-{s}" for s in ("1", "2A", "2B", "3", "4", "4S")]
              + ["s0.1", "s0.1-note-A", "s0.1-note-B", "s4.2", "s4.3", "table-4.3", "s5.1", "s6.1", "s6.2", "s7.1"])
    assert not [w for w in wanted if w not in ref.anchors]


def test_every_bundled_citation_of_the_reference_names_a_row() -> None:
    cited = 0
    for d in ENGINE.build.decisions:
        for rule in d.rules:
            for c in rule.cite:
                key, locator = split_citation(c)
                if key in d.references and locator:
                    assert d.references[key].has(locator), (d.key, rule.id, c)
                    cited += 1
    assert cited > 80  # the rules cite rows of the reference throughout


def test_no_file_of_the_project_refers_to_the_shared_folder() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = REPO / name
        if path.suffix in {".png", ".whl"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(r"\.\./shared|shared/domain|shared/design", text) and name != "tests/test_reference.py":
            offenders.append(name)
    assert offenders == []


def test_text_output_links_the_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(REPO / "examples/ms-infant.json"), "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "criteria.md S9 (docs/criteria.md#S9)" in out


def test_rendered_tables_link_the_rows() -> None:
    inrgss = [d for d in ENGINE.decisions if d.id == "inrgss"]
    md = render_markdown(inrgss)
    assert "[criteria.md S9](docs/criteria.md#S9)" in md
    page = render_html(inrgss)
    ref = inrgss[0].references["criteria.md"]
    assert f'<a href="{ref.path.resolve().as_uri()}#S9">criteria.md S9</a>' in page
    page = render_html(inrgss, cite_href=lambda r, loc: f"/reference/{r.name}#{anchor_id(loc)}")
    assert '<a href="/reference/criteria.md#S10">criteria.md S10</a>' in page


def test_a_package_may_carry_its_own_reference(tmp_path: Path) -> None:
    (tmp_path / "criteria.md").write_text('<a id="S9"></a> only one row\n', encoding="utf-8")
    ref = find_reference("criteria.md", tmp_path)
    assert ref is not None and ref.anchors == {"S9"} and ref.display == f"{tmp_path.name}/criteria.md"
    assert find_reference("../criteria.md", tmp_path) is None
