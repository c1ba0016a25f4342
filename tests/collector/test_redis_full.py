"""The collector against a real Redis at ``maxmemory`` with ``noeviction``: Redis refuses the
STORE script, the events are spooled and acknowledged, and replayed once Redis has room."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis as AsyncRedis

from collector.enqueue import DurableEnqueuer
from collector.spool import Spool
from relay import keys
from relay.inbox import AsyncStore, EventWrite
from tests.collector.support import eventually
from tests.support import RedisServer

QUEUE, PIXEL = "relay_high", "1234567890"


def write(i: int) -> EventWrite:
    return EventWrite(QUEUE, PIXEL, f"{PIXEL}:Purchase:full-{i}", 1_796_000_000_000,
                      f"event-{i}".encode())


async def test_events_redis_refuses_for_memory_are_spooled_then_replayed(tmp_path: Path) -> None:
    # Given a Redis with no memory left for writes (noeviction: it refuses, evicts nothing)
    server = RedisServer(tmp_path / "redis").start()
    admin = server.client()
    client = AsyncRedis.from_url(server.url)
    spool = Spool(tmp_path / "spool")
    enqueuer = DurableEnqueuer(AsyncStore(client, 3600), client.ping, spool,
                               redis_timeout_s=2.0, probe_interval_s=0.05)
    try:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        await enqueuer.start()

        # When events arrive, they are acknowledged from the spool
        destinations = [await enqueuer.store([write(i)]) for i in range(3)]
        assert (["spool"] * 3, 0) == (destinations, admin.llen(keys.inbox(QUEUE, PIXEL)))

        # Then, once Redis has room again, they are replayed into the inbox in order
        admin.config_set("maxmemory", 0)
        await eventually(lambda: admin.llen(keys.inbox(QUEUE, PIXEL)) == 3, timeout_s=10)
        assert [b"event-0", b"event-1", b"event-2"] == admin.lrange(
            keys.inbox(QUEUE, PIXEL), 0, -1)
    finally:
        await enqueuer.stop()
        await client.aclose()
        admin.close()
        server.stop()
