"""collector.reload: a running app swaps its configuration in place on SIGHUP, refuses a broken
file, and keeps what only a restart can change."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import structlog
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis

from collector.app import build_app
from collector.reload import (
    LAST_GOOD_ENV,
    ReloadSignal,
    applicable,
    keep_last_good,
    reload_in_place,
)
from relay.config import CONFIG_ENV, load_settings
from tests.collector.support import VISITOR_IP, asgi_client, serving
from tests.support import DEMO_PIXEL, write_config

NEW_LINK = f"""
[[links]]
slug = "spring"
destination = "https://shop.example/spring"
pixels = ["{DEMO_PIXEL}"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, redis_url="redis://127.0.0.1:9/0")


@pytest.fixture
def environ(config: Path) -> Iterator[dict[str, str]]:
    last_good = keep_last_good(config)
    yield {CONFIG_ENV: str(config), LAST_GOOD_ENV: str(last_good),
           "PIXELRELAY_TEST_TOKEN": "token"}
    last_good.unlink(missing_ok=True)


@pytest.fixture
def sighup_restored() -> Iterator[None]:
    before = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, before)


async def status_of(app: object, path: str) -> int:
    async with asgi_client(app, VISITOR_IP) as client:  # type: ignore[arg-type]
        return (await client.get(path)).status_code


async def test_a_reload_serves_a_new_link_from_the_running_app(
        config: Path, environ: dict[str, str]) -> None:
    app = build_app(load_settings(config, environ), redis=FakeRedis(server=FakeServer()))
    async with serving(app):
        assert 404 == await status_of(app, "/go/spring")
        config.write_text(config.read_text() + NEW_LINK)

        reload_in_place(app.ctx, environ)

        assert 302 == await status_of(app, "/go/spring")
        assert 302 == await status_of(app, "/go/demo")


async def test_a_broken_file_is_refused_and_the_running_config_kept(
        config: Path, environ: dict[str, str]) -> None:
    app = build_app(load_settings(config, environ), redis=FakeRedis(server=FakeServer()))
    async with serving(app):
        config.write_text(config.read_text() + NEW_LINK + "\n[[links]]\nslug = 'x'\n")

        with structlog.testing.capture_logs() as logs:
            reload_in_place(app.ctx, environ)

        assert ["config_reload_refused", "config_reloaded"] == [e["event"] for e in logs]
        assert "destination" in logs[0]["reason"]
        assert 404 == await status_of(app, "/go/spring")
        assert 302 == await status_of(app, "/go/demo")


def test_what_only_a_restart_changes_is_kept_and_named(config: Path,
                                                       environ: dict[str, str]) -> None:
    current = load_settings(config, environ)
    changed = msgspec.structs.replace(
        current, collector=msgspec.structs.replace(current.collector, port=1, max_body_bytes=2048,
                                                   cookie_domain="shop.example"),
        redis=msgspec.structs.replace(current.redis, url="redis://elsewhere:6379/0"))

    settings, differ = applicable(current, changed)

    assert ["collector.port", "collector.max_body_bytes", "redis"] == differ
    assert current.collector.port == settings.collector.port
    assert current.redis_url == settings.redis_url
    assert "shop.example" == settings.collector.cookie_domain  # read per request: applied


async def test_a_sighup_before_the_loop_runs_is_kept_and_served(
        config: Path, environ: dict[str, str], sighup_restored: None) -> None:
    app = build_app(load_settings(config, environ), redis=FakeRedis(server=FakeServer()))
    reloads = ReloadSignal()
    reloads.expect()
    config.write_text(config.read_text() + NEW_LINK)

    os.kill(os.getpid(), signal.SIGHUP)  # before the worker's loop handles the signal
    async with serving(app):
        reloads.attach(asyncio.get_running_loop(), app.ctx, environ)
        assert 302 == await status_of(app, "/go/spring")

        # And a later one reaches the loop's handler
        config.write_text(config.read_text().replace('slug = "spring"', 'slug = "summer"'))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if "summer" in app.ctx.links:
                break
        assert 302 == await status_of(app, "/go/summer")
        assert 404 == await status_of(app, "/go/spring")
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
