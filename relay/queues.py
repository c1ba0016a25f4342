"""Priority queues: which Dramatiq queue an event goes to, and the inbox commands that put it there.

Events wait in a per-queue, per-pixel inbox list; the batcher (``relay.batcher``) turns them into
Dramatiq messages of up to 1,000 events. Separate queues with their own worker processes are the
only priority Redis offers (Dramatiq's ``priority`` option does not reorder Redis).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Literal

from relay.config import RelaySettings

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
QUEUE_NAMES: dict[Priority, str] = {p: f"relay_{p}" for p in PRIORITIES}


def priority_for(event_name: str, settings: RelaySettings) -> Priority:
    if event_name in settings.high_events:
        return "high"
    if event_name in settings.low_events:
        return "low"
    return "normal"


def queue_for(event_name: str, settings: RelaySettings) -> str:
    return QUEUE_NAMES[priority_for(event_name, settings)]


# Port offsets of a worker's /metrics from relay.metrics_port, one per set of queues a process
# serves: high +0, normal +1, low +2, then the sets of two and of three (docs/metrics.md).
METRICS_PORT_OFFSETS: dict[tuple[Priority, ...], int] = {
    group: offset for offset, group in enumerate(
        g for n in (1, 2, 3) for g in itertools.combinations(PRIORITIES, n))
}


def metrics_port(base: int, priorities: Iterable[Priority]) -> int:
    """The /metrics port of a worker serving ``priorities``, or 0 when ``base`` is 0 (none)."""
    chosen = set(priorities)
    return base + METRICS_PORT_OFFSETS[tuple(p for p in PRIORITIES if p in chosen)] if base else 0
