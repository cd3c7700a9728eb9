"""The HTTP service (``nbrules serve``): Starlette on uvicorn.

Endpoints: ``POST /evaluate`` (one patient or a list), ``GET /decisions``,
``GET /health``, ``GET /openapi.json``, and CDS Hooks ``GET /cds-services`` /
``POST /cds-services/<package name>`` (``nbrules-neuroblastoma`` for the bundled
package), ``GET /reference/{name}`` (the criteria reference the rules in force cite,
as HTML with an anchor per row) and the workbench at ``/``.  Every error answer is in
the problem-details form (RFC 9457, ``application/problem+json``), 404, 405 and 500
included; bad input gets a 4xx answer with one entry per problem (at most 50, then
a count): JSON pointer, code, expected and found.  Bodies are limited in size and
lists in length; the body must arrive within ``body_timeout`` seconds (408), and
:func:`header_timeout_protocol` closes connections whose request headers do not.
A client that disconnects mid-upload costs one log line.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ._version import __version__
from .cds import OPTIONAL_KEYS, SERVICE_ID, cards_for, discovery, service_id
from .diagnostics import Diagnostic, problem_details
from .errors import PatientInputError
from .fhir import FhirMapping, load_mapping
from .loader import join_pointer
from .patient import DEFAULT_MAX_INPUT, MAX_PROBLEMS, parse_patient_json, shown
from .reference import render_reference
from .resources import read_schema
from .runtime import RuleEngine
from .validator import schema_problems, schema_validator
from .vocabulary import input_facts, patient_schema
from .workbench import workbench_routes

if TYPE_CHECKING:
    from .fhir_fetch import FetchLimits, FetchReport

__all__ = ["create_app", "openapi_document", "header_timeout_protocol", "DEFAULT_MAX_BODY", "DEFAULT_MAX_PATIENTS",
           "DEFAULT_HEADER_TIMEOUT", "DEFAULT_BODY_TIMEOUT"]

DEFAULT_MAX_BODY = DEFAULT_MAX_INPUT
DEFAULT_MAX_PATIENTS = 1000
#: Seconds a connection may take to send the request line and headers.
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds a request may take to send its whole body.
DEFAULT_BODY_TIMEOUT = 30.0
_PROBLEM = "application/problem+json"
_LOG = logging.getLogger("nbrules.service")
_CDS_CODES = {"type": "NB502", "unknown-key": "NB503", "enum": "NB504", "size": "NB505", "duplicate": "NB506",
              "format": "NB502", "required": "NB502"}


class _Disconnected(Exception):
    """The client went away before its request was read."""


class _Problem(Exception):
    def __init__(self, status: int, title: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or []


def _json(data: Any, status: int = 200, media_type: str = "application/json") -> Response:
    # backslashreplace: a lone surrogate (never expected here) is written as a JSON escape
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return Response(body, status_code=status, media_type=media_type)


def _problem(p: _Problem) -> Response:
    return _json(problem_details(p.status, p.title, p.errors), p.status, _PROBLEM)


def _errors(diags: tuple[Diagnostic, ...] | list[Diagnostic], prefix: str = "") -> list[dict[str, Any]]:
    return [d.to_problem(prefix) for d in diags]


async def _read(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Problem(413, f"the body is larger than the limit of {limit} bytes",
                           _errors([Diagnostic("NB509", f"expected at most {limit} bytes")]))
        chunks.append(chunk)
    return b"".join(chunks)


async def _body(request: Request, limit: int, timeout: float) -> Any:
    ctype = request.headers.get("content-type", "")
    if not ctype.split(";")[0].strip().lower().endswith("json"):
        raise _Problem(415, f"expected a JSON body (Content-Type: application/json), found '{ctype or 'none'}'")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Problem(413, f"the body is {declared} bytes; the limit is {limit}",
                       _errors([Diagnostic("NB509", f"expected at most {limit} bytes")]))
    try:
        raw = await asyncio.wait_for(_read(request, limit), timeout)
    except asyncio.TimeoutError:
        raise _Problem(408, f"the body did not arrive within {timeout:g} seconds",
                       _errors([Diagnostic("NB552", f"expected the whole body within {timeout:g} s")]))
    except ClientDisconnect:
        _LOG.warning("nbrules: client %s disconnected during the request body of %s %s",
                     request.client.host if request.client else "?", request.method, request.url.path)
        raise _Disconnected()
    data, problems = parse_patient_json(raw)
    if problems:
        raise _Problem(400, "the body is not valid JSON" if problems[0].code == "NB501" else "the body cannot be read",
                       _errors(problems))
    return data


def _guard(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except _Problem as p:
            return _problem(p)
        except _Disconnected:
            return Response(status_code=400)  # nobody is listening; nothing more is logged

    return wrapped


_TITLES = {404: "no such resource", 405: "method not allowed", 500: "internal error"}


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    title = _TITLES.get(status, exc.detail if isinstance(exc, HTTPException) else "error")
    if status == 404:
        detail = f"{request.method} {request.url.path}: no such resource; GET /openapi.json lists them"
    elif status == 405:
        detail = f"{request.url.path} does not answer {request.method}"
    elif status == 500:
        detail = "a defect in nbrules; the server log has the details"
    else:
        detail = str(exc.detail) if isinstance(exc, HTTPException) else title
    response = _problem(_Problem(status, title, [{"pointer": "", "code": "", "detail": detail}]))
    if isinstance(exc, HTTPException) and exc.headers:
        response.headers.update(exc.headers)
    return response


def header_timeout_protocol(seconds: float) -> type:
    """A uvicorn HTTP/1.1 protocol (h11) that closes a connection whose request line
    and headers have not all arrived ``seconds`` after the connection opened or the
    previous response ended (slow-header clients cannot hold connections open).
    Pass it as ``uvicorn.run(..., http=header_timeout_protocol(10))``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or bool(self.cycle.response_complete)

        def _arm(self) -> None:
            if self._header_timer is None and self._waiting_for_headers():
                self._header_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                _LOG.warning("nbrules: closed a connection whose request headers took more than %g s", seconds)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._arm()
            super().data_received(data)
            if not self._waiting_for_headers():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutH11


