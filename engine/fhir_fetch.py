"""Fetching what a CDS Hooks request did not prefetch, from its ``fhirServer``.

CDS Hooks 2.0: when ``fhirServer`` is given and the prefetch is missing or incomplete,
the service may query the FHIR server itself, with the bearer token of
``fhirAuthorization``.  For each prefetch template of the discovery document
(``Patient/{{context.patientId}}``, ``Condition?patient=...``, ``Observation?patient=...``)
whose prefetch entry is absent, null, a failed fetch (an OperationOutcome) or a Bundle
with a ``next`` link, the service reads or searches the server and follows the search's
``next`` links.  The three run concurrently; the pages of one search in order.

Bounds (:class:`FetchLimits`): pages, entries and bytes per prefetch key (so what is
fetched does not depend on which concurrent search answers first), and wall time for
the request; a bound that is hit leaves the data *incomplete* and says which.
A failed fetch (HTTP error, an OperationOutcome, a body that is not FHIR JSON, a
timeout, no connection) is reported as failed with the server's own words, never as
facts the record does not give.  The token is sent only to ``fhirServer`` and to
``next`` links under it; a ``next`` link elsewhere is not followed (and said so).
Uses httpx (``nbrules[serve]``).

Fetching is opt-in (server-side request forgery): the service contacts a ``fhirServer``
only when it lies under one of the base-URL prefixes it was given
(``nbrules serve --fetch-from PREFIX``, ``create_app(fetch_from=...)``; :func:`allowed`).
Prefixes and URLs are compared after normalisation, never as strings: scheme and host
in lower case (the host IDNA-encoded, without a trailing dot), the port made explicit
(80, 443), and the path percent-decoded, ``\\`` read as ``/``, dot segments resolved
and empty segments dropped, then compared segment by segment, so that
``https://ehr.example.org/fhir/`` admits ``https://EHR.example.org:443/fhir/R4`` but not
``https://ehr.example.org.evil.com/fhir``, ``https://ehr.example.org:8443/fhir``,
``http://ehr.example.org/fhir``, ``https://ehr.example.org/fhirx`` nor
``https://ehr.example.org/fhir/%2e%2e/admin``.  A URL with user information
(``user@host``) is never admitted.  The same comparison keeps ``next`` links under
``fhirServer``.  Hosts are compared by name: what a name resolves to is not checked.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import httpx

from .fhir import outcome_text

__all__ = ["FetchLimits", "FetchReport", "allowed", "fetch_missing", "needs_fetch", "prefix_problem",
           "server_problem"]

_TOKEN = "{{context.patientId}}"
#: FHIR R4 ``id``: https://hl7.org/fhir/R4/datatypes.html#id
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on what one CDS request may fetch from its FHIR server.

    ``pages``: pages read per search (the first and each ``next``); ``entries``: Bundle
    entries per search; ``bytes``: response bytes per prefetch key (a read, or all the
    pages of a search); ``seconds``: wall time for all fetches of the request (the
    searches run concurrently);
    ``page_size``: ``_count`` asked of each search (None: the server's default).
    """

    pages: int = 20
    entries: int = 5000
    bytes: int = 16 * 1024 * 1024
    seconds: float = 20.0
    page_size: int | None = None


@dataclass
class FetchReport:
    """What was fetched: ``fetched`` has one entry per prefetch key that was fetched
    (``key``, ``url`` the query, ``requested`` every URL actually requested in order: the
    query, then each ``next`` link followed, ``pages``, ``entries``, ``status``
    complete|incomplete|failed, ``detail``); ``failed`` and ``incomplete`` are
    ``"key: reason"`` lines for the cards."""

    fetched: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


class _Failed(Exception):
    """One HTTP request did not give a FHIR resource."""


@dataclass
class _Budget:
    """What one prefetch key has used of the limits."""

    limits: FetchLimits
    deadline: float
    entries: int = 0
    bytes: int = 0
    requested: list[str] = field(default_factory=list)


def server_problem(url: Any) -> str | None:
    """Why ``url`` is not usable as ``fhirServer`` (None: it is an http(s) URL with a host)."""
    if not isinstance(url, str):
        return f"expected a string, found {type(url).__name__}"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "expected a URL without spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        httpx.URL(url)
        parts.port  # noqa: B018 (raises for a port out of range)
    except (ValueError, httpx.InvalidURL) as exc:
        return f"expected a URL: {exc}"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL with a host"
    if parts.query or parts.fragment:
        return "expected a base URL, without query or fragment"
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _normal(url: str) -> tuple[str, str, int, tuple[str, ...]] | None:
    """``(scheme, host, port, path segments)`` of an http(s) URL, normalised as the
    module docstring says; None for anything else, or a URL with user information."""
    try:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or "@" in parts.netloc or not parts.hostname:
            return None
        host = httpx.URL(url).raw_host.decode("ascii").lower().rstrip(".")
        port = parts.port or _DEFAULT_PORTS[scheme]
    except (ValueError, UnicodeError, httpx.InvalidURL):
        return None
    path = parts.path
    for _ in range(8):  # decode until stable: what a server, or a proxy before it, could read
        decoded = urllib.parse.unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        return None
    segments: list[str] = []
    for segment in path.replace("\\", "/").split("/"):
        if segment == "..":
            if not segments:
                return None  # above the root
            segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return scheme, host, port, tuple(segments)


