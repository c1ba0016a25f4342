"""Helpers for the collector's unit tests: a settings builder, a Redis dump, awaiting conditions."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from collector.app import CollectorApp
from relay.clicks import bucket_of, decode_click
from relay.config import Settings, settings_from_mapping
from relay.events import ClickContext, Envelope, decode_envelope
from tests.support import DEMO_API_KEY, DEMO_PIXEL

PIXEL = DEMO_PIXEL
SECOND_PIXEL = "2234567890"
API_KEY = DEMO_API_KEY
RESTRICTED_KEY = "restricted-api-key"  # may send to PIXEL only
ORIGIN = "https://shop.example"
PROXY = "10.0.0.2"  # inside collector.trusted_proxies
VISITOR_IP = "203.0.113.7"  # the TCP peer of direct requests
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
DESTINATION_HOST = "shop.example"


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def make_settings(tmp_path: Path, **collector: Any) -> Settings:
    """Two pixels, a link reporting to both, a key for all pixels and one for PIXEL only."""
    raw: dict[str, Any] = {
        "collector": {
            "spool_dir": str(tmp_path / "spool"),
            "allowed_origins": [ORIGIN],
            "trusted_proxies": ["10.0.0.0/8"],
            "redis_timeout_ms": 200,
            "redis_probe_interval_ms": 50,
            "max_body_bytes": 256 * 1024,
            **collector,
        },
        "pixels": [{"id": PIXEL}, {"id": SECOND_PIXEL}],
        "links": [
            {
                "slug": "demo",
                "destination": f"https://{DESTINATION_HOST}/landing?cid={{click_id}}",
                "pixels": [PIXEL, SECOND_PIXEL],
            },
        ],
        "api_keys": [
            {"name": "shop", "sha256": sha256(API_KEY)},
            {"name": "partner", "sha256": sha256(RESTRICTED_KEY), "pixels": [PIXEL]},
        ],
    }
    return settings_from_mapping(raw, environ={})


async def eventually(condition: Callable[[], Any], timeout_s: float = 5.0,
                     what: str = "condition") -> Any:
    """Await until ``condition`` returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.005)


async def inbox(redis: Redis, queue: str, pixel_id: str) -> list[Envelope]:
    """The envelopes waiting in one queue's inbox for one pixel, oldest first."""
    items = await redis.lrange(f"pixelrelay:inbox:{queue}:{pixel_id}", 0, -1)
    return [decode_envelope(raw) for raw in items]


async def stored_click(redis: Redis, click_id: str) -> ClickContext:
    """The click context stored for ``click_id`` (``relay.clicks``' layout), decoded."""
    bucket = bucket_of(click_id)
    assert bucket is not None, f"{click_id!r} is not a click id with a day"
    raw = await redis.hget(bucket, click_id)
    assert raw is not None, f"no click context for {click_id}"
    return decode_click(click_id, raw)


async def everything_in(redis: Redis) -> bytes:
    """Every key and every value in Redis, concatenated: to prove something is nowhere."""
    chunks: list[bytes] = []
    async for key in redis.scan_iter():
        chunks.append(key)
        kind = await redis.type(key)
        if kind == b"string":
            chunks.append(await redis.get(key))
        elif kind == b"list":
            chunks += await redis.lrange(key, 0, -1)
        elif kind == b"set":
            chunks += await redis.smembers(key)
        elif kind == b"zset":
            chunks += await redis.zrange(key, 0, -1)
        elif kind == b"hash":
            fields = await redis.hgetall(key)
            chunks += [*fields.keys(), *fields.values()]
        else:
            raise AssertionError(f"unexpected Redis type {kind!r} of {key!r}")
    return b"\n".join(chunks)


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition; 0 when the series does not exist yet."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@asynccontextmanager
async def serving(app: CollectorApp) -> AsyncIterator[CollectorApp]:
    """Run the app's lifespan (start-up now, shutdown on leaving) as a server would.

    The lifespan holds anyio cancel scopes, which must be left by the task that entered them,
    and pytest-asyncio tears fixtures down in another task: so a task of its own runs it.
    """
    started, stopping = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        async with app.lifespan():
            started.set()
            await stopping.wait()

    server = asyncio.create_task(serve())
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait({server, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        waiting.cancel()
        server.result()  # start-up failed: raise its error here
    try:
        yield app
    finally:
        stopping.set()
        await server


def asgi_client(app: CollectorApp, peer: str) -> httpx.AsyncClient:
    """An in-process client whose TCP peer is ``peer``; the cast bridges the ASGI typings."""
    transport = httpx.ASGITransport(app=cast(Any, app), client=(peer, 51000))
    return httpx.AsyncClient(transport=transport, base_url="http://go.test")