def openapi_document(engine: RuleEngine | None = None) -> dict[str, Any]:
    """OpenAPI 3.1 description of the service, with the patient schema generated from the
    vocabulary of the package in force embedded (the bundled one without ``engine``)."""
    facts = engine.build.package.facts if engine is not None else input_facts()
    package = engine.build.package if engine is not None else None
    patient = patient_schema(facts, package=f"{package.name} {package.version}" if package and package.name else "")
    patient.pop("$schema", None)
    cds = copy.deepcopy(read_schema("cds-request.schema.json"))
    cds.pop("$schema", None)
    cds.pop("$id", None)
    # OpenAPI resolves references from the document root: point them at the embedded $defs.
    text = json.dumps(cds).replace('"#/$defs/', '"#/components/schemas/CdsRequest/$defs/')
    cds = json.loads(text)
    problem = {"type": "object", "required": ["title", "status", "errors"], "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["pointer", "code", "detail"], "properties": {
            "pointer": {"type": "string", "description": "JSON pointer of the offending fact"},
            "code": {"type": "string"}, "name": {"type": "string"}, "detail": {"type": "string"},
            "hint": {"type": "string"}}}}}}
    result = {"type": "object", "description": "See README 'The result'.", "required": ["outputs", "fired"],
              "properties": {"outputs": {"type": "object"}, "indeterminate": {"type": "object"},
                             "not_applicable": {"type": "object"}, "fired": {"type": "array"},
                             "rulesets": {"type": "array"}, "input_sha256": {"type": "string"}}}
    bad = {"description": "Invalid input: one entry per problem, with its JSON pointer.",
           "content": {_PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "nbrules", "version": __version__,
                 "description": (package.title + ": " if package is not None and package.title else "")
                 + "decisions from cited, versioned rule files."},
        "paths": {
            "/evaluate": {"post": {
                "summary": "Evaluate one patient, or a list of patients",
                "parameters": [{"name": "profile", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "read the parameters as this profile of the package's parameters.yaml "
                                               "(the result names it); 400 when it is not declared"}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Patient"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Patient"}}]}}}},
                "responses": {
                    "200": {"description": "The result, or a list of results in the same order",
                            "content": {"application/json": {"schema": {"oneOf": [
                                {"$ref": "#/components/schemas/Result"},
                                {"type": "array", "items": {"$ref": "#/components/schemas/Result"}}]}}}},
                    "400": bad, "408": bad, "413": bad, "415": bad, "422": bad}}},
            "/decisions": {"get": {"summary": "Installed decisions: versions, status, hashes, which are in force",
                                   "responses": {"200": {"description": "decisions"}}}},
            "/health": {"get": {"summary": "Liveness, the rule files in force, and the last reload attempt "
                                           "(at, ok, changed, summary, problems; null before the first)",
                                "responses": {"200": {"description": "ok"}}}},
            "/cds-services": {"get": {"summary": "CDS Hooks discovery", "responses": {"200": {"description": "services"}}}},
            f"/cds-services/{service_id(engine) if engine is not None else SERVICE_ID}": {"post": {
                "summary": "CDS Hooks patient-view: FHIR R4 Patient, Condition, Observation in prefetch, or fetched "
                           "from fhirServer when it lies under the service's --fetch-from prefixes (default: none)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/CdsRequest"}}}},
                "responses": {"200": {"description": "cards"}, "400": bad, "408": bad, "412": bad, "413": bad,
                              "415": bad}}},
        },
        "components": {"schemas": {"Patient": patient, "Result": result, "Problem": problem, "CdsRequest": cds}},
    }


