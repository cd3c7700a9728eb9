"""nbrules render: decisions as tables for clinical sign-off, checked in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nbrules import build_bundled
from nbrules.cli import main
from nbrules.render import render_html, render_markdown

BUILD = build_bundled()


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows += 1
        for k, v in attrs:
            if k in ("src", "href") and v and not v.startswith("#"):
                self.urls.append(v)


def test_markdown_has_a_row_per_rule_and_a_column_per_fact() -> None:
    d = next(x for x in BUILD.decisions if x.id == "cog-risk")
    md = render_markdown([d], vocabulary=BUILD.vocabulary)
    header = next(line for line in md.splitlines() if line.startswith("| rule |"))
    # a column per fact the rules test, headed by its title in the vocabulary; ploidy and the
    # chromosome facts are tested only inside named conditions and still get their column
    for fact in ("inrgss_stage", "age_days", "mycn_status", "inpc_histology", "resection_extent", "ploidy",
                 "chr11q_status", "chr1p_status", "symptoms"):
        assert f"| {d.facts[fact].title or fact} |" in header, fact
    for rule in d.rules:
        assert re.search(rf"^\| {re.escape(rule.id)} \|", md, re.M), rule.id
    assert f"version **{d.version}** ({d.status})" in md and d.sha256 in md
    assert "| unknown_biology_policy | indeterminate |" in md  # parameters with notes and readings
    v21 = next(line for line in md.splitlines() if line.startswith("| V2-1 |"))
    assert "| L1 |" in v21 and "*not_amplified*" in v21 and "COG risk = low" in v21 and "criteria.md V2-1" in v21
    assert "- *not_amplified*: MYCN status: not amplified" in md  # named conditions defined once
    assert "## Example cases" in md and "| FAIL" not in md


def test_html_is_self_contained() -> None:
    page = render_html(list(BUILD.decisions))
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    # nothing fetched: in-page anchors, and links to the rows of the criteria reference the rules cite
    reference = BUILD.decisions[0].references["criteria.md"].path.resolve().as_uri()
    assert parser.urls and all(u == reference or u.startswith(reference + "#") for u in parser.urls)
    # per decision: a rules table (header + one row per rule or exclusion) and a parameters table
    expected = sum(1 + len(d.rules) + len(d.scopes) + (1 + len(d.parameters) if d.parameters else 0)
                   + (1 + len(d.cases) if d.cases else 0) for d in BUILD.decisions)
    assert parser.rows == expected


def test_render_cli_writes_one_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "inrg.html"
    assert main(["render", "inrg", "--format", "html", "--out", str(out)]) == 0
    text = out.read_text()
    assert "INRG pretreatment classification" in text and "COG" not in text.split("<body>")[1][:200]
    assert main(["render", "no-such-decision"]) == 4
    assert "installed: " in capsys.readouterr().err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_html_opens_in_a_headless_browser(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("NBRULES_REQUIRE_BROWSER"):
            pytest.fail("NBRULES_REQUIRE_BROWSER is set but no Chromium is installed")
        pytest.skip("no Chromium installed (CI installs it)")
    page = tmp_path / "decisions.html"
    page.write_text(render_html(list(BUILD.decisions)))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table class=\"rules\">") == len(BUILD.decisions)
    assert "V2-13" in dom.stdout and "criteria.md V2-13" in dom.stdout
    shot = tmp_path / "decisions.png"
    proc = subprocess.run(flags + ["--window-size=1400,1600", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a rendered page, not a blank one


def test_markdown_and_html_print_the_same_table_model() -> None:
    """One table model, two renderers: the same headings, in order, and the same results."""
    import html as html_lib

    from nbrules.tables import CASE_HEADINGS, PARAMETER_HEADINGS, decision_table

    d = next(x for x in BUILD.decisions if x.id == "inrgss")
    t = decision_table(d, vocabulary=BUILD.vocabulary)
    md = render_markdown([d], vocabulary=BUILD.vocabulary)
    page = html_lib.unescape(render_html([d], vocabulary=BUILD.vocabulary))
    headings = [h for h, _ in t.headings]
    assert "| " + " | ".join(headings) + " |" in md.splitlines()
    assert [h for h, _ in t.headings[1:len(t.columns) + 1]] == [title for _, title in t.columns]
    th = re.findall(r"<th scope=\"col\"[^>]*>([^<]*)</th>", page)
    assert th == headings + list(PARAMETER_HEADINGS) + list(CASE_HEADINGS)
    assert "| " + " | ".join(PARAMETER_HEADINGS) + " |" in md and "| " + " | ".join(CASE_HEADINGS) + " |" in md
    for r in t.rows:
        assert r.results and ("; ".join(r.results) in md) and all(line in page for line in r.results)
    # criteria S9: distant disease at 18 months or older is stage M
    assert next(r for r in t.rows if r.id == "M-age").results == ("INRGSS stage = M",)


def test_every_test_operator_has_words_in_both_wordings() -> None:
    """The diff's wording (render.condition_text) and the table's (tables) cover every operator."""
    from nbrules.model import TEST_OPERATORS, Test
    from nbrules.render import condition_text
    from nbrules.tables import _Words

    d = next(x for x in BUILD.decisions if x.id == "inrgss")
    words = _Words(d, d.param_values(), BUILD.vocabulary)
    values = {"in": ("liver",), "contains_any": ("liver",), "contains_all": ("liver",), "subset_of": ("liver",),
              "empty": True, "known": False}
    seen = set()
    for op in TEST_OPERATORS:
        t = Test("metastatic_sites", op, values.get(op, 3), "/x")
        diff_text, table_text = condition_text(t, {}, {}), words.test(t, True)
        assert diff_text.startswith("metastatic_sites ") and len(diff_text) > len("metastatic_sites ")
        assert table_text and table_text not in seen
        seen.add(table_text)
