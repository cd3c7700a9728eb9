"""A bounded schemathesis run over the service's own OpenAPI document (slow suite).

Schemathesis generates valid and invalid requests for every operation of
``GET /openapi.json`` (the patient schema and the CDS Hooks request schema included)
and checks every answer: never a 5xx, a status code and content type the document
declares, a body that matches its schema.  The figures (requests, failures, worst
time, server peak memory) are printed and reported in the README.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterator

import pytest

pytest.importorskip("schemathesis")
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from nbrules import RuleEngine  # noqa: E402
from nbrules.service import openapi_document  # noqa: E402

from .conftest import REPO  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from load_test import start_server  # noqa: E402

pytestmark = pytest.mark.slow

FIGURES: dict[str, Any] = {"requests": 0, "failures": 0, "worst_s": 0.0}


@pytest.fixture(scope="module")
def live_server() -> Iterator[tuple[str, int]]:
    proc, url = start_server()
    yield url, proc.pid
    with open(f"/proc/{proc.pid}/status") as f:
        peak = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")), 0.0)
    proc.terminate()
    proc.wait(timeout=30)
    print(f"\nschemathesis: {FIGURES['requests']} requests, {FIGURES['failures']} failures, "
          f"worst {FIGURES['worst_s'] * 1000:.0f} ms, server peak memory {peak:.0f} MB")


# The document the server serves at GET /openapi.json for the bundled package (its CDS service id
# is the package's name; test_service checks the two documents are the same).
with RuleEngine.default() as _engine:
    schema = schemathesis.openapi.from_dict(openapi_document(_engine))


@schema.parametrize()
@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: Any, live_server: tuple[str, int]) -> None:
    start = time.monotonic()
    try:
        case.call_and_validate(base_url=live_server[0], checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                       response_schema_conformance])
    except BaseException:
        FIGURES["failures"] += 1
        raise
    finally:
        FIGURES["requests"] += 1
        FIGURES["worst_s"] = max(FIGURES["worst_s"], time.monotonic() - start)
