"""Prometheus metrics of the collector.

With one worker process (the default, and every unit test) the metrics live on a registry of
this object's own (no global state) and ``/metrics`` renders that registry.

With several workers, ``pixelrelay collector`` gives them a fresh, empty directory in
``$PROMETHEUS_MULTIPROC_DIR`` before they start (prometheus_client chooses how it stores values
when it is first imported). Each worker then writes its values to files of its own there
(prometheus_client's multiprocess mode) and ``/metrics``, whichever worker answers, renders all
the workers' files together: counters and histograms are summed over every worker this collector
has run (so they never go back when granian replaces one), the gauges describe the workers alive
now (``spooling`` is 1 if any worker spools, ``spool_pending_bytes`` is their total).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from collector.enqueue import Destination, EnqueueObserver

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class CollectorMetrics(EnqueueObserver):
    def __init__(self) -> None:
        self.multiprocess_dir = _multiprocess_dir()
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
        self.unrecorded_clicks = Counter(
            "pixelrelay_collector_unrecorded_clicks",
            "Redirects answered while neither Redis nor the disk spool could store the click: "
            "the visitor was sent on, the click is not reported.",
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
        # multiprocess_mode only matters with several workers: how their values combine.
        # "live": a worker that has exited no longer counts (see _forget_dead_workers).
        self.spooling = Gauge(
            "pixelrelay_collector_spooling", "1 while events go to the disk spool.",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.spool_bytes = Gauge(
            "pixelrelay_collector_spool_pending_bytes", "Bytes waiting in the spool for replay.",
            registry=self.registry, multiprocess_mode="livesum",
        )
        self.withheld = Counter(
            "pixelrelay_collector_withheld_events",
            "Events kept from Meta for want of consent (never stored), by pixel and reason "
            "(no_consent, consent_denied).", ["pixel_id", "reason"], registry=self.registry,
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
        """The text exposition: this process's registry, or every worker's files."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        _forget_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)


def _multiprocess_dir() -> Path | None:
    """``$PROMETHEUS_MULTIPROC_DIR`` if this process stores metric values there, else None."""
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    multiprocess = bool(getattr(values.ValueClass, "_multiprocess", False))
    if not directory and not multiprocess:
        return None
    if not directory or not multiprocess:
        # prometheus_client reads the variable once, when first imported: set after that, our
        # values would stay in memory while /metrics showed the other workers' files.
        raise RuntimeError(
            f"${MULTIPROC_DIR_ENV} must be set before prometheus_client is imported "
            "(pixelrelay collector sets it for its workers)"
        )
    return Path(directory)


def _forget_dead_workers(directory: Path) -> None:
    """Remove the live* gauge files of processes that no longer exist.

    What ``prometheus_client.multiprocess.mark_process_dead(pid)`` does, done here because granian
    has no hook that runs when a worker exits (its on_startup/on_reload/on_shutdown hooks run in
    the main process, only when granian is embedded, and not when a worker crashes). Files are
    named ``gauge_<mode>_<pid>.db``; several workers may prune at once, hence missing_ok.
    Counter and histogram files stay: their counts remain part of the collector's totals.
    """
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not process_exists(int(pid)):
            path.unlink(missing_ok=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True
