"""Counting the events kept from Meta for want of consent (``relay.consent``): never stored,
never sent, but never invisible either.

Each one is counted twice: at once in the collector's Prometheus counter
``pixelrelay_collector_withheld_events{pixel_id, reason}`` (exact, per worker, summed by
``/metrics``), and within ``FLUSH_INTERVAL_S`` in the per-minute counters hash the dashboard
reads (``relay.keys.counters``, field ``withheld:<pixel>:<event_name>``, like the relay's
``delivered:...``). The Redis copy is best effort: the request never waits for it, and counts
not yet flushed when a worker dies or Redis is away are lost (Prometheus keeps them).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import structlog

from relay import keys
from relay.ledger import COUNTER_TTL_S, minute_of

log = structlog.get_logger("collector")
FLUSH_INTERVAL_S = 1.0
AddFn = Callable[[str, Counter[str]], Awaitable[None]]


class WithheldCounter:
    def __init__(self, prometheus_counter: object, add: AddFn | None,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self._prometheus = prometheus_counter
        self._add = add
        self._clock_ms = clock_ms
        self._pending: Counter[str] = Counter()

    def count(self, pixel_id: str, event_name: str, reason: str) -> None:
        self._prometheus.labels(pixel_id, reason).inc()  # type: ignore[attr-defined]
        self._pending[f"withheld:{pixel_id}:{event_name}"] += 1

    async def flush(self) -> None:
        """Add what was counted since the last flush to this minute's counters."""
        if not self._pending or self._add is None:
            return
        pending, self._pending = self._pending, Counter()
        try:
            await self._add(keys.counters(minute_of(self._clock_ms())), pending)
        except Exception as exc:  # noqa: BLE001 - best effort: Prometheus has the exact count
            log.warning("withheld_count_not_stored", error=type(exc).__name__,
                        events=sum(pending.values()))

    async def run(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Flush every ``interval_s`` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                await self.flush()
        finally:
            await self.flush()


def redis_adder(client: object) -> AddFn:
    """``HINCRBY`` each field and keep the hash as long as the relay keeps its counters."""
    async def add(key: str, counts: Counter[str]) -> None:
        pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
        for name, n in counts.items():
            pipe.hincrby(key, name, n)
        pipe.expire(key, COUNTER_TTL_S)
        await pipe.execute()

    return add
