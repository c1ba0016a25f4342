"""Prometheus metrics of a relay worker process, served on its own ``/metrics`` port.

Two kinds, both on one registry of this object's own (no global state):

- per process: what this worker did (events delivered, dead, duplicate, retried, deferred;
  batch sizes and Meta's request latency; its heartbeat). Prometheus adds the processes up,
  ``sum by (pixel) (...)``; a restarted worker starts from zero, which ``rate()`` handles.
- read from Redis (queue depths, the oldest waiting event, limiter factors, live workers, pixel
  health, dead letters held): the same for every worker, so only the elected observer
  (``relay.observer``) exports them; the others export none of these series, and a dashboard
  never double counts them. See ``RedisGauges``.

Labels are bounded: ``pixel`` is a configured pixel id (anything else is ``unconfigured``),
``event_name`` is one of Meta's standard events or a configured one (anything else is
``other``), ``queue`` one of the three priority queues, ``outcome``/``kind``/``reason``/``code``
small fixed sets. Never an event id. Every metric is listed in ``docs/metrics.md``
(``tests/relay/test_metrics.py`` keeps that table and ``METRICS`` in step).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from relay.config import Settings
from relay.events import Envelope
from relay.queues import queue_for

# Meta's standard events (developers.facebook.com/docs/meta-pixel/reference#standard-events).
STANDARD_EVENTS = frozenset({
    "AddPaymentInfo", "AddToCart", "AddToWishlist", "CompleteRegistration", "Contact",
    "CustomizeProduct", "Donate", "FindLocation", "InitiateCheckout", "Lead", "PageView",
    "Purchase", "Schedule", "Search", "StartTrial", "SubmitApplication", "Subscribe",
    "ViewContent",
})
OTHER_EVENT = "other"
UNCONFIGURED_PIXEL = "unconfigured"
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000)
REQUEST_SECONDS_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: the name Prometheus shows (with ``_total`` for counters), its type, labels."""

    name: str
    kind: str  # counter, gauge, histogram
    labels: tuple[str, ...]
    help: str
    redis_derived: bool = False


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("pixelrelay_relay_events_delivered_total", "counter",
               ("pixel", "event_name", "queue"), "Events Meta accepted."),
    MetricSpec("pixelrelay_relay_events_dead_total", "counter",
               ("pixel", "event_name", "queue", "kind", "code"),
               "Events dead-lettered, by kind (rejected, retries_exhausted, invalid, expired, "
               "config) and Meta error code (none when Meta gave none)."),
    MetricSpec("pixelrelay_relay_events_duplicate_total", "counter",
               ("pixel", "event_name", "queue"),
               "Events dropped because their event_id was already sent in the dedup window."),
    MetricSpec("pixelrelay_relay_events_retried_total", "counter",
               ("pixel", "event_name", "queue"),
               "Events whose batch failed transiently and will be tried again."),
    MetricSpec("pixelrelay_relay_events_deferred_total", "counter",
               ("pixel", "event_name", "queue", "reason"),
               "Events put back for later without spending a retry (rate_limit, throttled)."),
    MetricSpec("pixelrelay_relay_batch_size_events", "histogram", ("pixel",),
               "Events per request to Meta."),
    MetricSpec("pixelrelay_relay_meta_request_duration_seconds", "histogram",
               ("pixel", "outcome"),
               "Duration of one request to Meta, by outcome (delivered, invalid_batch, "
               "throttled, transient, permanent)."),
    MetricSpec("pixelrelay_relay_worker_heartbeat_timestamp_seconds", "gauge", ("queue",),
               "Unix time of this worker's last heartbeat to Redis, per queue it serves."),
    MetricSpec("pixelrelay_relay_redis_up", "gauge", (),
               "1 when this worker's last round of Redis commands succeeded, else 0."),
    MetricSpec("pixelrelay_relay_observer", "gauge", (),
               "1 in the one worker elected to export the Redis-derived gauges and send alerts."),
    MetricSpec("pixelrelay_relay_inbox_events", "gauge", ("queue",),
               "Events waiting in the queue's inbox to be cut into batches.", True),
    MetricSpec("pixelrelay_relay_queue_batches", "gauge", ("queue", "state"),
               "Batch messages in Dramatiq by state (ready, in_flight, delayed).", True),
    MetricSpec("pixelrelay_relay_oldest_waiting_seconds", "gauge", ("queue",),
               "Age of the oldest event waiting in the inbox or in a ready batch (0 if none).",
               True),
    MetricSpec("pixelrelay_relay_live_workers", "gauge", ("queue",),
               "Worker processes serving the queue whose heartbeat is fresh.", True),
    MetricSpec("pixelrelay_relay_limiter_factor", "gauge", ("pixel",),
               "Share of its configured rate a pixel may use after Meta's throttling (1 = all).",
               True),
    MetricSpec("pixelrelay_relay_pixel_health_ok", "gauge", ("pixel",),
               "1 when the last token/reachability check of the pixel passed, 0 if it failed.",
               True),
    MetricSpec("pixelrelay_relay_pixel_health_error_code", "gauge", ("pixel",),
               "Meta error code of the last failed pixel check (190: token invalid), 0 if none.",
               True),
    MetricSpec("pixelrelay_relay_dead_letters", "gauge", (),
               "Dead letters held for an operator (pixelrelay requeue).", True),
    MetricSpec("pixelrelay_relay_pixel_paused", "gauge", ("pixel", "reason"),
               "1 while the pixel's circuit breaker holds its delivery, with the reason; 0 "
               "(reason empty) while it delivers.", True),
    MetricSpec("pixelrelay_relay_pixel_paused_since_timestamp_seconds", "gauge", ("pixel",),
               "Unix time the pixel was paused, while it is.", True),
    MetricSpec("pixelrelay_relay_pixel_waiting_events", "gauge", ("pixel",),
               "Events of the pixel waiting in its inboxes (all queues).", True),
)
SPECS = {spec.name: spec for spec in METRICS}


