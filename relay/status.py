"""What is happening now: queue depths and ages, live workers, each pixel's state.

Written by the relay (``WorkerPresence`` from the pump, ``PixelActivity`` from the deliverer),
read by the dashboard. Every read is a fixed number of commands per queue, pixel or worker:
no key is searched for.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from redis import Redis

from relay import _dramatiq, keys
from relay.breaker import PixelPause, decode_pause_reads, queue_pause_reads
from relay.events import decode_envelope
from relay.limiter import PixelLimiter
from relay.queues import QUEUE_NAMES

PRESENCE_TTL_S = 86_400  # a worker gone this long is forgotten


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    priority: str
    inbox_events: int
    ready_batches: int
    in_flight_batches: int
    waiting_retry: int
    dramatiq_dead: int
    oldest_waiting_ms: int | None  # age of the oldest event still in the inbox or a ready batch


def queue_depths(client: Redis, now_ms: int | None = None) -> list[QueueDepth]:
    """Every queue's depths and oldest waiting event, in two or three round trips."""
    now = _now_ms() if now_ms is None else now_ms
    queues = list(QUEUE_NAMES.items())
    pipe = client.pipeline(transaction=False)
    for _, queue in queues:
        pipe.smembers(keys.inbox_pixels(queue))
    pixels_of = [sorted(p.decode() for p in found) for found in pipe.execute()]
    pipe = client.pipeline(transaction=False)
    for (_, queue), pixels in zip(queues, pixels_of, strict=True):
        for pixel in pixels:
            pipe.llen(keys.inbox(queue, pixel))
            pipe.lindex(keys.inbox(queue, pixel), 0)
        pipe.llen(_dramatiq.queue(queue))
        pipe.hlen(_dramatiq.messages(queue))
        pipe.hlen(_dramatiq.messages(_dramatiq.delay_queue(queue)))
        pipe.zcard(_dramatiq.dead_queue(queue))
        pipe.lindex(_dramatiq.queue(queue), 0)
    values = pipe.execute()
    rows = []
    firsts: list[tuple[str, str]] = []
    at = 0
    for (priority, queue), pixels in zip(queues, pixels_of, strict=True):
        mine = values[at: at + 2 * len(pixels) + 5]
        at += len(mine)
        inbox = sum(mine[0: 2 * len(pixels): 2])
        heads = mine[1: 2 * len(pixels): 2]
        ready, msgs, delayed, dead, first_ready = mine[2 * len(pixels):]
        oldest = [decode_envelope(h).received_ms for h in heads if h]
        if first_ready:
            firsts.append((queue, first_ready.decode()))
        rows.append((priority, queue, inbox, ready, msgs, delayed, dead, oldest))
    stamps = _message_timestamps(client, firsts)
    result = []
    for priority, queue, inbox, ready, msgs, delayed, dead, oldest in rows:
        stamp = stamps.get(queue)
        if stamp is not None:
            oldest.append(stamp)
        result.append(QueueDepth(
            priority, inbox, ready, max(0, msgs - ready), delayed, dead,
            now - min(oldest) if oldest else None,
        ))
    return result


def _message_timestamps(client: Redis, firsts: Sequence[tuple[str, str]]
                        ) -> dict[str, int | None]:
    """When each queue's first ready batch was made (its oldest event waited at least this
    long), in one round trip."""
    if not firsts:
        return {}
    pipe = client.pipeline(transaction=False)
    for queue, message_id in firsts:
        pipe.hget(_dramatiq.messages(queue), message_id)
    found: dict[str, int | None] = {}
    for (queue, _), raw in zip(firsts, pipe.execute(), strict=True):
        found[queue] = None
        if raw:
            try:
                stamp = msgspec.json.decode(raw).get("message_timestamp")
            except msgspec.DecodeError:
                continue
            found[queue] = int(stamp) if stamp else None
    return found


