"""The relay's state as Redis holds it now, for the elected observer's gauges and built-in
alerts: queue depths, the oldest waiting event, live workers, limiter factors, pixel health,
pauses (``relay.breaker.pause_status``).

Read through ``relay.status``, the functions the dashboard reads with; a worker whose presence
(``WorkerPresence``, written by its pump) is older than ``heartbeat_timeout_ms`` is not live.
One worker at a time is the observer, elected like the health checker with a Redis key
(``Election``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis

from relay import keys, status
from relay.breaker import PixelPause, pause_status
from relay.config import Settings
from relay.queues import QUEUE_NAMES

# Extend the lease only if it is still ours: a worker that lost it (paused past the lease) must
# not take it back from the one elected meanwhile.
_HOLD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class QueueState:
    queue: str
    inbox_events: int
    ready_batches: int
    in_flight_batches: int
    delayed_batches: int
    oldest_waiting_ms: int | None  # received time of the oldest waiting event
    live_workers: int


@dataclass(frozen=True, slots=True)
class PixelState:
    pixel_id: str
    limiter_factor: float
    health_ok: bool | None  # None: never checked (or the check expired)
    health_error_code: int | None
    paused: PixelPause | None = None  # relay.breaker.pause_status, when paused
    waiting: int = 0  # events in the pixel's inboxes


@dataclass(frozen=True, slots=True)
class RelayState:
    at_ms: int
    queues: tuple[QueueState, ...]
    pixels: tuple[PixelState, ...]
    dead_letters: int

    def oldest_waiting_s(self, queue: QueueState) -> float:
        if queue.oldest_waiting_ms is None:
            return 0.0
        return max(0.0, (self.at_ms - queue.oldest_waiting_ms) / 1000)


class Election:
    """A lease in Redis: ``hold`` returns True while this worker is the observer."""

    def __init__(self, client: Redis, worker_id: str, lease_ms: int) -> None:
        self._client = client
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self._hold = client.register_script(_HOLD)

    def hold(self) -> bool:
        return bool(self._hold(keys=[keys.observer_leader()], args=[self.worker_id,
                                                                     self.lease_ms]))

    def resign(self) -> None:
        if self._client.get(keys.observer_leader()) == self.worker_id.encode():
            self._client.delete(keys.observer_leader())


def relay_state(client: Redis, settings: Settings, now_ms: int | None = None) -> RelayState:
    """Everything the observer exports, read through ``relay.status`` (the dashboard's reads)."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    timeout = settings.relay.heartbeat_timeout_ms
    live = [w for w in status.workers(client, now) if w.alive(now, timeout)]
    queues = tuple(
        QueueState(QUEUE_NAMES[d.priority], d.inbox_events, d.ready_batches,  # type: ignore[index]
                   d.in_flight_batches, d.waiting_retry,
                   None if d.oldest_waiting_ms is None else now - d.oldest_waiting_ms,
                   sum(QUEUE_NAMES[d.priority] in w.queues for w in live))  # type: ignore[index]
        for d in status.queue_depths(client, now))
    pixels = []
    pauses = pause_status(client, [p.id for p in settings.pixels])
    for p in status.pixel_states(client, [p.id for p in settings.pixels], now):
        error = p.health.get("error") if p.health else None
        code = error.get("code") if isinstance(error, dict) else None
        pixels.append(PixelState(p.pixel_id, p.throttle_factor,
                                 None if p.health is None else bool(p.health.get("ok")),
                                 code if isinstance(code, int) else None,
                                 pauses[p.pixel_id] if pauses[p.pixel_id].paused else None,
                                 pauses[p.pixel_id].waiting))
    dead = int(client.zcard(keys.dead_letters()))
    return RelayState(now, queues, tuple(pixels), dead)


def gauge_values(state: RelayState) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """``state`` as the Redis-derived gauges of ``relay.metrics``."""
    values: dict[str, list[tuple[tuple[str, ...], float]]] = {
        "pixelrelay_relay_inbox_events": [((q.queue,), q.inbox_events) for q in state.queues],
        "pixelrelay_relay_queue_batches": [
            ((q.queue, name), n) for q in state.queues
            for name, n in (("ready", q.ready_batches), ("in_flight", q.in_flight_batches),
                            ("delayed", q.delayed_batches))
        ],
        "pixelrelay_relay_oldest_waiting_seconds": [
            ((q.queue,), state.oldest_waiting_s(q)) for q in state.queues],
        "pixelrelay_relay_live_workers": [((q.queue,), q.live_workers) for q in state.queues],
        "pixelrelay_relay_limiter_factor": [((p.pixel_id,), p.limiter_factor)
                                            for p in state.pixels],
        "pixelrelay_relay_pixel_health_ok": [((p.pixel_id,), 1.0 if p.health_ok else 0.0)
                                             for p in state.pixels if p.health_ok is not None],
        "pixelrelay_relay_pixel_health_error_code": [
            ((p.pixel_id,), float(p.health_error_code or 0))
            for p in state.pixels if p.health_ok is not None],
        "pixelrelay_relay_dead_letters": [((), state.dead_letters)],
        "pixelrelay_relay_pixel_paused": [
            ((p.pixel_id, p.paused.reason if p.paused else ""), 1.0 if p.paused else 0.0)
            for p in state.pixels],
        "pixelrelay_relay_pixel_paused_since_timestamp_seconds": [
            ((p.pixel_id,), p.paused.since_ms / 1000) for p in state.pixels if p.paused],
        "pixelrelay_relay_pixel_waiting_events": [((p.pixel_id,), float(p.waiting))
                                                  for p in state.pixels],
    }
    return values
