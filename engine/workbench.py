"""The review and evaluation workbench of ``nbrules serve``, at ``/``.

Server-rendered pages (Jinja2 templates in ``templates/``, no JavaScript, nothing
fetched from elsewhere), so every page is a plain link that can be shared:

* ``/``: every installed decision, with version, status, effective date, whether it
  is in force, file and sha256;
* ``/ui/decisions/{id}``: the decision's table (:mod:`nbrules.tables`) as clinicians
  read criteria tables, under parameter readings chosen on the page
  (``?version=1.0.0&p.mki_high_min_count=200``);
* ``/ui/evaluate``: a patient form generated from the facts vocabulary in force;
  submitting it (a GET, so the result page's address shares the patient) shows each
  output, the candidates of indeterminate ones with links that fill in a settling
  fact, the rules that fired linked to their table rows, and the warnings;
  ``/ui/evaluate.json`` downloads the result document;
* ``/ui/versions/{id}?old=&new=``: two versions side by side: the text changes, the
  impact on the cells of the input domain, and (uploaded in the page, at most
  :data:`MAX_COHORT_BYTES`) the impact on a cohort file, with example patients.

Bad input is never an exception page: a value out of range shows the message the
JSON API gives for it (the same diagnostic).
"""

from __future__ import annotations

import datetime
import io
import json
import math
from itertools import islice
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .cohort import CohortFormatError, read_rows
from .diagnostics import Diagnostic, did_you_mean, problem_details
from .patient import shown
from .diff import diff_cohort, diff_decisions
from .errors import PatientInputError
from .explain import pending_given
from .model import Decision
from .protocols import Evaluator
from .reference import anchor_id
from .render import templates
from .results import Result
from .runtime import RuleEngine
from .tables import Cite, decision_table, fact_title, value_label
from .vocabulary import FactSpec

__all__ = ["workbench_routes", "form_facts", "MAX_COHORT_BYTES"]

#: Largest cohort file the versions page accepts (bytes).
MAX_COHORT_BYTES = 2 * 1024 * 1024
#: Days in a month and a year, for ages entered in months or years (completed days).
_DAYS_PER_YEAR = 365.25

_UNITS = ("days", "months", "years")


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates().get_template(name).render(static=False, **context)
    return HTMLResponse(html, status_code=status)


def _cite_href(c: Cite) -> str:
    assert c.reference is not None
    return f"/reference/{c.reference.name}" + (f"#{anchor_id(c.locator)}" if c.locator else "")


def _doc_href(ref: Any) -> str:
    return f"/reference/{ref.name}"


# -- the patient form ----------------------------------------------------------------


def _age_days(params: Mapping[str, str], name: str) -> tuple[Any, str | None]:
    """An age fact entered as an amount with a unit, or as two dates (birth, diagnosis)."""
    born, seen = params.get(f"{name}.born", ""), params.get(f"{name}.on", "")
    if born or seen:
        try:
            days = (datetime.date.fromisoformat(seen) - datetime.date.fromisoformat(born)).days
        except ValueError:
            return None, "expected two dates as YYYY-MM-DD (birth and diagnosis)"
        return days, None
    raw = params.get(name, "").strip()
    unit = params.get(f"{name}.unit", "days") or "days"
    if unit not in _UNITS:
        return None, f"expected the unit of {name} to be days, months or years, found '{shown(unit)}'"
    if not raw:
        return None, None
    if unit == "days":
        return _number(raw, "integer"), None
    try:
        amount = float(raw)
    except ValueError:
        return raw, None
    if not math.isfinite(amount):
        return raw, None
    per = _DAYS_PER_YEAR / 12 if unit == "months" else _DAYS_PER_YEAR
    return int(math.floor(amount * per + 1e-9)), None


def _number(raw: str, kind: str) -> Any:
    """The typed value of a number field, or the text itself for the validator to refuse."""
    try:
        if kind == "integer":
            return int(raw)
        value = float(raw)
        return value if math.isfinite(value) else raw
    except ValueError:
        return raw


