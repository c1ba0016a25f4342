"""relay.metrics and relay.observe: what a delivery counts, what the observer reads from Redis,
and the table in docs/metrics.md naming every metric the project exports."""

from __future__ import annotations

import re
import time

import fakeredis
import httpx
import msgspec
import pytest

from relay import keys
from relay.delivery import Attempt, Deliverer
from relay.errors import TransientError
from relay.inbox import Batcher, EventWrite, store_sync
from relay.limiter import PixelLimiter
from relay.meta_client import MetaClient
from relay.metrics import METRICS, RelayMetrics
from relay.observe import Election, gauge_values, relay_state
from relay.queues import QUEUE_NAMES
from relay.status import WorkerPresence
from tests.ops.metric_catalog import exported
from tests.relay.factories import PIXEL, FakeGraph, encoded, envelope, graph_error, make_settings
from tests.support import ROOT

FIRST = Attempt("batch-1", 1, last=False)
LAST = Attempt("batch-1", 10, last=True)


def deliverer(redis: fakeredis.FakeRedis, graph: FakeGraph) -> tuple[Deliverer, RelayMetrics]:
    settings = make_settings()
    metrics = RelayMetrics(settings)
    return Deliverer(settings, redis, MetaClient(settings.meta, graph.transport()),
                     observer=metrics), metrics


