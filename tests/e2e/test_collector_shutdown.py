"""SIGTERM to the collector: requests in flight finish, their events are stored, exit 0."""

from __future__ import annotations

import signal
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from relay import keys
from tests.e2e.conftest import StartFn
from tests.support import (
    DEMO_PIXEL,
    RedisServer,
    established_connections,
    wait_for,
    wait_http,
    write_config,
)

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) shutdown-test"}


def test_sigterm_finishes_in_flight_redirects_and_stores_their_events(
        tmp_path: Path, redis_server: RedisServer, start_process: StartFn) -> None:
    # Given a collector whose Redis writes are held up for a moment (CLIENT PAUSE WRITE)
    config = write_config(tmp_path, redis_url=redis_server.url)
    text = config.read_text().replace("redis_timeout_ms = 300", "redis_timeout_ms = 5000")
    config.write_text(text)
    port = tomllib.loads(text)["collector"]["port"]
    base = f"http://127.0.0.1:{port}"
    collector = start_process("collector", "pixelrelay", "collector", "--config", str(config))
    wait_http(f"{base}/healthz")
    admin = redis_server.client()
    admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")

    # When twenty redirects are in flight and the collector gets SIGTERM
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(httpx.get, f"{base}/go/demo", params={"fbclid": f"c{n}"},
                               headers=BROWSER, timeout=10) for n in range(20)]
        wait_for(lambda: established_connections(port) >= 20, 5, what="20 connections")
        wait_for(lambda: admin.info("clients")["blocked_clients"] >= 1, 5,
                 what="the collector's write to be held")
        collector.signal(signal.SIGTERM)
        responses = [f.result() for f in futures]

    # Then every one is answered, every event is stored, and the process exits cleanly
    assert [302] * 20 == [r.status_code for r in responses]
    assert collector.popen is not None
    assert 0 == collector.popen.wait(30), collector.output()[-2000:]
    assert 20 == admin.llen(keys.inbox("relay_low", DEMO_PIXEL))
    assert not list((tmp_path / "spool").rglob("*.spool"))
