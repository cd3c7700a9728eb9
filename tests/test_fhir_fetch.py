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
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from nbrules import RuleEngine

httpx = pytest.importorskip("httpx")

from nbrules.fhir_fetch import FetchLimits  # noqa: E402
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
    """The service in process (httpx's ASGI transport), with the given fetch limits."""

    def __init__(self, engine: RuleEngine, **limits: Any) -> None:
        self.app = create_app(engine, fetch_limits=FetchLimits(**limits))

    def post(self, path: str, json: Any) -> Any:
        async def go() -> Any:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://nbrules") as c:
                return await c.post(path, json=json)

        return asyncio.run(go())


@pytest.fixture(scope="module")
def client(engine: RuleEngine) -> Callable[..., Client]:
    return lambda **limits: Client(engine, **limits)


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
        ("conditions", "complete", 1), ("observations", "complete", 12), ("patient", "complete", 1)]
    assert record["fetched"][0]["url"] == f"{fhir_server}/Condition?patient=p1"
    assert "prefetch" not in "".join(summaries(body)).lower()


def test_only_what_the_prefetch_lacks_is_fetched(fhir_server: str, client: Callable[..., Client]) -> None:
    request = copy.deepcopy(MS_INFANT)
    observations = request["prefetch"].pop("observations")
    request["prefetch"]["conditions"] = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "timeout", "diagnostics": "the EHR's prefetch timed out"}]}
    request.update(fhirServer=fhir_server, fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"})
    body = client().post(PATH, json=request).json()
    assert [f["key"] for f in body["extension"]["nbrules"]["fetched"]] == ["conditions", "observations"]
    assert body["extension"]["nbrules"]["failedFetches"] == []  # the failed prefetch was fetched anew
    assert any("INRGSS stage MS" in s for s in summaries(body))
    assert len(observations["entry"]) == body["extension"]["nbrules"]["fetched"][1]["entries"]


def test_the_bearer_token_is_sent_and_a_refusal_is_a_failed_fetch(
        fhir_server: str, client: Callable[..., Client]) -> None:
    for token in ("wrong-token", None):
        answer = client().post(PATH, json=without_prefetch(fhir_server, token))
        assert answer.status_code == 412, answer.text  # nothing could be fetched at all
        problem = answer.json()
        assert [e["code"] for e in problem["errors"]] == ["NB740"] * 3
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
    assert "could not be fetched" in missing["summary"] and "Facts the record does not give" not in missing["detail"]


def test_next_links_are_followed_on_the_fhir_server(fhir_server: str, client: Callable[..., Client]) -> None:
    request = copy.deepcopy(MS_INFANT)
    first = request["prefetch"]["observations"]
    rest = first["entry"][6:]
    first["entry"] = first["entry"][:6]
    first["link"] = [{"relation": "next", "url": f"{fhir_server}/Observation?patient=p1&_offset=6&_count=100"}]
    request.update(fhirServer=fhir_server, fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"})
    body = client().post(PATH, json=request).json()
    [obs] = body["extension"]["nbrules"]["fetched"]
    assert (obs["key"], obs["status"], obs["pages"], obs["entries"]) == ("observations", "complete", 2, 12)
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
        assert [(e["pointer"], e["code"]) for e in answer.json()["errors"]] == [("/fhirServer", "NB741")]
    request = without_prefetch("http://127.0.0.1:9")
    request["fhirAuthorization"]["token_type"] = "Basic"
    answer = client().post(PATH, json=request)
    assert answer.status_code == 400 and answer.json()["errors"][0]["pointer"] == "/fhirAuthorization/token_type"