def value(metrics: RelayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# -- what a delivery counts -----------------------------------------------------------------------
def test_delivered_events_are_counted_by_pixel_event_name_and_queue(
        redis: fakeredis.FakeRedis) -> None:
    d, metrics = deliverer(redis, FakeGraph())

    d.deliver(PIXEL, encoded(envelope("e1"), envelope("e2"),
                             envelope("e3", event_name="PageView")), FIRST)

    assert (2.0, 1.0) == (
        value(metrics, "pixelrelay_relay_events_delivered_total", pixel=PIXEL,
              event_name="Purchase", queue="relay_high"),
        value(metrics, "pixelrelay_relay_events_delivered_total", pixel=PIXEL,
              event_name="PageView", queue="relay_low"))


def test_a_custom_event_name_is_counted_as_other(redis: fakeredis.FakeRedis) -> None:
    d, metrics = deliverer(redis, FakeGraph())

    d.deliver(PIXEL, encoded(envelope("e1", event_name="MyOwnThing-42")), FIRST)

    assert 1.0 == value(metrics, "pixelrelay_relay_events_delivered_total", pixel=PIXEL,
                        event_name="other", queue="relay_normal")


def test_rejected_event_is_counted_dead_with_kind_and_meta_code(
        redis: fakeredis.FakeRedis) -> None:
    # (190, the token, and 10, 200-299, its permissions, pause the pixel instead)
    graph = FakeGraph(lambda request, data: httpx.Response(
        400, json=graph_error(100, message="Invalid parameter")))
    d, metrics = deliverer(redis, graph)

    d.deliver(PIXEL, encoded(envelope("e1")), FIRST)

    assert 1.0 == value(metrics, "pixelrelay_relay_events_dead_total", pixel=PIXEL,
                        event_name="Purchase", queue="relay_high", kind="rejected", code="100")


def test_duplicates_are_counted(redis: fakeredis.FakeRedis) -> None:
    d, metrics = deliverer(redis, FakeGraph())
    d.deliver(PIXEL, encoded(envelope("e1")), FIRST)

    d.deliver(PIXEL, encoded(envelope("e1")), Attempt("batch-2", 1, last=False))

    assert 1.0 == value(metrics, "pixelrelay_relay_events_duplicate_total", pixel=PIXEL,
                        event_name="Purchase", queue="relay_high")


def test_a_transient_failure_counts_a_retry_and_the_last_one_a_dead_letter(
        redis: fakeredis.FakeRedis) -> None:
    d, metrics = deliverer(redis, FakeGraph(lambda r, data: httpx.Response(503, text="down")))
    labels = {"pixel": PIXEL, "event_name": "Purchase", "queue": "relay_high"}

    with pytest.raises(TransientError):
        d.deliver(PIXEL, encoded(envelope("e1")), FIRST)
    d.deliver(PIXEL, encoded(envelope("e1")), LAST)

    assert (1.0, 1.0) == (
        value(metrics, "pixelrelay_relay_events_retried_total", **labels),
        value(metrics, "pixelrelay_relay_events_dead_total", kind="retries_exhausted", code="none",
              **labels))


def test_throttling_counts_deferred_events_and_the_request_outcome(
        redis: fakeredis.FakeRedis) -> None:
    d, metrics = deliverer(redis, FakeGraph(lambda r, data: httpx.Response(
        400, json=graph_error(613, message="Calls to this api have exceeded the rate limit"))))

    d.deliver(PIXEL, encoded(envelope("e1"), envelope("e2")), FIRST)

    assert (2.0, 1.0) == (
        value(metrics, "pixelrelay_relay_events_deferred_total", pixel=PIXEL,
              event_name="Purchase", queue="relay_high", reason="throttled"),
        value(metrics, "pixelrelay_relay_meta_request_duration_seconds_count", pixel=PIXEL,
              outcome="throttled"))


def test_each_request_observes_its_batch_size(redis: fakeredis.FakeRedis) -> None:
    d, metrics = deliverer(redis, FakeGraph())

    d.deliver(PIXEL, encoded(*(envelope(f"e{i}") for i in range(7))), FIRST)

    assert (1.0, 7.0, 0.0, 1.0) == (
        value(metrics, "pixelrelay_relay_batch_size_events_count", pixel=PIXEL),
        value(metrics, "pixelrelay_relay_batch_size_events_sum", pixel=PIXEL),
        value(metrics, "pixelrelay_relay_batch_size_events_bucket", pixel=PIXEL, le="5.0"),
        value(metrics, "pixelrelay_relay_batch_size_events_bucket", pixel=PIXEL, le="10.0"))


# -- what the observer reads from Redis -----------------------------------------------------------
def test_queue_state_counts_the_inbox_and_dates_its_oldest_event(
        redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    now_ms = int(time.time() * 1000)
    old, new = envelope("e1", received_ms=now_ms - 400_000), envelope("e2", received_ms=now_ms)
    store_sync(redis, [EventWrite("relay_high", PIXEL, e.dedup_key, e.received_ms,
                                  msgspec.json.encode(e)) for e in (old, new)], 3600)

    state = relay_state(redis, settings, now_ms)

    high = state.queues[0]
    assert ("relay_high", 2, 400.0) == (high.queue, high.inbox_events,
                                        state.oldest_waiting_s(high))


def test_a_ready_batch_waiting_for_a_worker_ages(redis: fakeredis.FakeRedis) -> None:
    # Given two events cut into one ready batch message
    now_ms = int(time.time() * 1000)
    envs = [envelope("e1", received_ms=now_ms), envelope("e2", received_ms=now_ms)]
    store_sync(redis, [EventWrite("relay_high", PIXEL, e.dedup_key, e.received_ms,
                                  msgspec.json.encode(e)) for e in envs], 3600)
    assert 1 == Batcher(redis, "relay_high", "deliver_high", 1000, 16).run_once()

    # When the observer reads the queue 90 s later, no worker having taken the batch
    state = relay_state(redis, make_settings(), int(time.time() * 1000) + 90_000)

    # Then the events are a ready batch, waiting for at least 90 s, no longer in the inbox
    high = state.queues[0]
    assert (0, 1, 0) == (high.inbox_events, high.ready_batches, high.in_flight_batches)
    assert 90.0 <= state.oldest_waiting_s(high) < 95.0


def test_live_workers_count_only_fresh_heartbeats(redis: fakeredis.FakeRedis) -> None:
    settings = make_settings(relay={"heartbeat_timeout_ms": 10_000})
    now_ms = int(time.time() * 1000)
    WorkerPresence(redis, "a", ["relay_high", "relay_low"], 8).beat(now_ms - 1_000)
    WorkerPresence(redis, "b", ["relay_high"], 8).beat(now_ms - 30_000)

    state = relay_state(redis, settings, now_ms)

    assert {"relay_high": 1, "relay_normal": 0, "relay_low": 1} == {
        q.queue: q.live_workers for q in state.queues}


def test_pixel_gauges_show_the_limiter_factor_and_a_token_error(
        redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    PixelLimiter(redis).throttled(PIXEL)
    redis.set(keys.pixel_health(PIXEL), msgspec.json.encode(
        {"ok": False, "error": {"code": 190, "message": "Invalid OAuth access token"}}))

    values = gauge_values(relay_state(redis, settings))

    assert ([((PIXEL,), 190.0)], [((PIXEL,), 0.0)]) == (
        values["pixelrelay_relay_pixel_health_error_code"],
        values["pixelrelay_relay_pixel_health_ok"])
    assert values["pixelrelay_relay_limiter_factor"][0][1] == pytest.approx(0.5, abs=0.01)


def test_a_paused_pixel_is_exported_with_its_reason_and_since(
        redis: fakeredis.FakeRedis) -> None:
    redis.hset(keys.breaker(PIXEL), mapping={"state": "open", "reason": "token",
                                             "since_ms": 1_800_000_000_000})

    values = gauge_values(relay_state(redis, make_settings()))

    assert ([((PIXEL, "token"), 1.0)], [((PIXEL,), 1_800_000_000.0)]) == (
        values["pixelrelay_relay_pixel_paused"],
        values["pixelrelay_relay_pixel_paused_since_timestamp_seconds"])


def test_only_one_worker_is_elected_and_a_resigned_lease_passes_on(
        redis: fakeredis.FakeRedis) -> None:
    first, second = Election(redis, "w1", 15_000), Election(redis, "w2", 15_000)

    assert (True, False, True) == (first.hold(), second.hold(), first.hold())
    first.resign()
    assert (True, False) == (second.hold(), first.hold())


def test_redis_gauges_are_exported_only_while_elected(redis: fakeredis.FakeRedis) -> None:
    metrics = RelayMetrics(make_settings())
    metrics.redis_gauges.replace(gauge_values(relay_state(redis, make_settings())))
    metrics.observing(True)
    elected = metrics.render().decode()

    metrics.observing(False)
    not_elected = metrics.render().decode()

    assert ("pixelrelay_relay_inbox_events{" in elected,
            "pixelrelay_relay_inbox_events{" in not_elected) == (True, False)


# -- the table in docs/metrics.md -----------------------------------------------------------------
def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) from the table rows ``| `name` | type | `a`, `b` | ... |``."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = {}
    for match in re.finditer(r"^\| `(pixelrelay_\w+)` \| (\w+) \| ([^|]*) \|", text, re.M):
        labels = tuple(re.findall(r"`(\w+)`", match[3]))
        rows[match[1]] = (match[2], labels)
    return rows


def test_every_exported_metric_is_documented_with_its_type_and_labels() -> None:
    assert exported() == documented()


def test_the_relay_registry_exposes_what_metrics_declares(redis: fakeredis.FakeRedis) -> None:
    metrics = RelayMetrics(make_settings())
    metrics.redis_gauges.replace(gauge_values(relay_state(redis, make_settings())))
    names = {m.name + ("_total" if m.type == "counter" else "")
             for m in metrics.registry.collect()}

    assert {spec.name for spec in METRICS} == names


def test_queue_names_in_labels_are_the_relay_queues(redis: fakeredis.FakeRedis) -> None:
    values = gauge_values(relay_state(redis, make_settings()))

    assert sorted(QUEUE_NAMES.values()) == sorted(
        labels[0] for labels, _ in values["pixelrelay_relay_inbox_events"])