def form_facts(params: Mapping[str, str], multi: Mapping[str, Sequence[str]],
               vocabulary: Mapping[str, FactSpec]) -> tuple[dict[str, Any], list[Diagnostic]]:
    """The patient facts a submitted form gives: an empty field is unknown.

    Lists: the ticked values; ``NAME.assessed`` ticked with none means ``[]``
    (assessed, none present). Whole numbers with the unit ``days`` may be given in
    months or years (completed days: ``floor(amount × 365.25 / 12)``) or as two dates.
    """
    facts: dict[str, Any] = {}
    problems: list[Diagnostic] = []
    # the form's own fields, and nothing else: an unknown name is refused as the JSON API refuses it
    suffixes = {"set": (".assessed",), "age": (".unit", ".born", ".on")}
    for key, values in multi.items():
        base, dot, suffix = key.partition(".")
        spec = vocabulary.get(base)
        ok = spec is not None and (not dot or "." + suffix in suffixes["set" if spec.kind == "set" else
                                                                         "age" if spec.unit == "days" else ""])
        if not ok:
            problems.append(Diagnostic(code="NB503", pointer=f"/{shown(base)}",
                                       message=f"expected a patient fact, found unknown fact '{shown(key)}'",
                                       hint=did_you_mean(base, vocabulary) or "the form lists the patient facts"))
        elif spec is not None and spec.kind != "set" and len([v for v in values if v != ""]) > 1:
            problems.append(Diagnostic(code="NB506", pointer=f"/{base}",
                                       message=f"'{shown(key)}' is given {len(values)} times; give it once"))
    for name, spec in vocabulary.items():
        if spec.kind == "set":
            chosen = [v for v in multi.get(name, ()) if v]
            if chosen or params.get(f"{name}.assessed"):
                facts[name] = chosen
            continue
        if spec.kind == "integer" and spec.unit == "days":
            value, problem = _age_days(params, name)
            if problem:
                problems.append(Diagnostic(code="NB502", message=problem, pointer=f"/{name}"))
            elif value is not None:
                facts[name] = value
            continue
        raw = params.get(name, "").strip()
        if not raw:
            continue
        if spec.kind == "boolean":
            facts[name] = {"true": True, "false": False}.get(raw, raw)
        elif spec.kind in ("integer", "number"):
            facts[name] = _number(raw, spec.kind)
        else:
            facts[name] = raw
    return facts, problems


