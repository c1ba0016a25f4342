"""The dashboard placeholder page: queue depths, pixel health, dead letters, from Redis."""

from __future__ import annotations

import fakeredis
import msgspec
from litestar.testing import AsyncTestClient

from dashboard.app import build_app
from relay import keys
from relay.config import settings_from_mapping

PIXEL = "1234567890"
SETTINGS = settings_from_mapping({"pixels": [{"id": PIXEL}, {"id": "2234567890"}]}, environ={})


async def test_page_shows_queue_depths_health_and_dead_letters() -> None:
    redis = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
    await redis.rpush(keys.inbox("relay_low", PIXEL), b"a", b"b", b"c")
    await redis.sadd(keys.inbox_pixels("relay_low"), PIXEL)
    await redis.set(keys.pixel_health(PIXEL), msgspec.json.encode(
        {"ok": False, "latency_ms": 12.5, "error": {"message": "Invalid OAuth access token"}}))
    await redis.zadd(keys.dead_letters(), {f"{PIXEL}:Purchase:e1": 1, f"{PIXEL}:Lead:e2": 2})

    async with AsyncTestClient(build_app(SETTINGS, redis=redis)) as client:
        page = (await client.get("/")).text

    assert "<td>low</td><td>3</td>" in page
    assert "failing: Invalid OAuth access token" in page
    assert "not checked yet" in page  # the second pixel
    assert '<strong id="dead-letters">2</strong>' in page


async def test_healthz_answers() -> None:
    redis = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
    async with AsyncTestClient(build_app(SETTINGS, redis=redis)) as client:
        assert 200 == (await client.get("/healthz")).status_code
