"""Fixtures for the collector: the app on fakeredis (a private server per test), run in-process
with its lifespan, and clients that reach it directly or through a trusted proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis

from collector.app import CollectorApp, build_app
from collector.spool import Spool
from relay.config import Settings
from tests.collector.support import PROXY, VISITOR_IP, asgi_client, make_settings, serving


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def fake_server() -> FakeServer:
    # Without a server of their own, FakeRedis clients share one per host:port across tests.
    return FakeServer()


@pytest.fixture
def redis(fake_server: FakeServer) -> FakeRedis:
    return FakeRedis(server=fake_server)


@pytest.fixture
def app(settings: Settings, fake_server: FakeServer) -> CollectorApp:
    # The app closes its client at shutdown, so it gets one of its own on the shared server.
    return build_app(settings, redis=FakeRedis(server=fake_server))


@pytest.fixture
async def running_app(app: CollectorApp) -> AsyncIterator[CollectorApp]:
    """The app with its lifespan entered: the enqueuer runs; leaving it stops and flushes."""
    async with serving(app):
        yield app


@pytest.fixture
async def client(running_app: CollectorApp) -> AsyncIterator[httpx.AsyncClient]:
    """A visitor talking to the collector directly (an untrusted peer)."""
    async with asgi_client(running_app, VISITOR_IP) as c:
        yield c


@pytest.fixture
async def proxied_client(running_app: CollectorApp) -> AsyncIterator[httpx.AsyncClient]:
    """Requests arriving from the trusted reverse proxy."""
    async with asgi_client(running_app, PROXY) as c:
        yield c


@pytest.fixture
def nothing_can_store(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis is down and the disk spool full: every write ends in a StorageError."""
    fake_server.connected = False

    def disk_full(self: Spool, records: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Spool, "append", disk_full)
