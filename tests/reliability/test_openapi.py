"""The collector's OpenAPI document: served off the public paths, the same as ``pixelrelay
openapi``, and fuzzed by schemathesis against a live collector (granian, real Redis): every
answer is one the document lists, with the body it describes, and never a 5xx."""

from __future__ import annotations

import json
import subprocess

import httpx
import schemathesis
from hypothesis import HealthCheck, settings

from collector.openapi import EVENT_EXAMPLE, OPENAPI_PATH, openapi_document
from tests.reliability.conftest import ORIGIN, LiveCollector
from tests.support import VENV_BIN

schema = schemathesis.openapi.from_dict(openapi_document())


def test_the_collector_serves_the_document_pixelrelay_openapi_prints(
        live_collector: LiveCollector) -> None:
    printed = subprocess.run([str(VENV_BIN / "pixelrelay"), "openapi"], capture_output=True,
                             text=True, check=True, timeout=60).stdout

    served = httpx.get(f"{live_collector.base}{OPENAPI_PATH}/openapi.json", timeout=10).json()

    assert json.loads(printed) == served
    assert ["/go/{slug}", "/v1/beacon", "/v1/events"] == sorted(served["paths"])


def test_the_documented_example_event_is_accepted(live_collector: LiveCollector) -> None:
    examples = openapi_document()["paths"]["/v1/events"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]

    answers = [httpx.post(f"{live_collector.base}/v1/events", json=e["value"], timeout=10,
                          headers=live_collector.auth) for e in examples.values()]

    assert [202, 202] == [a.status_code for a in answers]
    assert EVENT_EXAMPLE == examples["one"]["value"]


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_none_is_a_server_error(
        case: schemathesis.Case, live_collector: LiveCollector) -> None:
    # A body of the documented shape may still break a rule the shape cannot say (a configured
    # pixel, an event age, a hashable value): those are the documented 422s, so schemathesis's
    # "schema-valid request rejected" check does not apply. Every other check does.
    case.call_and_validate(base_url=live_collector.base, timeout=10,
                           headers={**live_collector.auth, "Origin": ORIGIN},
                           excluded_checks=[schemathesis.checks.positive_data_acceptance])