def _base_name(spec: MetricSpec) -> str:
    """prometheus_client adds ``_total`` to a counter's name itself."""
    return spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name


class LabelPolicy:
    """Maps what an event says to bounded label values."""

    def __init__(self, settings: Settings) -> None:
        self._relay = settings.relay
        self._pixels = frozenset(p.id for p in settings.pixels)
        self._events = STANDARD_EVENTS | set(settings.relay.high_events) | set(
            settings.relay.low_events) | {link.event_name for link in settings.links}

    def pixel(self, pixel_id: str) -> str:
        return pixel_id if pixel_id in self._pixels else UNCONFIGURED_PIXEL

    def event_name(self, name: str) -> str:
        return name if name in self._events else OTHER_EVENT

    def event(self, env: Envelope) -> tuple[str, str, str]:
        """(pixel, event_name, queue) of one event."""
        name = env.event.event_name
        return self.pixel(env.pixel_id), self.event_name(name), queue_for(name, self._relay)


class DeliveryObserver:
    """What ``relay.delivery.Deliverer`` reports; this base class ignores it all."""

    def delivered(self, envelopes: Sequence[Envelope]) -> None: ...
    def dead(self, envelopes: Sequence[Envelope], kind: str, code: int | None) -> None: ...
    def duplicate(self, envelopes: Sequence[Envelope]) -> None: ...
    def retried(self, envelopes: Sequence[Envelope]) -> None: ...
    def deferred(self, envelopes: Sequence[Envelope], reason: str) -> None: ...
    def request(self, pixel_id: str, events: int, seconds: float, outcome: str) -> None: ...