# -- workers ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Worker:
    worker_id: str
    queues: list[str]
    threads: int
    host: str
    pid: int
    seen_ms: int

    def alive(self, now_ms: int, timeout_ms: int) -> bool:
        return now_ms - self.seen_ms <= timeout_ms


class WorkerPresence:
    """A relay worker says it is alive (from its pump, about once a second)."""

    def __init__(self, client: Redis, worker_id: str, queues: Sequence[str], threads: int) -> None:
        self._client = client
        self._id = worker_id
        self._info = {"queues": list(queues), "threads": threads, "host": socket.gethostname(),
                      "pid": os.getpid()}

    def beat(self, now_ms: int | None = None) -> None:
        now = _now_ms() if now_ms is None else now_ms
        self._client.hset(keys.workers(), self._id,
                          msgspec.json.encode({**self._info, "seen_ms": now}))
        self._client.expire(keys.workers(), PRESENCE_TTL_S)

    def leave(self) -> None:
        self._client.hdel(keys.workers(), self._id)


def workers(client: Redis, now_ms: int | None = None) -> list[Worker]:
    """Every worker seen in the last day, newest first (the caller decides who is alive)."""
    now = _now_ms() if now_ms is None else now_ms
    found = []
    for wid, raw in client.hgetall(keys.workers()).items():
        info = msgspec.json.decode(raw)
        if now - int(info.get("seen_ms", 0)) > PRESENCE_TTL_S * 1000:
            continue
        found.append(Worker(wid.decode(), list(info.get("queues", [])),
                            int(info.get("threads", 0)), str(info.get("host", "")),
                            int(info.get("pid", 0)), int(info.get("seen_ms", 0))))
    return sorted(found, key=lambda w: (sorted(w.queues), -w.seen_ms))


# -- pixels -------------------------------------------------------------------------------------
class PixelActivity:
    """The deliverer notes each pixel's last delivery and last error (one HSET per batch)."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    def delivered(self, pixel_id: str, at_ms: int) -> None:
        self._client.hset(keys.pixel_activity(pixel_id), "delivered_ms", at_ms)

    def failed(self, pixel_id: str, error: dict[str, Any], at_ms: int) -> None:
        """``error``: Meta's answer as ``DeliveryError.as_dict`` gives it (no event data)."""
        self._client.hset(keys.pixel_activity(pixel_id), mapping={
            "error": msgspec.json.encode({**error, "at_ms": at_ms})})


@dataclass(frozen=True, slots=True)
class PixelState:
    pixel_id: str
    health: dict[str, Any] | None  # the relay's last token/reachability check
    throttle_factor: float  # 1.0 = full speed; 0.5 = halved after Meta throttled
    last_delivery_ms: int | None
    last_error: dict[str, Any] | None
    pause: PixelPause | None = None  # the breaker's pause: reason, since, events waiting


def pixel_states(client: Redis, pixel_ids: Sequence[str], now_ms: int | None = None
                 ) -> list[PixelState]:
    if not pixel_ids:
        return []
    now = _now_ms() if now_ms is None else now_ms
    limiter = PixelLimiter(client)
    pipe = client.pipeline(transaction=False)
    for p in pixel_ids:
        pipe.get(keys.pixel_health(p))
        pipe.hgetall(keys.pixel_activity(p))
        limiter.queue_factor(pipe, p)
    queue_pause_reads(pipe, pixel_ids)
    raw = pipe.execute()
    pauses = decode_pause_reads(pixel_ids, raw[3 * len(pixel_ids):])
    result = []
    for i, p in enumerate(pixel_ids):
        health, activity, throttle = raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]
        delivered = activity.get(b"delivered_ms")
        error = activity.get(b"error")
        result.append(PixelState(
            p, msgspec.json.decode(health) if health else None,
            limiter.factor_of(throttle, now),
            int(delivered) if delivered else None,
            msgspec.json.decode(error) if error else None,
            pauses[p],
        ))
    return result
