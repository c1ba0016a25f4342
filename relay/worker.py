"""A relay worker process: Dramatiq actors for one or more priority queues, plus a pump thread.

The pump, every ``linger_ms``, cuts the inbox of each owned queue into batch messages (so a lone
event waits at most about one linger before it is sent; a resumed pixel's backlog is cut at
once), refreshes the heartbeat and recovers messages of dead workers (and its own stranded
ones, ``RelayBroker.rescue_stranded``). A second thread checks each pixel's token once a minute
(one worker does it, elected through a Redis key), so a hanging Graph API never holds up the
pump.

Run one process per priority group (``pixelrelay relay --queues high``) so a backlog of
PageViews never holds up a Purchase.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import httpx
import structlog
from dramatiq.middleware import CurrentMessage
from prometheus_client import start_http_server
from redis import Redis
from redis import exceptions as redis_errors
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from relay.alerts import Alerts, collector_metrics_url, collector_spooling, findings
from relay.alerts import redis_unreachable as redis_unreachable_finding
from relay.broker import RecoveryGate, RelayBroker, enqueue_patiently, make_broker
from relay.config import Settings
from relay.delivery import Attempt, Defer, Deliverer, Paused
from relay.health import PixelHealth
from relay.inbox import Batcher
from relay.ledger import Ledger
from relay.meta_client import MetaClient
from relay.metrics import RelayMetrics
from relay.observe import Election, gauge_values, relay_state
from relay.outbox import Outbox
from relay.queues import PRIORITIES, QUEUE_NAMES, Priority, metrics_port
from relay.status import WorkerPresence

log = structlog.get_logger("relay.worker")
RECOVER_INTERVAL_S = 1.0
HEALTH_INTERVAL_S = 60.0
HEALTH_POLL_S = 2.5  # how often a worker asks whether a check is due (one SET NX)


def actor_name(priority: Priority) -> str:
    return f"deliver_{priority}"


@dataclass
class RelayWorker:
    settings: Settings
    priorities: Sequence[Priority]
    client: Redis
    transport: httpx.BaseTransport | None = None
    metrics_port: int | None = None  # None: relay.metrics_port plus this queue set's offset
    broker: RelayBroker = field(init=False)
    worker: dramatiq.Worker = field(init=False)
    deliverer: Deliverer = field(init=False)

    def __post_init__(self) -> None:
        relay = self.settings.relay
        self.broker = make_broker(self.client, relay)
        self.meta = MetaClient(self.settings.meta, self.transport)
        self.metrics = RelayMetrics(self.settings)
        # Set when a paused pixel resumes: the pump cuts its backlog now, not a linger later.
        self._cut_now = threading.Event()
        self.deliverer = Deliverer(self.settings, self.client, self.meta, observer=self.metrics,
                                   on_resume=lambda _pixel: self._cut_now.set())
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.election = Election(self.client, self.worker_id, 3 * relay.observe_interval_ms)
        self._observing = False
        # Only the elected observer sends what the outbox holds in Redis.
        self.outbox = Outbox(self.client, self.settings, may_send=lambda: self._observing,
                             worker_id=self.worker_id)
        self.alerts = Alerts(self.settings, self.client, self.outbox)
        self._redis_lost_ms: int | None = None
        self._collector_unreadable = False
        self._http = httpx.Client(timeout=2.0)
        self.health = PixelHealth(self.client, self.meta, self.deliverer.breaker)
        self.queues = [QUEUE_NAMES[p] for p in self.priorities]
        for priority in self.priorities:
            dramatiq.Actor(self._deliver, broker=self.broker, actor_name=actor_name(priority),
                           queue_name=QUEUE_NAMES[priority], priority=0, options={})
        self.batchers = [
            Batcher(self.client, QUEUE_NAMES[p], actor_name(p), relay.max_batch_events,
                    relay.queued_batches_max)
            for p in self.priorities
        ]
        self.worker = dramatiq.Worker(self.broker, queues=set(self.queues),
                                      worker_threads=relay.worker_threads, worker_timeout=100)
        self.worker.delay_prefetch = 256  # delayed batches can be large; keep few in memory
        self.presence = WorkerPresence(self.client, self.broker.broker_id, self.queues,
                                       relay.worker_threads)
        self._gate = RecoveryGate(relay.heartbeat_timeout_ms / 1000)
        self._stopping = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="relay-pump", daemon=True)
        self._checker = threading.Thread(target=self._health_loop, name="relay-health",
                                         daemon=True)
        self._observer = threading.Thread(target=self._observe_loop, name="relay-observer",
                                          daemon=True)
        self._metrics_server: Any = None

    # -- the actor --------------------------------------------------------------------------------
    def _deliver(self, pixel_id: str, items: list[str]) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        retries = int(message.options.get("retries", 0))
        attempt = Attempt(batch_id=message.message_id, number=retries + 1,
                          last=retries + 1 >= self.settings.relay.max_attempts)
        outcome = self.deliverer.deliver(pixel_id, items, attempt)
        if isinstance(outcome, Paused):  # the events are back in the inbox: ack
            log.info("batch_held", pixel_id=pixel_id, size=len(items), reason=outcome.reason,
                     returned=outcome.returned)
        elif isinstance(outcome, Defer):
            defer = outcome
            # Same message id (dedup claims stay valid), same retry count: no retry spent.
            enqueue_patiently(self.broker, message.copy(), defer.delay_ms)
            log.info("batch_deferred", pixel_id=pixel_id, size=len(items),
                     delay_ms=defer.delay_ms, reason=defer.reason)

    # -- the pump ---------------------------------------------------------------------------------
    def _pump_loop(self) -> None:
        linger_s = self.settings.relay.linger_ms / 1000
        next_recover = next_stranded_check = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                for batcher in self.batchers:
                    batcher.run_once()
                if now >= next_recover:
                    self.broker.recover(self.queues, self._gate.allows_maintenance())
                    self._gate.heartbeat_written()
                    self.presence.beat()  # for the dashboard: queues, threads, last seen
                    self.metrics.heartbeat(self.queues)
                    self.metrics.redis_reachable(True)
                    next_recover = now + RECOVER_INTERVAL_S
                if now >= next_stranded_check:
                    self.broker.rescue_stranded(self.queues)
                    # Two checks must agree: like a dead worker's batches, a stranded one is
                    # back in the queue within one to two heartbeat timeouts.
                    next_stranded_check = now + self.settings.relay.heartbeat_timeout_ms / 1000
            except Exception as exc:  # noqa: BLE001 - Redis hiccups must not kill the pump
                if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
                    self.metrics.redis_reachable(False)
                log.warning("pump_error", error=type(exc).__name__, detail=str(exc))
            self._cut_now.wait(linger_s)
            self._cut_now.clear()

    def _health_loop(self) -> None:
        """Token checks in their own thread: a Graph API that hangs must not stall the pump."""
        while not self._stopping.is_set():
            try:
                self.health.check_if_due(self.settings.pixels, HEALTH_INTERVAL_S)
            except Exception as exc:  # noqa: BLE001 - a failed check is retried, never fatal
                log.warning("health_check_error", error=type(exc).__name__, detail=str(exc))
            self._stopping.wait(HEALTH_POLL_S)

    # -- the observer -----------------------------------------------------------------------------
    def _observe_loop(self) -> None:
        """Every ``observe_interval_ms``: stand for election; if elected, read the relay's state
        from Redis into the Redis-derived gauges (exported by this worker only)."""
        interval_s = self.settings.relay.observe_interval_ms / 1000
        while not self._stopping.is_set():
            try:
                self.observe_once()
            except Exception as exc:  # noqa: BLE001 - observing must never stop the worker
                log.warning("observer_error", error=type(exc).__name__, detail=str(exc))
            self._stopping.wait(interval_s)

    def observe_once(self) -> bool:
        """One round of the observer; True when this worker is the elected one.

        The elected worker also evaluates the built-in alerts. While Redis is unreachable no
        election can happen, so the worker elected last goes on alone: it announces that Redis
        is unreachable (and, once Redis is back, that it is reachable again).
        """
        try:
            elected = self.election.hold()
        except (redis_errors.ConnectionError, redis_errors.TimeoutError):
            now_ms = int(time.time() * 1000)
            if self._observing and self.settings.alerts:
                self._redis_lost_ms = self._redis_lost_ms or now_ms
                self.alerts.evaluate([redis_unreachable_finding(self._redis_lost_ms, now_ms)],
                                     complete=False)
            raise
        self._redis_lost_ms = None
        if elected:
            state = relay_state(self.client, self.settings)
            self.metrics.redis_gauges.replace(gauge_values(state))
            if self.settings.alerts:
                window = self.settings.alerting.success_window_min
                counts = Ledger(self.client, 0).counts(window, state.at_ms)
                url = collector_metrics_url(self.settings)
                spooling = collector_spooling(self._http, url)
                if (spooling is None) != self._collector_unreadable:
                    self._collector_unreadable = spooling is None
                    log.info("collector_metrics_readable", readable=spooling is not None)
                self.alerts.evaluate(findings(self.settings, state, counts, spooling))
        elif self._observing:
            self.alerts.forget_loaded()
        self._observing = elected
        self.metrics.observing(elected)
        return elected

    def _serve_metrics(self) -> None:
        port = self.metrics_port
        if port is None:
            port = metrics_port(self.settings.relay.metrics_port, self.priorities)
        if not port:
            return
        host = self.settings.relay.metrics_host
        try:
            self._metrics_server, _ = start_http_server(port, host, registry=self.metrics.registry)
        except OSError as exc:
            # Delivery matters more than metrics: run on, and say so (Prometheus sees up == 0).
            log.error("metrics_port_unavailable", host=host, port=port, error=str(exc))
            return
        log.info("metrics_serving", url=f"http://{host}:{port}/metrics")

    # -- lifecycle --------------------------------------------------------------------------------
    def tokens_seen(self) -> None:
        """Tell the breaker which token this worker sends with: a pixel paused for another one
        is probed at once. Called at start; a settings reload should call it again."""
        for pixel in self.settings.pixels:
            if pixel.access_token:
                self.deliverer.breaker.token_seen(pixel.id, pixel.access_token)

    def start(self) -> None:
        self._serve_metrics()
        self.outbox.start()
        self.tokens_seen()
        self.worker.start()
        self._pump.start()
        self._checker.start()
        self._observer.start()
        log.info("relay_worker_started", queues=self.queues,
                 threads=self.settings.relay.worker_threads)

    def stop(self, timeout_ms: int = 60_000) -> None:
        """Stop cutting batches, finish in-flight ones, return prefetched ones to Redis."""
        self._stopping.set()
        self._cut_now.set()
        self._pump.join(5)
        self._checker.join(5)
        self._observer.join(5)
        self.worker.stop(timeout=timeout_ms)
        self.meta.close()
        try:
            self.presence.leave()
        except Exception as exc:  # noqa: BLE001 - Redis may be gone; the entry just ages out
            log.warning("presence_not_removed", error=type(exc).__name__)
        self.outbox.stop()
        self._http.close()
        if self.metrics.redis_is_up():  # else each command would wait out the outage first
            try:
                self.election.resign()
            except redis_errors.RedisError as exc:
                log.warning("resign_failed", error=type(exc).__name__)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        log.info("relay_worker_stopped", queues=self.queues)

    def run_until_signalled(self) -> None:
        stop = threading.Event()

        def on_signal(signum: int, _: Any) -> None:
            log.info("relay_worker_signal", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        stop.wait()
        self.stop()


def parse_priorities(text: str) -> list[Priority]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    for name in chosen:
        if name not in PRIORITIES:
            raise ValueError(f"unknown queue {name!r}: choose from {', '.join(PRIORITIES)}")
    return chosen  # type: ignore[return-value]


def redis_client(settings: Settings) -> Redis:
    """The worker's client: each command waits out about 33 s of Redis being unreachable
    (a restart) before it raises, so a blip neither fails batches nor spends their retries."""
    return Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5,
                          health_check_interval=30,
                          retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20))



