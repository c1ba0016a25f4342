"""The README's promise, end to end: `pixelrelay up` runs the whole stack on its embedded
defaults, a click redirects at once and its PageView reaches the fake Meta, and a server event
carrying the click_id arrives enriched with the click's fbc, IP and user agent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import (
    DEMO_API_KEY,
    DEMO_PIXEL,
    Process,
    free_port,
    wait_for,
    wait_http,
    write_config,
)

# No Redis URL, no Graph API URL and no token: `up` must start its embedded defaults.
NO_REAL_SERVICES = {"REDIS_URL": "", "PIXELRELAY_GRAPH_URL": "", "PIXELRELAY_TEST_TOKEN": ""}


def _config(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """The test config, with no Redis URL (embedded server) and ports of its own."""
    ports = {name: free_port() for name in ("collector", "dashboard", "fake_meta", "redis")}
    path = write_config(
        tmp_path, redis_url="", collector_port=ports["collector"],
        redis_lines=f'embedded_port = {ports["redis"]}\ndata_dir = "{tmp_path / "redis"}"',
        extra=f"\n[dashboard]\nport = {ports['dashboard']}\n"
              f"\n[fake_meta]\nport = {ports['fake_meta']}\n")
    return path, ports


def _start_stack(tmp_path: Path) -> tuple[Process, dict[str, int]]:
    """`pixelrelay up` on the test config, once it says it is up (stopped by the caller)."""
    config, ports = _config(tmp_path)
    stack = Process([sys.executable, "-m", "pixelrelay", "up", "--config", str(config)],
                    tmp_path / "up.log", env=NO_REAL_SERVICES).start()
    try:
        wait_for(lambda: "pixelrelay is up" in stack.output(), 60, what="the stack")
    except AssertionError:
        stack.stop()
        raise
    return stack, ports


def _pids_with_args(*needles: str) -> list[int]:
    """Processes whose command line holds every needle (a look into /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args]
        if all(n in words for n in needles):
            found.append(int(cmdline.parent.name))
    return found


def _logged_batches(output: str) -> int:
    """Relay log lines of delivered batches, with the fields operators read."""
    import json

    count = 0
    for line in output.splitlines():
        _, _, text = line.partition("] ")
        if '"event": "batch"' not in text:
            continue
        entry = json.loads(text)
        assert {"pixel_id", "size", "attempt", "latency_ms", "outcome", "batch"} <= entry.keys()
        count += entry["outcome"] == "delivered"
    return count


def _fake_events(ports: dict[str, int]) -> list[dict[str, object]]:
    response = httpx.get(f"http://127.0.0.1:{ports['fake_meta']}/_fake/events",
                         params={"pixel_id": DEMO_PIXEL}, timeout=2)
    return list(response.json()["events"])


