"""The HTTP service (``nbrules serve``): Starlette on uvicorn.

Endpoints: ``POST /evaluate`` (one patient or a list), ``GET /decisions``,
``GET /health``, ``GET /openapi.json``, and CDS Hooks ``GET /cds-services`` /
``POST /cds-services/nbrules-neuroblastoma``.  Bad input gets a 4xx answer in the
problem-details form (RFC 9457) with one entry per problem: JSON pointer, code,
expected and found.  Bodies are limited in size and lists in length.
"""

from __future__ import annotations

import copy
import json
import threading
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._version import __version__
from .cds import SERVICE_ID, cards_for, discovery
from .diagnostics import Diagnostic
from .errors import PatientInputError
from .fhir import FhirMapping, load_mapping
from .loader import join_pointer
from .patient import parse_patient_json
from .resources import read_schema
from .runtime import RuleEngine

__all__ = ["create_app", "openapi_document", "DEFAULT_MAX_BODY", "DEFAULT_MAX_PATIENTS"]

DEFAULT_MAX_BODY = 1_048_576
DEFAULT_MAX_PATIENTS = 1000
_PROBLEM = "application/problem+json"


class _Problem(Exception):
    def __init__(self, status: int, title: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or []


def _json(data: Any, status: int = 200, media_type: str = "application/json") -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type=media_type)


def _problem(p: _Problem) -> Response:
    return _json({"type": "about:blank", "title": p.title, "status": p.status, "errors": p.errors}, p.status, _PROBLEM)


def _errors(diags: tuple[Diagnostic, ...] | list[Diagnostic], prefix: str = "") -> list[dict[str, Any]]:
    out = []
    for d in diags:
        e: dict[str, Any] = {"pointer": prefix + (d.pointer or ""), "code": d.code, "name": d.name, "detail": d.message}
        if d.hint:
            e["hint"] = d.hint
        out.append(e)
    return out


async def _body(request: Request, limit: int) -> Any:
    ctype = request.headers.get("content-type", "")
    if not ctype.split(";")[0].strip().lower().endswith("json"):
        raise _Problem(415, f"expected a JSON body (Content-Type: application/json), found '{ctype or 'none'}'")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Problem(413, f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Problem(413, f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    data, problems = parse_patient_json(b"".join(chunks))
    if problems:
        raise _Problem(400, "the body is not valid JSON", _errors(problems))
    return data


def _guard(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except _Problem as p:
            return _problem(p)

    return wrapped


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of the service, with the patient schema embedded."""
    patient = copy.deepcopy(read_schema("patient.schema.json"))
    patient.pop("$schema", None)
    patient.pop("$id", None)
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
                 "description": "Neuroblastoma staging and risk classification from cited, versioned rule files."},
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
                    "400": bad, "413": bad, "415": bad, "422": bad}}},
            "/decisions": {"get": {"summary": "Installed decisions: versions, status, hashes, which are in force",
                                   "responses": {"200": {"description": "decisions"}}}},
            "/health": {"get": {"summary": "Liveness and the rule files in force",
                                "responses": {"200": {"description": "ok"}}}},
            "/cds-services": {"get": {"summary": "CDS Hooks discovery", "responses": {"200": {"description": "services"}}}},
            f"/cds-services/{SERVICE_ID}": {"post": {
                "summary": "CDS Hooks patient-view: FHIR R4 Patient, Condition, Observation in prefetch",
                "responses": {"200": {"description": "cards"}, "400": bad, "413": bad, "415": bad}}},
        },
        "components": {"schemas": {"Patient": patient, "Result": result, "Problem": problem}},
    }


def create_app(engine: RuleEngine, *, mapping: FhirMapping | None = None, max_body: int = DEFAULT_MAX_BODY,
               max_patients: int = DEFAULT_MAX_PATIENTS) -> Starlette:
    """The ASGI application around one engine (shared by all requests)."""
    fhir = mapping or load_mapping()
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
        results, errors = [], []
        for i, facts in enumerate(patients):
            try:
                results.append(chosen.evaluate(facts).to_dict())
            except PatientInputError as exc:
                errors += _errors(exc.diagnostics, "" if single else f"/{i}")
        if errors:
            raise _Problem(422, "the patient record is invalid" if single else "some patient records are invalid",
                           errors)
        return _json(results[0] if single else results)

    @_guard
    async def evaluate(request: Request) -> Response:
        data = await _body(request, max_body)
        return await run_in_threadpool(evaluate_all, data, request.query_params.get("profile"))

    async def decisions(request: Request) -> Response:
        in_force = {d.key for d in engine.decisions}
        return _json({"decisions": [{
            "decision": d.id, "version": d.version, "status": d.status, "effective": d.effective, "title": d.title,
            "file": d.source.display, "sha256": d.sha256, "in_force": d.key in in_force,
            "outputs": {k: list(v) for k, v in d.decides.items()}} for d in engine.build.decisions]})

    async def health(request: Request) -> Response:
        return _json({"status": "ok", "engine": f"nbrules {__version__}",
                      "rulesets": [r.to_dict() for r in engine.rulesets], "fhir_mapping_sha256": fhir.sha256})

    async def openapi(request: Request) -> Response:
        return _json(openapi_document())

    async def cds_discovery(request: Request) -> Response:
        return _json(discovery())

    @_guard
    async def cds_service(request: Request) -> Response:
        data = await _body(request, max_body)
        if not isinstance(data, dict):
            raise _Problem(400, "expected a CDS Hooks request object")
        problems = []
        if data.get("hook") != "patient-view":
            problems.append({"pointer": "/hook", "code": "NB504", "detail": f"expected 'patient-view', found {data.get('hook')!r}"})
        prefetch = data.get("prefetch")
        if not isinstance(prefetch, dict) or not prefetch:
            problems.append({"pointer": "/prefetch", "code": "NB502",
                             "detail": "expected the prefetch of patient, conditions and observations (see /cds-services); "
                                       "this service does not query FHIR servers"})
        else:
            for key, value in prefetch.items():
                if value is not None and not isinstance(value, dict):
                    problems.append({"pointer": join_pointer("/prefetch", key), "code": "NB502",
                                     "detail": "expected a FHIR resource or Bundle"})
        if problems:
            raise _Problem(400, "invalid CDS Hooks request", problems)
        return await run_in_threadpool(lambda: _json(cards_for(engine, fhir, data)))

    async def index(request: Request) -> Response:
        return _json({"service": f"nbrules {__version__}", "endpoints": ["/evaluate", "/decisions", "/health",
                                                                          "/openapi.json", "/cds-services"]})

    return Starlette(routes=[
        Route("/", index),
        Route("/evaluate", evaluate, methods=["POST"]),
        Route("/decisions", decisions),
        Route("/health", health),
        Route("/openapi.json", openapi),
        Route("/cds-services", cds_discovery),
        Route(f"/cds-services/{SERVICE_ID}", cds_service, methods=["POST"]),
    ])