class RelayMetrics(DeliveryObserver):
    """The metrics of one relay worker process."""

    def __init__(self, settings: Settings) -> None:
        self.labels = LabelPolicy(settings)
        self.registry = CollectorRegistry(auto_describe=True)
        made: dict[str, Any] = {}
        for spec in METRICS:
            if spec.redis_derived:
                continue
            kinds: dict[str, Any] = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}
            extra: dict[str, Any] = {}
            if spec.name == "pixelrelay_relay_batch_size_events":
                extra["buckets"] = BATCH_SIZE_BUCKETS
            elif spec.name == "pixelrelay_relay_meta_request_duration_seconds":
                extra["buckets"] = REQUEST_SECONDS_BUCKETS
            made[spec.name] = kinds[spec.kind](_base_name(spec), spec.help, list(spec.labels),
                                               registry=self.registry, **extra)
        self._delivered = made["pixelrelay_relay_events_delivered_total"]
        self._dead = made["pixelrelay_relay_events_dead_total"]
        self._duplicate = made["pixelrelay_relay_events_duplicate_total"]
        self._retried = made["pixelrelay_relay_events_retried_total"]
        self._deferred = made["pixelrelay_relay_events_deferred_total"]
        self._batch_size = made["pixelrelay_relay_batch_size_events"]
        self._request = made["pixelrelay_relay_meta_request_duration_seconds"]
        self._heartbeat = made["pixelrelay_relay_worker_heartbeat_timestamp_seconds"]
        self._redis_up = made["pixelrelay_relay_redis_up"]
        self._observer = made["pixelrelay_relay_observer"]
        self.redis_gauges = RedisGauges()
        self.registry.register(self.redis_gauges)

    # DeliveryObserver
    def _count(self, counter: Any, envelopes: Iterable[Envelope], *extra: str) -> None:
        for labels, n in _group(self.labels.event(e) for e in envelopes).items():
            counter.labels(*labels, *extra).inc(n)

    def delivered(self, envelopes: Sequence[Envelope]) -> None:
        self._count(self._delivered, envelopes)

    def dead(self, envelopes: Sequence[Envelope], kind: str, code: int | None) -> None:
        self._count(self._dead, envelopes, kind, "none" if code is None else str(code))

    def duplicate(self, envelopes: Sequence[Envelope]) -> None:
        self._count(self._duplicate, envelopes)

    def retried(self, envelopes: Sequence[Envelope]) -> None:
        self._count(self._retried, envelopes)

    def deferred(self, envelopes: Sequence[Envelope], reason: str) -> None:
        self._count(self._deferred, envelopes, reason)

    def request(self, pixel_id: str, events: int, seconds: float, outcome: str) -> None:
        pixel = self.labels.pixel(pixel_id)
        self._batch_size.labels(pixel).observe(events)
        self._request.labels(pixel, outcome).observe(seconds)

    # the worker's own state
    def heartbeat(self, queues: Iterable[str], at_s: float | None = None) -> None:
        now = time.time() if at_s is None else at_s
        for queue in queues:
            self._heartbeat.labels(queue).set(now)

    def redis_reachable(self, up: bool) -> None:
        self._redis_up.set(1 if up else 0)

    def redis_is_up(self) -> bool:
        return bool(self.registry.get_sample_value("pixelrelay_relay_redis_up"))

    def observing(self, elected: bool) -> None:
        self._observer.set(1 if elected else 0)
        if not elected:
            self.redis_gauges.clear()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _group(labels: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for key in labels:
        counts[key] = counts.get(key, 0) + 1
    return counts


class RedisGauges(Collector):
    """The Redis-derived gauges: whatever the observer last read (``relay.observe``), or, in
    every worker not elected, nothing at all."""

    def __init__(self) -> None:
        self._values: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        self._lock = threading.Lock()

    def replace(self, values: dict[str, list[tuple[tuple[str, ...], float]]]) -> None:
        unknown = set(values) - {s.name for s in METRICS if s.redis_derived}
        if unknown:
            raise ValueError(f"not Redis-derived gauges: {sorted(unknown)}")
        with self._lock:
            self._values = dict(values)

    def clear(self) -> None:
        self.replace({})

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for spec in METRICS:
            if spec.redis_derived:
                yield GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            values = dict(self._values)
        for spec in METRICS:
            if spec.redis_derived and spec.name in values:
                family = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
                for labels, value in values[spec.name]:
                    family.add_metric(list(labels), value)
                yield family
