"""The dashboard app over a fake Redis (sync and async clients on one fake server), with a
logged-in test client per role."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import fakeredis
import pytest
from argon2 import PasswordHasher
from bs4 import BeautifulSoup
from litestar.testing import AsyncTestClient

from dashboard.app import build_app
from relay.config import Settings, settings_from_mapping

PIXEL = "1234567890"
OTHER_PIXEL = "2234567890"
OPERATOR_PASSWORD = "operator-password-1"
VIEWER_PASSWORD = "viewer-password-1"
# Cheap Argon2id parameters keep the tests quick; verify() reads them from the hash.
_cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_HASHES = {"op": _cheap.hash(OPERATOR_PASSWORD), "viewer": _cheap.hash(VIEWER_PASSWORD)}


def make_settings(**dashboard: object) -> Settings:
    return settings_from_mapping({
        "pixels": [{"id": PIXEL}, {"id": OTHER_PIXEL}],
        "links": [{"slug": "summer", "destination": "https://shop.example/",
                   "pixels": [PIXEL]}],
        "dashboard": {"collector_url": "http://127.0.0.1:9", **dashboard},
        "operators": [{"name": "op", "argon2": _HASHES["op"], "role": "operator"},
                      {"name": "viewer", "argon2": _HASHES["viewer"], "role": "viewer"}],
    }, environ={})


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def anonymous(server: fakeredis.FakeServer, redis: fakeredis.FakeRedis,
                    settings: Settings) -> AsyncIterator[AsyncTestClient]:
    app = build_app(settings, redis=redis, async_redis=fakeredis.aioredis.FakeRedis(
        server=server), background=False)
    async with AsyncTestClient(app) as client:
        yield client


def csrf_of(page: str) -> str:
    soup = BeautifulSoup(page, "html.parser")
    field = soup.find("input", attrs={"name": "_csrf_token"})
    assert field is not None, "the page has no CSRF field"
    return str(field["value"])


async def log_in(client: AsyncTestClient, name: str, password: str) -> None:
    page = (await client.get("/login")).text
    answer = await client.post("/login", data={"name": name, "password": password,
                                               "_csrf_token": csrf_of(page), "next": "/"},
                               follow_redirects=False)
    assert 303 == answer.status_code, answer.text


@pytest.fixture
async def operator(anonymous: AsyncTestClient) -> AsyncTestClient:
    await log_in(anonymous, "op", OPERATOR_PASSWORD)
    return anonymous


@pytest.fixture
async def viewer(anonymous: AsyncTestClient) -> AsyncTestClient:
    await log_in(anonymous, "viewer", VIEWER_PASSWORD)
    return anonymous


def soup(text: str) -> BeautifulSoup:
    return BeautifulSoup(text, "html.parser")


def cell_text(element: object) -> str:
    return re.sub(r"\s+", " ", getattr(element, "get_text", lambda: "")()).strip()