def test_click_and_enriched_server_event_reach_fake_meta(tmp_path: Path) -> None:
    # Given the whole stack started by `pixelrelay up` with no Redis URL and no real token
    stack, ports = _start_stack(tmp_path)
    try:
        base = f"http://127.0.0.1:{ports['collector']}"
        wait_http(f"http://127.0.0.1:{ports['dashboard']}/healthz")

        # When a browser follows a tracked link with an fbclid
        browser = "Mozilla/5.0 (X11; Linux x86_64) e2e"
        click = httpx.get(f"{base}/go/demo", params={"fbclid": "AbC-123_x"},
                          headers={"User-Agent": browser}, follow_redirects=False)

        # Then it is redirected at once with _fbc set, and the PageView reaches Meta
        assert 302 == click.status_code
        assert click.headers["location"].startswith("https://shop.example/landing?cid=")
        fbc = click.cookies["_fbc"]
        assert fbc.startswith("fb.1.") and fbc.endswith(".AbC-123_x")
        page_views = wait_for(
            lambda: [e for e in _fake_events(ports) if e["event_name"] == "PageView"],
            10, what="the PageView at the fake Meta")
        user_data = page_views[0]["user_data"]
        assert fbc == user_data["fbc"]
        assert "127.0.0.1" == user_data["client_ip_address"]
        assert browser == user_data["client_user_agent"]

        # When the shop's backend reports a purchase for that click
        purchase = httpx.post(
            f"{base}/v1/events", headers={"Authorization": f"Bearer {DEMO_API_KEY}"},
            json={"event_name": "Purchase", "event_source_url": "https://shop.example/thanks",
                  "click_id": click.cookies["_prclk"], "user_data": {"em": "Joe@Example.com"},
                  "custom_data": {"value": 42.5, "currency": "EUR"}})
        assert 202 == purchase.status_code

        # Then it arrives enriched with the click's fbc, IP and user agent
        purchases = wait_for(
            lambda: [e for e in _fake_events(ports) if e["event_name"] == "Purchase"],
            10, what="the Purchase at the fake Meta")
        enriched = purchases[0]["user_data"]
        assert (fbc, "127.0.0.1", browser) == (
            enriched["fbc"], enriched["client_ip_address"], enriched["client_user_agent"])
        assert "joe@example.com" not in str(purchases[0])
        wait_for(lambda: _logged_batches(stack.output()) >= 2, 10, what="the batch log lines")
    finally:
        code = stack.stop(timeout_s=40)
    assert 0 == code, stack.output()[-3000:]
    # Every process's log: one structured line per batch, no token, no raw personal data.
    logs = stack.output()
    for secret in ("fake-meta-token", "Joe@Example.com", "joe@example.com"):
        assert secret not in logs
    assert not list((tmp_path / "spool").rglob("*.spool"))


def test_up_stops_and_names_a_child_that_died(tmp_path: Path) -> None:
    # Given a running stack
    stack, ports = _start_stack(tmp_path)
    try:
        # When the dashboard process dies behind its back
        health = httpx.get(f"http://127.0.0.1:{ports['dashboard']}/healthz", timeout=2)
        assert 200 == health.status_code
        pids = _pids_with_args("dashboard.app:create_app", str(ports["dashboard"]))
        assert pids, "the dashboard process was not found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # Then `up` says which child died, stops the others and exits non-zero
        assert stack.popen is not None
        code = stack.popen.wait(40)
    finally:
        stack.stop()
    assert 1 == code
    assert "dashboard exited with code" in stack.output()


def _pixel_health(ports: dict[str, int]) -> dict[str, object] | None:
    ready = httpx.get(f"http://127.0.0.1:{ports['collector']}/readyz", timeout=2).json()
    status = ready["pixels"].get(DEMO_PIXEL)
    return status if isinstance(status, dict) else None


def test_the_first_token_check_meets_a_listening_fake_meta_and_reports_healthy(
        tmp_path: Path) -> None:
    # Given `pixelrelay up` has said it is up
    stack, ports = _start_stack(tmp_path)
    try:
        # Then within a few seconds the demo pixel's check is recorded, and it is healthy: the
        # relay started only once the fake Graph API listened, so no "Meta unreachable" first
        status = wait_for(lambda: _pixel_health(ports), 8, what="the first pixel check")
        assert (True, None) == (status["ok"], status["error"]), status
        # And the stages came up in dependency order
        output = stack.output()
        first = {name: output.index(f"[{name}]") for name in ("redis", "fake-meta", "relay-high")}
        assert first["redis"] < first["fake-meta"] < first["relay-high"]
    finally:
        stack.stop(timeout_s=40)


def test_a_taken_port_is_named_with_its_setting_and_nothing_starts(tmp_path: Path) -> None:
    # Given something already listens on the collector's port
    config, ports = _config(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["collector"]))
        squatter.listen()

        # When `pixelrelay up` starts
        result = subprocess.run(
            [sys.executable, "-m", "pixelrelay", "up", "--config", str(config)],
            env={**os.environ, **NO_REAL_SERVICES}, capture_output=True, text=True,
            timeout=60, check=False)

    # Then it says in one sentence which port and which setting, with no traceback
    assert 2 == result.returncode
    assert (f"pixelrelay up: port {ports['collector']} on 127.0.0.1 is already in use; stop "
            "what listens there or set collector.port to a free port\n") == result.stdout
    assert "Traceback" not in result.stderr
    # And nothing was started: the embedded Redis never created its data directory
    assert not (tmp_path / "redis").exists()