def _field_views(vocabulary: Mapping[str, FactSpec], params: Mapping[str, str],
                 multi: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    out = []
    for name, spec in vocabulary.items():
        hint = spec.describe()
        if spec.unit:
            hint += f" ({spec.unit})"
        out.append({"name": name, "spec": spec, "title": fact_title(name, spec), "hint": hint,
                    "description": spec.description, "value": params.get(name, ""),
                    "chosen": set(multi.get(name, ())), "assessed": bool(params.get(f"{name}.assessed")),
                    "labels": [(v, spec.label(v)) for v in spec.values],
                    "age": spec.kind == "integer" and spec.unit == "days",
                    "unit": params.get(f"{name}.unit", "days"), "born": params.get(f"{name}.born", ""),
                    "on": params.get(f"{name}.on", "")})
    return out


def _result_view(result: Result, engine: Evaluator, query: Mapping[str, str],
                 multi: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    decisions = {d.id: d for d in engine.decisions}
    specs: dict[str, FactSpec] = dict(engine.build.vocabulary)  # input facts and the words of outputs
    outputs = []
    pending = pending_given(result, decisions)  # facts given with a "not known yet" value
    for d in engine.decisions:
        for out in d.decides:
            item: dict[str, Any] = {"name": out, "decision": d, "title": fact_title(out, specs.get(out))}
            if out in result.indeterminate:
                ind = result.indeterminate[out]
                settle = []
                for fact in list(ind.missing) + [r for roots in ind.via.values() for r in roots]:
                    spec = specs.get(fact)
                    values = spec.values if spec is not None and spec.kind in ("enum", "set") else ()
                    if spec is not None and spec.kind == "boolean":
                        values = ("true", "false")
                    links = [(value_label(v if spec is None or spec.kind != "boolean" else v == "true", spec),
                              _with(query, multi, fact, v)) for v in values]
                    shown = (value_label(pending[fact], spec) if fact in pending else None)
                    settle.append({"fact": fact, "title": fact_title(fact, spec), "links": links, "pending": shown})
                item.update(kind="indeterminate", candidates=[value_label(c, specs.get(out)) for c in ind.candidates],
                            settle=settle)
            elif out in result.not_applicable:
                item.update(kind="not_applicable", reason=result.not_applicable[out].reason)
            elif result.outputs.get(out) is not None:
                item.update(kind="value", value=value_label(result.outputs[out], specs.get(out)),
                            from_input=out in result.from_input,
                            settled=out in result.settled)
            else:
                item.update(kind="none")
            outputs.append(item)
    fired = []
    for f in result.fired:
        fd = decisions.get(f.decision)
        fired.append({"f": f, "href": f"/ui/decisions/{f.decision}?version={f.version}#rule-{f.decision}-{f.rule}",
                      "description": " ".join(fd.rule(f.rule).description.split()) if fd is not None else "",
                      "matched": [(fact_title(k, specs.get(k)), _shown(v, specs.get(k))) for k, v in f.matched.items()
                                  if v is not None],
                      "set": [(fact_title(k, specs.get(k)), _shown(v, specs.get(k))) for k, v in f.set.items()]})
    return {"outputs": outputs, "fired": fired, "warnings": list(result.warnings), "result": result}


def _shown(v: Any, spec: FactSpec | None) -> str:
    if isinstance(v, list):
        return ", ".join(value_label(x, spec) for x in v) if v else "none"
    if v is None:
        return "unknown"
    if isinstance(v, (int, float)) and not isinstance(v, bool) and spec is not None and spec.unit:
        return f"{v:g} {spec.unit}".replace(" %", " %")
    return value_label(v, spec)


def _with(query: Mapping[str, str], multi: Mapping[str, Sequence[str]], fact: str, value: str) -> str:
    pairs: list[tuple[str, str]] = []
    for key, values in multi.items():
        if key == fact:
            continue
        pairs += [(key, v) for v in values]
    pairs.append((fact, value))
    return "/ui/evaluate?" + urlencode(pairs)


def _multi(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out


# -- routes --------------------------------------------------------------------------


def workbench_routes(engine: RuleEngine) -> list[Route]:
    """The workbench pages for one engine (the service's, so reloads show at once)."""

    def vocabulary() -> Mapping[str, FactSpec]:
        return engine.build.package.facts  # the input facts of the package in force

    async def index(request: Request) -> Response:
        in_force = {d.key for d in engine.decisions}
        return _page("index.html", decisions=engine.build.decisions, in_force=in_force)

    def _decision(decision_id: str, version: str | None) -> Decision | None:
        if version:
            return next((d for d in engine.build.decisions if d.id == decision_id and d.version == version), None)
        return next((d for d in engine.decisions if d.id == decision_id), None) or \
            next((d for d in engine.build.decisions if d.id == decision_id), None)

    async def decision(request: Request) -> Response:
        d = _decision(request.path_params["id"], request.query_params.get("version"))
        if d is None:
            known = [x.version for x in engine.build.decisions if x.id == request.path_params["id"]]
            message = (f"no version {request.query_params.get('version')!r} of {request.path_params['id']} is installed "
                       f"(installed: {', '.join(known)})" if known
                       else f"no decision {request.path_params['id']!r} is installed")
            return _page("error.html", title="No such decision", message=message, status=404)
        overrides: dict[str, Any] = {}
        for name, p in d.parameters.items():
            raw = request.query_params.get(f"p.{name}")
            if raw is None:
                continue
            for value in [p.value] + [v for v, _ in p.alternatives]:
                if json.dumps(value) == raw or str(value) == raw:
                    overrides[name] = value
        table = await run_in_threadpool(lambda: decision_table(d, overrides, vocabulary=engine.build.vocabulary))
        choices = [{"name": name, "value": json.dumps(d.param_values(overrides)[name]),
                    "options": [(json.dumps(p.value), f"{p.value} (the file's reading)")]
                    + [(json.dumps(v), str(v)) for v, _ in p.alternatives]}
                   for name, p in d.parameters.items() if p.alternatives]
        versions = [x for x in engine.build.decisions if x.id == d.id]
        return _page("decision.html", t=table, choices=choices, versions=versions, cite_href=_cite_href,
                     cite_href_doc=_doc_href, level=1)

    def _evaluate(request: Request) -> tuple[dict[str, Any], Result | None, list[Diagnostic]]:
        multi = _multi(request)
        params = {k: v[-1] for k, v in multi.items()}
        facts, problems = form_facts(params, multi, vocabulary())
        if problems:
            return facts, None, problems
        try:
            return facts, engine.evaluate(facts), []
        except PatientInputError as exc:
            return facts, None, list(exc.diagnostics)

    async def evaluate(request: Request) -> Response:
        pairs = request.query_params.multi_items()
        if any(v == "" for _, v in pairs):
            # a submitted form sends every field; the shareable address keeps the facts given
            kept = [(k, v) for k, v in pairs if v != "" and not (k.endswith(".unit") and v == "days")]
            return RedirectResponse("/ui/evaluate" + ("?" + urlencode(kept) if kept else ""), status_code=303)
        multi = _multi(request)
        params = {k: v[-1] for k, v in multi.items()}
        submitted = bool(multi)
        facts, result, problems = await run_in_threadpool(_evaluate, request) if submitted else ({}, None, [])
        view = _result_view(result, engine, params, multi) if result is not None else None
        by_field: dict[str, list[str]] = {}
        for p in problems:
            by_field.setdefault((p.pointer or "/").split("/")[1] if p.pointer else "", []).append(p.message)
        return _page("evaluate.html", fields=_field_views(vocabulary(), params, multi), units=_UNITS,
                     submitted=submitted, view=view, problems=problems, by_field=by_field, facts=facts,
                     share=str(request.url) if submitted else "",
                     download="/ui/evaluate.json?" + request.url.query if submitted else "")

    async def evaluate_json(request: Request) -> Response:
        facts, result, problems = await run_in_threadpool(_evaluate, request)
        if result is None:
            body = problem_details(422, "the patient record is invalid", [p.to_problem() for p in problems])
            return Response(json.dumps(body, ensure_ascii=False), 422, media_type="application/problem+json")
        return Response(result.to_json(), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="nbrules-{result.input_sha256[:12]}.json"'})

    async def versions_index(request: Request) -> Response:
        ids = list(dict.fromkeys(d.id for d in engine.build.decisions))
        by_id = {i: [d for d in engine.build.decisions if d.id == i] for i in ids}
        return _page("versions.html", by_id=by_id, diff=None, cohort=None, chosen=None, problem=None)

    async def versions(request: Request) -> Response:
        decision_id = request.path_params["id"]
        installed = [d for d in engine.build.decisions if d.id == decision_id]
        old_v = request.query_params.get("old") or (installed[0].version if installed else "")
        new_v = request.query_params.get("new") or (installed[-1].version if installed else "")
        old = next((d for d in installed if d.version == old_v), None)
        new = next((d for d in installed if d.version == new_v), None)
        by_id = {decision_id: installed}
        if old is None or new is None:
            return _page("versions.html", by_id=by_id, diff=None, cohort=None, chosen=(decision_id, old_v, new_v),
                         problem=f"choose two installed versions of {decision_id}", status=404)
        diff = await run_in_threadpool(diff_decisions, old, new)
        cohort, problem = None, None
        if request.method == "POST":
            cohort, problem = await _cohort(request, old, new)
        return _page("versions.html", by_id=by_id, diff=diff, cohort=cohort, chosen=(decision_id, old_v, new_v),
                     problem=problem)

    async def _cohort(request: Request, old: Decision, new: Decision) -> tuple[dict[str, Any] | None, str | None]:
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_COHORT_BYTES + 4096:
            return None, f"the cohort file is larger than {MAX_COHORT_BYTES:,} bytes; use nbrules diff --cohort"
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("cohort")
        if upload is None or isinstance(upload, str):
            return None, "choose a cohort file (JSONL or CSV with an id column)"
        data = await upload.read(MAX_COHORT_BYTES + 1)
        if len(data) > MAX_COHORT_BYTES:
            return None, f"the cohort file is larger than {MAX_COHORT_BYTES:,} bytes; use nbrules diff --cohort"
        name = upload.filename or ""
        fmt = "csv" if name.lower().endswith(".csv") else "jsonl"
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None, "the cohort file is not UTF-8 text"

        def run() -> dict[str, Any]:
            old_engine = RuleEngine(engine.build, use=[old.key])
            new_engine = RuleEngine(engine.build, use=[new.key])
            try:
                outputs = list(dict.fromkeys(o for e in (old_engine, new_engine) for d in e.decisions for o in d.decides))
                report = diff_cohort(old_engine, new_engine, read_rows(io.StringIO(text), fmt), outputs)
                transitions = [{"output": k[0], "old": k[1], "new": k[2], "count": n,
                                "ids": list(islice(report.ids(k), 5))} for k, n in sorted(report.counts.items())]
                view = {"name": name, "rows": report.rows, "evaluated": report.evaluated,
                        "changed": report.changed_patients, "transitions": transitions,
                        "invalid": report.invalid, "bad": list(islice(report.bad_rows(), 20))}
                report.close()
                return view
            finally:
                old_engine.close()
                new_engine.close()

        try:
            return await run_in_threadpool(run), None
        except CohortFormatError as exc:
            return None, str(exc)

    return [
        Route("/", index),
        Route("/ui/decisions/{id}", decision),
        Route("/ui/evaluate", evaluate),
        Route("/ui/evaluate.json", evaluate_json),
        Route("/ui/versions", versions_index),
        Route("/ui/versions/{id}", versions, methods=["GET", "POST"]),
    ]