def create_app(engine: RuleEngine, *, mapping: FhirMapping | None = None, max_body: int = DEFAULT_MAX_BODY,
               max_patients: int = DEFAULT_MAX_PATIENTS, body_timeout: float = DEFAULT_BODY_TIMEOUT,
               fetch_from: Sequence[str] = (), fetch_limits: FetchLimits | None = None) -> Starlette:
    """The ASGI application around one engine (shared by all requests).

    ``fetch_from``: base-URL prefixes (``https://ehr.example.org/fhir/``) of the FHIR
    servers a CDS request's ``fhirServer`` may name for the service to fetch what its
    prefetch lacks (:func:`nbrules.fhir_fetch.allowed`); empty (the default): nothing
    is ever fetched, and a request whose prefetch is missing is answered 412 (NB742).
    Raises ValueError for a prefix that is not an http(s) base URL.  ``fetch_limits``
    bound what a CDS request may fetch (default :class:`nbrules.fhir_fetch.FetchLimits`)."""
    fetch_from = tuple(fetch_from)
    if fetch_from:
        from .fhir_fetch import prefix_problem

        for prefix in fetch_from:
            why = prefix_problem(prefix)
            if why is not None:
                raise ValueError(f"fetch_from: {prefix!r}: {why}")
    fhir = mapping or load_mapping(facts=engine.build.package.facts, outputs=engine.build.vocabulary)
    profiled: dict[tuple[str, int], RuleEngine] = {}
    profiled_lock = threading.Lock()

    def engine_for(profile: str | None) -> RuleEngine:
        """The engine itself, or one reading the parameters as ``profile`` (built once per rule set)."""
        if profile is None or profile == engine.profile:
            return engine
        build = engine.build
        if profile not in build.profiles:
            raise _Problem(400, f"no profile '{profile}'; profiles: {', '.join(build.profiles) or 'none'}")
        key = (profile, id(build))
        with profiled_lock:
            hit = profiled.get(key)
            if hit is None:
                for k in [k for k in profiled if k[1] != id(build)]:
                    profiled.pop(k).close()  # the rules were reloaded
                hit = profiled[key] = RuleEngine(build, use=engine.use, cache_size=engine.cache_size, profile=profile)
        return hit

    def evaluate_all(data: Any, profile: str | None = None) -> Response:
        chosen = engine_for(profile)
        single = not isinstance(data, list)
        patients = [data] if single else data
        if len(patients) > max_patients:
            raise _Problem(413, f"{len(patients)} patients in one request; the limit is {max_patients}")
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        more = 0
        for i, facts in enumerate(patients):
            try:
                results.append(chosen.evaluate(facts).to_dict())
            except PatientInputError as exc:
                found = _errors(exc.diagnostics, "" if single else f"/{i}")
                room = max(MAX_PROBLEMS - len(errors), 0)
                errors += found[:room]
                more += len(found) - len(found[:room])
        if more:
            errors += _errors([Diagnostic("NB550", f"{more} more problems not listed")])
        if errors:
            raise _Problem(422, "the patient record is invalid" if single else "some patient records are invalid",
                           errors)
        return _json(results[0] if single else results)

    @_guard
    async def evaluate(request: Request) -> Response:
        data = await _body(request, max_body, body_timeout)
        return await run_in_threadpool(evaluate_all, data, request.query_params.get("profile"))

    async def decisions(request: Request) -> Response:
        in_force = {d.key for d in engine.decisions}
        return _json({"decisions": [{
            "decision": d.id, "version": d.version, "status": d.status, "effective": d.effective, "title": d.title,
            "file": d.source.display, "sha256": d.sha256, "in_force": d.key in in_force,
            "outputs": {k: list(v) for k, v in d.decides.items()}} for d in engine.build.decisions]})

    async def health(request: Request) -> Response:
        # Always 200 while serving: a refused reload leaves the previous rules in force,
        # and last_reload says so (time, result and every problem).
        last = engine.last_reload
        return _json({"status": "ok", "engine": f"nbrules {__version__}",
                      "rulesets": [r.to_dict() for r in engine.rulesets], "knowledge": engine.knowledge.to_dict(),
                      "fhir_mapping_sha256": fhir.sha256,
                      "watching": engine.watching, "last_reload": last.to_dict() if last is not None else None})

    async def openapi(request: Request) -> Response:
        return _json(openapi_document(engine))

    async def cds_discovery(request: Request) -> Response:
        return _json(discovery(engine))

    @_guard
    async def cds_service(request: Request) -> Response:
        data = await _body(request, max_body, body_timeout)
        if not isinstance(data, dict):
            raise _Problem(400, "expected a CDS Hooks request object")
        problems: list[Diagnostic] = []
        if data.get("hook") != "patient-view":
            found = "no hook" if data.get("hook") is None else shown(repr(data.get("hook")))
            problems.append(Diagnostic("NB504", f"expected 'patient-view', found {found}", pointer="/hook"))
        prefetch = data.get("prefetch")
        server = data.get("fhirServer")
        if server is not None:
            from .fhir_fetch import server_problem

            why = server_problem(server)
            if why is not None:
                problems.append(Diagnostic("NB741", f"{why} (the base URL of a FHIR server), found {shown(repr(server))}",
                                           pointer="/fhirServer"))
        keys = [k for k in discovery(engine)["services"][0]["prefetch"] if k not in OPTIONAL_KEYS]
        # a prefetch holding none of the service's keys (all absent or null) is a missing prefetch
        missing = prefetch is None or (isinstance(prefetch, dict) and all(prefetch.get(k) is None for k in keys))
        if not problems and server is None and missing:
            # CDS Hooks 2.0: a service that cannot obtain the data it needs answers 412
            other = sorted(k for k in prefetch or {} if k not in keys) if isinstance(prefetch, dict) else []
            said = f"; it holds only keys this service does not ask for ({', '.join(other)})" if other else ""
            raise _Problem(412, "the prefetch of patient, conditions and observations (see /cds-services) is missing, "
                                "and no fhirServer is given to fetch them from", _errors([Diagnostic(
                                    "NB743", f"expected a prefetch with {', '.join(keys)}, or a fhirServer to fetch "
                                             f"them from; found {'no prefetch' if prefetch is None else 'none of them'}"
                                             + said, pointer="/prefetch",
                                    hint="send the prefetch the discovery document (GET /cds-services) asks for")]))
        if not problems and server is not None and missing and not _may_fetch(server):
            raise _Problem(412, "the prefetch of patient, conditions and observations (see /cds-services) is missing, "
                                "and this service may not fetch them from fhirServer", _errors([_refused(server)]))
        if prefetch is not None and not isinstance(prefetch, dict):
            problems.append(Diagnostic("NB502", "expected an object of prefetch results", pointer="/prefetch"))
        elif isinstance(prefetch, dict):
            for key, value in prefetch.items():
                if value is not None and not isinstance(value, dict):
                    problems.append(Diagnostic("NB502", "expected a FHIR resource or Bundle",
                                               pointer=join_pointer("/prefetch", key)))
        if not problems:  # the parts of the resources nbrules reads must have their FHIR types
            for p in schema_problems(schema_validator("cds-request.schema.json"), data):
                if len(problems) == MAX_PROBLEMS:
                    problems.append(Diagnostic("NB550", "further problems not listed"))
                    break
                problems.append(Diagnostic(_CDS_CODES[p.kind], p.message, pointer=p.pointer))
        if problems:
            raise _Problem(400, "invalid CDS Hooks request", _errors(problems))
        fetched = await _fetch(data, server) if server is not None else None
        base = str(request.base_url).rstrip("/")
        recorded = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return await run_in_threadpool(lambda: _json(cards_for(engine, fhir, data, reference_base=base,
                                                               recorded=recorded, fetched=fetched)))

    def _may_fetch(server: str) -> bool:
        """Whether ``fetch_from`` lets the service fetch from ``server``."""
        if not fetch_from:
            return False
        from .fhir_fetch import allowed

        return allowed(server, fetch_from)

    def _refused(server: str) -> Diagnostic:
        listed = f" ({', '.join(fetch_from)})" if fetch_from else " (empty: this service fetches from no server)"
        return Diagnostic("NB742", f"fhirServer {shown(repr(server))} is not under a prefix of the service's "
                                   f"--fetch-from list{listed}, so nothing is fetched from it", pointer="/fhirServer",
                          hint="send the data in prefetch, or start the service with `nbrules serve --fetch-from "
                               "<base URL of the FHIR server>` (Python: create_app(engine, fetch_from=[...]))")

    async def _fetch(data: dict[str, Any], server: str) -> FetchReport | None:
        """Complete ``data["prefetch"]`` from its fhirServer (in place) when ``fetch_from``
        allows it; 412 when nothing about the patient could be obtained at all.  Not
        allowed: the prefetch as given, each entry it lacks reported as incomplete."""
        from .fhir_fetch import FetchLimits, FetchReport, fetch_missing, needs_fetch

        templates = discovery(engine)["services"][0]["prefetch"]
        prefetch = data.get("prefetch") or {}
        todo = [k for k in sorted(templates) if needs_fetch(prefetch.get(k))]
        if not todo:
            return None
        if not _may_fetch(server):  # the keys the service needs are reported; an optional one is not needed
            why = _refused(server).message
            return FetchReport(incomplete=[f"{key}: not fetched: {why}" for key in todo if key not in OPTIONAL_KEYS])
        completed, report = await fetch_missing(data, templates, fetch_limits or FetchLimits())
        if not any(isinstance(v, dict) and v.get("resourceType") not in (None, "OperationOutcome")
                   for v in completed.values()):
            raise _Problem(412, "the data this service needs is not in the prefetch and could not be fetched from "
                                "fhirServer", _errors([Diagnostic("NB740", line, pointer="/fhirServer")
                                                       for line in report.failed + report.incomplete]))
        data["prefetch"] = completed
        return report

    @_guard
    async def cds_feedback(request: Request) -> Response:
        # CDS Hooks 2.0 feedback: acknowledged (200), checked for its shape, not stored
        data = await _body(request, max_body, body_timeout)
        if not isinstance(data, dict) or not isinstance(data.get("feedback"), list) or not all(
                isinstance(f, dict) and isinstance(f.get("card"), str) and isinstance(f.get("outcome"), str)
                for f in data["feedback"]):
            raise _Problem(400, "expected {\"feedback\": [{\"card\": <uuid>, \"outcome\": ...}, ...]}")
        return _json({})

    async def reference(request: Request) -> Response:
        name = request.path_params["name"]
        for d in engine.decisions:
            for ref in d.references.values():
                if ref.name == name:
                    return HTMLResponse(render_reference(ref))
        return _problem(_Problem(404, f"no reference document named {name!r} is cited by the rules in force"))

    return Starlette(exception_handlers={HTTPException: _http_error, Exception: _http_error}, routes=[
        *workbench_routes(engine),
        Route("/evaluate", evaluate, methods=["POST"]),
        Route("/decisions", decisions),
        Route("/health", health),
        Route("/openapi.json", openapi),
        Route("/cds-services", cds_discovery),
        Route(f"/cds-services/{service_id(engine)}", cds_service, methods=["POST"]),
        Route(f"/cds-services/{service_id(engine)}/feedback", cds_feedback, methods=["POST"]),
        Route("/reference/{name}", reference),
    ])
