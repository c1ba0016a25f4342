"""End to end: ``python -m fakemeta`` as a real granian process on a loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakemeta.conftest import PIXEL, make_event

START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    with httpx.Client(base_url=base_url, timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"fakemeta exited early with status {process.returncode}")
            try:
                if client.get("/_fake/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # poll interval, bounded by the deadline above
    pytest.fail(f"fakemeta did not answer /_fake/healthz within {START_DEADLINE_S} s")


@pytest.fixture
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKEMETA_")}
    env.update(FAKEMETA_HOST="127.0.0.1", FAKEMETA_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemeta"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so cleanup can reach the worker
    )
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


@pytest.mark.integration
def test_server_process_accepts_events_and_exits_cleanly_on_sigterm(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base_url, process = server
    wait_until_healthy(base_url, process)
    event = make_event(event_time=int(time.time()), event_id="e2e-1")

    with httpx.Client(base_url=base_url, timeout=5.0, trust_env=False) as client:
        response = client.post(
            f"/v25.0/{PIXEL}/events", params={"access_token": "t"}, json={"data": [event]}
        )
        summary = client.get("/_fake/received").json()

    assert (200, 1) == (response.status_code, response.json()["events_received"])
    assert {"events": 1, "event_ids": ["e2e-1"], "duplicates": 0} == summary["pixels"][PIXEL]

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=STOP_DEADLINE_S)

    assert 0 == process.returncode
    assert b"" == stdout  # logs go to stderr
    assert b"Listening at" in stderr
