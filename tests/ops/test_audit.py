"""ops/audit.py: a failed pip-audit is explained when PyPI's advisory API cannot be reached,
and left as pip-audit reported it when the API answers."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.support import ROOT


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ops_audit", ROOT / "ops" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_answering_advisory_api_leaves_pip_audits_report_alone(audit: ModuleType) -> None:
    assert audit.explain_failure(lambda url: 200) is None


def test_a_404_from_the_advisory_api_is_said_to_be_an_unreachable_service(
        audit: ModuleType) -> None:
    asked: list[str] = []

    message = audit.explain_failure(lambda url: asked.append(url) or 404)

    [url] = asked
    assert url.startswith("https://pypi.org/pypi/pip-audit/") and url.endswith("/json")
    assert "advisory service is unreachable" in message and "HTTP 404" in message
    assert message.startswith("make audit FAILED without auditing")


def test_no_connection_is_said_to_be_an_unreachable_service(audit: ModuleType) -> None:
    def refused(url: str) -> int:
        raise OSError("connection refused")

    message = audit.explain_failure(refused)

    assert "could not be reached (connection refused)" in message