def _within(url: str, base: str) -> bool:
    """Whether ``url`` lies under ``base``: same scheme, host and port, and the segments
    of ``base``'s path begin ``url``'s (both normalised; query and fragment ignored)."""
    u, b = _normal(url), _normal(base)
    return u is not None and b is not None and u[:3] == b[:3] and u[3][:len(b[3])] == b[3]


def prefix_problem(prefix: Any) -> str | None:
    """Why ``prefix`` cannot be a ``--fetch-from`` prefix (None: it can): an http(s)
    base URL with a host, without query, fragment or user information."""
    why = server_problem(prefix)
    if why is None and _normal(str(prefix)) is None:
        why = "expected an http:// or https:// URL without user information (user@host) or '..' above its root"
    return why


def allowed(server: str, prefixes: Sequence[str]) -> bool:
    """Whether the service may fetch from ``server`` (a request's ``fhirServer``): it lies
    under one of ``prefixes`` (see the module docstring for the comparison)."""
    return any(_within(server, prefix) for prefix in prefixes)


def needs_fetch(value: Any) -> bool:
    """Whether a prefetch entry must be fetched: absent (None), a failed fetch
    (an OperationOutcome), or a Bundle with a ``next`` link (later pages not read)."""
    if not isinstance(value, dict):
        return True
    if value.get("resourceType") == "OperationOutcome":
        return True
    return value.get("resourceType") == "Bundle" and _next(value) is not None


def _next(bundle: Mapping[str, Any]) -> str | None:
    links = bundle.get("link") if isinstance(bundle.get("link"), list) else []
    for link in links or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


async def _get(client: httpx.AsyncClient, url: str, budget: _Budget) -> dict[str, Any]:
    """One GET; the resource it returns, or :class:`_Failed` with the reason."""
    budget.requested.append(url)
    try:
        async with client.stream("GET", url) as response:
            chunks: list[bytes] = []
            async for chunk in response.aiter_bytes():
                budget.bytes += len(chunk)
                if budget.bytes > budget.limits.bytes:
                    raise _Failed(f"stopped at the limit of {budget.limits.bytes} bytes per fetch")
                chunks.append(chunk)
            status = response.status_code
    except httpx.TimeoutException:
        raise _Failed(f"no answer within the time limit ({budget.limits.seconds:g} s per request)")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _Failed(f"cannot reach the FHIR server: {type(exc).__name__}: {exc}")
    try:
        body = json.loads(b"".join(chunks))
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        raise _Failed(f"HTTP {status}, OperationOutcome: {outcome_text(body)}")
    if status >= 400:
        raise _Failed(f"HTTP {status}")
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise _Failed(f"HTTP {status}, but the body is not a FHIR resource in JSON")
    return body


