"""Shared fixtures. Real services are started privately per test or module; the machine's own
Redis on 127.0.0.1:6379 is never flushed or stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.browser import chromium
from tests.support import RedisServer


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A skipped test is a failed one: a missing tool or service must fail loudly, as in CI."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped tests fail here (CI counts a skip as a failure): {reason}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis-compatible server with AOF, for one test."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Redis server shared by one test module (tests must use their own keys/db)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability table (tests/reliability/table.py), when the run made rows of it."""
    from tests.reliability.table import ROWS, write

    if ROWS:
        terminalreporter.section("reliability table")
        terminalreporter.write_line(write(ROWS))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium (tests/browser.py), one per test module: Playwright's sync
    API runs an event loop while it is open, which async tests after it must not find."""
    with chromium() as launched:
        yield launched
