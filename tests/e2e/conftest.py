"""Fixtures that run the real processes: a collector under granian, relay workers, fake Meta."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import DEMO_TOKEN, Process, free_port, wait_http

StartFn = Callable[..., Process]


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[StartFn]:
    """Start `python -m <args>` children; every one is stopped when the test ends."""
    started: list[Process] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Process:
        process = Process([sys.executable, "-m", *args], tmp_path / f"{name}.log",
                          env={"PIXELRELAY_TEST_TOKEN": DEMO_TOKEN, **(env or {})})
        started.append(process.start())
        return process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture
def fake_meta(start_process: StartFn) -> str:
    port = free_port()
    start_process("fake-meta", "fakemeta", env={"FAKEMETA_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_fake/healthz")
    return url
