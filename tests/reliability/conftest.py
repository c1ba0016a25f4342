"""A live collector for the reliability suite: ``pixelrelay collector`` (granian) on loopback,
in front of a private Redis, shared by one test module. Its log and every page it served are
kept for the secrets scan (``test_secrets_scan.py``)."""

from __future__ import annotations

import contextlib
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import DEMO_API_KEY, DEMO_TOKEN, Process, RedisServer, wait_http, write_config

ORIGIN = "https://shop.example"  # the one origin write_config allows for beacons


@dataclass
class LiveCollector:
    base: str
    port: int
    config: Path
    redis: RedisServer
    process: Process

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {DEMO_API_KEY}"}


@contextlib.contextmanager
def collector_on(directory: Path, redis: RedisServer, collector_lines: str = ""
                 ) -> Iterator[LiveCollector]:
    """``pixelrelay collector`` for ``redis``, its config, spool and log in ``directory``."""
    config = write_config(directory, redis_url=redis.url, collector_lines=collector_lines)
    port = int(tomllib.loads(config.read_text())["collector"]["port"])
    process = Process([sys.executable, "-m", "pixelrelay", "collector", "--config", str(config)],
                      directory / "collector.log",
                      env={"PIXELRELAY_TEST_TOKEN": DEMO_TOKEN}).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")
        yield LiveCollector(base, port, config, redis, process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def live_collector(tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer
                   ) -> Iterator[LiveCollector]:
    with collector_on(tmp_path_factory.mktemp("collector"), module_redis) as collector:
        yield collector
