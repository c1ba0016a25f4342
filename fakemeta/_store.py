"""What the fake has received: accepted events per pixel, duplicates, batch sizes, rejections.

Tests and load tests read it through ``/_fake/received`` and ``/_fake/events`` to check what
the relay actually delivered, and ``/_fake/arrivals`` to see when each event arrived. Counters
are exact; bodies, id lists and arrivals keep only the newest ``max_events_kept`` per pixel (per
pixel and event name for arrivals) so a long load test cannot exhaust memory. Every method runs
without awaiting, so within one event loop it is atomic; the lock covers callers on threads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fakemeta._validation import EventBatch


@dataclass
class _Pixel:
    events: int = 0
    duplicates: int = 0
    bodies: deque[dict[str, Any]] = field(default_factory=deque)
    event_ids: deque[str] = field(default_factory=deque)
    seen: set[tuple[str, str]] = field(default_factory=set)
    test_event_codes: set[str] = field(default_factory=set)
    # (test_event_code, event_id) of each accepted event sent with a code, newest kept
    tested: deque[tuple[str, str]] = field(default_factory=deque)
    partner_agents: set[str] = field(default_factory=set)
    # event_name -> (event_id, wall-clock ms of acceptance), newest max_events_kept per name,
    # so a flood of PageViews cannot push the few Purchases a latency test looks for out.
    arrivals: dict[str, deque[tuple[str, int]]] = field(default_factory=dict)


class Store:
    """In-memory record of everything the events endpoint saw, for one process."""

    def __init__(
        self, max_events_kept: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._max_kept = max_events_kept
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0  # not forgotten by reset: those requests are still being held
        self._reset()

    def _reset(self) -> None:
        self._pixels: dict[str, _Pixel] = {}
        self._requests = 0
        self._batches = 0
        self._batch_sizes: deque[int] = deque(maxlen=self._max_kept)
        self._rejected: Counter[int] = Counter()

    def reset(self) -> None:
        """Forget everything received so far."""
        with self._lock:
            self._reset()

    def count_request(self) -> None:
        """One more request reached the events endpoint, whatever its outcome."""
        with self._lock:
            self._requests += 1

    def hold_started(self) -> None:
        """A request began waiting out the injected latency."""
        with self._lock:
            self._in_flight += 1

    def hold_ended(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def record_rejection(self, code: int) -> None:
        """A request was refused with Meta error ``code``."""
        with self._lock:
            self._rejected[code] += 1

    def record_batch(self, pixel_id: str, batch: EventBatch) -> int:
        """Keep an accepted batch; returns how many of its events were duplicates."""
        with self._lock:
            pixel = self._pixels.get(pixel_id)
            if pixel is None:
                pixel = self._pixels[pixel_id] = _Pixel(
                    bodies=deque(maxlen=self._max_kept), event_ids=deque(maxlen=self._max_kept),
                    tested=deque(maxlen=self._max_kept),
                )
            self._batches += 1
            self._batch_sizes.append(len(batch.events))
            if batch.test_event_code is not None:
                pixel.test_event_codes.add(batch.test_event_code)
            if batch.partner_agent is not None:
                pixel.partner_agents.add(batch.partner_agent)
            duplicates = 0
            now_ms = int(self._clock() * 1000)
            for event in batch.events:
                pixel.events += 1
                pixel.bodies.append(event)
                raw_id = event.get("event_id")
                if raw_id is None:
                    continue
                event_id = str(raw_id)
                pixel.event_ids.append(event_id)
                if batch.test_event_code is not None:
                    pixel.tested.append((batch.test_event_code, event_id))
                arrivals = pixel.arrivals.get(event["event_name"])
                if arrivals is None:
                    arrivals = pixel.arrivals[event["event_name"]] = deque(maxlen=self._max_kept)
                arrivals.append((event_id, now_ms))
                key = (event["event_name"], event_id)
                if key in pixel.seen:
                    duplicates += 1
                else:
                    pixel.seen.add(key)
            pixel.duplicates += duplicates
            return duplicates

    def summary(self) -> dict[str, Any]:
        """Counts for ``GET /_fake/received``."""
        with self._lock:
            return {
                "pixels": {
                    pixel_id: {
                        "events": pixel.events,
                        "event_ids": list(pixel.event_ids),
                        "duplicates": pixel.duplicates,
                    }
                    for pixel_id, pixel in self._pixels.items()
                },
                "requests": self._requests,
                "in_flight": self._in_flight,
                "batches": self._batches,
                "batch_sizes": list(self._batch_sizes),
                "rejected": {str(code): n for code, n in sorted(self._rejected.items())},
            }

    def pixel_events(self, pixel_id: str) -> dict[str, Any]:
        """Accepted event bodies of one pixel for ``GET /_fake/events``."""
        with self._lock:
            pixel = self._pixels.get(pixel_id) or _Pixel()
            return {
                "pixel_id": pixel_id,
                "events": list(pixel.bodies),
                "test_event_codes": sorted(pixel.test_event_codes),
                "test_events": _ids_by_code(pixel.tested),
                "partner_agents": sorted(pixel.partner_agents),
            }

    def arrivals(self, pixel_id: str, event_name: str) -> dict[str, Any]:
        """When each accepted event of one pixel and name arrived, for ``GET /_fake/arrivals``."""
        with self._lock:
            pixel = self._pixels.get(pixel_id) or _Pixel()
            kept = pixel.arrivals.get(event_name, ())
            return {
                "pixel_id": pixel_id,
                "event_name": event_name,
                "arrivals": [{"event_id": eid, "received_ms": ms} for eid, ms in kept],
            }


def _ids_by_code(tested: deque[tuple[str, str]]) -> dict[str, list[str]]:
    """The event ids that arrived with each ``test_event_code``, in arrival order."""
    ids: dict[str, list[str]] = {}
    for code, event_id in tested:
        ids.setdefault(code, []).append(event_id)
    return ids
