"""The CDS service fetches what the prefetch lacks from the request's ``fhirServer``
(issue 12, point 4), tested against a real FHIR server on loopback: Medplum's FhirRouter
and MemoryRepository from the npm registry (``tests/fhir_server``: package.json with
pinned versions and package-lock.json; server.mjs is only the HTTP adapter, and checks
the bearer token).  ``.ci/run`` installs it with ``npm ci``; without it these tests skip,
and fail instead when NBRULES_REQUIRE_FHIR_SERVER is set (as in CI).

That server's search Bundles carry ``total`` but no ``next`` link, so paging by ``next``
is tested with ``next`` links a prefetch Bundle gives (followed on the real server), and
the server's own paging (``_count`` smaller than the matches) by the ``total`` check.
Network failures (timeout, refused connection) use plain sockets.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from nbrules import RuleEngine

httpx = pytest.importorskip("httpx")

from nbrules.fhir_fetch import FetchLimits, allowed, prefix_problem  # noqa: E402
from nbrules.service import create_app  # noqa: E402

HERE = Path(__file__).resolve().parent
SERVER_DIR = HERE / "fhir_server"
FHIR = HERE / "data" / "fhir"
TOKEN = "s3cret-test-token"
PATH = "/cds-services/nbrules-neuroblastoma"
MS_INFANT = json.loads((FHIR / "ms-infant.json").read_text())


def _seed(request: dict[str, Any]) -> dict[str, Any]:
    """The prefetch's resources as a Bundle to load into the FHIR server."""
    entries = []
    for value in request["prefetch"].values():
        entries += value.get("entry", []) if value.get("resourceType") == "Bundle" else [{"resource": value}]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of Medplum's FHIR server on loopback, holding the MS infant's record."""
    node = shutil.which("node")
    if node is None or not (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        why = ("the test FHIR server is not installed (node and `npm ci --prefix tests/fhir_server`, "
               "as .ci/run does)")
        if os.environ.get("NBRULES_REQUIRE_FHIR_SERVER"):
            pytest.fail(f"NBRULES_REQUIRE_FHIR_SERVER is set but {why}")
        pytest.skip(why)
    seed = tmp_path_factory.mktemp("fhir") / "seed.json"
    seed.write_text(json.dumps(_seed(MS_INFANT)))
    # Node 20 needs the flag for the WebSocket global @medplum/core refers to (22 has it).
    flags = ["--experimental-websocket"] if subprocess.run(
        [node, "-e", "process.exit(typeof WebSocket === 'undefined' ? 1 : 0)"]).returncode else []
    log = seed.with_name("server.log")
    with open(log, "w") as err:
        proc = subprocess.Popen([node, *flags, "server.mjs", str(seed), TOKEN], cwd=SERVER_DIR,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("listening "):
        proc.kill()
        proc.wait(timeout=30)
        pytest.fail(f"the test FHIR server did not start within 60 s: {line}{log.read_text()}")
    yield f"http://127.0.0.1:{int(line.split()[1])}"
    proc.terminate()
    proc.wait(timeout=30)


class Client:
    """The service in process (httpx's ASGI transport), with the given fetch limits.
    ``fetch_from`` as ``create_app``'s; None: each request's own (valid) ``fhirServer``
    is the one prefix, as ``nbrules serve --fetch-from <that URL>`` would allow it."""

    def __init__(self, engine: RuleEngine, fetch_from: tuple[str, ...] | None = None, **limits: Any) -> None:
        self.engine, self.fetch_from, self.limits = engine, fetch_from, FetchLimits(**limits)

    def post(self, path: str, json: Any) -> Any:
        allow = self.fetch_from
        if allow is None:
            server = json.get("fhirServer")
            allow = (server,) if isinstance(server, str) and prefix_problem(server) is None else ()
        app = create_app(self.engine, fetch_from=allow, fetch_limits=self.limits)

        async def go() -> Any:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nbrules") as c:
                return await c.post(path, json=json)

        return asyncio.run(go())


@pytest.fixture(scope="module")
def client(engine: RuleEngine) -> Callable[..., Client]:
    return lambda **options: Client(engine, **options)


def without_prefetch(server: Any, token: str | None = TOKEN, **changes: Any) -> dict[str, Any]:
    request = {k: v for k, v in copy.deepcopy(MS_INFANT).items() if k != "prefetch"}
    request["fhirServer"] = server
    if token is not None:
        request["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                        "scope": "patient/*.read", "subject": "nbrules"}
    return {**request, **changes}


def summaries(body: dict[str, Any]) -> list[str]:
    return [c["summary"] for c in body["cards"]]


def test_a_request_without_prefetch_is_answered_from_the_fhir_server(
        fhir_server: str, client: Callable[..., Client]) -> None:
    c = client()
    fetched = c.post(PATH, json=without_prefetch(fhir_server))
    assert fetched.status_code == 200, fetched.text
    body = fetched.json()
    # MS: metastases confined to skin and liver, age at diagnosis 183 days (< 18 months):
    # the INRGSS (Monclair 2009) as in the prefetched request.
    assert any("INRGSS stage MS" in s and "C133431" in s for s in summaries(body)), summaries(body)
    assert body["extension"]["nbrules"]["age"]["days"] == 183
    prefetched = c.post(PATH, json=MS_INFANT).json()
    assert summaries(body) == summaries(prefetched)
    record = body["extension"]["nbrules"]
    assert record["failedFetches"] == [] and record["incomplete"] == []
    assert [(f["key"], f["status"], f["entries"]) for f in record["fetched"]] == [
        ("conditions", "complete", 1), ("observations", "complete", 12), ("patient", "complete", 1),
        ("riskAssessments", "complete", 0)]  # optional: results nbrules wrote back (none in the seed)
    assert record["fetched"][0]["url"] == f"{fhir_server}/Condition?patient=p1"
    assert "prefetch" not in "".join(summaries(body)).lower()


def test_only_what_the_prefetch_lacks_is_fetched(fhir_server: str, client: Callable[..., Client]) -> None:
    request = copy.deepcopy(MS_INFANT)
    observations = request["prefetch"].pop("observations")
    request["prefetch"]["conditions"] = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "timeout", "diagnostics": "the EHR's prefetch timed out"}]}
    request.update(fhirServer=fhir_server, fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"})
    body = client().post(PATH, json=request).json()
    assert [f["key"] for f in body["extension"]["nbrules"]["fetched"]] == ["conditions", "observations", "riskAssessments"]
    assert body["extension"]["nbrules"]["failedFetches"] == []  # the failed prefetch was fetched anew
    assert any("INRGSS stage MS" in s for s in summaries(body))
    assert len(observations["entry"]) == body["extension"]["nbrules"]["fetched"][1]["entries"]


def test_the_bearer_token_is_sent_and_a_refusal_is_a_failed_fetch(
        fhir_server: str, client: Callable[..., Client]) -> None:
    for token in ("wrong-token", None):
        answer = client().post(PATH, json=without_prefetch(fhir_server, token))
        assert answer.status_code == 412, answer.text  # nothing could be fetched at all
        problem = answer.json()
        assert [(e["pointer"], e["code"], e["name"]) for e in problem["errors"]] == [
            ("/fhirServer", "NB740", "fhir-fetch-failed")] * 4
        assert all("HTTP 401" in e["detail"] and "login" in e["detail"] for e in problem["errors"])
        assert TOKEN not in answer.text and "wrong-token" not in answer.text


def test_a_failed_read_is_reported_as_failed_not_as_facts_the_record_lacks(
        fhir_server: str, client: Callable[..., Client]) -> None:
    request = without_prefetch(fhir_server, context={"userId": "Practitioner/example", "patientId": "nobody"})
    answer = client().post(PATH, json=request)
    assert answer.status_code == 200  # the searches answered (empty); the Patient read failed
    body = answer.json()
    assert body["extension"]["nbrules"]["failedFetches"] == [
        f"patient: fetching {fhir_server}/Patient/nobody from fhirServer failed: "
        "HTTP 404, OperationOutcome: error not-found: Not found"]
    [card] = body["cards"]  # not "no neuroblastoma": the record could not be read whole
    assert card["indicator"] == "warning" and "not-found" in card["detail"]
    assert "does not give" not in card["detail"]


def test_the_servers_own_paging_is_not_taken_as_the_whole_record(
        fhir_server: str, client: Callable[..., Client]) -> None:
    body = client(page_size=5).post(PATH, json=without_prefetch(fhir_server)).json()
    record = body["extension"]["nbrules"]
    observations = next(f for f in record["fetched"] if f["key"] == "observations")
    assert observations["url"].endswith("Observation?patient=p1&_count=5")
    assert observations["status"] == "incomplete" and observations["entries"] == 5
    assert record["incomplete"] == ["observations: fetched from fhirServer, incomplete: the server counts 12 "
                                    "matches but delivered 5 and gives no next link to the rest"]
    missing = body["cards"][-1]
    assert "read incompletely" in missing["summary"] and "could not be fetched" not in missing["summary"]
    assert "Facts the record does not give" not in missing["detail"]
    # the incompleteness comes first; the list facts of that search are unknown, not the
    # items of one page (a later page may hold a bone site, which makes MS into M:
    # INRGSS, Monclair 2009, criteria.md S9), and no result is offered for the chart
    first = body["cards"][0]
    assert "read incompletely" in first["summary"] and "12 matches" in first["detail"]
    assert "metastatic_sites" in record["partial"] and "inrgss_stage" not in record.get("recorded", {})
    assert all(c["indicator"] == "warning" and "suggestions" not in c for c in body["cards"])


def test_next_links_are_followed_on_the_fhir_server(fhir_server: str, client: Callable[..., Client]) -> None:
    request = copy.deepcopy(MS_INFANT)
    first = request["prefetch"]["observations"]
    rest = first["entry"][6:]
    first["entry"] = first["entry"][:6]
    first["link"] = [{"relation": "next", "url": f"{fhir_server}/Observation?patient=p1&_offset=6&_count=100"}]
    request.update(fhirServer=fhir_server, fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"})
    body = client().post(PATH, json=request).json()
    [obs] = [f for f in body["extension"]["nbrules"]["fetched"] if f["key"] == "observations"]
    assert (obs["key"], obs["status"], obs["pages"], obs["entries"]) == ("observations", "complete", 2, 12)
    assert obs["requested"] == [f"{fhir_server}/Observation?patient=p1&_offset=6&_count=100"]  # the next link followed
    assert len(rest) == 6 and body["extension"]["nbrules"]["incomplete"] == []
    assert summaries(body) == summaries(client().post(PATH, json=MS_INFANT).json())
    # a next link the server rejects: an OperationOutcome, reported with its words
    first["link"] = [{"relation": "next", "url": f"{fhir_server}/Observation?date=not-a-date"}]
    body = client().post(PATH, json=request).json()
    assert body["extension"]["nbrules"]["incomplete"] == [
        "observations: fetched from fhirServer, incomplete: page 2 failed: HTTP 400, OperationOutcome: "
        "error invalid: Invalid format for date search parameter: not-a-date"]
    # a next link to another server is not followed: the token stays with fhirServer
    first["link"] = [{"relation": "next", "url": "http://elsewhere.example/fhir/Observation?page=2"}]
    body = client().post(PATH, json=request).json()
    assert body["extension"]["nbrules"]["incomplete"] == [
        "observations: fetched from fhirServer, incomplete: a next link points outside fhirServer "
        "(http://elsewhere.example/fhir/Observation?page=2); it was not followed"]
    # the trial's case: 6 of 12 read, the rest behind a link not followed: the list facts of
    # that search (metastatic sites) are unknown, so no stage or risk is definite or offered
    assert "metastatic_sites" in body["extension"]["nbrules"]["partial"]
    assert "read incompletely" in body["cards"][0]["summary"]
    assert all(c["indicator"] == "warning" and "suggestions" not in c for c in body["cards"])


def test_limits_are_reported_when_hit(fhir_server: str, client: Callable[..., Client]) -> None:
    body = client(entries=8).post(PATH, json=without_prefetch(fhir_server)).json()
    assert any("stopped at the limit of 8 entries per search" in i for i in body["extension"]["nbrules"]["incomplete"])
    request = copy.deepcopy(MS_INFANT)
    request["prefetch"]["observations"]["link"] = [{"relation": "next", "url": f"{fhir_server}/Observation?patient=p1"}]
    request.update(fhirServer=fhir_server, fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"})
    body = client(pages=1).post(PATH, json=request).json()
    assert body["extension"]["nbrules"]["incomplete"] == [
        "observations: fetched from fhirServer, incomplete: stopped after 1 pages (the limit per search); "
        "more were offered"]
    body = client(bytes=2000).post(PATH, json=without_prefetch(fhir_server)).json()
    assert body["extension"]["nbrules"]["failedFetches"] == [  # the Patient and the Condition are smaller
        f"observations: fetching {fhir_server}/Observation?patient=p1 from fhirServer failed: "
        "stopped at the limit of 2000 bytes per fetch"]


def test_a_server_that_does_not_answer_in_time_is_a_failed_fetch(client: Callable[..., Client]) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept connections, never answer
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = silent.getsockname()[1]
        answer = client(seconds=1.0).post(PATH, json=without_prefetch(f"http://127.0.0.1:{port}/fhir"))
        assert answer.status_code == 412
        assert all("time limit" in e["detail"] for e in answer.json()["errors"]), answer.text
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        silent.close()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    answer = client().post(PATH, json=without_prefetch(f"http://127.0.0.1:{port}"))
    assert answer.status_code == 412 and all("cannot reach the FHIR server" in e["detail"]
                                             for e in answer.json()["errors"])


def test_bad_fhir_server_and_authorization_are_400(client: Callable[..., Client]) -> None:
    for bad in ("file:///etc/passwd", "http://", "http://[::1", "https://ehr example/fhir", "http://h:99999",
                "http://h/fhir?x=1", 42):
        answer = client().post(PATH, json=without_prefetch(bad))
        assert answer.status_code == 400, bad
        assert [(e["pointer"], e["code"], e["name"]) for e in answer.json()["errors"]] == [
            ("/fhirServer", "NB741", "fhir-server-not-url")]
    request = without_prefetch("http://127.0.0.1:9")
    request["fhirAuthorization"]["token_type"] = "Basic"
    answer = client().post(PATH, json=request)
    assert answer.status_code == 400 and answer.json()["errors"][0]["pointer"] == "/fhirAuthorization/token_type"


# -- fetching is opt-in: --fetch-from / create_app(fetch_from=...) ---------------------------

EHR = "https://ehr.example.org/fhir/"


@pytest.mark.parametrize("server, admitted", [
    ("https://ehr.example.org/fhir", True),
    ("https://ehr.example.org/fhir/", True),
    ("https://ehr.example.org/fhir/R4", True),
    ("HTTPS://EHR.Example.ORG:443/fhir/R4/", True),  # scheme and host in any case, the default port written
    ("https://ehr.example.org./fhir", True),  # the fully qualified name, with its root dot
    ("https://ehr.example.org//fhir/./R4", True),
    ("https://ehr.example.org.evil.com/fhir", False),  # look-alike host that a string prefix would pass
    ("https://ehr.example.org.evil.com/fhir/", False),
    ("https://evil.com/ehr.example.org/fhir/", False),
    ("https://xehr.example.org/fhir", False),
    ("https://api.ehr.example.org/fhir", False),
    ("https://ehr.example.org:8443/fhir", False),  # another port
    ("http://ehr.example.org/fhir", False),  # another scheme
    ("http://ehr.example.org:443/fhir", False),
    ("https://ehr.example.org/fhirx", False),  # the path only begins alike
    ("https://ehr.example.org/", False),
    ("https://ehr.example.org/fhir/../admin", False),  # escapes the prefix
    ("https://ehr.example.org/fhir/%2e%2e/admin", False),
    ("https://ehr.example.org/fhir/%252e%252e/admin", False),
    ("https://ehr.example.org/fhir%2F..%2Fadmin", False),
    ("https://ehr.example.org/fhir/..%5Cadmin", False),
    ("https://ehr.example.org@evil.com/fhir", False),  # user information: the host is evil.com
    ("https://user@ehr.example.org/fhir", False),
])
def test_allowed_compares_scheme_host_port_and_path_segments(server: str, admitted: bool) -> None:
    assert allowed(server, [EHR]) is admitted
    assert allowed(server, ["https://other.example/", EHR]) is admitted  # any prefix of the list
    assert allowed(server, []) is False


def test_a_prefix_without_path_admits_the_whole_origin_and_bad_prefixes_are_refused(engine: RuleEngine) -> None:
    assert allowed("https://ehr.example.org/any/base", ["https://ehr.example.org"])
    assert not allowed("https://ehr.example.org.evil.com/", ["https://ehr.example.org"])
    for bad in ("ftp://ehr.example.org/", "https://", "https://ehr.example.org/fhir?x=1", "https://u:p@ehr.example.org/",
                "https://ehr.example.org/../", "ehr.example.org/fhir"):
        assert prefix_problem(bad) is not None, bad
        with pytest.raises(ValueError, match="fetch_from"):
            create_app(engine, fetch_from=[bad])


class Listener:
    """A loopback socket that counts the connections made to it (and never answers)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/fhir"
        self.made: list[socket.socket] = []

    def connections(self) -> int:
        while True:
            try:
                self.made.append(self.sock.accept()[0])
            except BlockingIOError:
                return len(self.made)

    def close(self) -> None:
        for s in self.made:
            s.close()
        self.sock.close()


@pytest.fixture()
def listener() -> Iterator[Listener]:
    it = Listener()
    yield it
    it.close()


def test_fetching_is_off_by_default_and_nothing_is_contacted(engine: RuleEngine, listener: Listener) -> None:
    default = Client(engine, fetch_from=())  # create_app's default: no --fetch-from
    answer = default.post(PATH, json=without_prefetch(listener.url))
    assert answer.status_code == 412, answer.text
    [entry] = answer.json()["errors"]
    assert (entry["pointer"], entry["code"], entry["name"]) == ("/fhirServer", "NB742", "fhir-server-not-allowed")
    assert "--fetch-from" in entry["detail"] and "--fetch-from" in entry["hint"]
    assert TOKEN not in answer.text
    # some prefetch: answered from it, the entries it lacks reported as incomplete (not fetched)
    request = copy.deepcopy(MS_INFANT)
    del request["prefetch"]["observations"]
    request.update(fhirServer=listener.url, fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"})
    answer = default.post(PATH, json=request)
    assert answer.status_code == 200, answer.text
    record = answer.json()["extension"]["nbrules"]
    [line] = record["incomplete"]
    assert line.startswith("observations: not fetched: fhirServer") and "--fetch-from" in line
    assert "fetched" not in record and record["failedFetches"] == []
    assert "could not be fetched" in answer.json()["cards"][-1]["summary"]
    # a complete prefetch needs nothing fetched: the same answer as without fhirServer
    complete = {**copy.deepcopy(MS_INFANT), "fhirServer": listener.url}
    assert summaries(default.post(PATH, json=complete).json()) == summaries(default.post(PATH, json=MS_INFANT).json())
    assert listener.connections() == 0  # no connection was ever attempted


def test_only_a_listed_fhir_server_is_fetched_from(fhir_server: str, engine: RuleEngine) -> None:
    port = int(fhir_server.rsplit(":", 1)[1])
    listed = Client(engine, fetch_from=("https://ehr.example.org/fhir/", f"{fhir_server}/"))
    answer = listed.post(PATH, json=without_prefetch(fhir_server))
    assert answer.status_code == 200, answer.text
    assert [f["status"] for f in answer.json()["extension"]["nbrules"]["fetched"]] == ["complete"] * 4
    for prefix, server in [
            (f"http://127.0.0.1:{port + 1}/", fhir_server),  # another port
            (f"https://127.0.0.1:{port}/", fhir_server),  # another scheme
            (f"http://localhost:{port}/", fhir_server),  # hosts are compared by name, not resolved
            (f"{fhir_server}/fhir/", fhir_server),  # the server's root is not under the prefix
            (f"{fhir_server}/", f"http://127.0.0.1.evil.invalid:{port}/")]:  # a look-alike host
        answer = Client(engine, fetch_from=(prefix,)).post(PATH, json=without_prefetch(server))
        assert answer.status_code == 412, (prefix, server, answer.text)
        assert [(e["code"], e["name"]) for e in answer.json()["errors"]] == [("NB742", "fhir-server-not-allowed")]
        assert prefix in answer.json()["errors"][0]["detail"]


def test_a_request_to_an_allowed_server_does_connect(engine: RuleEngine, listener: Listener) -> None:
    """The converse of the default-off test: the listener does see the connections."""
    answer = Client(engine, fetch_from=(listener.url,), seconds=0.5).post(PATH, json=without_prefetch(listener.url))
    assert answer.status_code == 412 and all(e["code"] == "NB740" for e in answer.json()["errors"])
    assert listener.connections() > 0


@pytest.mark.parametrize("argv, expected", [
    (["--fetch-from", "https://ehr.example.org.evil.com@ehr.example.org/fhir/"], "without user information"),
    (["--fetch-from", "ehr.example.org/fhir"], "expected an http:// or https:// URL"),
    (["--fetch-from", "https://ehr.example.org/fhir?_format=json"], "without query or fragment"),
    (["--fetch-timeout", "5"], "--fetch-timeout applies only with --fetch-from"),
    (["--fetch-from", EHR, "--fetch-timeout", "0"], "--fetch-timeout: 0 is not a positive number of seconds"),
])
def test_bad_fetch_options_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    from nbrules.cli import main

    code = main(["serve", "--port", "0", *argv])
    out, err = capsys.readouterr()
    assert code == 4 and out == "", err
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_serve_help_names_the_fetch_options(capsys: pytest.CaptureFixture[str]) -> None:
    from nbrules.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--fetch-from PREFIX" in text and "default: never fetch" in text and "--fetch-timeout SECONDS" in text


@pytest.mark.slow
def test_the_served_service_fetches_nothing_by_default(listener: Listener) -> None:
    """``nbrules serve`` as benchmarks/load_test.py starts it for the schemathesis run
    (tests/test_api_fuzz.py): whatever fhirServer a request names, nothing is contacted;
    with --fetch-from naming it, it is."""
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    from load_test import start_server

    proc, url = start_server()
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            answer = http.post(PATH, json=without_prefetch(listener.url))
            partial = copy.deepcopy(MS_INFANT)
            partial["prefetch"]["conditions"] = None
            partial["fhirServer"] = listener.url
            answered = http.post(PATH, json=partial)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert answer.status_code == 412 and answer.json()["errors"][0]["code"] == "NB742", answer.text
    assert answered.status_code == 200 and any(
        line.startswith("conditions: not fetched") for line in answered.json()["extension"]["nbrules"]["incomplete"])
    assert listener.connections() == 0
    # the options reach the service: --fetch-from admits the listener, --fetch-timeout bounds the wait
    proc, url = start_server("--fetch-from", listener.url, "--fetch-timeout", "0.5")
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            answer = http.post(PATH, json=without_prefetch(listener.url))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert answer.status_code == 412 and all(
        e["code"] == "NB740" and "time limit of 0.5 s" in e["detail"] for e in answer.json()["errors"]), answer.text
    assert listener.connections() > 0


def test_a_patient_id_cannot_move_the_fetch_out_of_fhir_server(engine: RuleEngine, listener: Listener) -> None:
    allowed_listener = Client(engine, fetch_from=(listener.url,))
    for patient in ("../../admin", "..%2F..%2Fadmin", "..", "p1?x=", "p 1"):
        request = without_prefetch(listener.url, context={"userId": "Practitioner/example", "patientId": patient})
        answer = allowed_listener.post(PATH, json=request)
        assert answer.status_code == 412, answer.text
        assert all(e["code"] == "NB740" and "is not a FHIR id" in e["detail"] for e in answer.json()["errors"])
    assert listener.connections() == 0


def test_cds_problem_entries_have_the_shape_of_the_rest_of_the_service(client: Callable[..., Client]) -> None:
    """Every entry as Diagnostic.to_problem() makes it: pointer, code, its name, detail."""
    from nbrules.diagnostics import CODES

    request = copy.deepcopy(MS_INFANT)
    request["hook"] = "order-sign"
    request["prefetch"]["conditions"] = "a string"
    answer = client().post(PATH, json=request)
    assert answer.status_code == 400
    entries = answer.json()["errors"]
    assert [(e["pointer"], e["code"]) for e in entries] == [("/hook", "NB504"), ("/prefetch/conditions", "NB502")]
    request = copy.deepcopy(MS_INFANT)
    request["prefetch"]["patient"]["birthDate"] = 20230101  # a FHIR date is a string
    answer = client().post(PATH, json=request)
    assert answer.status_code == 400
    entries += answer.json()["errors"]
    assert entries[-1]["pointer"] == "/prefetch/patient/birthDate"
    for e in entries:
        assert set(e) <= {"pointer", "code", "name", "detail", "hint"} and e["name"] == CODES[e["code"]].name, e


def test_results_written_back_to_the_fhir_server_are_read_back_as_results(
        fhir_server: str, client: Callable[..., Client]) -> None:
    # The trial (finding 1) on a real FHIR server: a patient of its own (created here, so
    # the MS infant of the other tests is untouched), the cards' suggestions accepted, then
    # a bone metastasis recorded.  Bone is outside the MS pattern: M (criteria.md S9,
    # Monclair 2009), INSS 4 (Brodeur 1993); what was written back is then out of date.
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}

    def create(resource: dict[str, Any]) -> dict[str, Any]:
        resource = {k: v for k, v in resource.items() if k != "id"}
        answer = httpx.post(f"{fhir_server}/{resource['resourceType']}", json=resource, headers=auth)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    patient = create(MS_INFANT["prefetch"]["patient"])["id"]
    ref = {"reference": f"Patient/{patient}"}
    for key in ("conditions", "observations"):
        for e in MS_INFANT["prefetch"][key]["entry"]:
            create({**e["resource"], "subject": ref})
    request = without_prefetch(fhir_server, context={"userId": "Practitioner/example", "patientId": patient})
    first = client().post(PATH, json=request).json()
    accepted = [a["resource"] for c in first["cards"] for s in c.get("suggestions", []) for a in s["actions"]
                if a["resource"]["resourceType"] != "Provenance"]
    assert {r["resourceType"] for r in accepted} == {"Observation", "RiskAssessment"}
    for resource in accepted:
        create(resource)
    again = client().post(PATH, json=request).json()
    assert summaries(again) == summaries(first) and not any("suggestions" in c for c in again["cards"])
    assert set(again["extension"]["nbrules"]["recorded"]) == {r["meta"]["tag"][0]["code"] for r in accepted}
    create({**MS_INFANT["prefetch"]["observations"]["entry"][1]["resource"], "subject": ref,
            "valueCodeableConcept": {"coding": [{"system": "http://nbrules.dev/fhir/CodeSystem/facts", "code": "bone"}]}})
    after = client().post(PATH, json=request).json()
    stage = next(c for c in after["cards"] if "INRGSS stage" in c["summary"])
    assert "INRGSS stage M (" in stage["summary"] and stage["indicator"] == "warning"
    assert "Out of date: the record holds INRGSS stage MS" in stage["detail"]
    assert any("INSS stage 4" in s and "4S" not in s for s in summaries(after))
    assert not any("very low" in c["summary"] or "stage MS" in c["summary"]
                   for c in after["cards"] if c["indicator"] == "info")
