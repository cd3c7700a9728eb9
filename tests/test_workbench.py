"""The workbench of `nbrules serve`: decision tables, the patient form, results and versions.

The pages are served for real on loopback. The first tests read them over HTTP; the
browser tests drive Debian's Chromium with Playwright's Python client through every
page (form filled for the README's worked examples, a trace link followed to its
table row, two versions compared with a cohort uploaded, bad input, an automated
accessibility check with axe-core). With ``NBRULES_SCREENSHOTS=1`` they also write
the README's screenshots to ``docs/images/``.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest

from .conftest import REPO

pytest.importorskip("starlette")
pytest.importorskip("jinja2")
sys.path.insert(0, str(REPO / "benchmarks"))
from load_test import start_server  # noqa: E402

EXAMPLES = REPO / "examples"


def _get(url: str, path: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8")
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, text


def _two_versions(tmp: Path) -> Path:
    """A copy of the bundled rules with a draft inrgss 1.1.0 whose MS age limit is 548 days."""
    rules = tmp / "rules"
    shutil.copytree(REPO / "rules", rules)
    text = (rules / "staging" / "inrgss.yaml").read_text()
    text = text.replace("version: 1.0.0", "version: 1.1.0", 1).replace("status: active", "status: draft", 1)
    text = text.replace("  ms_age_limit_days:\n    value: 547", "  ms_age_limit_days:\n    value: 548", 1)
    (rules / "staging" / "inrgss-1.1.0.yaml").write_text(text)
    return rules


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    rules = _two_versions(tmp_path_factory.mktemp("wb"))
    proc, url = start_server("--rules", str(rules))
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _query(facts: dict[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for k, v in facts.items():
        if isinstance(v, list):
            pairs.append((f"{k}.assessed", "1"))
            pairs += [(k, x) for x in v]
        elif isinstance(v, bool):
            pairs.append((k, "true" if v else "false"))
        else:
            pairs.append((k, str(v)))
    return urlencode(pairs)


# -- over HTTP -----------------------------------------------------------------------


def test_home_lists_every_installed_decision(server: str) -> None:
    status, headers, page = _get(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for key in ("inrgss", "inrg", "mki-class", "inpc", "cog-risk", "cog-v1-risk"):
        assert f'/ui/decisions/{key}?version=' in page
    assert "1.1.0" in page and "draft" in page  # the draft beside the version in force
    assert "<script" not in page


def test_decision_page_is_a_criteria_table(server: str) -> None:
    status, _, page = _get(server, "/ui/decisions/cog-risk")
    assert status == 200
    # a row per rule, anchored for trace links; facts tested only inside named conditions get a column
    for rid in ("V2-1", "V2-9", "V2-13", "V2-17"):
        assert f'id="rule-cog-risk-{rid}"' in page
    assert ">DNA ploidy<" in page or ">ploidy<" in page
    # named conditions are defined once, shown by name
    assert 'id="def-cog-risk-all_favorable_biology"' in page and 'href="#def-cog-risk-all_favorable_biology"' in page
    # citations link the reference rows; cases show pass/fail; no internals such as a wall of expanded text
    assert 'href="/reference/criteria.md#V2-13"' in page
    assert page.count('class="pass"') >= 10 and 'class="fail"' not in page


def test_parameter_readings_change_the_table(server: str) -> None:
    _, _, default = _get(server, "/ui/decisions/cog-risk")
    _, _, chosen = _get(server, "/ui/decisions/cog-risk?p.unknown_biology_policy=%22unfavorable%22")
    # conditions are shown as they apply under the readings chosen: the policy's branch for an
    # unknown histology (criteria.md §6.2, unknown biology) appears only when the policy is chosen
    row = lambda page: page.split('id="rule-cog-risk-V2-6"')[1].split("</tr>")[0]  # noqa: E731
    assert "unknown" not in row(default) and "unfavourable (UH) or unknown" in row(chosen)  # labels of facts.yaml
    assert "chosen here; the file says indeterminate" in chosen


def test_form_result_matches_the_api(server: str) -> None:
    facts = json.loads((EXAMPLES / "ms-infant.json").read_text())
    status, _, page = _get(server, "/ui/evaluate?" + _query(facts))
    assert status == 200
    assert 'data-output="inrgss_stage">\n<span class="value">MS</span>' in page
    status, headers, doc = _get(server, "/ui/evaluate.json?" + _query(facts))
    assert status == 200 and "attachment" in headers["content-disposition"]
    _, _, api = _get(server, "/evaluate", "POST", json.dumps(facts).encode(), {"Content-Type": "application/json"})
    assert json.loads(doc) == json.loads(api)


def test_empty_fields_redirect_to_a_shareable_address(server: str) -> None:
    status, headers, _ = _get(server, "/ui/evaluate?age_days=183&mki=&mycn_status=amplified&age_days.unit=days")
    assert status == 303 and headers["location"] == "/ui/evaluate?age_days=183&mycn_status=amplified"


def test_bad_input_shows_the_api_message(server: str) -> None:
    _, _, api = _get(server, "/evaluate", "POST", json.dumps({"bone_marrow_tumor_percent": 150}).encode(),
                     {"Content-Type": "application/json"})
    detail = json.loads(api)["errors"][0]["detail"]
    status, _, page = _get(server, "/ui/evaluate?bone_marrow_tumor_percent=150")
    assert status == 200 and 'role="alert"' in page
    assert detail in page.replace("&gt;", ">").replace("&lt;", "<").replace("&#39;", "'")


def test_indeterminate_candidates_link_to_the_settling_fact(server: str) -> None:
    facts = json.loads((EXAMPLES / "l1-amplified-before-surgery.json").read_text())
    facts.pop("resection_extent")
    _, _, page = _get(server, "/ui/evaluate?" + _query(facts))
    assert "indeterminate" in page
    link = "/ui/evaluate?" + _query({**facts, "resection_extent": "complete"}).replace("%5B%5D", "")
    assert "resection_extent=complete" in page
    status, _, settled = _get(server, link)
    assert status == 200 and 'data-output="cog_risk">\n<span class="value">low</span>' in settled


def test_a_fact_given_with_a_pending_value_waits_instead_of_settling(server: str) -> None:
    # INSS before surgery (criteria.md §3.1): resection_extent not_done is a pending value of
    # inss.yaml, so the stage is 1 or 3; the page says the answer waits for it, not that the
    # (already given) extent of resection would settle it.
    facts = json.loads((EXAMPLES / "inss-before-surgery.json").read_text())
    _, _, page = _get(server, "/ui/evaluate?" + _query(facts))
    inss = page.split('data-output="inss_stage">')[1].split("</dd>")[0]
    assert "<b>Extent of resection</b> is not done (surgery not yet performed), a pending value" in inss
    assert "would be settled by" not in inss
    facts.pop("resection_extent")
    _, _, page = _get(server, "/ui/evaluate?" + _query(facts))
    inss = page.split('data-output="inss_stage">')[1].split("</dd>")[0]
    assert "would be settled by <b>Extent of resection</b>" in inss and "pending" not in inss


def test_versions_side_by_side_with_domain_impact(server: str) -> None:
    status, _, page = _get(server, "/ui/versions/inrgss?old=1.0.0&new=1.1.0")
    assert status == 200
    assert "ms_age_limit_days" in page  # the text change
    assert "M</td><td>MS</td>" in page  # 547-day-old MS pattern: M under 1.0.0, MS under 1.1.0


def test_unknown_pages_are_404_pages(server: str) -> None:
    status, _, page = _get(server, "/ui/decisions/no-such")
    assert status == 404 and "no decision" in page
    status, _, _ = _get(server, "/ui/versions/inrgss?old=9.9.9&new=1.1.0")
    assert status == 404


# -- in a real browser ---------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _chromium()
    if path is None:
        if os.environ.get("NBRULES_REQUIRE_BROWSER"):
            pytest.fail("NBRULES_REQUIRE_BROWSER is set but no Chromium is installed")
        pytest.skip("no Chromium installed (CI installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def _fill(page: Any, facts: dict[str, Any]) -> None:
    """Fill the form as a person would: pick options, tick boxes, type numbers."""
    for name, value in facts.items():
        if isinstance(value, list):
            page.check(f"input[name='{name}.assessed']")
            for v in value:
                page.check(f"input[name='{name}'][value='{v}']")
        elif page.locator(f"select#in-{name}").count():
            page.select_option(f"#in-{name}", "true" if value is True else "false" if value is False else str(value))
        else:
            page.fill(f"#in-{name}", str(value))


def _answer(page: Any, output: str) -> str:
    return " ".join(page.inner_text(f"dd[data-output='{output}']").split())


# The README's worked examples, with the answers the criteria give (README "Worked examples");
# a tuple is an indeterminate output's candidates. The page shows values in the vocabulary's words.
WORKED: list[tuple[str, dict[str, Any]]] = [
    ("ms-infant.json", {"inrgss_stage": "MS", "inrg_group": "C", "inrg_risk": "very_low", "cog_risk": "low"}),
    ("ms-11q-unknown.json", {"inrg_group": ("C", "Q")}),
    ("mki-count-200.json", {"mki": "intermediate"}),
    ("inpc-toddler.json", {"inpc_histology": "unfavorable"}),
    ("l1-amplified-before-surgery.json", {"cog_risk": ("low", "high")}),
    ("inss-4s-infant.json", {"cog_v1_risk": "low"}),
]


def _words(output: str, expected: Any) -> str:
    from nbrules import RuleEngine

    spec = RuleEngine.default().build.vocabulary.get(output)
    label = (lambda v: spec.label(v)) if spec is not None else (lambda v: str(v))
    if isinstance(expected, tuple):
        return "indeterminate: " + " or ".join(label(v) for v in expected)
    return label(expected)


@pytest.mark.parametrize("example, answers", WORKED, ids=[w[0] for w in WORKED])
def test_form_in_the_browser_gives_the_worked_examples(server: str, browser: Any, example: str,
                                                       answers: dict[str, Any]) -> None:
    page = browser.new_page()
    page.goto(f"{server}/ui/evaluate")
    _fill(page, json.loads((EXAMPLES / example).read_text()))
    page.click("button[type=submit]")
    page.wait_for_selector("#result")
    for output, expected in answers.items():
        assert _answer(page, output).startswith(_words(output, expected)), (output, _answer(page, output))
    assert page.input_value("#share") == page.url  # the address shares this patient
    page.close()


def test_trace_link_leads_to_the_table_row(server: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{server}/ui/evaluate?" + _query(json.loads((EXAMPLES / "ms-infant.json").read_text())))
    page.click("ol.fired a:has-text('rule V2-13')")
    page.wait_for_load_state()
    assert page.url.endswith("#rule-cog-risk-V2-13")
    row = page.locator("tr:target")
    assert row.count() == 1 and "V2-13" in row.inner_text() and "COG risk = low" in row.inner_text()
    page.close()


def test_choosing_a_candidate_value_fills_the_form(server: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{server}/ui/evaluate?" + _query(json.loads((EXAMPLES / "ms-11q-unknown.json").read_text())))
    page.click("dd[data-output='inrg_group'] a:has-text('normal')")
    page.wait_for_selector("#result")
    assert page.input_value("#in-chr11q_status") == "normal"
    assert _answer(page, "inrg_group") == "C"
    page.close()


def test_bad_input_in_the_browser(server: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{server}/ui/evaluate")
    page.fill("#in-bone_marrow_tumor_percent", "150")
    page.click("button[type=submit]")
    alert = page.locator("#problems").inner_text()
    assert "/bone_marrow_tumor_percent" in alert and "NB50" in alert
    page.close()


def test_versions_and_cohort_upload_in_the_browser(server: str, browser: Any, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort.jsonl"
    rows = [{"id": "p1", "age_days": 547, "metastatic_sites": ["liver"], "bone_marrow_tumor_percent": 0,
             "mibg_bone_or_marrow_avid": False},
            {"id": "p2", "age_days": 100, "metastatic_sites": ["liver"], "bone_marrow_tumor_percent": 0,
             "mibg_bone_or_marrow_avid": False},
            {"id": "p3", "age_days": "old"}]
    cohort.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = browser.new_page()
    page.goto(f"{server}/ui/versions")
    page.select_option("#old-inrgss", "1.0.0")
    page.select_option("#new-inrgss", "1.1.0")
    page.click("form[action='/ui/versions/inrgss'] button")
    page.wait_for_selector("#diff-title")
    page.set_input_files("#cohort", str(cohort))
    page.click("text=Run the cohort through both")
    summary = page.inner_text("#cohort-summary")
    assert "3 rows, 2 evaluated, 1 invalid, 1 patients change" in summary
    assert "p1" in page.inner_text("table.cohort")
    page.close()


def test_accessibility(server: str, browser: Any) -> None:
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
    axe = axe_module.Axe()
    facts = json.loads((EXAMPLES / "ms-infant.json").read_text())
    for path in ("/", "/ui/decisions/inrgss", "/ui/evaluate?" + _query(facts), "/ui/versions/inrgss?old=1.0.0&new=1.1.0"):
        page = browser.new_page()
        page.goto(server + path)
        results = axe.run(page)
        serious = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        assert serious == [], (path, [(v["id"], v["help"], len(v["nodes"])) for v in serious])
        page.close()
    page = browser.new_page()  # keyboard: the form is reachable and submittable without a mouse
    page.goto(f"{server}/ui/evaluate")
    page.focus("#in-age_days")
    page.keyboard.type("900")
    page.keyboard.press("Enter")
    page.wait_for_selector("#result")
    assert page.url.endswith("age_days=900")
    page.close()


def test_screenshots_for_the_readme(server: str, browser: Any, tmp_path: Path) -> None:
    out = REPO / "docs" / "images" if os.environ.get("NBRULES_SCREENSHOTS") else tmp_path
    out.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/ui/decisions/cog-risk")
    page.screenshot(path=str(out / "workbench-table.png"))
    page.goto(f"{server}/ui/evaluate?" + _query(json.loads((EXAMPLES / "ms-11q-unknown.json").read_text())))
    page.locator("#result").screenshot(path=str(out / "workbench-result.png"))
    for name in ("workbench-table.png", "workbench-result.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 20_000
    page.close()


def test_the_form_refuses_what_the_api_refuses(server: str) -> None:
    # an unknown unit is not read as years; an unknown fact and a fact given twice are refused (NB503, NB506)
    status, _, body = _get(server, "/ui/evaluate.json?age_days=1&age_days.unit=bogus")
    assert status == 422 and "days, months or years" in body
    status, _, body = _get(server, "/ui/evaluate.json?nosuch=1")
    assert status == 422 and "NB503" in body and "nosuch" in body
    status, _, body = _get(server, "/ui/evaluate.json?age_days=183&age_days=200")
    assert status == 422 and "NB506" in body
    # months are completed days: 12 months is 365 days, 18 months 547 (criteria.md §0.1)
    status, _, body = _get(server, "/ui/evaluate.json?age_days=18&age_days.unit=months")
    assert status == 200 and json.loads(body)["input"]["age_days"] == 547


def test_a_missing_version_says_which_are_installed(server: str) -> None:
    status, _, page = _get(server, "/ui/decisions/cog-risk?version=7")
    assert status == 404 and "no version &#39;7&#39; of cog-risk is installed (installed: 1.0.0)" in page
