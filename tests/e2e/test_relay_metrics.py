"""A running relay worker's /metrics counts what flowed through the real stack: redirects and
server events into the collector, batches through Redis and the worker to the fake Graph API."""

from __future__ import annotations

import tomllib

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import StartFn
from tests.support import (
    DEMO_API_KEY,
    DEMO_PIXEL,
    RedisServer,
    free_port,
    wait_for,
    wait_http,
    write_config,
)

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) relay-metrics-test"}
PURCHASES = 3


def _value(exposition: str, name: str, **labels: str) -> float:
    return sum(float(s.value) for family in text_string_to_metric_families(exposition)
               for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_worker_metrics_endpoint_counts_events_delivered_through_the_stack(
        tmp_path, redis_server: RedisServer, fake_meta: str, start_process: StartFn) -> None:
    # Given the collector and one relay worker with its /metrics on a free port
    config = write_config(tmp_path, redis_url=redis_server.url, graph_url=fake_meta)
    port = tomllib.loads(config.read_text())["collector"]["port"]
    base = f"http://127.0.0.1:{port}"
    metrics_port = free_port()
    env = {"REDIS_URL": redis_server.url, "PIXELRELAY_GRAPH_URL": fake_meta}
    start_process("collector", "pixelrelay", "collector", "--config", str(config), env=env)
    start_process("relay", "pixelrelay", "relay", "--config", str(config),
                  "--metrics-port", str(metrics_port), env=env)
    wait_http(f"{base}/healthz")
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_http(metrics_url)

    # When a click and three purchases go through the collector
    assert 302 == httpx.get(f"{base}/go/demo", params={"fbclid": "metrics-e2e"},
                            headers=BROWSER).status_code
    for n in range(PURCHASES):
        response = httpx.post(
            f"{base}/v1/events", headers={"Authorization": f"Bearer {DEMO_API_KEY}"},
            json={"event_name": "Purchase", "event_id": f"order-{n}",
                  "event_source_url": "https://shop.example/thanks",
                  "user_data": {"em": "jane@example.com", "client_ip_address": "203.0.113.5",
                                "client_user_agent": BROWSER["User-Agent"]},
                  "custom_data": {"value": 10 + n, "currency": "EUR"}})
        assert 202 == response.status_code, response.text

    # Then the worker's /metrics counts them delivered, by event name and queue
    def delivered() -> tuple[float, float]:
        text = httpx.get(metrics_url, timeout=5).text
        return (_value(text, "pixelrelay_relay_events_delivered_total", pixel=DEMO_PIXEL,
                       event_name="Purchase", queue="relay_high"),
                _value(text, "pixelrelay_relay_events_delivered_total", pixel=DEMO_PIXEL,
                       event_name="PageView", queue="relay_low"))

    wait_for(lambda: delivered() == (PURCHASES, 1.0), 20, what="delivered counts in /metrics")
    # and, being the only worker, it is the observer: the Redis-derived gauges are there too
    def observed() -> str:
        text = httpx.get(metrics_url, timeout=5).text
        return text if _value(text, "pixelrelay_relay_live_workers", queue="relay_high") else ""

    text = wait_for(observed, 20, what="the observer's gauges")
    assert 1.0 == _value(text, "pixelrelay_relay_observer")
    assert 1.0 == _value(text, "pixelrelay_relay_redis_up")
    assert _value(text, "pixelrelay_relay_meta_request_duration_seconds_count") >= 2
    assert "order-0" not in text and "jane" not in text
