"""Prometheus metrics of one collector process, on a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from collector.enqueue import Destination, EnqueueObserver


class CollectorMetrics(EnqueueObserver):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pixelrelay_collector_requests", "HTTP requests by route and status.",
            ["route", "status"], registry=self.registry,
        )
        self.events = Counter(
            "pixelrelay_collector_events", "Events accepted, by source.", ["source"],
            registry=self.registry,
        )
        self.bots = Counter(
            "pixelrelay_collector_bot_clicks",
            "Redirects and beacons from bots (and HEAD requests), answered but not reported.",
            registry=self.registry,
        )
        self.enqueue_seconds = Histogram(
            "pixelrelay_collector_enqueue_seconds", "Time to store a group durably.",
            ["destination"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.spooled = Counter(
            "pixelrelay_collector_spooled_events", "Events written to the disk spool.",
            registry=self.registry,
        )
        self.spooling = Gauge(
            "pixelrelay_collector_spooling", "1 while events go to the disk spool.",
            registry=self.registry,
        )
        self.spool_bytes = Gauge(
            "pixelrelay_collector_spool_pending_bytes", "Bytes waiting in the spool for replay.",
            registry=self.registry,
        )

    # EnqueueObserver
    def stored(self, destination: Destination, count: int, seconds: float) -> None:
        self.enqueue_seconds.labels(destination).observe(seconds)
        if destination == "spool":
            self.spooled.inc(count)

    def spool_state(self, spooling: bool, pending_bytes: int) -> None:
        self.spooling.set(1 if spooling else 0)
        self.spool_bytes.set(pending_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
