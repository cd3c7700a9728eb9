"""The HTTP service, started for real on loopback and spoken to over HTTP."""

from __future__ import annotations

import datetime
import http.client
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from .conftest import DATA, REPO

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sys.path.insert(0, str(REPO / "benchmarks"))
from load_test import rss_mb, run_load, start_server  # noqa: E402

FHIR = DATA / "fhir"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    proc, url = start_server("--max-body", "20000", "--max-patients", "50")
    yield url, proc.pid
    proc.terminate()
    proc.wait(timeout=30)


def call(url: str, method: str, path: str, body: Any = None, raw: bytes | None = None,
         ctype: str = "application/json") -> tuple[int, str, Any]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": ctype} if data is not None else {})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", json.loads(payload) if payload else None


MS = json.loads((REPO / "examples/ms-infant.json").read_text())


def test_health_and_decisions(server: tuple[str, int]) -> None:
    url, _ = server
    status, _, body = call(url, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    from nbrules.package import PACKAGE_FILES

    decision_files = [p for p in (REPO / "rules").rglob("*.yaml") if p.name not in PACKAGE_FILES]
    assert len(body["rulesets"]) == len(decision_files)  # one active version each
    status, _, body = call(url, "GET", "/decisions")
    assert status == 200
    assert {(d["decision"], d["version"], d["in_force"]) for d in body["decisions"]} >= {("inrgss", "1.0.0", True)}
    assert all(len(d["sha256"]) == 64 for d in body["decisions"])


def test_openapi_document(server: tuple[str, int]) -> None:
    url, _ = server
    status, _, doc = call(url, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert {"/evaluate", "/decisions", "/health", "/cds-services"} <= set(doc["paths"])
    assert doc["components"]["schemas"]["Patient"]["properties"]["age_days"]["type"] == "integer"


def test_evaluate_one_and_many(server: tuple[str, int]) -> None:
    url, _ = server
    status, _, one = call(url, "POST", "/evaluate", MS)
    assert status == 200 and one["outputs"]["cog_risk"] == "low"
    status, _, many = call(url, "POST", "/evaluate", [MS, {"age_days": 1000, "metastatic_sites": ["bone"]}])
    assert status == 200 and [r["outputs"]["inrgss_stage"] for r in many] == ["MS", "M"]
    assert call(url, "POST", "/evaluate", MS)[2] == one  # deterministic


def test_profile_query_parameter(server: tuple[str, int]) -> None:
    # criteria.md §0.1 note A: read as "day 547 is younger" (profile day-547-younger), an MS
    # child of 547 days, MYCN not amplified, 11q normal, is INRG group C; by default INRGSS M.
    url, _ = server
    patient = {"age_days": 547, "metastatic_sites": ["liver"], "mibg_bone_or_marrow_avid": False,
               "mycn_status": "not_amplified", "chr11q_status": "normal"}
    status, _, body = call(url, "POST", "/evaluate?profile=day-547-younger", patient)
    assert status == 200 and body["profile"] == "day-547-younger" and body["outputs"]["inrg_group"] == "C"
    status, _, body = call(url, "POST", "/evaluate", patient)
    assert status == 200 and "profile" not in body and body["outputs"]["inrg_group"] == "P"
    status, _, body = call(url, "POST", "/evaluate?profile=nope", patient)
    assert status == 400 and "day-547-younger" in json.dumps(body)


def test_bad_input_gets_problem_details_with_pointers(server: tuple[str, int]) -> None:
    url, _ = server
    status, ctype, body = call(url, "POST", "/evaluate", {"age_days": "183", "mycn": "amplified"})
    assert status == 422 and ctype == "application/problem+json"
    assert {(e["pointer"], e["code"]) for e in body["errors"]} == {("/age_days", "NB502"), ("/mycn", "NB503")}
    status, _, body = call(url, "POST", "/evaluate", [MS, {"age_days": -3}])
    assert status == 422 and [e["pointer"] for e in body["errors"]] == ["/1/age_days"]
    status, _, body = call(url, "POST", "/evaluate", raw=b'{"age_days": 1')
    assert status == 400 and body["errors"][0]["code"] == "NB501"
    assert call(url, "POST", "/evaluate", raw=b"{}", ctype="text/plain")[0] == 415


def test_size_limits(server: tuple[str, int]) -> None:
    url, _ = server
    status, _, body = call(url, "POST", "/evaluate", raw=b" " * 30000 + b"{}")
    # every error entry has the same shape as a patient problem's (Diagnostic.to_problem)
    assert status == 413 and body["errors"] == [{"pointer": "", "code": "NB509", "name": "input-too-large",
                                                 "detail": "expected at most 20000 bytes"}]
    status, _, body = call(url, "POST", "/evaluate", [{"age_days": 1}] * 51)
    assert status == 413 and "limit is 50" in body["title"]


def test_cds_hooks_discovery(server: tuple[str, int]) -> None:
    url, _ = server
    status, _, body = call(url, "GET", "/cds-services")
    [service] = body["services"]
    assert status == 200 and service["hook"] == "patient-view" and service["id"] == "nbrules-neuroblastoma"
    assert set(service["prefetch"]) == {"patient", "conditions", "observations", "riskAssessments"}


def cards(url: str, name: str) -> list[dict[str, Any]]:
    status, _, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma", json.loads((FHIR / name).read_text()))
    assert status == 200, body
    return body["cards"]


def test_cds_cards_for_a_complete_record(server: tuple[str, int]) -> None:
    got = cards(server[0], "ms-infant.json")
    stage = next(c for c in got if "INRGSS stage" in c["summary"])
    assert "MS (NCIt C133431)" in stage["summary"] and stage["indicator"] == "info"
    assert stage["extension"]["nbrules"]["codes"]["inrgss_stage"]["code"] == "C133431"
    assert "Monclair" in stage["detail"] and len(stage["source"]["label"]) <= 80
    assert "Rule **MS**" in stage["detail"] and "criteria.md S9" in stage["detail"]
    cog = next(c for c in got if "version 2" in c["summary"])
    assert "COG risk low" in cog["summary"] and "Irwin" in cog["detail"]
    missing = got[-1]
    # INSS comes from the surgical findings, which the record lacks; never from the INRGSS stage MS
    inss = next(c for c in got if "INSS stage" in c["summary"])
    assert "INSS stage 4 or 4S" in inss["summary"] and inss["indicator"] == "warning"
    assert missing["indicator"] == "warning" and "crosses_midline" in missing["detail"]
    assert "resection_extent" in missing["detail"]
    assert not any("response" in c["summary"].lower() for c in got)  # no assessment in the record: no INRC card


def test_cds_lists_what_it_cannot_map_and_never_guesses(server: tuple[str, int]) -> None:
    got = cards(server[0], "l1-amplified-not-operated.json")
    stage = next(c for c in got if "INRGSS stage" in c["summary"])  # given by the Condition's stage summary
    assert "L1 (from the record, NCIt C133428)" in stage["summary"] and "taken from the record" in stage["detail"]
    cog = next(c for c in got if "version 2" in c["summary"])
    assert "low or high" in cog["summary"] and "Extent of resection" in cog["detail"]  # facts by their titles
    missing = got[-1]["detail"]
    assert "Observation/hb: code http://loinc.org|718-7 is not in the mapping" in missing
    assert "Observation/obs-3: status preliminary" in missing
    assert "Condition/asthma: not a diagnosis in the mapping" in missing
    conflicting = cards(server[0], "conflicting.json")[-1]["detail"]
    assert "Conflicting values (not used): mycn_status from Observation/obs-1, Observation/obs-2" in conflicting
    assert "Patient/p1: no full birthDate" in conflicting


def test_cds_bad_request(server: tuple[str, int]) -> None:
    status, _, body = call(server[0], "POST", "/cds-services/nbrules-neuroblastoma", {"hook": "order-sign"})
    assert status == 400 and {e["pointer"] for e in body["errors"]} == {"/hook"}
    status, _, body = call(server[0], "POST", "/cds-services/nbrules-neuroblastoma", {"context": {}})
    [entry] = [e for e in body["errors"] if e["pointer"] == "/hook"]
    assert status == 400 and entry["detail"] == "expected 'patient-view', found no hook"


def test_watching_server_reloads_changed_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    proc, url = start_server("--rules", str(rules), "--watch", "0.2")
    try:
        p = rules / "histology/mki-class.yaml"
        p.write_text(p.read_text().replace("version: 1.0.0", "version: 1.0.1"))
        deadline = time.monotonic() + 20
        versions: set[str] = set()
        while time.monotonic() < deadline and "1.0.1" not in versions:
            versions = {r["version"] for r in call(url, "GET", "/health")[2]["rulesets"] if r["decision"] == "mki-class"}
            time.sleep(0.2)
        assert versions == {"1.0.1"}
        p.write_text("decision: [")  # broken: refused, the last good set keeps serving
        time.sleep(1.0)
        status, _, body = call(url, "GET", "/health")
        assert status == 200 and any(r["version"] == "1.0.1" for r in body["rulesets"])
        assert call(url, "POST", "/evaluate", MS)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- what an operator sees on start, and on bad options -------------------------------------


def test_start_line_names_the_address_the_rules_and_the_versions_in_force() -> None:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "nbrules.cli", "serve", "--port", "0", "--as-of", "2026-01-02"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = line.split("listening on ", 1)[1].split(";", 1)[0]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")  # the port actually bound
        assert f"rules {REPO / 'rules'} (bundled)" in line
        from nbrules import RuleEngine

        versions = ", ".join(f"{d.id} {d.version}" for d in RuleEngine.default(as_of=datetime.date(2026, 1, 2)).decisions)
        assert line.rstrip().endswith(f"in force on 2026-01-02: {versions}")
        deadline = time.monotonic() + 60
        while True:  # the start line comes once the socket listens; the app answers once started
            try:
                status, _, body = call(url, "GET", "/health")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 200 and len(body["rulesets"]) == len(versions.split(", "))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("option, message", [
    (["--port", "99999"], "nbrules serve: argument --port: 99999 is out of range (0 to 65535)"),
    (["--port", "http"], "nbrules serve: argument --port: 'http' is not a whole number"),
    (["--watch", "0"], "nbrules serve: argument --watch: 0 is not a positive number of seconds"),
    (["--max-patients", "0"], "nbrules serve: argument --max-patients: 0 is out of range (1 to 2147483648)"),
    (["--host", "no-such-host.invalid"], "nbrules serve: --host no-such-host.invalid: cannot resolve it"),
])
def test_a_bad_option_is_one_line_and_exit_4(option: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from nbrules.cli import main

    assert main(["serve", *option]) == 4
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_a_port_in_use_is_one_line_and_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from nbrules.cli import EXIT_LISTEN, EXIT_RULES, main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == EXIT_LISTEN != EXIT_RULES
    assert capsys.readouterr().err == f"nbrules serve: cannot listen on 127.0.0.1 port {port}: the port is in use\n"


@pytest.mark.slow
def test_load_many_clients_no_errors_flat_memory(server: tuple[str, int]) -> None:
    url, pid = server
    run_load(url, clients=16, total=1500, seconds=60)  # warm-up: caches fill
    before = rss_mb(pid)
    report = run_load(url, clients=16, total=6000, seconds=120)
    grown = rss_mb(pid) - before
    assert report["errors"] == 0, report["first_errors"]
    assert report["requests"] == 6000
    assert grown < 15, f"server memory grew by {grown:.1f} MB"


def test_reference_served_with_row_anchors(server: tuple[str, int]) -> None:
    url, _ = server
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/reference/criteria.md")
    resp = conn.getresponse()
    page = resp.read().decode()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/html")
    assert '<a id="S9"></a>' in page and "<table>" in page
    status, ctype, body = call(url, "GET", "/reference/secrets.md")
    assert status == 404 and ctype.startswith("application/problem+json")


def test_cds_cards_link_the_cited_rows(server: tuple[str, int]) -> None:
    url, _ = server
    request = json.loads((FHIR / "ms-infant.json").read_text())
    status, _, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma", request)
    assert status == 200
    links = [link for card in body["cards"] for link in card.get("links", [])]
    assert {"label": "criteria.md S9", "url": f"{url}/reference/criteria.md#S9", "type": "absolute"} in links


def conforms(body: dict[str, Any]) -> None:
    """The CDS Hooks 2.0 response shape (specification, "CDS Service Response" and "Card
    Attributes"): cards required; each card's uuid, summary < 140 characters, indicator
    info/warning/critical, source with a label; links with label, url and type
    absolute/smart; no null attribute."""
    assert isinstance(body["cards"], list)
    for card in body["cards"]:
        assert isinstance(card["uuid"], str) and len(card["summary"]) < 140
        assert card["indicator"] in ("info", "warning", "critical") and isinstance(card["source"]["label"], str)
        assert all(v is not None for v in card.values()) and isinstance(card.get("detail", ""), str)
        for link in card.get("links", []):
            assert {"label", "url", "type"} <= set(link) and link["type"] in ("absolute", "smart")


def test_cds_hooks_2_conformance_with_the_specification_example(server: tuple[str, int]) -> None:
    url, _ = server
    spec = json.loads((FHIR / "cds-spec-patient-view.json").read_text())
    # Its fhirServer is a public sandbox: the prefetch lacks conditions and observations,
    # which the service would fetch from there; tests do not use the network (fetching is
    # tested on loopback in tests/test_fhir_fetch.py), so the request goes without it.
    spec = {k: v for k, v in spec.items() if k not in ("fhirServer", "fhirAuthorization")}
    # its prefetch key is the specification's own (patientToGreet), none of this service's
    # (GET /cds-services): a prefetch with none of them is a missing prefetch (CDS Hooks 2.0: 412)
    status, _, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma", spec)
    [entry] = body["errors"]
    assert status == 412 and entry["code"] == "NB743" and "patientToGreet" in entry["detail"]
    spec["prefetch"] = {"patient": spec["prefetch"]["patientToGreet"], "patientToGreet": spec["prefetch"]["patientToGreet"]}
    status, _, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma", spec)
    # its prefetch gives the Patient only: conditions and observations were not given, so
    # whether it has neuroblastoma is not known; one card says so, and no "no neuroblastoma"
    [card] = body["cards"]
    assert status == 200 and card["indicator"] == "warning" and "was not given" in card["summary"]
    assert "no diagnosis found in what was read" in card["summary"]
    assert sorted(line.split(": ")[0] for line in body["extension"]["nbrules"]["incomplete"]) == [
        "conditions", "observations"]
    assert {"resource": "prefetch 'patientToGreet'", "reason": "not a prefetch key of this service (patient, "
            "conditions, observations, riskAssessments); not read"} in body["extension"]["nbrules"]["notUsed"]
    conforms(body)
    for name in ("ms-infant.json", "mcode-neuroblastoma-stages.json", "l1-amplified-not-operated.json"):
        status, _, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma", json.loads((FHIR / name).read_text()))
        assert status == 200 and body["cards"]
        conforms(body)
    # no prefetch and no fhirServer to fetch from (fetching: tests/test_fhir_fetch.py)
    without = {k: v for k, v in spec.items() if k != "prefetch"}
    status, ctype, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma", without)
    assert status == 412 and ctype.startswith("application/problem+json") and "prefetch" in body["title"]
    [entry] = body["errors"]  # one entry per problem, as for every problem+json answer
    assert entry["code"] == "NB743" and entry["pointer"] == "/prefetch" and "no prefetch" in entry["detail"]
    assert call(url, "POST", "/cds-services/nbrules-neuroblastoma", {**without, "prefetch": {"patientToGreet": None}})[0] == 412


def test_cds_feedback_endpoint(server: tuple[str, int]) -> None:
    url, _ = server
    feedback = {"feedback": [{"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "accepted",
                              "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                              "outcomeTimestamp": "2020-12-11T00:00:00Z"}]}
    status, _, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma/feedback", feedback)
    assert status == 200 and body == {}
    status, _, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma/feedback", {"feedback": "yes"})
    assert status == 400


@pytest.mark.parametrize("total", ["13", -1])
def test_cds_a_malformed_bundle_total_is_answered_400_with_its_pointer(server: tuple[str, int], total: Any) -> None:
    # Bundle.total is an unsignedInt (FHIR R4); one that is not cannot tell a whole search
    # from one page of it, so no card may be definite: the request is refused
    url, _ = server
    request = json.loads((FHIR / "ms-infant.json").read_text())
    request["prefetch"]["observations"]["total"] = total
    status, ctype, body = call(url, "POST", "/cds-services/nbrules-neuroblastoma", request)
    assert status == 400 and ctype.startswith("application/problem+json")
    assert [e["pointer"] for e in body["errors"]] == ["/prefetch/observations/total"]
