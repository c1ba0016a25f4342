"""relay.outbox: alert messages kept in Redis until their endpoint takes them, sent by the elected
worker, bounded with an honest count of what was dropped, in memory while Redis is away; and
relay.alerts' state stored with its messages. Real HTTP receivers on loopback, fake Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import msgspec
import pytest
from redis import exceptions as redis_errors

from relay import keys
from relay.alerts import Alerts, Finding
from relay.notify import SIGNATURE_HEADER, Notice, endpoint_key
from relay.outbox import Outbox
from relay.worker import RelayWorker
from tests.relay.factories import PIXEL
from tests.relay.test_alerts import (
    HOOK_SECRET,
    Clock,
    Receiver,
    settings_for,
    telegram_alert,
    token_invalid,
    webhook_alert,
)
from tests.support import free_port


@pytest.fixture
def hook() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def signed(receiver: Receiver) -> list[dict[str, Any]]:
    """The JSON bodies the webhook received, each checked against its signature."""
    bodies = []
    for _, headers, body in receiver.requests:
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, headers[SIGNATURE_HEADER])
        bodies.append(json.loads(body))
    return bodies


def waiting(redis: fakeredis.FakeRedis, alert: dict[str, Any]) -> int:
    settings = settings_for(alert)
    return int(redis.llen(keys.alert_outbox(endpoint_key(settings.alerts[0]))))


def notice(n: int) -> Notice:
    return Notice("oldest_waiting", {"queue": "relay_low"}, True, f"message {n}", {"n": n},
                  "https://relay.example/", 1, f"id-{n}")


def test_a_message_waits_in_redis_and_the_next_elected_worker_sends_it_once(
        redis: fakeredis.FakeRedis) -> None:
    # Given the elected worker's outbox, a webhook that is down, and one alert
    down = Receiver()
    clock = Clock()
    settings = settings_for(webhook_alert(down), alerting={"cooldown_s": 0})
    first = Outbox(redis, settings, clock=clock, worker_id="w1")
    Alerts(settings, redis, first, clock=clock).evaluate([token_invalid()])
    retry_in = first.send_due()  # refused: the worker then dies (nothing stops it)

    # When another worker is elected and the webhook comes back
    second = Outbox(redis, settings, clock=clock, worker_id="w2")
    down.start()
    try:
        too_soon = second.send_due()  # the schedule is in Redis: not before the retry is due
        requests_too_soon = len(down.requests)
        clock.now += retry_in
        second.send_due()
        second.send_due()
    finally:
        down.stop()

    # Then the message arrived once, signed, and left the outbox
    assert (1.0, 0, 1) == (retry_in, requests_too_soon, len(down.requests))
    assert 0 < too_soon <= 1.0
    [body] = signed(down)
    assert ("token_invalid", {"pixel": PIXEL}) == (body["condition"], body["subject"])
    assert (0, 0) == (waiting(redis, webhook_alert(down)), second.pending())


def test_a_worker_that_is_not_elected_sends_nothing_of_what_redis_holds(
        redis: fakeredis.FakeRedis, hook: Receiver) -> None:
    settings = settings_for(webhook_alert(hook))
    elected = False
    outbox = Outbox(redis, settings, may_send=lambda: elected)
    outbox.put([notice(1)])

    outbox.send_due()
    before = len(hook.requests)
    elected = True
    outbox.send_due()

    assert (0, 1, 0) == (before, len(hook.requests), outbox.pending())


def test_a_sender_waits_while_another_worker_holds_the_endpoint(
        redis: fakeredis.FakeRedis, hook: Receiver) -> None:
    settings = settings_for(webhook_alert(hook))
    outbox = Outbox(redis, settings, worker_id="w2")
    outbox.put([notice(1)])
    lease = keys.alert_sender(endpoint_key(settings.alerts[0]))
    redis.set(lease, "w1", px=10_000)  # w1 is sending it right now

    wait = outbox.send_due()
    held = len(hook.requests)
    redis.delete(lease)  # w1 done (or its lease ran out)
    outbox.send_due()

    assert (0, 1) == (held, len(hook.requests))
    assert 0 < wait <= 10


def test_a_full_outbox_drops_the_oldest_but_the_first_and_says_how_many(
        redis: fakeredis.FakeRedis) -> None:
    # Given an endpoint that is down and room for 10 messages
    down = Receiver()
    clock = Clock()
    settings = settings_for(webhook_alert(down), alerting={"outbox_max_messages": 10})
    outbox = Outbox(redis, settings, clock=clock)
    outbox.put([notice(0)])
    outbox.send_due()  # message 0 is being tried

    # When 13 more arrive
    outbox.put([notice(n) for n in range(1, 14)])
    kept = waiting(redis, webhook_alert(down))
    down.start()
    try:
        clock.now += 60
        while outbox.pending():
            outbox.send_due()
    finally:
        down.stop()

    # Then 10 were kept, the endpoint heard first that 4 were dropped, then the rest in order
    bodies = signed(down)
    assert 10 == kept
    assert ("alerts_dropped", {"dropped": 4, "outbox_max_messages": 10}) == (
        bodies[0]["condition"], bodies[0]["values"])
    assert "4 alert messages to this endpoint were dropped" in bodies[0]["text"]
    assert [0, *range(5, 14)] == [b["values"]["n"] for b in bodies[1:]]


def test_while_redis_is_unreachable_messages_wait_in_memory_and_this_worker_sends_them(
        hook: Receiver) -> None:
    # Given a worker that cannot reach Redis (so no election either)
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    settings = settings_for(webhook_alert(hook))
    outbox = Outbox(redis, settings, may_send=lambda: False)
    server.connected = False

    # When a message is put
    stored = outbox.put([notice(1)])
    outbox.send_due()

    # Then it went out from memory
    assert (False, [1]) == (stored, [b["values"]["n"] for b in signed(hook)])
    server.connected = True
    assert 0 == outbox.pending()


def test_what_was_announced_is_stored_with_its_message_or_not_at_all(
        hook: Receiver) -> None:
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    clock = Clock()
    settings = settings_for(webhook_alert(hook), alerting={"cooldown_s": 0})
    outbox = Outbox(redis, settings, clock=clock, may_send=lambda: False)
    alerts = Alerts(settings, redis, outbox, clock=clock)

    alerts.evaluate([token_invalid()])
    stored = (redis.hlen(keys.alert_state()), outbox.pending())
    other = Finding("oldest_waiting", (("queue", "relay_low"),), {"oldest_waiting_s": 400}, "x")
    server.connected = False  # the transaction fails: neither the state nor the message
    alerts.evaluate([token_invalid(), other])
    server.connected = True

    assert (1, 1) == stored
    assert (1, 1) == (redis.hlen(keys.alert_state()), waiting(redis, webhook_alert(hook)))
    assert 2 == outbox.pending()  # the second waits in this worker's memory


def test_a_new_observer_goes_on_counting_how_long_a_condition_has_held(
        redis: fakeredis.FakeRedis, hook: Receiver) -> None:
    clock = Clock()
    settings = settings_for(telegram_alert(hook), alerting={"throttled_for_s": 600})
    throttled = Finding("throttled", (("pixel", PIXEL),), {"rate_factor": 0.5}, "at 50 %")
    first = Alerts(settings, redis, Outbox(redis, settings, clock=clock), clock=clock)

    first.evaluate([throttled])  # seen for the first time; then this observer dies
    clock.now += 601
    second = Alerts(settings, redis, Outbox(redis, settings, clock=clock), clock=clock)
    due = second.evaluate([throttled])

    assert ["throttled"] == [n.condition for n in due]
    seen = redis.hgetall(keys.alert_seen())
    assert {b"throttled|pixel=" + PIXEL.encode()} == set(seen)


def test_a_stored_message_decodes_to_the_notice_put() -> None:
    original = notice(7)

    assert original == msgspec.json.decode(msgspec.json.encode(original), type=Notice)


def test_redis_unreachable_is_sent_from_memory_by_the_last_observer_and_its_end_after(
        hook: Receiver) -> None:
    # Given the elected worker, a webhook for every condition
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    settings = settings_for(webhook_alert(hook), alerting={
        "cooldown_s": 0, "collector_metrics_url": f"http://127.0.0.1:{free_port()}/metrics"})
    worker = RelayWorker(settings, ["high", "normal", "low"], redis, metrics_port=0)
    try:
        assert worker.observe_once()

        # When Redis cannot be reached: the round fails, the alert waits in memory and goes out
        server.connected = False
        with pytest.raises(redis_errors.ConnectionError):
            worker.observe_once()
        worker.outbox.send_due()
        during = [(b["condition"], b["status"]) for b in signed(hook)]

        # And when Redis is back, its end is announced (stored in Redis, then sent)
        server.connected = True
        worker.observe_once()
        while worker.outbox.pending():
            worker.outbox.send_due()
    finally:
        worker.outbox.stop(0)

    assert [("redis_unreachable", "firing")] == during
    ends = [b for b in signed(hook) if b["condition"] == "redis_unreachable"]
    assert ["firing", "resolved"] == [b["status"] for b in ends]
    assert "the relay cannot reach Redis" in ends[0]["text"]