async def _fetch_key(client: httpx.AsyncClient, key: str, base: str, url: str, given: Any,
                     budget: _Budget, out: FetchReport) -> dict[str, Any] | None:
    """Fetch one prefetch key; the resource or merged Bundle to use, None when nothing was got."""
    search = "?" in url
    entries: list[Any] = []
    pages = 0
    note: str | None = None
    if isinstance(given, dict) and given.get("resourceType") == "Bundle" and _next(given) is not None:
        entries = list(given.get("entry") or [])  # continue the prefetched search from its next link
        pages = 1
        nxt: str | None = _next(given)
    else:
        nxt = url
    record: dict[str, Any] = {"key": key, "url": url, "requested": budget.requested, "pages": 0, "entries": 0}
    result: dict[str, Any] | None = None
    try:
        async with asyncio.timeout_at(budget.deadline):
            if not search and nxt == url:
                result = await _get(client, url, budget)
            else:
                while nxt is not None:
                    if not _within(nxt, base):
                        note = f"a next link points outside fhirServer ({nxt}); it was not followed"
                        break
                    if pages >= budget.limits.pages:
                        note = f"stopped after {budget.limits.pages} pages (the limit per search); more were offered"
                        break
                    page = await _get(client, nxt, budget)
                    if page.get("resourceType") != "Bundle":
                        raise _Failed(f"expected a Bundle, found a {page.get('resourceType')}")
                    pages += 1
                    got = [e for e in page.get("entry") or [] if isinstance(e, dict)]
                    room = budget.limits.entries - budget.entries
                    if len(got) > room:
                        entries += got[:room]
                        budget.entries += room
                        note = f"stopped at the limit of {budget.limits.entries} entries per search"
                        break
                    entries += got
                    budget.entries += len(got)
                    nxt = _next(page)
                    total = page.get("total")
                    matches = sum(1 for e in entries if not isinstance(e.get("search"), dict)
                                  or e["search"].get("mode", "match") == "match")
                    if nxt is None and isinstance(total, int) and total > matches:
                        note = (f"the server counts {total} matches but delivered {matches} and gives no "
                                "next link to the rest")
    except TimeoutError:
        why = f"stopped at the time limit of {budget.limits.seconds:g} s for fetching"
        if pages == 0 or not search:
            out.failed.append(f"{key}: fetching {url} from fhirServer: {why}")
            out.fetched.append({**record, "status": "failed", "detail": why})
            return None
        note = why
    except _Failed as exc:
        if pages == 0 or not search:
            out.failed.append(f"{key}: fetching {url} from fhirServer failed: {exc}")
            out.fetched.append({**record, "status": "failed", "detail": str(exc)})
            return None
        note = f"page {pages + 1} failed: {exc}"
    if search:
        result = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
        record.update(pages=pages, entries=len(entries))
    else:
        record.update(pages=1, entries=1)
    if note is not None:
        out.incomplete.append(f"{key}: fetched from fhirServer, incomplete: {note}")
    out.fetched.append({**record, "status": "incomplete" if note else "complete", "detail": note or ""})
    return result


async def fetch_missing(request: Mapping[str, Any], templates: Mapping[str, str],
                        limits: FetchLimits = FetchLimits(),
                        transport: httpx.AsyncBaseTransport | None = None) -> tuple[dict[str, Any], FetchReport]:
    """The request's prefetch completed from its ``fhirServer``, and the report of what
    was fetched.  ``templates``: prefetch key -> FHIR query template (the discovery
    document's).  Keys whose prefetch entry :func:`needs_fetch` are fetched; the others
    are kept as given.  A key that could not be fetched keeps its prefetch entry (or is
    absent) and is listed in ``report.failed``.  Never raises for what the server does.
    ``transport``: for tests of network failures only.
    """
    base = str(request["fhirServer"]).rstrip("/")
    prefetch: dict[str, Any] = dict(request.get("prefetch") or {})
    report = FetchReport()
    context = request.get("context") if isinstance(request.get("context"), dict) else {}
    patient = context.get("patientId") if isinstance(context, dict) else None
    todo = {k: t for k, t in templates.items() if needs_fetch(prefetch.get(k))}
    if not todo:
        return prefetch, report
    if not isinstance(patient, str) or not patient:
        for key in todo:
            report.failed.append(f"{key}: cannot be fetched: the request has no context.patientId")
        return prefetch, report
    if not _FHIR_ID.fullmatch(patient) or patient in (".", ".."):
        # the id goes into the URL path (Patient/{id}): nothing but a FHIR id may move it
        for key in todo:
            report.failed.append(f"{key}: cannot be fetched: context.patientId {patient[:80]!r} is not a FHIR id "
                                 "(1 to 64 of A-Z a-z 0-9 - .)")
        return prefetch, report
    headers = {"Accept": "application/fhir+json"}
    auth = request.get("fhirAuthorization")
    if isinstance(auth, dict) and isinstance(auth.get("access_token"), str):
        headers["Authorization"] = f"Bearer {auth['access_token']}"
    deadline = asyncio.get_running_loop().time() + limits.seconds
    async with httpx.AsyncClient(headers=headers, timeout=limits.seconds, follow_redirects=False,
                                 transport=transport) as client:
        keys = sorted(todo)
        urls = {}
        for key in keys:
            query = todo[key].replace(_TOKEN, urllib.parse.quote(patient, safe=""))
            if limits.page_size is not None and "?" in query:
                query += f"&_count={limits.page_size}"
            urls[key] = f"{base}/{query}"
        got = await asyncio.gather(*(_fetch_key(client, k, base, urls[k], prefetch.get(k),
                                                _Budget(limits, deadline), report)
                                     for k in keys))
    for key, value in zip(keys, got):
        if value is not None:
            prefetch[key] = value
    report.fetched.sort(key=lambda r: str(r["key"]))
    report.failed.sort()
    report.incomplete.sort()
    return prefetch, report
