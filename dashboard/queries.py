"""What the dashboard reads from Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis

from relay import _dramatiq, keys
from relay.queues import QUEUE_NAMES


@dataclass(frozen=True, slots=True)
class QueueDepth:
    priority: str
    inbox_events: int
    ready_batches: int
    in_flight_batches: int
    waiting_retry: int
    dramatiq_dead: int


async def queue_depths(client: Redis) -> list[QueueDepth]:
    result = []
    for priority, queue in QUEUE_NAMES.items():
        pixels = [p.decode() for p in await client.smembers(keys.inbox_pixels(queue))]
        pipe = client.pipeline(transaction=False)
        for pixel in pixels:
            pipe.llen(keys.inbox(queue, pixel))
        pipe.llen(_dramatiq.queue(queue))
        pipe.hlen(_dramatiq.messages(queue))
        pipe.hlen(_dramatiq.messages(_dramatiq.delay_queue(queue)))
        pipe.zcard(_dramatiq.dead_queue(queue))
        values = await pipe.execute()
        inbox = sum(values[: len(pixels)])
        ready, msgs, delayed, dead = values[len(pixels):]
        result.append(QueueDepth(priority, inbox, ready, max(0, msgs - ready), delayed, dead))
    return result


@dataclass(frozen=True, slots=True)
class PixelStatus:
    pixel_id: str
    health: dict[str, Any] | None  # the relay's last token/reachability check


async def pixel_statuses(client: Redis, pixel_ids: list[str]) -> list[PixelStatus]:
    if not pixel_ids:
        return []
    raw = await client.mget([keys.pixel_health(p) for p in pixel_ids])
    return [PixelStatus(p, msgspec.json.decode(r) if r else None)
            for p, r in zip(pixel_ids, raw, strict=True)]


async def dead_letter_count(client: Redis) -> int:
    return int(await client.zcard(keys.dead_letters()))
